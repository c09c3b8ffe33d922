"""The loops that run the network over batches: docs/paper.md "Learning" and "Reducing
overfitting" (the test-time views).

- `train_epoch`: SGD steps over training batches (the update rule and schedule:
  core/nn/optim.py). A NaN or infinite loss stops training with `TrainingDiverged`
  before the step that would spread it into the weights.
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
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from alexcli.core.data.batches import Batch
from alexcli.core.data.transforms import Normalizer, iter_views
from alexcli.core.nn.inference import ThreadTuner, inference, timed
from alexcli.core.nn.model import AlexNet
from alexcli.core.nn.optim import LrSchedule, set_lr
from alexcli.core.progress import SILENT, Task
from alexcli.errors import TrainingDiverged

Amp = Literal["off", "bf16", "fp16"]
TOP = 5  # the paper's top-5


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

    `after_step` runs after every step (the stage checkpoints from it); raises
    `TrainingDiverged` naming the epoch and step on a non-finite loss, before the
    optimizer touches the weights.
    """
    ctx.model.train()
    for batch in _timed(batches, state):
        lr = ctx.schedule.lr(epoch, state.step, steps_per_epoch)
        set_lr(ctx.optimizer, lr)
        loss, hits = _step(ctx, batch, epoch, state.step)
        state.step += 1
        state.loss_sum += loss
        state.hits = None if state.hits is None else state.hits + hits
        state.images += batch.n * ctx.world
        rate = state.images / state.seconds if state.seconds else 0.0
        task.advance(1, epoch=epoch + 1, loss=loss, lr=lr, img_s=round(rate))
        if after_step is not None:
            after_step(state)
    return state


def _timed(batches: Iterable[Batch], state: EpochProgress) -> Iterator[Batch]:
    """Yield batches, adding the wall time of each step (loading included) to state."""
    start = time.perf_counter()
    for batch in batches:
        yield batch
        now = time.perf_counter()
        state.seconds += now - start
        start = now


def check_finite(loss: float, message: str) -> None:
    """`TrainingDiverged` with `message` when `loss` is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            message,
            hint="lower --lr, or warm up (--set warmup_epochs=1); checkpoints/last.pt "
            "holds the last good state",
        )


def _step(ctx: StepContext, batch: Batch, epoch: int, step: int) -> tuple[float, int]:
    """One SGD step on one batch: the loss averaged over all ranks, the top-1 hits summed."""
    x = ctx.normalize(
        batch.images, batch.ys, batch.xs, batch.flips, batch.alphas,
        channels_last=ctx.channels_last,
    )  # fmt: skip
    target = batch.labels.to(ctx.device, non_blocking=True)
    with autocast(ctx.device, ctx.amp):
        output = ctx.model(x)
    loss = F.cross_entropy(output.float(), target)
    hits = (output.detach().argmax(1) == target).sum()
    value = torch.stack([loss.detach(), hits.to(loss.dtype)])
    if ctx.world > 1:  # every rank sees the same value, so all stop together on NaN
        dist.all_reduce(value)
        value[0] /= ctx.world
    loss_value, hits_all = (float(v) for v in value.cpu())
    check_finite(loss_value, f"the loss became {loss_value} at epoch {epoch + 1}, step {step + 1}")
    ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.scaler is not None:
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        loss.backward()
        ctx.optimizer.step()
    return loss_value, round(hits_all)


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
    for batch in batches:
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
