"""The training and evaluation loops: PAPER.md "Learning" and "Results to reproduce".

SGD with momentum 0.9 and weight decay 5e-4 on every weight (the paper's update
rule applies decay to all of w), batch 128, lr 0.01 divided by 10 when the
validation error stops improving (`LrSchedule`, "plateau"; or fixed epochs,
"step"), an optional linear warm-up. Top-1 / top-5 error counts every validation
image once (`accuracy`, `TopK`, summed over DDP ranks by `all_reduce_sum`).

PyTorch's SGD keeps v ← μv + (∇ + λw), w ← w − εv; the paper's rule is
v ← μv − λεw − ε∇, w ← w + v. With a constant ε they are the same trajectory (v
differs by the factor −ε); after an lr change the paper's velocity still carries
the old ε for a few steps, PyTorch's is rescaled at once. We use PyTorch's
(docs/training.md "Momentum").

Batches arrive as uint8 crops (`loader.Batch`); `transforms.Normalizer` makes the
float input on the device. A NaN or infinite loss stops training with
`TrainingDiverged` before the step that would spread it into the weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from alexcli.core.data.loader import Batch
from alexcli.core.data.transforms import Normalizer
from alexcli.core.progress import SILENT, Task
from alexcli.errors import TrainingDiverged

Amp = Literal["off", "bf16", "fp16"]


class AverageMeter:
    """A running sum and count (pytorch/examples `imagenet/main.py`)."""

    def __init__(self) -> None:
        self.sum, self.count = 0.0, 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else math.nan


def topk_correct(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int]) -> list[int]:
    """How many rows have `target` among their k highest outputs, for each k."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices  # (n, maxk), best first
    hit = pred == target[:, None]
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in topk]


def accuracy(
    output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)
) -> list[float]:
    """Top-k accuracy in percent for each k (pytorch/examples' `accuracy`)."""
    n = max(int(target.shape[0]), 1)
    return [100.0 * c / n for c in topk_correct(output, target, topk)]


# --------------------------------------------------------------------------- schedule


@dataclass
class LrSchedule:
    """The learning rate at every step: base × 0.1^drops, times a linear warm-up.

    "plateau" (the paper): a drop when the validation error has not improved for
    `patience` epochs, at most `max_drops` times. "step": a drop at each epoch of
    `milestones`. Warm-up ramps from base/(warm-up steps) to base over the first
    `warmup_epochs` (a fraction allowed). `state_dict` makes resume exact.
    """

    base_lr: float
    kind: Literal["plateau", "step"] = "plateau"
    max_drops: int = 3
    patience: int = 5
    milestones: tuple[int, ...] = ()
    warmup_epochs: float = 0.0
    drops: int = 0
    best: float = math.inf
    bad_epochs: int = 0

    def lr(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The lr for step `step` (0-based) of epoch `epoch` (0-based)."""
        lr = self.base_lr * 0.1 ** self.drops_at(epoch)
        warm = self.warmup_epochs * steps_per_epoch
        done = epoch * steps_per_epoch + step
        if warm > 0 and done < warm:
            lr *= (done + 1) / math.ceil(warm)
        return lr

    def drops_at(self, epoch: int) -> int:
        """How many ÷10 drops epoch `epoch` (0-based) trains with ("plateau": so far)."""
        return self.drops if self.kind == "plateau" else sum(epoch >= m for m in self.milestones)

    def end_epoch(self, val_error: float) -> bool:
        """Record an epoch's validation error; True when "plateau" just dropped the lr."""
        if self.kind != "plateau":
            return False
        if val_error < self.best:
            self.best, self.bad_epochs = val_error, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
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
    model: nn.Module, lr: float, momentum: float, weight_decay: float, *, fused: bool | None = None
) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every parameter (the paper's rule).

    `fused` (default: where every parameter is a float on the CPU or CUDA) updates each
    tensor in one pass instead of the foreach kernels' several: the paper network's
    update (61 M weights) ~6× faster on the CPU, same formula (docs/performance.md).
    """
    params = list(model.parameters())
    if fused is None:
        fused = bool(params) and all(
            p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
        )
    sgd = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    # GradScaler (--amp fp16) lets a fused optimizer skip an overflowing step inside its
    # kernel, and fused SGD gets that wrong twice: on a skipped first step it leaves the
    # momentum buffers it made with `empty_like` unfilled, so the next step adds
    # uninitialised memory to the weights; and with the towers on two devices it is
    # handed the sum of their overflow flags, 2, but skips only on exactly 1. An fp16
    # overflow is routine at the scaler's first scale (2^16). Declining the protocol
    # makes GradScaler unscale, check and skip the step itself, as for any optimizer;
    # the update is still the fused kernel.
    sgd._step_supports_amp_scaling = False
    return sgd


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def autocast(device: torch.device, amp: Amp) -> contextlib.AbstractContextManager[Any]:
    """torch.autocast for `--amp bf16|fp16` (bf16 on CPUs with AVX512_BF16 or AMX), else nothing."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- loops


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

    @property
    def loss(self) -> float:
        return self.loss_sum / self.step if self.step else math.nan

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "loss_sum": self.loss_sum, "images": self.images,
                "seconds": self.seconds}  # fmt: skip


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
        loss = _step(ctx, batch, epoch, state.step)
        state.step += 1
        state.loss_sum += loss
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


def _step(ctx: StepContext, batch: Batch, epoch: int, step: int) -> float:
    """One SGD step on one batch; the loss averaged over all ranks."""
    x = ctx.normalize(
        batch.images, batch.ys, batch.xs, batch.flips, batch.alphas,
        channels_last=ctx.channels_last,
    )  # fmt: skip
    target = batch.labels.to(ctx.device, non_blocking=True)
    with autocast(ctx.device, ctx.amp):
        output = ctx.model(x)
    loss = F.cross_entropy(output.float(), target)
    value = loss.detach()
    if ctx.world > 1:  # every rank sees the same value, so all stop together on NaN
        value = value.clone()
        dist.all_reduce(value)
        value /= ctx.world
    loss_value = float(value)
    if not math.isfinite(loss_value):
        raise TrainingDiverged(
            f"the loss became {loss_value} at epoch {epoch + 1}, step {step + 1}",
            hint="lower --lr, or warm up (--set warmup_epochs=1); checkpoints/last.pt "
            "holds the last good state",
        )
    ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.scaler is not None:
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        loss.backward()
        ctx.optimizer.step()
    return loss_value


@dataclass
class TopK:
    """Counts over a validation pass: summed over ranks, they cover each image once."""

    images: int = 0
    top1: int = 0  # correct
    top5: int = 0
    loss_sum: float = 0.0

    @property
    def top1_error(self) -> float:
        return (self.images - self.top1) / self.images if self.images else math.nan

    @property
    def top5_error(self) -> float:
        return (self.images - self.top5) / self.images if self.images else math.nan

    @property
    def loss(self) -> float:
        return self.loss_sum / self.images if self.images else math.nan


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    normalize: Normalizer,
    device: torch.device,
    *,
    amp: Amp = "off",
    channels_last: bool = False,
    task: Task = SILENT.task(""),
) -> TopK:
    """Top-1 / top-5 counts and the summed loss over `batches` (centre crops, no noise)."""
    model.eval()
    counts = TopK()
    for batch in batches:
        x = normalize(batch.images, batch.ys, batch.xs, batch.flips, channels_last=channels_last)
        target = batch.labels.to(device, non_blocking=True)
        with autocast(device, amp):
            output = model(x)
        output = output.float()
        c1, c5 = topk_correct(output, target, (1, 5))
        counts.images += batch.n
        counts.top1 += c1
        counts.top5 += c5
        counts.loss_sum += float(F.cross_entropy(output, target, reduction="sum"))
        task.advance(1)
    return counts


def all_reduce_sum(counts: TopK, device: torch.device) -> TopK:
    """`counts` summed over every DDP rank (unchanged without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return counts
    t = torch.tensor(
        [counts.images, counts.top1, counts.top5, counts.loss_sum],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(t)
    images, top1, top5, loss_sum = t.tolist()
    return TopK(int(images), int(top1), int(top5), float(loss_sum))
