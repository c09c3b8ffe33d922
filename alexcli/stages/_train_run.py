"""The body of `stages/train.py` that needs torch: its inputs, the epoch loop,
checkpoints. Split from train.py so the stage's outline stays readable (processes
and devices: `core/distributed.py`).

Exact resume rests on three things: every random decision of the data pipeline
is a function of (seed, epoch, position) (`loader.EpochSampler`); the only other
randomness, dropout, draws from torch's global RNG, whose state every checkpoint
saves (per rank under DDP); and nothing else touches that RNG between steps (the
DataLoaders get generators of their own: `iter(loader)` would otherwise draw a
worker seed from it).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alexcli.config import TrainConfig, to_dict
from alexcli.core.atomic import atomic_path, write_text
from alexcli.core.data.loader import (
    CropDataset,
    EpochSampler,
    default_workers,
    make_loader,
)
from alexcli.core.data.stats import Stats
from alexcli.core.data.transforms import Normalizer
from alexcli.core.fingerprint import file_digest
from alexcli.core.machine import cpu_cores, keep_freed_memory
from alexcli.core.nn.checkpoint import (
    Checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from alexcli.core.nn.distributed import Dist, process_devices
from alexcli.core.nn.loops import EpochProgress, StepContext, Tally, train_epoch, validate
from alexcli.core.nn.model import build_model
from alexcli.core.nn.optim import LrSchedule, make_optimizer
from alexcli.core.progress import Progress, Task
from alexcli.errors import ConfigError, DeviceError, Stopped, UserError
from alexcli.stages.datadir import DataDir, open_data_dir
from alexcli.stages.evaluate import check_classes
from alexcli.stages.stats import STATS_FILE, check_stats_current

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    """DATA_DIR as training reads it: the manifest, current stats, and their identity."""

    data: DataDir
    stats: Stats
    stats_fingerprint: str  # sha256 of stats.h5: what the run was normalised with


def open_inputs(data_dir: Path) -> Inputs:
    """DATA_DIR's manifest and its current stats (stale stats.h5 refused, naming the fix)."""
    data = open_data_dir(data_dir)
    stats = check_stats_current(data.root)
    return Inputs(data, stats, file_digest(data.root / STATS_FILE)[:16])


def check_fits(cfg: TrainConfig, data: DataDir, dist: Dist) -> None:
    """Refuse, in one line, a configuration that cannot run on this data."""
    if cfg.crop > data.size:
        raise ConfigError(
            f"crop {cfg.crop} is larger than the {data.size}×{data.size} images",
            hint=f"use --crop {data.size} or less",
        )
    n_train = data.images("train")
    if n_train < cfg.batch_size:
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the {n_train} training images",
            hint="use a smaller --batch-size",
        )
    if data.images("val") == 0:
        raise UserError(
            f"{data.root}: the validation split is empty", hint="prepare some val images"
        )
    if cfg.batch_size % dist.world:
        raise ConfigError(
            f"batch size {cfg.batch_size} does not split over {dist.world} processes",
            hint="the batch is global: make it a multiple of the process count",
        )
    cuda = "cuda" in cfg.devices or (cfg.devices == "auto" and torch.cuda.is_available())
    if cfg.amp == "fp16" and not cuda:
        raise DeviceError("--amp fp16 needs a CUDA device", hint="use --amp bf16 on a CPU")


# --------------------------------------------------------------------------- the loop

# Steps between DDP ranks' agreeing on whether a checkpoint is due (a broadcast of a
# pickled flag: a stall of every GPU if done each step).
AGREE_EVERY = 20


class TrainLoop:
    """The epochs: train, validate, schedule, checkpoint. One per `train()` call."""

    def __init__(
        self, cfg: TrainConfig, inputs: Inputs, run_dir: Path, dist: Dist, progress: Progress
    ) -> None:
        self.cfg, self.data, self.stats = cfg, inputs.data, inputs.stats
        self.upstream = {"prepare": inputs.data.fingerprint, "stats": inputs.stats_fingerprint}
        self.run_dir, self.dist, self.progress = run_dir, dist, progress
        self.metrics: list[dict[str, Any]] = []
        self.epochs_run = 0
        self.images_per_s = 0.0
        self.best: float | None = None
        self._images = 0
        self._seconds = 0.0
        self._task: Task | None = None
        self._val_task: Task | None = None
        self._first_epoch = 0
        self._resume_from: Checkpoint | None = None
        self.stop_requested = False  # set by SIGTERM: save at the next step and stop

    @property
    def last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def check_resume(self) -> None:
        """Read last.pt before anything in RUN_DIR changes, and refuse in one line a
        --resume it cannot continue: other classes, another network, more epochs done."""
        if not self.last.is_file():
            return
        ck = load_checkpoint(self.last)
        fix = "resume with the run's own settings and data, or start over with --force"
        try:
            check_classes(ck.classes, self.data.classes, self.data.root)
        except UserError as e:
            raise UserError(e.message, hint=fix) from None
        with torch.device("meta"):  # shapes only: nothing allocated, no RNG drawn
            now = {k: tuple(v.shape) for k, v in build_model(self.cfg.model)
                   .state_dict().items()}  # fmt: skip
        saved = {k: tuple(v.shape) for k, v in ck.model_state.items()}
        misfits = [k for k in now if now[k] != saved.get(k)] + [k for k in saved if k not in now]
        if misfits:
            key = misfits[0]
            raise ConfigError(
                f"{self.last}: its weights do not fit the network configured now "
                f"({key}: {saved.get(key, 'absent')} saved, {now.get(key, 'absent')} now)",
                hint=fix,
            )
        if (ck.epoch, ck.step) > (self.cfg.epochs, 0):
            done = f"{ck.epoch} epochs" + (f" and {ck.step} steps" if ck.step else "")
            raise ConfigError(
                f"{self.run_dir} has already trained {done}, more than the {self.cfg.epochs} "
                "epochs asked for",
                hint=f"resume with --epochs {ck.epoch + (ck.step > 0)} or more, or start over "
                "with --force",
            )
        self._resume_from = ck

    def run(self, *, resume: bool) -> dict[str, Any]:
        """Train from scratch, or from last.pt with `resume`; return the manifest body."""
        cfg = self.cfg
        devices = process_devices(cfg.devices, self.dist.local_rank)
        workers = cfg.workers if cfg.workers is not None else default_workers(self.dist.local_world)
        threads = torch.get_num_threads()
        if devices[0].type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # The loader workers have their cores; compute the rest. On a busy machine
            # more threads than free cores is 5–17× slower (docs/training.md).
            torch.set_num_threads(max(cpu_cores() // self.dist.local_world - workers, 1))
        try:
            ctx, epoch, state = self._setup(devices, resume)
            self._make_loaders(devices[0], workers)
            with keep_freed_memory(devices[0].type == "cpu"), _sigterm_requests_stop(self):
                for e in range(epoch, cfg.epochs):
                    self._epoch(ctx, e, state)
                    state = EpochProgress()
        finally:
            torch.set_num_threads(threads)
        self.images_per_s = self._images / self._seconds if self._seconds else 0.0
        return {
            "epochs": cfg.epochs,
            "best_val_top1_error": self.best,
            "final": self.metrics[-1] if self.metrics else None,
        }

    def _setup(
        self, devices: list[torch.device], resume: bool
    ) -> tuple[StepContext, int, EpochProgress]:
        """Model, optimizer, schedule (restored from last.pt with `resume`), DDP wrapper."""
        cfg = self.cfg
        _seed_everything(cfg.seed)
        self.model = build_model(cfg.model, devices)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.schedule = LrSchedule(
            cfg.lr, cfg.schedule, cfg.lr_drops, cfg.plateau_patience, cfg.lr_steps,
            cfg.warmup_epochs,
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        epoch, state = 0, EpochProgress()
        if resume and self.last.is_file():
            epoch, state = self._restore()
        net: nn.Module = self.model
        if self.dist.world > 1:
            single_cuda = len(devices) == 1 and devices[0].type == "cuda"
            net = DistributedDataParallel(self.model, device_ids=devices if single_cuda else None)
        normalize = Normalizer.create(
            self.stats.mean, self.stats.eigval, self.stats.eigvec, devices[0],
            lighting_scale=cfg.lighting_scale, input_scale=cfg.input_scale,
        )  # fmt: skip
        ctx = StepContext(
            net, self.optimizer, self.schedule, normalize, devices[0], cfg.amp, self.scaler,
            cfg.channels_last, self.dist.world,
        )  # fmt: skip
        return ctx, epoch, state

    def _make_loaders(self, device: torch.device, workers: int) -> None:
        cfg, data, d = self.cfg, self.data, self.dist
        pin = device.type == "cuda"
        self.train_sampler = EpochSampler(
            data.images("train"), cfg.batch_size, size=data.size, crop=cfg.crop,
            seed=cfg.seed, flip=cfg.flip, lighting_std=cfg.lighting_std,
            rank=d.rank, world=d.world,
        )  # fmt: skip
        self.val_sampler = EpochSampler(
            data.images("val"), cfg.batch_size, size=data.size, crop=cfg.crop,
            train=False, rank=d.rank, world=d.world,
        )  # fmt: skip
        train_set = CropDataset(data.shard_set("train"), cfg.crop)
        val_set = CropDataset(data.shard_set("val"), cfg.crop)
        self.train_loader = make_loader(
            train_set, self.train_sampler, workers=workers, pin_memory=pin
        )
        self.val_loader = make_loader(val_set, self.val_sampler, workers=workers, pin_memory=pin)

    def _epoch(self, ctx: StepContext, epoch: int, state: EpochProgress) -> None:
        cfg, steps = self.cfg, self.train_sampler.steps_per_epoch
        self.train_sampler.set_epoch(epoch, state.step)
        task = self._train_task(epoch, state.step)
        timer = {"saved": time.monotonic()}

        def after_step(s: EpochProgress) -> None:
            if s.step >= steps or (self.dist.world > 1 and s.step % AGREE_EVERY):
                return  # under DDP rank 0's clock is shared every few steps, not every step
            due = time.monotonic() - timer["saved"] >= cfg.checkpoint_minutes * 60
            if self.dist.agree(due or self.stop_requested):
                self._save(epoch, s)
                timer["saved"] = time.monotonic()
                if self.dist.agree(self.stop_requested):
                    raise Stopped(
                        f"stopped by SIGTERM in epoch {epoch + 1}, after step {s.step}: "
                        f"{self.last} holds it",
                        hint="the same command with --resume continues exactly from there",
                    )

        train_epoch(
            ctx, self.train_loader, epoch=epoch, steps_per_epoch=steps, state=state,
            task=task, after_step=after_step,
        )  # fmt: skip
        val = self._validate(ctx)
        # The lr this epoch trained at, read before "plateau" may drop it for the next.
        lr, drops = self.schedule.lr(epoch, steps - 1, steps), self.schedule.drops_at(epoch)
        self.schedule.end_epoch(val.top1_error)
        line = {
            "epoch": epoch + 1,
            "train_loss": state.loss,
            "val_top1_error": val.top1_error,
            "val_top5_error": val.top5_error,
            "val_loss": val.loss,
            "lr": lr,
            "images_per_s": state.images / state.seconds if state.seconds else 0.0,
            "seconds": state.seconds,
            "lr_drops": drops,
        }
        self.metrics.append(line)
        improved = self.best is None or val.top1_error < self.best
        self.best = val.top1_error if improved else self.best
        self._save(epoch + 1, EpochProgress(), best=improved)
        self.epochs_run += 1
        self._images += state.images
        self._seconds += state.seconds
        self.progress.log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {state.loss:.4f}, val top-1 error "
            f"{val.top1_error:.4f}, top-5 {val.top5_error:.4f}, lr {line['lr']:.3g}, "
            f"{line['images_per_s']:.0f} images/s"
        )

    def _train_task(self, epoch: int, step: int) -> Task:
        """One bar for the whole run (its ETA is the run's), created at the first epoch."""
        if self._task is None:
            steps = self.train_sampler.steps_per_epoch
            self._first_epoch = epoch
            total = steps * (self.cfg.epochs - epoch)
            self._task = self.progress.task("training", total=total, unit="steps")
            self._task.advance(step)
        return self._task

    def _validate(self, ctx: StepContext) -> Tally:
        if self._val_task is None:  # one bar for every validation pass of this call
            total = len(self.val_sampler) * (self.cfg.epochs - self._first_epoch)
            self._val_task = self.progress.task("validation", total=total, unit="batches")
        task = self._val_task
        self.val_sampler.set_epoch(0)
        counts = validate(
            ctx.model, self.val_loader, ctx.normalize, ctx.device,
            num_classes=len(self.data.classes), amp=ctx.amp,
            channels_last=ctx.channels_last, task=task,
        )  # fmt: skip
        return counts.all_reduce(ctx.device)

    # ----------------------------------------------------------------------- checkpoints

    def _save(self, epoch: int, state: EpochProgress, *, best: bool = False) -> None:
        """last.pt (and best.pt first when `best`: a kill between the two leaves last.pt
        older, never best.pt); then metrics.jsonl. Rank 0 writes; all ranks' RNG kept."""
        rngs = self._gather_rng()
        if self.dist.rank != 0:
            return
        payload = self._payload(epoch, state, rngs)
        if best:
            save_checkpoint(self.run_dir / "checkpoints" / "best.pt", payload)
            copy_checkpoint(self.run_dir / "checkpoints" / "best.pt", self.last)
        else:
            save_checkpoint(self.last, payload)
        write_metrics(self.run_dir, self.metrics)

    def _gather_rng(self) -> list[dict[str, Any]]:
        if self.dist.world == 1:
            return [rng_state()]
        states: list[Any] = [None] * self.dist.world
        torch_dist.all_gather_object(states, rng_state())
        return states

    def _payload(
        self, epoch: int, state: EpochProgress, rngs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        cfg, stats = self.cfg, self.stats
        return {
            "config": to_dict(cfg),
            "classes": self.data.classes,
            "size": self.data.size,
            "mean": torch.as_tensor(stats.mean, dtype=torch.float32),
            "eigval": torch.as_tensor(stats.eigval, dtype=torch.float32),
            "eigvec": torch.as_tensor(stats.eigvec, dtype=torch.float32),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,
            "step": state.step,
            "sampler": {"epoch": epoch, "position": state.step * cfg.batch_size, "seed": cfg.seed},
            "epoch_progress": state.state_dict(),
            "rng": rngs[0],
            "rank_rng": rngs,
            "world": self.dist.world,
            "best_top1": self.best,
            "metrics": self.metrics,
            "upstream": self.upstream,
        }

    def _restore(self) -> tuple[int, EpochProgress]:
        """Everything last.pt saved, back in place; the (epoch, progress) to go on from."""
        ck, self._resume_from = self._resume_from or load_checkpoint(self.last), None
        p = ck.payload
        self.model.load_state_dict(ck.model_state)
        self.optimizer.load_state_dict(p["optimizer"])
        _match_layouts(self.optimizer)
        self.schedule.load_state_dict(p["scheduler"])
        if self.scaler is not None and p.get("scaler"):
            self.scaler.load_state_dict(p["scaler"])
        rank_rng = p.get("rank_rng") or [p["rng"]]
        same_world = int(p.get("world", 1)) == self.dist.world
        set_rng_state(rank_rng[self.dist.rank] if same_world else p["rng"])
        self.best = ck.best_top1
        self.metrics = ck.metrics
        state = EpochProgress(**p.get("epoch_progress", {"step": ck.step}))
        self.progress.log(f"resuming from {self.last}: epoch {ck.epoch + 1}, step {ck.step}")
        return ck.epoch, state


@contextlib.contextmanager
def _sigterm_requests_stop(loop: TrainLoop) -> Iterator[None]:
    """SIGTERM (a scheduler preempting the job, `kill`) sets `loop.stop_requested`: the
    next step saves last.pt and stops (`Stopped`) instead of dying mid-step. Only the
    main thread can hold a handler; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, frame: object) -> None:
        loop.stop_requested = True

    before = signal.signal(signal.SIGTERM, request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Momentum buffers in their parameter's memory layout: a run saved with another
    `channels_last` has them in the other one, which CUDA's fused SGD refuses."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            buf = state.get("momentum_buffer")
            if isinstance(buf, torch.Tensor) and buf.stride() != param.stride():
                state["momentum_buffer"] = torch.empty_like(param).copy_(buf)


def _seed_everything(seed: int) -> None:
    """Model init and dropout (torch), and numpy / random for anything else."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def write_metrics(run_dir: Path, metrics: list[dict[str, Any]]) -> None:
    """metrics.jsonl, rewritten whole (atomically) from the checkpointed list each epoch:
    a kill between a checkpoint and this write loses nothing on resume."""
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))


def copy_checkpoint(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
