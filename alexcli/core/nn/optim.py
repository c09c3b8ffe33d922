"""How the weights move: docs/paper.md "Learning".

SGD with momentum 0.9 and weight decay 5e-4 on every parameter, batch 128, lr 0.01
divided by 10 when the validation error stops improving (`LrSchedule`, "plateau"; or
at fixed epochs, "step"), an optional linear warm-up.

PyTorch's SGD keeps v ← μv + (∇ + λw), w ← w − εv; the paper's rule is
v ← μv − λεw − ε∇, w ← w + v. With a constant ε they are the same trajectory (v
differs by the factor −ε); after an lr change the paper's velocity still carries the
old ε for a few steps, PyTorch's is rescaled at once. We use PyTorch's
(docs/training.md "The recipe and the update rule"). Weight decay applies to the
biases too (the paper does not say; Caffe's bvlc_alexnet decays them less):
docs/paper.md "Where alexcli departs from the paper".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn


@dataclass
class LrSchedule:
    """The learning rate at every step: base × 0.1^drops, times a linear warm-up.

    "plateau" (the paper): a drop when the validation error has not improved for
    `patience` epochs, at most `max_drops` times; and, so that a short run still gets
    the drops it is due, a drop at the end of any epoch after which no more epochs are
    left than drops still due (90 epochs: only if none came by epoch 87). "step": a drop
    at each of `milestones`, epochs, or fractions of the run's steps when below 1 (0.67
    of 30 epochs of 100 steps is step 2,010, of 4 epochs step 268), placed so that a
    short run still drops one at a time and trains after its last drop
    (`milestone_steps`). Warm-up ramps from base/(warm-up steps) to base over the first
    `warmup_epochs` (a fraction allowed). `state_dict` makes resume exact.
    """

    base_lr: float
    kind: Literal["plateau", "step"] = "plateau"
    max_drops: int = 3
    patience: int = 5
    milestones: tuple[float, ...] = ()
    warmup_epochs: float = 0.0
    epochs: int = 0  # the run's length: fractional milestones and forced drops need it
    drops: int = 0
    best: float = math.inf
    bad_epochs: int = 0

    def lr(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The lr for step `step` (0-based) of epoch `epoch` (0-based)."""
        lr = self.base_lr * 0.1 ** self.drops_at(epoch, step, steps_per_epoch)
        warm = self.warmup_epochs * steps_per_epoch
        done = epoch * steps_per_epoch + step
        if warm > 0 and done < warm:
            lr *= (done + 1) / math.ceil(warm)
        return lr

    def drops_at(self, epoch: int, step: int, steps_per_epoch: int) -> int:
        """How many ÷10 drops step `step` of epoch `epoch` (both 0-based) trains with
        ("plateau": so far)."""
        if self.kind == "plateau":
            return self.drops
        done = epoch * steps_per_epoch + step
        return sum(done >= m for m in self.milestone_steps(steps_per_epoch))

    def milestone_steps(self, steps_per_epoch: int) -> list[int]:
        """The steps of the run (0-based: the first trained at the lower lr) where the
        "step" drops fall.

        An epoch number is taken as given: its first step. A fraction of the run is
        that fraction of its steps (Caffe's `stepvalue` is an iteration too), so a run of
        any length trains the same share of its steps at each lr: 0.67 of a 4-epoch run
        is step 670 of 1,000, inside epoch 3 (as epochs, 0.67 and 0.87 of 4 could only
        be epochs 3 and 4: half the run at the full lr, a quarter at ÷100). No two
        fractions share a step, and at least a tenth of the run trains after the last:
        a later drop moves earlier where the run is too short, and one left in the first
        epoch is left out (a 1-epoch run trains at one lr, as when fractions were of
        epochs). The `small` preset's (0.67, 0.87): steps 670 and 870 of 1,000; a tenth
        of an epoch into epochs 21 and 27 of 30 (their starts when fractions were of
        epochs)."""
        total = self.epochs * steps_per_epoch
        fixed = [int(m) * steps_per_epoch for m in self.milestones if m >= 1]
        fractions = sorted((m for m in self.milestones if m < 1), reverse=True)
        latest = total - max(1, math.ceil(0.1 * total))
        placed: list[int] = []
        for m in fractions:  # the latest first: each earlier one goes before it
            step = min(round(m * total), latest)
            if placed:
                step = min(step, placed[-1] - 1)
            placed.append(step)
        return sorted(fixed + [s for s in placed if s >= steps_per_epoch])

    def drops_ahead(self, epoch: int, steps_per_epoch: int, before: int) -> list[str]:
        """What the line of epoch `epoch` (0-based) says of the drops to come, each with
        the factor applied and the lr it leaves (before any warm-up still under way):
        "lr ÷10 → 0.002 from epoch 4" at an epoch's first step, "… from step 171 of
        epoch 3" inside one: those of the next epoch (none falls in the first).
        `before`: the drops the epoch ended with, read before `end_epoch` ("plateau"
        drops there, for the next epoch)."""
        if self.kind == "plateau":
            n = self.drops - before
            if n <= 0 or epoch + 1 >= self.epochs > 0:  # no epoch left to train at it
                return []
            lr = self.base_lr * 0.1**self.drops
            return [f"lr ÷{10**n:g} → {lr:.3g} from epoch {epoch + 2}"]
        total = self.epochs * steps_per_epoch
        start, stop = (epoch + 1) * steps_per_epoch, min((epoch + 2) * steps_per_epoch, total)
        milestones = self.milestone_steps(steps_per_epoch)
        said = []
        for step in sorted({m for m in milestones if start <= m < stop}):
            n = milestones.count(step)  # epochs given twice: ÷100 at once, said so
            lr = self.base_lr * 0.1 ** sum(m <= step for m in milestones)
            at, within = divmod(step, steps_per_epoch)
            where = f"step {within + 1} of epoch {at + 1}" if within else f"epoch {at + 1}"
            said.append(f"lr ÷{10**n:g} → {lr:.3g} from {where}")
        return said

    def warming_up(self, epoch: int, step: int, steps_per_epoch: int) -> bool:
        """Whether step `step` of epoch `epoch` is still in the warm-up."""
        done = epoch * steps_per_epoch + step
        return done < math.ceil(self.warmup_epochs * steps_per_epoch) - 1

    def end_epoch(self, val_error: float, epoch: int | None = None) -> bool:
        """Record epoch `epoch`'s (0-based) validation error; True when "plateau" just
        dropped the lr (for the epochs after it)."""
        if self.kind != "plateau":
            return False
        if val_error < self.best:
            self.best, self.bad_epochs = val_error, 0
        else:
            self.bad_epochs += 1
        left = self.epochs - (epoch + 1) if epoch is not None and self.epochs else None
        due = left is not None and 0 < left <= self.max_drops - self.drops
        if self.drops < self.max_drops and (self.bad_epochs >= self.patience or due):
            self.drops, self.bad_epochs = self.drops + 1, 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"drops": self.drops, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.drops = int(state["drops"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


def make_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float,
    weight_decay: float,
    *,
    fused: bool | None = None,
    scaled: bool = False,
) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every parameter (the module docstring).

    `fused` (default: where every parameter is a float on the CPU or CUDA) updates each
    tensor in one pass instead of the foreach kernels' several: the same formula, fewer
    passes over 61 M weights (docs/performance.md).

    `scaled`: a GradScaler drives the steps (`--amp fp16`); then never fused. GradScaler
    lets a fused optimizer skip an overflowing step inside its kernel, and fused SGD gets
    that wrong twice: on a skipped first step it leaves the momentum buffers it made with
    `empty_like` unfilled, so the next step adds uninitialised memory to the weights; and
    with the towers on two devices it is handed the sum of their overflow flags, 2, but
    skips only on exactly 1. An fp16 overflow is routine at the scaler's first scale
    (2^16). With the foreach kernels GradScaler unscales, checks and skips the step
    itself, through public API only.
    """
    params = list(model.parameters())
    if scaled:
        fused = False
    elif fused is None:
        fused = bool(params) and all(
            p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
        )
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Momentum buffers in their parameter's memory layout: a run saved with another
    `channels_last` has them in the other one, which CUDA's fused SGD refuses."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            buf = state.get("momentum_buffer")
            if isinstance(buf, torch.Tensor) and buf.stride() != param.stride():
                state["momentum_buffer"] = torch.empty_like(param).copy_(buf)
