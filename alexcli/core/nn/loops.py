"""The loops that run the network over batches: docs/paper.md "Learning" and "Reducing
overfitting" (the test-time views).

- `train_steps`: SGD steps over training batches, each `forward_loss` then `sgd_update`
  (the update rule and schedule: core/nn/optim.py), the next batch copied while one
  computes (core/data/transfer.py); it yields each step's numbers as they are read, to
  the loop that counts them and checkpoints (core/nn/trainer.py). A NaN or infinite
  loss stops training with `TrainingDiverged` before anything that holds it is saved
  (core/nn/readout.py: on a CPU before its update).
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
import dataclasses
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
from alexcli.core.nn.optim import set_lr
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


@dataclass(frozen=True)
class NetworkInput:
    """How a batch of uint8 crops becomes the network's input (`transforms.Normalizer`):
    normalised on the first tower's device; with the towers on two devices, on the
    second too, from the uint8 crops sent there: a quarter of the float input's bytes
    (19 MB rather than 77 MB a step at batch 128, crop 224). The copies are issued
    first, so they overlap the first device's normalisation."""

    normalize: Normalizer  # on the first tower's device, where the logits come back
    channels_last: bool = False
    towers: tuple[torch.device, ...] = ()  # each tower's device, tower 1 first
    elsewhere: dict[torch.device, Normalizer] = field(default_factory=dict)  # the others'

    @property
    def device(self) -> torch.device:
        return self.normalize.mean.device

    def __call__(self, batch: Batch) -> Tensor | list[Tensor]:
        parts = (batch.images, batch.ys, batch.xs, batch.flips, batch.alphas)
        sent = {d: [send(t, d) for t in parts] for d in self.elsewhere}
        made = {self.device: self.normalize(*parts, channels_last=self.channels_last)}
        for d, normalize in self.elsewhere.items():
            made[d] = normalize(*sent[d], channels_last=self.channels_last)
        if not self.elsewhere:
            return made[self.device]
        return [made[d] for d in self.towers]


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

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def add(self, read: StepRead, world: int) -> None:
        """Count a step read on one of `world` DDP ranks (each trained as many images)."""
        self.step += 1
        self.loss_sum += read.loss
        self.hits = None if self.hits is None else self.hits + read.hits
        self.images += read.images * world

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: NetworkInput,
    batches: Iterable[Batch],
    totals: EpochProgress,
    *,
    epoch: int,
    lr: Callable[[int], float],
    amp: Amp = "off",
    scaler: torch.amp.GradScaler | None = None,
    world: int = 1,
    read_late: bool | None = None,
    clip_grad_norm: float | None = None,
    max_step_norm: float | None = None,
) -> Iterator[StepRead]:
    """SGD steps on `batches` (the rest of epoch `epoch` after `totals.step` steps), step
    i at `lr(i)`. Yields each step's numbers once they are read and counted into
    `totals`: the weights then hold exactly `totals.step` updates, so a checkpoint taken
    between two of them resumes exactly.

    Each step's loss is read at once on a CPU, and checked before the update, so that a
    NaN or infinite loss never reaches the weights (`TrainingDiverged`, naming epoch and
    step). On CUDA (or `read_late`) it is read one step late, just before the next step
    is queued, so that the host never waits for the GPU mid-epoch (core/nn/readout.py):
    a NaN then stops training one update later, before anything that holds it is
    counted or saved.
    """
    model.train()
    values = StepValues(inputs.device, late=read_late)
    for batch in _timed(prefetched(batches, inputs.device), totals):
        if values.pending:  # the step before, read before this one is queued
            yield _counted(values.read(), totals, world)
        step = StepRead(epoch, totals.step, lr(totals.step), batch.n)
        x = inputs(batch)
        target = batch.labels.to(inputs.device, non_blocking=True)
        loss, value = forward_loss(model, x, target, amp=amp, world=world)
        values.put(step, value)
        read = None if values.late else values.read()  # raises on a NaN: no update
        limit = clip_limit(clip_grad_norm, max_step_norm, step.lr)
        sgd_update(optimizer, loss, step.lr, scaler, limit)
        if read is not None:
            yield _counted(read, totals, world)
    if values.pending:
        yield _counted(values.read(), totals, world)


def forward_loss(
    model: nn.Module, x: Tensor | list[Tensor], target: Tensor, *, amp: Amp, world: int
) -> tuple[Tensor, Tensor]:
    """The cross-entropy of one batch, to differentiate, and (loss, top-1 hits) to report:
    the loss averaged and the hits summed over the `world` DDP ranks, so that every rank
    sees the same numbers and all stop together on a NaN."""
    with autocast(target.device, amp):
        output = model(x)
    loss = F.cross_entropy(output.float(), target)
    hits = (output.detach().argmax(1) == target).sum()
    value = torch.stack([loss.detach(), hits.to(loss.dtype)])
    if world > 1:
        dist.all_reduce(value)
        value[0] /= world
    return loss, value


def sgd_update(
    optimizer: torch.optim.Optimizer,
    loss: Tensor,
    lr: float,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float | None = None,
) -> None:
    """Backward through `loss` and one SGD step at `lr` (by the GradScaler under fp16),
    the gradients first scaled down to a global L2 norm of `clip_grad_norm` where above
    it (torch's `clip_grad_norm_` over every parameter the optimizer holds: under DDP
    after the all-reduce, so every rank clips alike; under fp16 after unscaling, so the
    norm is the true one)."""
    set_lr(optimizer, lr)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            clip(optimizer, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_grad_norm is not None:
            clip(optimizer, clip_grad_norm)
        optimizer.step()


def clip_limit(
    clip_grad_norm: float | None, max_step_norm: float | None, lr: float
) -> float | None:
    """The gradient norm a step at `lr` is clipped to: `clip_grad_norm`, lowered where
    needed so that lr × the gradient's norm stays within `max_step_norm` (None: no such
    bound; None for both: no clipping)."""
    if max_step_norm is None or lr <= 0:
        return clip_grad_norm
    by_step = max_step_norm / lr
    return by_step if clip_grad_norm is None else min(clip_grad_norm, by_step)


def clip(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, max_norm)


def _timed(batches: Iterable[Batch], totals: EpochProgress) -> Iterator[Batch]:
    """Yield batches, adding the wall time of each step (loading included) to totals."""
    start = time.perf_counter()
    for batch in batches:
        yield batch
        now = time.perf_counter()
        totals.seconds += now - start
        start = now


def _counted(read: StepRead, totals: EpochProgress, world: int) -> StepRead:
    totals.add(read, world)
    return read


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
        head = [self.images, self.top1, self.top5, self.loss_sum]
        flat = np.concatenate([head, self.class_images, self.class_top1])
        t = torch.tensor(flat, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        values, c = t.cpu().numpy(), self.num_classes
        images, top1, top5 = (int(v) for v in values[:3])
        total = Tally(self.num_classes, images, top1, top5, float(values[3]))
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
