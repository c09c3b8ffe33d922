"""Noticing a run that learns nothing: the most reported failure of AlexNet reproductions
(a loss stuck at ln C for epochs; Caffe's bvlc_alexnet notes that the paper's biases of 1
"gave flat loss" and used 0.1).

An epoch is flat when all three say the network's output carries nothing of its input:
- its mean training loss has not come down below ln C, the loss of a uniform guess
  (by more than 2 %),
- its validation top-1 error is within two standard errors of chance, 1 − 1/C, and
- its validation loss is not below ln C: on balanced classes no output that ignores
  the input does better than ln C (Gibbs' inequality), so a loss below it has used the
  images, however little that shows in the top-1 error yet.

The training loss alone cannot tell: on the demo's 10 classes a healthy run's first
epoch averages 2.45 (its first steps start above ln 10 = 2.30) and a flat one 2.40.
The validation error can: after one epoch the healthy run is at 0.76, the flat one at
0.90, chance exactly (docs/training.md "A flat run"). But a healthy run can end its first
epoch near chance too: with fc6/fc7 of 1,024 units, 3 of the first 21 healthy runs of
the demo's ablation study did (top-1 error 0.87–0.90, later 2–4 %); their validation losses were
2.16–2.29, below ln 10, the flat run's 2.46. On ImageNet chance is 0.999; a healthy
paper-preset run is far below it after its first epoch.

A loss far *above* ln C is the opposite failure, divergence, and is named as such, never
as a flat run: an epoch is **diverging** when its mean training loss, or its validation
loss, exceeds 3·ln C. A uniform guess scores ln C; a mean of 3·ln C gives the true class
on average the probability C⁻³, far below guessing, which only weights blown up by too
large a step produce (a `small` run at batch 16 reached 15·ln 6 before its NaN). A
healthy run starts near ln C (the demo's first epochs averaged 1.07·ln 10 at `small`'s
former lr 0.005) and stays below it. A rise within an epoch (10× a step's loss) was not
taken: late in a healthy run single batches range that widely (0.05 to 0.6 on easy data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from alexcli.errors import TrainingFlat

DIVERGING = 3.0  # an epoch's loss above this many times ln C: diverging


@dataclass(frozen=True)
class Flatness:
    """What one epoch says about learning."""

    classes: int
    train_loss: float
    val_top1_error: float
    val_images: int
    val_loss: float | None = None  # None: not measured, the condition is left out

    @property
    def uniform_loss(self) -> float:
        """ln C: the cross-entropy of a uniform guess."""
        return math.log(self.classes)

    @property
    def chance_error(self) -> float:
        return 1.0 - 1.0 / self.classes

    @property
    def diverging(self) -> bool:
        """The training or validation loss above 3·ln C (the module docstring)."""
        limit = DIVERGING * self.uniform_loss
        return self.train_loss > limit or (self.val_loss is not None and self.val_loss > limit)

    @property
    def flat(self) -> bool:
        if self.diverging:  # far above ln C is not stuck at it
            return False
        p = 1.0 / self.classes
        se = math.sqrt(p * (1.0 - p) / max(self.val_images, 1))
        loss_stuck = self.train_loss >= 0.98 * self.uniform_loss
        at_chance = self.val_top1_error >= self.chance_error - 2.0 * se
        blind = self.val_loss is None or self.val_loss >= self.uniform_loss
        return loss_stuck and at_chance and blind

    def message(self, epoch: int) -> str:
        return (
            f"epoch {epoch} learned nothing: training loss {self.train_loss:.3f} "
            f"(ln {self.classes} = {self.uniform_loss:.3f}, a uniform guess), validation "
            f"top-1 error {self.val_top1_error:.3f} (chance {self.chance_error:.3f})"
            + ("" if self.val_loss is None else f", validation loss {self.val_loss:.3f}")
        )


def diverging_message(flat: Flatness, epoch: int, lr: float, batch: int) -> str:
    """The warning for a diverging epoch, with the lr and batch that drove it there."""
    ratio = flat.train_loss / flat.uniform_loss
    val = "" if flat.val_loss is None else f"; validation loss {flat.val_loss:.3g}"
    return (
        f"epoch {epoch} is diverging: training loss {flat.train_loss:.3g} = {ratio:.3g} × "
        f"ln {flat.classes} (a uniform guess scores {flat.uniform_loss:.3f}{val}): its steps "
        f"are too large for the weights (lr {lr:.3g} at batch {batch})"
    )


DIVERGING_HINT = (
    "lower --lr; or give --batch-size without --lr and the lr follows the batch (the linear "
    "rule); or warm up (--set warmup_epochs=1); raw pixels want --set input_scale=0.017"
)

HINT = (
    "likely the init (the paper's biases of 1 on raw pixels: --set model.init=caffe or "
    "kaiming), the lr (a lower --lr, or --set warmup_epochs=1) or the input scale "
    "(--set input_scale=0.017)"
)


@dataclass
class Watch:
    """What a run's epochs show, said once a run each (every epoch's line in metrics.jsonl
    records both); a flat epoch stops the run when asked (`--stop-if-flat`: last.pt and
    metrics.jsonl already hold the epoch)."""

    stop_if_flat: bool = False
    said: set[str] = field(default_factory=set)

    def warnings(self, flat: Flatness, epoch: int, lr: float, batch: int) -> list[str]:
        """The lines to print after epoch `epoch` (1-based) trained at `lr` and `batch`."""
        lines = []
        if flat.diverging and "diverging" not in self.said:
            self.said.add("diverging")
            message = diverging_message(flat, epoch, lr, batch)
            lines.append(f"warning: {message}; {DIVERGING_HINT}")
        if flat.flat and self.stop_if_flat:
            raise TrainingFlat(flat.message(epoch) + ": stopped (--stop-if-flat)", hint=HINT)
        if flat.flat and "flat" not in self.said:
            self.said.add("flat")
            lines.append(f"warning: {flat.message(epoch)}; {HINT}; --stop-if-flat stops such a run")
        return lines
