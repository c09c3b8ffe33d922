"""The loops that run the network over batches: docs/paper.md "Learning" and "Reducing
overfitting" (the test-time views).

- `train_epoch`: SGD steps over training batches (the update rule and schedule:
  core/nn/optim.py), the next batch copied while one computes (core/data/transfer.py).
  A NaN or infinite loss stops training with `TrainingDiverged` before anything that
  holds it is saved (core/nn/readout.py: on a CPU before its update).
- `validate`: the centre crops the loader cut, loss and top-1/top-5, each epoch.
- `evaluate_views`: the paper's test on whole stored images: "extracting five 224×224
  patches (the four corner patches and the center patch) as well as their horizontal
  reflections (hence ten patches in all), and averaging the predictions made by the
  network's softmax layer on the ten patches". The average is over probabilities, not
  logits (`average_softmax`): a view very sure of a class cannot outvote the others by
  the size of its logits. One view is the centre patch alone. The views are cut on the
  device and normalised as in training (`transforms.iter_views`), one view at a time,
  so memory holds one view's floats.
- `centre_features`: fc7 of the centre patch, the vectors Figure 4 compares.

Every pass counts into one `Tally` (overall and per class). Batches arrive as uint8
crops (`batches.Batch`); `transforms.Normalizer` makes the float input on the device.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from alexcli.core.data.batches import Batch
from alexcli.core.data.transfer import prefetched
from alexcli.core.data.transforms import Normalizer, iter_views
from alexcli.core.nn.devices import send
from alexcli.core.nn.inference import ThreadTuner, inference, timed
from alexcli.core.nn.model import AlexNet
from alexcli.core.nn.optim import LrSchedule, set_lr
from alexcli.core.nn.readout import StepRead, StepValues, check_finite
from alexcli.core.progress import SILENT, Task

Amp = Literal["off", "bf16", "fp16"]
TOP = 5  # the paper's top-5


# torch.compile's backend for `--compile`: its default, inductor (tests trace with "eager").
COMPILE_BACKEND = "inductor"


def compiled(model: nn.Module) -> nn.Module:
    """`model` through torch.compile (`--compile`): called as `model` is, its forward (and
    so its backward) run as the kernels inductor generates for the shapes it meets; each
    new batch shape compiles once more. The weights stay `model`'s own."""
    return cast(nn.Module, torch.compile(model, backend=COMPILE_BACKEND))


def autocast(device: torch.device, amp: Amp) -> contextlib.AbstractContextManager[Any]:
    """torch.autocast for `--amp bf16|fp16` (bf16 on CPUs with AVX512_BF16 or AMX), else nothing."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class StepContext:
    """What every step needs besides the batch; built once per run by the stage."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    normalize: Normalizer
    device: torch.device  # where inputs go and logits come back (the first tower's)
    amp: Amp = "off"
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False
    world: int = 1  # DDP processes; the loss is averaged over them each step
    read_late: bool | None = None  # read each step's loss a step late; None: on CUDA
    # With the towers on two devices: each tower's device, and a normaliser on the
    # second one (the batch is normalised there from its uint8 crops).
    tower_devices: tuple[torch.device, ...] = ()
    elsewhere: dict[torch.device, Normalizer] = field(default_factory=dict)


@dataclass
class EpochProgress:
    """The running totals of one epoch, checkpointed with it so resume resumes them."""

    step: int = 0  # global batches done
    loss_sum: float = 0.0  # Σ over steps of the (all-rank mean) batch loss
    images: int = 0  # images trained on, all ranks
    seconds: float = 0.0  # time spent in steps
    # Top-1 hits on the training batches as trained (augmented, dropout on), all ranks:
    # the paper's Figure 1 "training error rate"; None in a checkpoint written before.
    hits: int | None = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.step if self.step else math.nan

    @property
    def top1_error(self) -> float | None:
        if self.hits is None or not self.images:
            return None
        return 1.0 - self.hits / self.images

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "loss_sum": self.loss_sum, "images": self.images,
                "seconds": self.seconds, "hits": self.hits}  # fmt: skip


def train_epoch(
    ctx: StepContext,
    batches: Iterable[Batch],
    *,
    epoch: int,
    steps_per_epoch: int,
    state: EpochProgress,
    task: Task = SILENT.task(""),
    after_step: Callable[[EpochProgress], None] | None = None,
) -> EpochProgress:
    """Train on `batches` (the rest of epoch `epoch` after `state.step` steps).

    `after_step` runs after every step whose loss has been read (the stage checkpoints
    from it: `state` then counts exactly the updates the weights hold); raises
    `TrainingDiverged` naming the epoch and step on a non-finite loss: on a CPU before the
    optimizer touches the weights, on CUDA one step later (`StepValues`), before anything
    more is saved.
    """
    ctx.model.train()
    values = StepValues(ctx.device, late=ctx.read_late)
    for batch in _timed(prefetched(batches, ctx.device), state):
        if values.pending:  # the step before, read before this one is queued
            _count(ctx, values.read(), state, task, after_step)
        read = _step(ctx, batch, epoch, state.step, steps_per_epoch, values)
        if read is not None:
            _count(ctx, read, state, task, after_step)
    if values.pending:
        _count(ctx, values.read(), state, task, after_step)
    return state


def _timed(batches: Iterable[Batch], state: EpochProgress) -> Iterator[Batch]:
    """Yield batches, adding the wall time of each step (loading included) to state."""
    start = time.perf_counter()
    for batch in batches:
        yield batch
        now = time.perf_counter()
        state.seconds += now - start
        start = now


def _step(
    ctx: StepContext, batch: Batch, epoch: int, step: int, steps: int, values: StepValues
) -> StepRead | None:
    """One SGD step on one batch. Its loss (averaged over all ranks) and top-1 hits
    (summed) go to `values`; unless they are read late, they are read and checked before
    the update, and returned."""
    lr = ctx.schedule.lr(epoch, step, steps)
    set_lr(ctx.optimizer, lr)
    x = network_input(ctx, batch)
    target = batch.labels.to(ctx.device, non_blocking=True)
    with autocast(ctx.device, ctx.amp):
        output = ctx.model(x)
    loss = F.cross_entropy(output.float(), target)
    hits = (output.detach().argmax(1) == target).sum()
    value = torch.stack([loss.detach(), hits.to(loss.dtype)])
    if ctx.world > 1:  # every rank sees the same value, so all stop together on NaN
        dist.all_reduce(value)
        value[0] /= ctx.world
    values.put(StepRead(epoch, step, lr, batch.n, math.nan, 0), value)
    read = None if values.late else values.read()
    ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.scaler is not None:
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        loss.backward()
        ctx.optimizer.step()
    return read


def network_input(ctx: StepContext, batch: Batch) -> Tensor | list[Tensor]:
    """The normalised batch on the first device; with the towers on two devices, one per
    tower, each normalised on its own device from the uint8 crops sent there: a quarter
    of the float input's bytes (19 MB rather than 77 MB a step at batch 128, crop 224).
    The copies are issued first, so they overlap the first device's normalisation."""
    parts = (batch.images, batch.ys, batch.xs, batch.flips, batch.alphas)
    sent = {d: [send(t, d) for t in parts] for d in ctx.elsewhere}
    made = {ctx.device: ctx.normalize(*parts, channels_last=ctx.channels_last)}
    for d, normalize in ctx.elsewhere.items():
        made[d] = normalize(*sent[d], channels_last=ctx.channels_last)
    if not ctx.elsewhere:
        return made[ctx.device]
    return [made[d] for d in ctx.tower_devices]


def _count(
    ctx: StepContext,
    read: StepRead,
    state: EpochProgress,
    task: Task,
    after_step: Callable[[EpochProgress], None] | None,
) -> None:
    """A step read: into the epoch's totals, the bar, and `after_step`."""
    state.step += 1
    state.loss_sum += read.loss
    state.hits = None if state.hits is None else state.hits + read.hits
    state.images += read.images * ctx.world
    rate = state.images / state.seconds if state.seconds else 0.0
    task.advance(1, epoch=read.epoch + 1, loss=read.loss, lr=read.lr, img_s=round(rate))
    if after_step is not None:
        after_step(state)


# --------------------------------------------------------------------------- evaluation


@dataclass
class Tally:
    """Top-1 / top-5 hits and the summed loss over a pass, overall and per class (label
    index): what validation during training and `alexcli eval` both count. Summed over
    DDP ranks (`all_reduce`), the counts cover each image once."""

    num_classes: int
    images: int = 0
    top1: int = 0  # hits
    top5: int = 0
    loss_sum: float = 0.0  # Σ of the cross-entropy, when the pass computes it
    class_images: np.ndarray = field(init=False)  # int64 (classes,)
    class_top1: np.ndarray = field(init=False)  # int64 (classes,), top-1 hits

    def __post_init__(self) -> None:
        self.class_images = np.zeros(self.num_classes, np.int64)
        self.class_top1 = np.zeros(self.num_classes, np.int64)

    def add(self, scores: Tensor, labels: Tensor, loss_sum: float = 0.0) -> None:
        """Count a batch: `scores` (n, classes), logits or probabilities (only their order
        matters), `labels` (n,) class indices, and the batch's summed loss."""
        k = min(TOP, scores.shape[1])
        ranked = scores.topk(k, dim=1).indices.cpu()  # best first
        hit = ranked == labels.cpu()[:, None]
        first = hit[:, 0].numpy()
        labels_np = labels.cpu().numpy().astype(np.int64)
        self.images += len(labels_np)
        self.top1 += int(first.sum())
        self.top5 += int(hit.any(dim=1).sum())
        self.loss_sum += loss_sum
        self.class_images += np.bincount(labels_np, minlength=self.num_classes)
        self.class_top1 += np.bincount(labels_np[first], minlength=self.num_classes)

    @property
    def top1_error(self) -> float:
        return (self.images - self.top1) / self.images if self.images else math.nan

    @property
    def top5_error(self) -> float:
        return (self.images - self.top5) / self.images if self.images else math.nan

    @property
    def loss(self) -> float:
        return self.loss_sum / self.images if self.images else math.nan

    def class_top1_error(self) -> np.ndarray:
        """Per-class top-1 error, float64 (classes,); NaN for a class with no images."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.class_images - self.class_top1) / self.class_images

    def all_reduce(self, device: torch.device) -> Tally:
        """These counts summed over every DDP rank (unchanged without a process group)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        flat = np.concatenate(
            [[self.images, self.top1, self.top5, self.loss_sum], self.class_images,
             self.class_top1]
        )  # fmt: skip
        t = torch.tensor(flat, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        values, c = t.cpu().numpy(), self.num_classes
        total = Tally(self.num_classes, int(values[0]), int(values[1]), int(values[2]),
                      float(values[3]))  # fmt: skip
        total.class_images = values[4 : 4 + c].astype(np.int64)
        total.class_top1 = values[4 + c :].astype(np.int64)
        return total


@torch.no_grad()
def validate(
    model: nn.Module,
    batches: Iterable[Batch],
    normalize: Normalizer,
    device: torch.device,
    *,
    num_classes: int,
    amp: Amp = "off",
    channels_last: bool = False,
    task: Task = SILENT.task(""),
) -> Tally:
    """Hits and loss over `batches` of centre crops as the loader cut them (no noise),
    summed over every DDP rank: the validation `train` runs each epoch. A non-finite loss
    is `TrainingDiverged` on every rank at once (checked after the sum): the epoch's last
    steps broke the weights, which the epoch's end must not save."""
    model.eval()
    tally = Tally(num_classes)
    for batch in prefetched(batches, device):
        x = normalize(batch.images, batch.ys, batch.xs, batch.flips, channels_last=channels_last)
        target = batch.labels.to(device, non_blocking=True)
        with autocast(device, amp):
            output = model(x)
        output = output.float()
        loss = float(F.cross_entropy(output, target, reduction="sum"))
        tally.add(output, target, loss)
        task.advance(1)
    total = tally.all_reduce(device)
    check_finite(total.loss_sum, f"the validation loss became {total.loss_sum}")
    return total


def average_softmax(logits: Tensor) -> Tensor:
    """(views, n, classes) logits → (n, classes) probabilities: each view's softmax, averaged."""
    return torch.softmax(logits.float(), dim=-1).mean(0)


@torch.no_grad()
def view_probabilities(
    model: nn.Module,
    images: Tensor,
    normalize: Normalizer,
    crop: int,
    views: int,
    amp: Amp = "off",
    *,
    channels_last: bool = True,
    threads: ThreadTuner | None = None,
) -> Tensor:
    """Whole uint8 images (n, S, S, 3) → class probabilities (n, classes), float32, on the
    first tower's device: the softmax of each of `views` patches (1 or 10), averaged.
    `channels_last`: the inputs as the Normalizer makes them (`inference.for_inference`'s
    layout); `threads`: the compute threads of each pass (`inference.ThreadTuner`)."""
    device = normalize.mean.device
    images = images.to(device, non_blocking=True)
    logits = []
    for x in iter_views(normalize, images, crop, views, channels_last=channels_last):
        with timed(threads, len(x)), autocast(device, amp):
            logits.append(model(x).float())
    return average_softmax(torch.stack(logits))


@torch.no_grad()
def centre_features(
    model: AlexNet,
    images: Tensor,
    normalize: Normalizer,
    crop: int,
    amp: Amp = "off",
    *,
    channels_last: bool = True,
    threads: ThreadTuner | None = None,
) -> Tensor:
    """fc7's activations (after ReLU) of the centre patch, float32 (n, fc7 width): the
    4096-d vectors Figure 4 compares."""
    device = normalize.mean.device
    images = images.to(device, non_blocking=True)
    x = next(iter_views(normalize, images, crop, 1, channels_last=channels_last))
    with timed(threads, len(x)), autocast(device, amp):
        return model.features(x).float()


def evaluate_views(
    model: nn.Module,
    batches: Iterable[Batch],
    normalize: Normalizer,
    *,
    crop: int,
    views: int,
    num_classes: int,
    amp: Amp = "off",
    threads: ThreadTuner | None = None,
    task: Task = SILENT.task(""),
) -> Tally:
    """Top-1 / top-5 hits of `model` over `batches` of whole uint8 images (the loader with
    crop = image size), with `views` test patches per image."""
    model.eval()
    tally = Tally(num_classes)
    with inference(normalize.mean.device), threads or contextlib.nullcontext():
        for batch in batches:
            probs = view_probabilities(
                model, batch.images, normalize, crop, views, amp, threads=threads
            )
            tally.add(probs, batch.labels)
            task.advance(batch.n)
    return tally


def top_classes(probs: Tensor, k: int = TOP) -> list[list[tuple[int, float]]]:
    """Each row's `k` most probable classes, best first, as (class index, probability)."""
    k = min(k, probs.shape[1])
    values, indices = probs.float().cpu().topk(k, dim=1)
    return [
        [(int(i), float(v)) for i, v in zip(row_i, row_v, strict=True)]
        for row_i, row_v in zip(indices.tolist(), values.tolist(), strict=True)
    ]
