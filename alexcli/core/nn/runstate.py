"""A training run's state on disk (docs/paper.md "Learning"; docs/training.md "Records,
up to date, resume"): when a checkpoint is due (`CheckpointPolicy`), what one holds
beyond the configuration (`TrainState`, the RNG states of every rank), saving it with
metrics.jsonl, and putting it back on resume.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from alexcli.core.atomic import atomic_path, write_text
from alexcli.core.nn.checkpoint import Checkpoint, rng_state, save_checkpoint, set_rng_state
from alexcli.core.nn.distributed import Dist
from alexcli.core.nn.loops import EpochProgress
from alexcli.core.nn.model import AlexNet
from alexcli.core.nn.optim import LrSchedule, match_layouts
from alexcli.core.rundir import RunDir

# Steps between DDP ranks' agreeing on whether a checkpoint is due (a broadcast of a
# pickled flag: a stall of every GPU if done each step).
AGREE_EVERY = 20


class CheckpointPolicy:
    """When a checkpoint is due between two steps of an epoch: every `every` steps of the
    run (0: never), `minutes` after the last save, or at once when SIGTERM asked the run
    to stop (`stop_requested`, set by `events.sigterm_requests_stop`). The epoch's end
    always saves; this decides the saves in between.

    Every DDP rank must save at the same step, since the save gathers their RNG states.
    Every rank counts steps alike, but the clock and SIGTERM are rank 0's, sent to the
    others (`Dist.agree`): every AGREE_EVERY steps of the epoch, and at a counted step."""

    def __init__(self, every: int, minutes: float, dist: Dist) -> None:
        self.every, self.minutes, self.dist = every, minutes, dist
        self.stop_requested = False
        self.saved_at = time.monotonic()

    def due(self, step: int, step_in_epoch: int) -> bool:
        """Whether to save after global step `step` (1-based), the same on every rank."""
        counted = self.every > 0 and step % self.every == 0
        if self.dist.world > 1 and step_in_epoch % AGREE_EVERY and not counted:
            return False
        late = time.monotonic() - self.saved_at >= self.minutes * 60
        return self.dist.agree(counted or late or self.stop_requested)

    def saved(self) -> None:
        """A checkpoint was just written: the clock starts again."""
        self.saved_at = time.monotonic()

    def stopping(self) -> bool:
        """Whether SIGTERM asked the run to stop (rank 0's answer, on every rank)."""
        return self.dist.agree(self.stop_requested)


@dataclass
class TrainState:
    """What SGD changes as it trains, and a checkpoint saves to resume it exactly: the
    weights, the momentum, the lr schedule and (under `--amp fp16`) the loss scale."""

    model: AlexNet
    optimizer: torch.optim.SGD
    schedule: LrSchedule
    scaler: torch.amp.GradScaler | None

    def restore(self, ck: Checkpoint, dist: Dist) -> EpochProgress:
        """Everything `ck` saved, back in place, and this rank's RNG streams; the
        progress of the epoch it stopped in."""
        self.model.load_state_dict(ck.weights)
        if ck.optimizer is not None:
            self.optimizer.load_state_dict(ck.optimizer)
            match_layouts(self.optimizer)
        if ck.scheduler is not None:
            self.schedule.load_state_dict(ck.scheduler)
        if self.scaler is not None and ck.scaler:
            self.scaler.load_state_dict(ck.scaler)
        if ck.rank_rng:  # this rank's own stream when the job has the same size
            same_world = ck.world == dist.world
            set_rng_state(ck.rank_rng[dist.rank] if same_world else ck.rank_rng[0])
        saved = dict(ck.epoch_progress)
        saved.setdefault("hits", None if saved.get("step") else 0)  # older checkpoints: unknown
        return EpochProgress(**saved)


def gather_rng(dist: Dist, cuda: bool) -> list[dict[str, Any]]:
    """Every rank's RNG states, rank 0's first (all ranks call it; dropout draws from
    them, so each rank resumes its own stream)."""
    if dist.world == 1:
        return [rng_state(cuda)]
    states: list[Any] = [None] * dist.world
    torch_dist.all_gather_object(states, rng_state(cuda))
    return states


def save_run(run_dir: Path, checkpoint: Checkpoint, *, best: bool = False) -> None:
    """last.pt (and best.pt first when `best`: a kill between the two leaves last.pt
    older, never best.pt), then metrics.jsonl from the checkpoint's metrics."""
    run = RunDir(run_dir)
    if best:
        save_checkpoint(run.best, checkpoint)
        copy_checkpoint(run.best, run.last)
    else:
        save_checkpoint(run.last, checkpoint)
    write_metrics(run_dir, checkpoint.metrics)


def write_metrics(run_dir: Path, metrics: list[dict[str, Any]]) -> None:
    """metrics.jsonl, rewritten whole (atomically) from the checkpointed list each epoch:
    a kill between a checkpoint and this write loses nothing on resume."""
    write_text(RunDir(run_dir).metrics_file, "".join(json.dumps(m) + "\n" for m in metrics))


def copy_checkpoint(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
