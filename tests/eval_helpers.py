"""Shared by tests/stages/test_eval.py, test_predict.py and test_neighbors.py: a tiny real run
(core/nn/model.build_model + core/nn/checkpoint.save_checkpoint, as `train` saves it) and an
independent reference for the test-time views, written with numpy from the paper's
description rather than through core/data/transforms."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import torch

from alexcli.config import PRESETS, TrainConfig
from alexcli.core.nn.checkpoint import Checkpoint, save_checkpoint
from alexcli.core.nn.model import AlexNet, build_model
from tests.tiny import TINY_MODEL

CROP = TINY_MODEL.crop  # the network's input
SIZE = CROP + 8  # the stored images: views 4 px from the centre


def tiny_config(num_classes: int = 8, towers: int = 2, input_scale: float = 1.0) -> TrainConfig:
    """The small preset with the tests' tiny network (tests/tiny.py), initialised as
    PyTorch does: its activations on raw pixels (input scale 1) stay moderate, so the
    softmax does not saturate and the classes' ranking never hinges on rounding."""
    model = dataclasses.replace(TINY_MODEL, num_classes=num_classes, towers=towers, init="torch")
    return dataclasses.replace(PRESETS["small"], input_scale=input_scale, model=model)


def colourful(n: int, seed: int = 1) -> np.ndarray:
    """Images a random network tells apart: a colour each, plus noise."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, (n, 1, 1, 3))
    return np.clip(colour + rng.normal(0, 30, (n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def class_list(n: int, prefix: str = "n") -> list[dict[str, str]]:
    return [{"name": f"{prefix}{i:08d}", "words": f"class {i}"} for i in range(n)]


def save_run(
    path: Path, cfg: TrainConfig | None = None, *, classes=None, seed: int = 0, mean=None
) -> tuple[AlexNet, np.ndarray]:
    """A checkpoint of a freshly initialised network (fc8 scaled up so the classes are
    well apart), with a random mean image; returns the network and the mean."""
    cfg = cfg or tiny_config()
    torch.manual_seed(seed)
    # He's fc8 (not `small`'s N(0, 0.01²)), ×20: logits far enough apart to rank
    model = build_model(dataclasses.replace(cfg.model, fc8_std=None)).eval()
    with torch.no_grad():
        for tower in model.tower_list:
            tower.fc8.weight.mul_(20.0)
    rng = np.random.default_rng(seed)
    if mean is None:
        mean = rng.uniform(60, 200, (SIZE, SIZE, 3)).astype(np.float32)
    save_checkpoint(
        path,
        Checkpoint(
            config=cfg,
            classes=classes or class_list(cfg.model.num_classes),
            size=SIZE,
            mean=mean,
            eigval=np.array([3.0, 2.0, 1.0]),
            eigvec=np.eye(3),
            weights=model.state_dict(),
            epoch=3,
        ),
    )
    return model, mean


def reference_views(images: np.ndarray, mean: np.ndarray, crop: int, views: int) -> np.ndarray:
    """(views, n, 3, crop, crop) float32: the paper's patches, written out by hand —
    centre, four corners, then each reflected — of (image − mean image)."""
    size = images.shape[1]
    c, far = (size - crop) // 2, size - crop
    corners = [(c, c)] if views == 1 else [(c, c), (0, 0), (0, far), (far, 0), (far, far)]
    flips = [False] if views == 1 else [False, True]
    centred = images.astype(np.float64) - mean[None].astype(np.float64)
    out = []
    for flip in flips:
        for y, x in corners:
            patch = centred[:, y : y + crop, x : x + crop]
            out.append(patch[:, :, ::-1] if flip else patch)
    return np.stack(out).transpose(0, 1, 4, 2, 3).astype(np.float32)


def reference_probs(
    model: AlexNet, images: np.ndarray, mean: np.ndarray, crop: int, views: int, scale: float = 1
) -> np.ndarray:
    """(n, classes) float64: each view through the network, softmax in numpy, averaged."""
    with torch.no_grad():
        logits = np.stack(
            [
                model(torch.from_numpy(v * scale)).double().numpy()
                for v in reference_views(images, mean, crop, views)
            ]
        )
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).mean(0)


def reference_features(model: AlexNet, images: np.ndarray, mean: np.ndarray, crop: int):
    """(n, fc7 width) float64: fc7 of the centre patch."""
    with torch.no_grad():
        x = torch.from_numpy(reference_views(images, mean, crop, 1)[0])
        return model.features(x).double().numpy()


class Payload:
    """Unpickling this would write `target`: what a crafted checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


def write_bad_checkpoints(root: Path, good: Path) -> dict[str, tuple[Path, Path | None]]:
    """Foreign bytes, a truncated real checkpoint, and one carrying a pickle payload
    (name → (file, the file its payload would create))."""
    root.mkdir(parents=True, exist_ok=True)
    foreign = root / "foreign.pt"
    foreign.write_bytes(b"GIF89a not a checkpoint at all" * 10)
    truncated = root / "truncated.pt"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    payload, target = root / "payload.pt", root / "PWNED"
    torch.save({"format": "alexcli-checkpoint", "version": 1, "evil": Payload(target)}, payload)
    raw = root / "raw-pickle.pt"
    raw.write_bytes(pickle.dumps(Payload(target), protocol=2))
    return {
        "foreign": (foreign, None),
        "truncated": (truncated, None),
        "payload": (payload, target),
        "raw-pickle": (raw, target),
    }


def photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A smooth, colourful, non-square picture file (what a resize changes visibly)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, 3)
    image = base + 60 * np.stack([np.sin(xx / 7), np.cos(yy / 5), np.sin((xx + yy) / 9)], -1)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


def wave_images(n: int, seed: int = 1) -> np.ndarray:
    """Stored 256² images with structure (a random network's answers vary with them)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256]
    out = []
    for _ in range(n):
        f = rng.uniform(0.02, 0.2, 3)
        base = rng.uniform(40, 210, 3)
        waves = np.stack([np.sin(xx * f[0]), np.cos(yy * f[1]), np.sin((xx + yy) * f[2])], -1)
        out.append(np.clip(base + 50 * waves + rng.normal(0, 10, (256, 256, 3)), 0, 255))
    return np.stack(out).astype(np.uint8)
