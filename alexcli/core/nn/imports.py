"""Weights trained elsewhere as an alexcli checkpoint: docs/import.md.

torchvision's `alexnet` is the one-tower network with 64/192/384/256/256 kernels, no
LRN, conv1 11×11 stride 4 padding 2, 3×3 stride-2 max-pools, an adaptive 6×6 average
pool (the identity at 224: conv5's pooled maps are already 6×6) and fc 4096/4096/1000;
its input is (x/255 − m)/s with ImageNet's per-channel m and s. alexcli's input is
(x − mean image) × input scale, so the import sets the mean image to 255·m everywhere,
the input scale to 1/255, and folds 1/s into conv1's weights: conv1 sees exactly the
numbers torchvision's conv1 sees, zero padding included (zero is zero in both).

The state dict is plain tensors (`torch.load(weights_only=True)`; torchvision is not
needed), keys `features.{0,3,6,8,10}` and `classifier.{1,4,6}`, optionally behind a
`module.` prefix (a DataParallel save).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from alexcli.config import PRESETS, TrainConfig, merge
from alexcli.core.nn.checkpoint import Checkpoint
from alexcli.core.nn.model import build_model
from alexcli.errors import FormatError

# torchvision's weights page: IMAGENET1K_V1, ILSVRC-2012 val, one centre crop after
# resizing the shorter side to 256 — acc@1 56.522, acc@5 79.066.
TORCHVISION_VAL = {"top1_error": 1 - 0.56522, "top5_error": 1 - 0.79066}
TORCHVISION_MEAN = (0.485, 0.456, 0.406)  # per channel, RGB, on the 0–1 scale
TORCHVISION_STD = (0.229, 0.224, 0.225)
TORCHVISION_LAYERS = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "fc8": "classifier.6",
}
SIZE = 256  # torchvision's eval resize: shorter side to 256, then the centre 224


def torchvision_config(num_classes: int) -> TrainConfig:
    """torchvision's AlexNet in alexcli's configuration (the paper's recipe otherwise)."""
    model = {
        "num_classes": num_classes,
        "crop": 224,
        "conv_channels": [64, 192, 384, 256, 256],
        "fc_features": [4096, 4096],
        "towers": 1,
        "lrn": False,
        "conv1_kernel": 11,
        "conv1_stride": 4,
        "conv1_padding": 2,
        "pool_kernel": 3,
        "pool_stride": 2,
        "init": "torch",
    }
    data = {"preset": "torchvision", "input_scale": 1 / 255, "model": model}
    return merge(PRESETS["paper"], data, "torchvision's alexnet")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A `torch.save`d state dict of tensors (weights only: never runs code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        reason = "not a PyTorch file (truncated or foreign)"
        if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in str(e):
            reason = "holds pickled Python objects, which alexcli never loads"
        raise FormatError(f"{path}: {reason}") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training script's {"state_dict": …, "epoch": …}
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise FormatError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def from_torchvision(
    state: Mapping[str, torch.Tensor], classes: Sequence[dict[str, str]] | None, source: Path
) -> Checkpoint:
    """torchvision's `alexnet` state dict as an alexcli checkpoint (module docstring).
    `classes`: label i's name and words, i in fc8's order; None: named by index."""
    missing = [
        f"{p}.{w}"
        for p in TORCHVISION_LAYERS.values()
        for w in ("weight", "bias")
        if f"{p}.{w}" not in state
    ]
    if missing:
        raise FormatError(
            f"{source}: not torchvision's alexnet (no {', '.join(missing[:3])}"
            f"{'…' if len(missing) > 3 else ''})",
            hint="alexcli reads the state dict of torchvision.models.alexnet",
        )
    num_classes = int(state["classifier.6.weight"].shape[0])
    cfg = torchvision_config(num_classes)
    shapes = {k: tuple(v.shape) for k, v in build_model(cfg.model).state_dict().items()}
    weights: dict[str, torch.Tensor] = {}
    for ours, theirs in TORCHVISION_LAYERS.items():
        for kind in ("weight", "bias"):
            tensor = state[f"{theirs}.{kind}"]
            want = shapes[f"towers.0.{ours}.{kind}"]
            if tuple(tensor.shape) != want:
                raise FormatError(
                    f"{source}: {theirs}.{kind} is {tuple(tensor.shape)}, torchvision's "
                    f"alexnet has {want}",
                    hint="alexcli reads the state dict of torchvision.models.alexnet",
                )
            weights[f"towers.0.{ours}.{kind}"] = tensor.float().clone()
    std = torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1)
    weights["towers.0.conv1.weight"] /= std  # conv(W, (x/255 − m)/s) = conv(W/s, x/255 − m)
    mean = np.broadcast_to(255 * np.asarray(TORCHVISION_MEAN, np.float32), (SIZE, SIZE, 3))
    return imported_checkpoint(source, cfg, weights, mean, num_classes, classes)


def imported_checkpoint(
    source: Path,
    cfg: TrainConfig,
    weights: dict[str, torch.Tensor],
    mean: np.ndarray,
    num_classes: int,
    classes: Sequence[Mapping[str, str]] | None,
) -> Checkpoint:
    """Another framework's weights as an epoch-0 checkpoint: `classes` checked against
    fc8's width (numbered names when none are given), no PCA data (none comes with
    weights), the mean image (size, size, 3) in RGB 0–255."""
    if classes is None:
        classes = [{"name": str(i), "words": ""} for i in range(num_classes)]
    if len(classes) != num_classes:
        raise FormatError(
            f"{source}: fc8 has {num_classes} classes, the class list {len(classes)}",
            hint="give --classes the class list these weights were trained on",
        )
    return Checkpoint(
        config=cfg,
        classes=[dict(c) for c in classes],
        size=int(mean.shape[0]),
        mean=np.ascontiguousarray(mean, np.float32),
        eigval=np.zeros(3, np.float32),
        eigvec=np.eye(3, dtype=np.float32),
        weights=weights,
        epoch=0,
        path=source,
    )
