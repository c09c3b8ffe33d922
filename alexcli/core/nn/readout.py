"""What the host reads of each training step, its loss and top-1 hits, and when
(docs/paper.md "Learning": the loss the SGD steps follow): at once on a CPU, one step late
on CUDA, so that the host never waits for the GPU mid-epoch (docs/performance.md "GPU").
A NaN or infinite loss is `TrainingDiverged`, naming the epoch and step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from alexcli.errors import TrainingDiverged


def check_finite(loss: float, message: str) -> None:
    """`TrainingDiverged` with `message` when `loss` is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            message,
            hint="lower --lr (or keep it and raise --batch-size), or warm up (--set "
            "warmup_epochs=1); checkpoints/last.pt holds the last good state",
        )


@dataclass(frozen=True)
class StepRead:
    """One step's numbers as the host reads them."""

    epoch: int
    step: int  # 0-based, in its epoch
    lr: float
    images: int  # this rank's
    loss: float = math.nan  # the all-rank mean, once read
    hits: int = 0  # all ranks, once read


class StepValues:
    """Each step's loss and top-1 hits brought to the host without stalling the device.

    On a CPU they are read at once and the step checks its loss before its update
    (waiting costs nothing there: the CPU computed them). On CUDA a read each step would
    make the host wait for the GPU every step, so the CPU could never queue the next
    step while the GPU works: the values are copied into a pinned buffer behind an
    event instead and read one step late, just before the next step is queued. The
    host then runs ahead of the GPU by that step's backward pass and update. A NaN is
    caught one update later; nothing is saved in between (the trainer saves between
    steps it has read, `loops.train_steps`), so last.pt still holds the last good
    state. `late` may be asked for on a CPU (the same bookkeeping, tested there).
    """

    def __init__(self, device: torch.device, *, late: bool | None = None) -> None:
        self.device = device
        self.late = device.type == "cuda" if late is None else late
        self._buffer: Tensor | None = None
        self._event: torch.cuda.Event | None = None
        self._pending: tuple[StepRead, Tensor] | None = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def put(self, read: StepRead, value: Tensor) -> None:
        """`value` = (loss, hits) of the step `read` describes (its numbers not yet in)."""
        if self.device.type == "cuda":
            if self._buffer is None:  # one, reused: the last step's is read before this copy
                self._buffer = torch.empty(2, dtype=torch.float32, pin_memory=True)
                self._event = torch.cuda.Event()
            self._buffer.copy_(value, non_blocking=True)
            assert self._event is not None
            self._event.record()
            value = self._buffer
        self._pending = (read, value)

    def read(self) -> StepRead:
        """The pending step's numbers (waiting for its copy on CUDA), checked finite."""
        assert self._pending is not None
        read, value = self._pending
        self._pending = None
        if self._event is not None:
            self._event.synchronize()
        loss, hits = (float(v) for v in value.tolist())
        check_finite(
            loss, f"the loss became {loss} at epoch {read.epoch + 1}, step {read.step + 1}"
        )
        return dataclasses.replace(read, loss=loss, hits=round(hits))
