"""What passes between a training run and the world outside it: a SIGTERM that asks it to
stop at the next step, and watchers (`TrainEvents`) told of each step and epoch."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from alexcli.core.signals import handling


class StopFlag(Protocol):
    stop_requested: bool


class TrainEvents(Protocol):
    """Someone watching a run as it trains (the stage's TensorBoard writer, on rank 0):
    told where it starts, each step's loss and lr, and each epoch's metrics.jsonl line
    with conv1's kernels. metrics.jsonl stays the record; this is a view of it."""

    def start(self, step: int) -> None:
        """The run begins (or resumes) at global step `step`: later steps replace any
        an earlier, interrupted run logged."""

    def step(self, step: int, loss: float, lr: float) -> None:
        """Global step `step` (1-based) has trained, at this batch loss and lr."""

    def epoch(self, step: int, line: dict[str, Any], conv1: torch.Tensor) -> None:
        """An epoch ended at global step `step`; `line` is its metrics.jsonl record."""

    def close(self) -> None: ...


@contextlib.contextmanager
def sigterm_requests_stop(trainer: StopFlag) -> Iterator[None]:
    """SIGTERM (a scheduler preempting the job, `kill`) sets `trainer.stop_requested`:
    the next step saves last.pt and stops (`Stopped`) instead of dying mid-step. Only the
    main thread can hold a handler; elsewhere SIGTERM keeps its default."""

    def request(signum: int, frame: object) -> None:
        trainer.stop_requested = True

    with handling(signal.SIGTERM, request):
        yield
