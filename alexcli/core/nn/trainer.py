"""The epochs of one training run: train, validate, schedule, checkpoint (docs/paper.md
"Learning"). The stage (stages/train/) checks the inputs and decides whether to
train; a `Trainer` does the training and writes last.pt, best.pt and metrics.jsonl.

`Trainer.run` is the loop, read from top to bottom as pytorch/examples' imagenet
`main_worker` with its `train()` and `validate()`, or nanoGPT's loop: set up, restore,
then for each epoch its steps (`_train`: each step counted, a checkpoint when one is
due), validation, the schedule and the epoch's record and checkpoint (`_end_epoch`).
What a checkpoint holds and when one is due is core/nn/runstate.py; one SGD step is
core/nn/loops.py.

Exact resume rests on three things: every random decision of the data pipeline is a
function of (seed, epoch, position) (`batches.EpochSampler`); the only other randomness,
dropout, draws from torch's global RNG, whose state every checkpoint saves (per rank
under DDP); and nothing else touches that RNG between steps (the DataLoaders get
generators of their own: `iter(loader)` would otherwise draw a worker seed from it).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.random  # now, not lazily mid-setup: that import can lose a Ctrl-C
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alexcli.config import TrainConfig
from alexcli.core.data.batches import CropDataset, EpochSampler
from alexcli.core.data.loader import BatchLoader, default_workers, make_loader
from alexcli.core.data.shards import ShardSet
from alexcli.core.data.transforms import Normalizer
from alexcli.core.machine import cpu_cores, keep_freed_memory, native_bf16
from alexcli.core.nn.checkpoint import Checkpoint, seed_everything
from alexcli.core.nn.distributed import Dist, process_devices
from alexcli.core.nn.events import TrainEvents, sigterm_requests_stop
from alexcli.core.nn.flat import Flatness, Watch
from alexcli.core.nn.loops import (
    EpochProgress,
    NetworkInput,
    Tally,
    compiled,
    train_steps,
    validate,
)
from alexcli.core.nn.model import build_model
from alexcli.core.nn.optim import LrSchedule, make_optimizer
from alexcli.core.nn.runstate import CheckpointPolicy, TrainState, gather_rng, save_run
from alexcli.core.nn.threads import choose_threads
from alexcli.core.progress import SILENT, Progress, Task
from alexcli.core.rundir import RunDir
from alexcli.errors import Stopped

log = logging.getLogger(__name__)
_RESUME = "the same command with --resume continues exactly from there"


@dataclass(frozen=True)
class TrainData:
    """What training reads of a prepared DATA_DIR, as explicit values."""

    train: ShardSet
    val: ShardSet
    size: int  # the stored images' side
    classes: list[dict[str, str]]
    mean: np.ndarray  # (size, size, 3), 0–255
    eigval: np.ndarray  # (3,), 0–255² units
    eigvec: np.ndarray  # (3, 3)
    upstream: dict[str, str]  # the prepare and stats identities the run was trained on


@dataclass
class _Parts:
    """What one `run` sets up: what SGD changes, the network it calls (under DDP and
    torch.compile), how a batch becomes its input, and the batches."""

    state: TrainState
    net: nn.Module  # `state.model`, wrapped for DDP and --compile when asked
    inputs: NetworkInput
    train_sampler: EpochSampler
    val_sampler: EpochSampler
    train_loader: BatchLoader
    val_loader: BatchLoader


class Trainer:
    """Trains per `cfg` into `run_dir`, from scratch or from `resume_from` (last.pt, read
    and checked by the stage). Under torchrun every rank runs one; rank 0 writes."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: TrainData,
        run_dir: Path,
        dist: Dist,
        progress: Progress = SILENT,
        resume_from: Checkpoint | None = None,
        events: TrainEvents | None = None,
    ) -> None:
        self.cfg, self.data, self.run_dir = cfg, data, run_dir
        self.dist, self.progress, self.resume_from = dist, progress, resume_from
        self.events = events
        self.metrics: list[dict[str, Any]] = []  # one line per finished epoch
        self.epochs_run = 0  # in this call
        self.images_per_s = 0.0  # over this call's epochs, all ranks
        self.best: float | None = None  # the lowest validation top-1 error so far
        self.checkpoints = CheckpointPolicy(cfg.checkpoint_every, cfg.checkpoint_minutes, dist)
        self.watch = Watch(cfg.stop_if_flat)  # flat and diverging epochs, said once
        self.threads: int | None = None  # CPU compute threads, recorded in checkpoints
        self._images = 0
        self._seconds = 0.0
        self._task: Task | None = None  # one bar for the run's steps…
        self._val_task: Task | None = None  # …and one for its validation passes
        self._first_epoch = 0

    @property
    def last(self) -> Path:
        return RunDir(self.run_dir).last

    def run(self) -> None:
        """Every remaining epoch; `metrics`, `best` and `images_per_s` say how it went."""
        cfg = self.cfg
        devices = process_devices(cfg.devices, self.dist.local_rank)
        workers = cfg.workers if cfg.workers is not None else default_workers(self.dist.local_world)
        with self._compute_threads(devices, workers), self._events():
            parts = self._setup(devices, workers)
            start, totals = 0, EpochProgress()
            if self.resume_from is not None:
                start, totals = self._restore(parts.state, self.resume_from)
            if self.events is not None:
                self.events.start(start * parts.train_sampler.steps_per_epoch + totals.step)
            self.checkpoints.saved()  # the clock starts with the training
            with (
                keep_freed_memory(devices[0].type == "cpu"),
                sigterm_requests_stop(self.checkpoints),
            ):
                for epoch in range(start, cfg.epochs):
                    self._train(parts, epoch, totals)
                    val = self._validate(parts)
                    self._end_epoch(parts, epoch, totals, val)
                    totals = EpochProgress()
        self.images_per_s = self._images / self._seconds if self._seconds else 0.0

    # ---------------------------------------------------------------------- one epoch

    def _train(self, parts: _Parts, epoch: int, totals: EpochProgress) -> None:
        """The steps of `epoch` after `totals.step`: each one counted into `totals` once
        its loss is read, then, between two steps, a checkpoint when one is due."""
        cfg, state = self.cfg, parts.state
        steps = parts.train_sampler.steps_per_epoch
        parts.train_sampler.set_epoch(epoch, totals.step)
        task = self._train_task(epoch, totals.step, steps)
        reads = train_steps(
            parts.net,
            state.optimizer,
            parts.inputs,
            parts.train_loader,
            totals,
            epoch=epoch,
            lr=lambda step: state.schedule.lr(epoch, step, steps),
            amp=cfg.amp,
            scaler=state.scaler,
            world=self.dist.world,
            clip_grad_norm=cfg.clip_grad_norm,
            max_step_norm=cfg.max_step_norm,
        )
        for read in reads:  # the weights hold exactly `totals.step` updates here
            done = epoch * steps + totals.step
            img_s = round(totals.images_per_s)
            task.advance(1, epoch=epoch + 1, loss=read.loss, lr=read.lr, img_s=img_s)
            if self.events is not None:
                self.events.step(done, read.loss, read.lr)
            if totals.step < steps and self.checkpoints.due(done, totals.step):  # the end saves
                self._save(parts, epoch, totals)
                if self.checkpoints.stopping():
                    raise Stopped(
                        f"stopped by SIGTERM in epoch {epoch + 1}, after step {totals.step}: "
                        f"{self.last} holds it",
                        hint=_RESUME,
                    )

    def _validate(self, parts: _Parts) -> Tally:
        if self._val_task is None:  # one bar for every validation pass of this call
            total = len(parts.val_sampler) * (self.cfg.epochs - self._first_epoch)
            self._val_task = self.progress.task("validation", total=total, unit="batches")
        parts.val_sampler.set_epoch(0)
        return validate(
            parts.net,
            parts.val_loader,
            parts.inputs.normalize,
            parts.inputs.device,
            num_classes=len(self.data.classes),
            amp=self.cfg.amp,
            channels_last=self.cfg.channels_last,
            task=self._val_task,
        )

    def _end_epoch(self, parts: _Parts, epoch: int, totals: EpochProgress, val: Tally) -> None:
        """The schedule's step, the epoch's metrics.jsonl line, its checkpoint (best.pt
        too when validation improved), and what the log says of it."""
        cfg, schedule = self.cfg, parts.state.schedule
        steps = parts.train_sampler.steps_per_epoch
        # The lr this epoch ended at, read before "plateau" may drop it for the next.
        lr, drops = schedule.lr(epoch, steps - 1, steps), schedule.drops_at(epoch, steps - 1, steps)
        warming = " (warming up)" if schedule.warming_up(epoch, steps - 1, steps) else ""
        schedule.end_epoch(val.top1_error, epoch)
        drop = "".join(f"; {d}" for d in schedule.drops_ahead(epoch, steps, drops))
        flat = Flatness(len(self.data.classes), totals.loss, val.top1_error, val.images, val.loss)
        line = {
            "epoch": epoch + 1,
            "train_loss": totals.loss,
            "train_top1_error": totals.top1_error,
            "val_top1_error": val.top1_error,
            "val_top5_error": val.top5_error,
            "val_loss": val.loss,
            "lr": lr,
            "images_per_s": totals.images_per_s,
            "seconds": totals.seconds,
            "lr_drops": drops,
            "threads": self.threads,
            "flat": flat.flat,
            "diverging": flat.diverging,
        }
        self.metrics.append(line)
        improved = self.best is None or val.top1_error < self.best
        self.best = val.top1_error if improved else self.best
        self._save(parts, epoch + 1, EpochProgress(), best=improved)
        if self.events is not None:
            self.events.epoch((epoch + 1) * steps, line, parts.state.model.conv1_weight())
        self.epochs_run += 1
        self._images += totals.images
        self._seconds += totals.seconds
        self.progress.log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {totals.loss:.4f}, val top-1 error "
            f"{val.top1_error:.4f}, top-5 {val.top5_error:.4f}, lr {lr:.3g}{warming}, "
            f"{totals.images_per_s:.0f} images/s{drop}"
        )
        if epoch + 1 < cfg.epochs and self.checkpoints.stopping():
            raise Stopped(  # SIGTERM during validation: the epoch's save holds it all
                f"stopped by SIGTERM after epoch {epoch + 1}: {self.last} holds it",
                hint=_RESUME,
            )
        for warning in self.watch.warnings(flat, epoch + 1, lr, cfg.batch_size):
            self.progress.log(warning)

    def _train_task(self, epoch: int, step: int, steps: int) -> Task:
        """One bar for the whole run (its ETA is the run's), created at the first epoch."""
        if self._task is None:
            self._first_epoch = epoch
            total = steps * (self.cfg.epochs - epoch)
            self._task = self.progress.task("training", total=total, unit="steps")
            self._task.advance(step)
        return self._task

    # ------------------------------------------------------------------ checkpoints

    def _save(
        self, parts: _Parts, epoch: int, totals: EpochProgress, *, best: bool = False
    ) -> None:
        """The run as it stands into last.pt (and best.pt) and metrics.jsonl: rank 0
        writes, with every rank's RNG states."""
        state, data = parts.state, self.data
        rngs = gather_rng(self.dist, any(d.type == "cuda" for d in state.model.devices))
        if self.dist.rank == 0:
            checkpoint = Checkpoint(
                config=self.cfg,
                classes=data.classes,
                size=data.size,
                mean=data.mean,
                eigval=data.eigval,
                eigvec=data.eigvec,
                weights=state.model.state_dict(),
                epoch=epoch,
                step=totals.step,
                optimizer=state.optimizer.state_dict(),
                scheduler=state.schedule.state_dict(),
                scaler=state.scaler.state_dict() if state.scaler is not None else None,
                epoch_progress=totals.state_dict(),
                rank_rng=rngs,
                best_top1=self.best,
                metrics=self.metrics,
                upstream=data.upstream,
                threads=self.threads,
            )
            save_run(self.run_dir, checkpoint, best=best)
        self.checkpoints.saved()

    def _restore(self, state: TrainState, ck: Checkpoint) -> tuple[int, EpochProgress]:
        """Everything last.pt saved, back in place; the (epoch, progress) to go on from."""
        totals = state.restore(ck, self.dist)
        self.best = ck.best_top1
        self.metrics = list(ck.metrics)
        self.progress.log(f"resuming from {self.last}: epoch {ck.epoch + 1}, step {ck.step}")
        return ck.epoch, totals

    # ------------------------------------------------------------------------ set-up

    def _setup(self, devices: list[torch.device], workers: int) -> _Parts:
        """Model, optimizer, schedule, DDP wrapper, normaliser and loaders."""
        cfg, data, d = self.cfg, self.data, self.dist
        seed_everything(cfg.seed)
        model = build_model(cfg.model, devices)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        optimizer = make_optimizer(
            model, cfg.lr, cfg.momentum, cfg.weight_decay, scaled=cfg.amp == "fp16"
        )
        schedule = LrSchedule(
            cfg.lr,
            cfg.schedule,
            cfg.lr_drops,
            cfg.plateau_patience,
            cfg.lr_steps,
            cfg.warmup_epochs,
            epochs=cfg.epochs,
        )
        scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        net: nn.Module = model
        if d.world > 1:
            single_cuda = len(devices) == 1 and devices[0].type == "cuda"
            net = DistributedDataParallel(model, device_ids=devices if single_cuda else None)
        if cfg.compile:  # the DDP wrapper too: its buckets split the compiled graph
            net = compiled(net)

        normalizer = functools.partial(
            Normalizer.create,
            data.mean,
            data.eigval,
            data.eigvec,
            lighting_scale=cfg.lighting_scale,
            input_scale=cfg.input_scale,
        )
        towers = tuple(model.devices)
        inputs = NetworkInput(
            normalizer(devices[0]),
            cfg.channels_last,
            towers,
            elsewhere={t: normalizer(t) for t in dict.fromkeys(towers) if t != devices[0]},
        )
        crop, pin = cfg.crop, devices[0].type == "cuda"
        train_sampler = EpochSampler(
            len(data.train),
            cfg.batch_size,
            size=data.size,
            crop=crop,
            seed=cfg.seed,
            flip=cfg.flip,
            random_crop=cfg.random_crop,
            lighting_std=cfg.lighting_std,
            rank=d.rank,
            world=d.world,
        )
        val_sampler = EpochSampler(
            len(data.val),
            cfg.batch_size,
            size=data.size,
            crop=crop,
            train=False,
            rank=d.rank,
            world=d.world,
        )
        return _Parts(
            TrainState(model, optimizer, schedule, scaler),
            net,
            inputs,
            train_sampler,
            val_sampler,
            make_loader(
                CropDataset(data.train, crop), train_sampler, workers=workers, pin_memory=pin
            ),
            make_loader(CropDataset(data.val, crop), val_sampler, workers=workers, pin_memory=pin),
        )

    @contextlib.contextmanager
    def _compute_threads(self, devices: list[torch.device], workers: int) -> Iterator[None]:
        """On a CPU, the compute threads `choose_threads` picks (or the run recorded) while
        the run trains; the count before comes back after."""
        cfg, before = self.cfg, torch.get_num_threads()
        log.debug(
            "train: devices %s, rank %d of %d, %d loader worker(s), %d compute thread(s)",
            ", ".join(map(str, devices)),
            self.dist.rank,
            self.dist.world,
            workers,
            before,
        )
        if devices[0].type == "cpu":
            recorded = self.resume_from.threads if self.resume_from is not None else None
            cores = cpu_cores() // self.dist.local_world
            choice = choose_threads(
                cfg.model, cfg.channels_last, cfg.threads, recorded, cores, workers
            )
            torch.set_num_threads(choice.threads)
            self.threads = choice.threads
            self.progress.log(f"training on the CPU with {choice.describe()}")
            if cfg.amp == "bf16" and native_bf16() is False:
                self.progress.log(
                    "warning: this CPU has no native bf16 (no AVX512_BF16 or AMX): torch "
                    "emulates it and --amp bf16 runs slower than fp32 here (--amp off)"
                )
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @contextlib.contextmanager
    def _events(self) -> Iterator[None]:
        """The watcher (TensorBoard) closed when the run ends, however it ends."""
        try:
            yield
        finally:
            if self.events is not None:
                self.events.close()
