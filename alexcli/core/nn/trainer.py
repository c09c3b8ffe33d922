"""The epochs of one training run: train, validate, schedule, checkpoint (docs/paper.md
"Learning"). The stage (stages/train/) checks the inputs and decides whether to
train; a `Trainer` does the training and writes last.pt, best.pt and metrics.jsonl.

Exact resume rests on three things: every random decision of the data pipeline is a
function of (seed, epoch, position) (`batches.EpochSampler`); the only other randomness,
dropout, draws from torch's global RNG, whose state every checkpoint saves (per rank
under DDP); and nothing else touches that RNG between steps (the DataLoaders get
generators of their own: `iter(loader)` would otherwise draw a worker seed from it).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.random  # now, not lazily mid-setup: that import can lose a Ctrl-C
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alexcli.config import TrainConfig
from alexcli.core.atomic import atomic_path, write_text
from alexcli.core.data.batches import CropDataset, EpochSampler
from alexcli.core.data.loader import BatchLoader, default_workers, make_loader
from alexcli.core.data.shards import ShardSet
from alexcli.core.data.transforms import Normalizer
from alexcli.core.machine import cpu_cores, keep_freed_memory, native_bf16
from alexcli.core.nn.checkpoint import (
    Checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from alexcli.core.nn.distributed import Dist, process_devices
from alexcli.core.nn.events import TrainEvents, sigterm_requests_stop
from alexcli.core.nn.flat import Flatness, Watch
from alexcli.core.nn.loops import (
    EpochProgress,
    StepContext,
    Tally,
    compiled,
    train_epoch,
    validate,
)
from alexcli.core.nn.model import AlexNet, build_model
from alexcli.core.nn.optim import LrSchedule, make_optimizer, match_layouts
from alexcli.core.nn.threads import choose_threads
from alexcli.core.progress import SILENT, Progress, Task
from alexcli.core.rundir import RunDir
from alexcli.errors import Stopped

# Steps between DDP ranks' agreeing on whether a checkpoint is due (a broadcast of a
# pickled flag: a stall of every GPU if done each step).
AGREE_EVERY = 20
log = logging.getLogger(__name__)


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
    """What one `run` sets up: the network, its optimizer, and the batches."""

    model: AlexNet
    optimizer: torch.optim.SGD
    schedule: LrSchedule
    scaler: torch.amp.GradScaler | None
    ctx: StepContext
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
        self.stop_requested = False  # set by SIGTERM: save at the next step and stop
        self._images = 0
        self._seconds = 0.0
        self._task: Task | None = None  # one bar for the run's steps…
        self._val_task: Task | None = None  # …and one for its validation passes
        self._first_epoch = 0
        self.watch = Watch(cfg.stop_if_flat)  # flat and diverging epochs, said once
        self.threads: int | None = None  # CPU compute threads, recorded in checkpoints

    @property
    def last(self) -> Path:
        return RunDir(self.run_dir).last

    def run(self) -> None:
        """Every remaining epoch; `metrics`, `best` and `images_per_s` say how it went."""
        cfg = self.cfg
        devices = process_devices(cfg.devices, self.dist.local_rank)
        workers = cfg.workers if cfg.workers is not None else default_workers(self.dist.local_world)
        threads = torch.get_num_threads()
        log.debug(
            "train: devices %s, rank %d of %d, %d loader worker(s), %d compute thread(s)",
            ", ".join(map(str, devices)),
            self.dist.rank,
            self.dist.world,
            workers,
            threads,
        )
        choice = None
        if devices[0].type == "cpu":
            recorded = self.resume_from.threads if self.resume_from is not None else None
            cores = cpu_cores() // self.dist.local_world
            choice = choose_threads(
                cfg.model, cfg.channels_last, cfg.threads, recorded, cores, workers
            )
        if choice is not None:
            torch.set_num_threads(choice.threads)
            self.threads = choice.threads
            self.progress.log(f"training on the CPU with {choice.describe()}")
            if cfg.amp == "bf16" and native_bf16() is False:
                self.progress.log(
                    "warning: this CPU has no native bf16 (no AVX512_BF16 or AMX): torch "
                    "emulates it and --amp bf16 runs slower than fp32 here (--amp off)"
                )
        try:
            parts = self._setup(devices, workers)
            epoch, state = 0, EpochProgress()
            if self.resume_from is not None:
                epoch, state = self._restore(parts, self.resume_from)
            if self.events is not None:
                self.events.start(epoch * parts.train_sampler.steps_per_epoch + state.step)
            with keep_freed_memory(devices[0].type == "cpu"), sigterm_requests_stop(self):
                for e in range(epoch, cfg.epochs):
                    self._epoch(parts, e, state)
                    state = EpochProgress()
        finally:
            torch.set_num_threads(threads)
            if self.events is not None:
                self.events.close()
        self.images_per_s = self._images / self._seconds if self._seconds else 0.0

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
        ctx = StepContext(
            net,
            optimizer,
            schedule,
            normalizer(devices[0]),
            devices[0],
            cfg.amp,
            scaler,
            cfg.channels_last,
            d.world,
            tower_devices=towers,
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
        train_loader = make_loader(
            CropDataset(data.train, crop), train_sampler, workers=workers, pin_memory=pin
        )
        val_loader = make_loader(
            CropDataset(data.val, crop), val_sampler, workers=workers, pin_memory=pin
        )
        return _Parts(
            model,
            optimizer,
            schedule,
            scaler,
            ctx,
            train_sampler,
            val_sampler,
            train_loader,
            val_loader,
        )

    def _epoch(self, parts: _Parts, epoch: int, state: EpochProgress) -> None:
        cfg, steps = self.cfg, parts.train_sampler.steps_per_epoch
        parts.train_sampler.set_epoch(epoch, state.step)
        task = self._train_task(epoch, state.step, steps)
        timer = {"saved": time.monotonic()}
        logged = {"loss_sum": state.loss_sum}
        schedule = parts.schedule

        def after_step(s: EpochProgress) -> None:
            if self.events is not None:
                loss, logged["loss_sum"] = s.loss_sum - logged["loss_sum"], s.loss_sum
                lr = schedule.lr(epoch, s.step - 1, steps)
                self.events.step(epoch * steps + s.step, loss, lr)
            if s.step >= steps:
                return  # the epoch's end saves
            # Every rank counts steps alike; rank 0's clock is shared every few steps.
            every = cfg.checkpoint_every
            counted = every > 0 and (epoch * steps + s.step) % every == 0
            if self.dist.world > 1 and s.step % AGREE_EVERY and not counted:
                return
            clock = time.monotonic() - timer["saved"] >= cfg.checkpoint_minutes * 60
            due = counted or clock
            if self.dist.agree(due or self.stop_requested):
                self._save(parts, epoch, s)
                timer["saved"] = time.monotonic()
                if self.dist.agree(self.stop_requested):
                    raise Stopped(
                        f"stopped by SIGTERM in epoch {epoch + 1}, after step {s.step}: "
                        f"{self.last} holds it",
                        hint="the same command with --resume continues exactly from there",
                    )

        train_epoch(
            parts.ctx,
            parts.train_loader,
            epoch=epoch,
            steps_per_epoch=steps,
            state=state,
            task=task,
            after_step=after_step,
        )
        val = self._validate(parts)
        # The lr this epoch trained at, read before "plateau" may drop it for the next.
        lr, drops = schedule.lr(epoch, steps - 1, steps), schedule.drops_at(epoch)
        warming = " (warming up)" if schedule.warming_up(epoch, steps - 1, steps) else ""
        schedule.end_epoch(val.top1_error, epoch)
        after = schedule.lr(epoch + 1, 0, steps) if epoch + 1 < cfg.epochs else lr
        drop = ""
        if after < lr * 0.99:  # the factor applied, as it is: two drops at once say ÷100
            drop = f"; lr ÷{lr / after:.3g} → {after:.3g} from epoch {epoch + 2}"
        line = {
            "epoch": epoch + 1,
            "train_loss": state.loss,
            "train_top1_error": state.top1_error,
            "val_top1_error": val.top1_error,
            "val_top5_error": val.top5_error,
            "val_loss": val.loss,
            "lr": lr,
            "images_per_s": state.images / state.seconds if state.seconds else 0.0,
            "seconds": state.seconds,
            "lr_drops": drops,
            "threads": self.threads,
        }
        flat = Flatness(len(self.data.classes), state.loss, val.top1_error, val.images, val.loss)
        line["flat"] = flat.flat
        line["diverging"] = flat.diverging
        self.metrics.append(line)
        improved = self.best is None or val.top1_error < self.best
        self.best = val.top1_error if improved else self.best
        self._save(parts, epoch + 1, EpochProgress(), best=improved)
        if self.events is not None:
            self.events.epoch((epoch + 1) * steps, line, parts.model.conv1_weight())
        self.epochs_run += 1
        self._images += state.images
        self._seconds += state.seconds
        self.progress.log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {state.loss:.4f}, val top-1 error "
            f"{val.top1_error:.4f}, top-5 {val.top5_error:.4f}, lr {lr:.3g}{warming}, "
            f"{line['images_per_s']:.0f} images/s{drop}"
        )
        if epoch + 1 < cfg.epochs and self.dist.agree(self.stop_requested):
            raise Stopped(  # SIGTERM during validation: the epoch's save holds it all
                f"stopped by SIGTERM after epoch {epoch + 1}: {self.last} holds it",
                hint="the same command with --resume continues exactly from there",
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

    def _validate(self, parts: _Parts) -> Tally:
        if self._val_task is None:  # one bar for every validation pass of this call
            total = len(parts.val_sampler) * (self.cfg.epochs - self._first_epoch)
            self._val_task = self.progress.task("validation", total=total, unit="batches")
        parts.val_sampler.set_epoch(0)
        ctx = parts.ctx
        return validate(
            ctx.model,
            parts.val_loader,
            ctx.normalize,
            ctx.device,
            num_classes=len(self.data.classes),
            amp=ctx.amp,
            channels_last=ctx.channels_last,
            task=self._val_task,
        )

    # ----------------------------------------------------------------------- checkpoints

    def _save(self, parts: _Parts, epoch: int, state: EpochProgress, *, best: bool = False) -> None:
        """last.pt (and best.pt first when `best`: a kill between the two leaves last.pt
        older, never best.pt); then metrics.jsonl. Rank 0 writes; all ranks' RNG kept."""
        rngs = self._gather_rng(parts)
        if self.dist.rank != 0:
            return
        data = self.data
        checkpoint = Checkpoint(
            config=self.cfg,
            classes=data.classes,
            size=data.size,
            mean=data.mean,
            eigval=data.eigval,
            eigvec=data.eigvec,
            weights=parts.model.state_dict(),
            epoch=epoch,
            step=state.step,
            optimizer=parts.optimizer.state_dict(),
            scheduler=parts.schedule.state_dict(),
            scaler=parts.scaler.state_dict() if parts.scaler is not None else None,
            epoch_progress=state.state_dict(),
            rank_rng=rngs,
            best_top1=self.best,
            metrics=self.metrics,
            upstream=data.upstream,
            threads=self.threads,
        )
        if best:
            save_checkpoint(RunDir(self.run_dir).best, checkpoint)
            copy_checkpoint(RunDir(self.run_dir).best, self.last)
        else:
            save_checkpoint(self.last, checkpoint)
        write_metrics(self.run_dir, self.metrics)

    def _gather_rng(self, parts: _Parts) -> list[dict[str, Any]]:
        cuda = any(d.type == "cuda" for d in parts.model.devices)
        if self.dist.world == 1:
            return [rng_state(cuda)]
        states: list[Any] = [None] * self.dist.world
        torch_dist.all_gather_object(states, rng_state(cuda))
        return states

    def _restore(self, parts: _Parts, ck: Checkpoint) -> tuple[int, EpochProgress]:
        """Everything last.pt saved, back in place; the (epoch, progress) to go on from."""
        parts.model.load_state_dict(ck.weights)
        if ck.optimizer is not None:
            parts.optimizer.load_state_dict(ck.optimizer)
            match_layouts(parts.optimizer)
        if ck.scheduler is not None:
            parts.schedule.load_state_dict(ck.scheduler)
        if parts.scaler is not None and ck.scaler:
            parts.scaler.load_state_dict(ck.scaler)
        if ck.rank_rng:  # this rank's own stream when the job has the same size
            same_world = ck.world == self.dist.world
            set_rng_state(ck.rank_rng[self.dist.rank] if same_world else ck.rank_rng[0])
        self.best = ck.best_top1
        self.metrics = list(ck.metrics)
        saved = dict(ck.epoch_progress)
        saved.setdefault("hits", None if saved.get("step") else 0)  # older checkpoints: unknown
        state = EpochProgress(**saved)
        self.progress.log(f"resuming from {self.last}: epoch {ck.epoch + 1}, step {ck.step}")
        return ck.epoch, state


def write_metrics(run_dir: Path, metrics: list[dict[str, Any]]) -> None:
    """metrics.jsonl, rewritten whole (atomically) from the checkpointed list each epoch:
    a kill between a checkpoint and this write loses nothing on resume."""
    write_text(RunDir(run_dir).metrics_file, "".join(json.dumps(m) + "\n" for m in metrics))


def copy_checkpoint(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
