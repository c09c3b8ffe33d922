"""Tiny learnable data for the training tests: a DATA_DIR (conftest.write_data_dir)
plus a stats.h5 computed here with numpy, independently of alexcli's stats stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alexcli.core.data.stats import Stats
from alexcli.core.data.stats import write_stats as core_write_stats
from alexcli.stages.datadir import STATS_FILE, open_data_dir, shards_digest
from tests.helpers import write_data_dir
from tests.tiny import tiny_sets

# `alexcli train --set` values for a run of seconds: the tests' tiny network (tests/tiny.py)
# and the run's settings.
TINY = [
    *tiny_sets(),
    "batch_size=16",
    "devices=cpu",
    "workers=1",
    "threads=1",  # not probed: runs compared bit for bit must use the same count
]

_COLOURS = np.array([[220, 40, 40], [40, 200, 60], [50, 70, 230], [230, 210, 40]], np.float32)


def make_images(
    rng: np.random.Generator, per_class: int, classes: int = 4, size: int = 72
) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a square of colour k at a random place on a noisy grey background."""
    images, labels = [], []
    for k in range(classes):
        for _ in range(per_class):
            img = rng.normal(120, 30, (size, size, 3))
            s = int(rng.integers(size // 3, size // 2))
            y, x = rng.integers(0, size - s, 2)
            img[y : y + s, x : x + s] = _COLOURS[k % len(_COLOURS)] + rng.normal(0, 20, 3)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(k)
    order = rng.permutation(len(images))
    return np.stack(images)[order], np.array(labels)[order]


def write_stats(root: Path, images: np.ndarray) -> None:
    """stats.h5 from the training images, the values computed here in numpy and written
    in the stats stage's format (so `check_stats_current` takes it as current)."""
    x = images.astype(np.float64)
    pixels = x.reshape(-1, 3)
    cov = np.cov(pixels, rowvar=False, bias=True)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    data = open_data_dir(root)
    stats = Stats(
        mean=x.mean(0).astype(np.float32),
        rgb_mean=pixels.mean(0),
        rgb_cov=cov,
        eigval=eigval[order],
        eigvec=eigvec[:, order],
        images=len(images),
        data_fingerprint=data.fingerprint,
        shards_digest=shards_digest(data),
    )
    core_write_stats(root / STATS_FILE, stats)


def make_data_dir(
    root: Path,
    *,
    train: int = 24,
    val: int = 8,
    classes: int = 4,
    size: int = 72,
    seed: int = 0,
    shard_size: int = 32,
) -> Path:
    """A prepared DATA_DIR with stats: `train` / `val` images per class."""
    rng = np.random.default_rng(seed)
    tr = make_images(rng, train, classes, size)
    va = make_images(rng, val, classes, size)
    write_data_dir(root, {"train": tr, "val": va}, shard_size=shard_size)
    write_stats(Path(root), tr[0])
    return Path(root)
