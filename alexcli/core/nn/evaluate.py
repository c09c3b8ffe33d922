"""The paper's test: PAPER.md "Reducing overfitting" (test time) and "Results to reproduce".

"At test time, the network makes a prediction by extracting five 224×224 patches (the
four corner patches and the center patch) as well as their horizontal reflections
(hence ten patches in all), and averaging the predictions made by the network's
softmax layer on the ten patches." So the average is over probabilities, not logits
(`average_softmax`): a view that is very sure of a class cannot outvote the others
by the size of its logits. `--views 1` is the centre patch alone.

The views are cut from the whole stored image on the device and normalised exactly
as in training (`transforms.iter_views`: the mean image at each patch's position,
reflected with it; `input_scale`), one view at a time so memory holds one view's
floats. Top-1 / top-5 error count an image as right when its label is the first /
among the first five of the averaged probabilities (`Tally`, overall and per class).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from alexcli.core.data.loader import Batch
from alexcli.core.data.transforms import Normalizer, iter_views
from alexcli.core.nn.loops import Amp, autocast
from alexcli.core.nn.model import AlexNet
from alexcli.core.progress import SILENT, Task

TOP = 5  # the paper's top-5


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
) -> Tensor:
    """Whole uint8 images (n, S, S, 3) → class probabilities (n, classes), float32, on the
    first tower's device: the softmax of each of `views` patches (1 or 10), averaged."""
    device = normalize.mean.device
    images = images.to(device, non_blocking=True)
    logits = []
    for x in iter_views(normalize, images, crop, views):
        with autocast(device, amp):
            logits.append(model(x).float())
    return average_softmax(torch.stack(logits))


@torch.no_grad()
def centre_features(
    model: AlexNet, images: Tensor, normalize: Normalizer, crop: int, amp: Amp = "off"
) -> Tensor:
    """fc7's activations (after ReLU) of the centre patch, float32 (n, fc7 width): the
    4096-d vectors Figure 4 compares."""
    device = normalize.mean.device
    images = images.to(device, non_blocking=True)
    x = next(iter_views(normalize, images, crop, 1))
    with autocast(device, amp):
        return model.features(x).float()


@dataclass
class Tally:
    """Top-1 / top-5 hits over a pass, overall and per class (label index)."""

    num_classes: int
    images: int = 0
    top1: int = 0
    top5: int = 0
    class_images: np.ndarray = field(init=False)  # int64 (classes,)
    class_top1: np.ndarray = field(init=False)  # int64 (classes,), top-1 hits

    def __post_init__(self) -> None:
        self.class_images = np.zeros(self.num_classes, np.int64)
        self.class_top1 = np.zeros(self.num_classes, np.int64)

    def add(self, probs: Tensor, labels: Tensor) -> None:
        """Count a batch: `probs` (n, classes), `labels` (n,) class indices."""
        k = min(TOP, probs.shape[1])
        ranked = probs.topk(k, dim=1).indices.cpu()  # best first
        hit = ranked == labels.cpu()[:, None]
        first = hit[:, 0].numpy()
        labels_np = labels.cpu().numpy().astype(np.int64)
        self.images += len(labels_np)
        self.top1 += int(first.sum())
        self.top5 += int(hit.any(dim=1).sum())
        self.class_images += np.bincount(labels_np, minlength=self.num_classes)
        self.class_top1 += np.bincount(labels_np[first], minlength=self.num_classes)

    @property
    def top1_error(self) -> float:
        return (self.images - self.top1) / self.images if self.images else float("nan")

    @property
    def top5_error(self) -> float:
        return (self.images - self.top5) / self.images if self.images else float("nan")

    def class_top1_error(self) -> np.ndarray:
        """Per-class top-1 error, float64 (classes,); NaN for a class with no images."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.class_images - self.class_top1) / self.class_images


def evaluate_batches(
    model: nn.Module,
    batches: Iterable[Batch],
    normalize: Normalizer,
    *,
    crop: int,
    views: int,
    num_classes: int,
    amp: Amp = "off",
    task: Task = SILENT.task(""),
) -> Tally:
    """Top-1 / top-5 hits of `model` over `batches` of whole uint8 images (the loader with
    crop = image size), with `views` test patches per image."""
    model.eval()
    tally = Tally(num_classes)
    for batch in batches:
        probs = view_probabilities(model, batch.images, normalize, crop, views, amp)
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
