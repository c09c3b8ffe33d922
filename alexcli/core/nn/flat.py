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
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
    def flat(self) -> bool:
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


HINT = (
    "likely the init (the paper's biases of 1 on raw pixels: --set model.init=caffe or "
    "kaiming), the lr (a lower --lr, or --set warmup_epochs=1) or the input scale "
    "(--set input_scale=0.017)"
)
