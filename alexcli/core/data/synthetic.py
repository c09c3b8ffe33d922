"""Small synthetic ILSVRC-shaped image trees, for the tests and `alexcli demo`.

docs/paper.md "Data" describes ILSVRC-2012: variable-resolution photos in one folder per
class (`train/<wnid>/*.JPEG`), the validation images flat and labelled by a side
file. This module writes trees of that shape, with the same label files people
really have (Kaggle's `LOC_val_solution.csv` and `LOC_synset_mapping.txt`, or the
devkit's `ILSVRC2012_validation_ground_truth.txt` + `meta.mat`), or the
`val/<wnid>/` form, or a generic image-folder tree.

Each class is a combination of a shape, a hue and a texture (5 × 7 × 3 = 105
classes at most): class k has shape k mod 5, hue k mod 7, texture k mod 3 (a
bijection by the Chinese remainder theorem), so any two classes differ in at
least one cue and most share another. Objects vary in size, position, rotation,
saturation and brightness, on random gradient backgrounds with smaller
distractor shapes and pixel noise: a small CNN learns them well above chance,
but not at once.

With `traps=True` the tree also holds ImageNet's awkward files: a CMYK JPEG, a
grayscale one, a PNG and a palette PNG named `.JPEG`, an EXIF-rotated JPEG, an
RGBA PNG, and the unreadable ones (truncated, empty, a stray text file, a
decompression bomb).

Deterministic for a seed: image i of class k of a split depends only on
(seed, split, k, i).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from alexcli.core.data.labels import write_devkit, write_kaggle, write_synset_mapping

SHAPES = ("disc", "square", "triangle", "ring", "cross")
HUES = ("red", "amber", "lime", "green", "azure", "blue", "magenta")  # 360°/7 apart
TEXTURES = ("plain", "striped", "dotted")
MAX_CLASSES = len(SHAPES) * len(HUES) * len(TEXTURES)  # 105, coprime moduli

ValForm = Literal["kaggle", "devkit", "folders"]
# Trap kinds: the first are converted to RGB by prepare, the last are skipped.
CONVERTIBLE_TRAPS = ("cmyk", "gray", "png", "palette", "exif", "rgba")
UNREADABLE_TRAPS = ("truncated", "empty", "stray", "bomb")

_SPLIT_IDS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticTree:
    """What was written: labels and trap kinds by path relative to `root`."""

    root: Path
    classes: tuple[str, ...]  # class names (wnids, or folder names), sorted
    words: dict[str, str]
    train: tuple[tuple[str, str], ...]  # (relative path, class name), images only
    val: tuple[tuple[str, str], ...]
    traps: dict[str, str] = field(default_factory=dict)  # relative path → trap kind


# --------------------------------------------------------------------------- classes


def class_cues(k: int) -> tuple[str, str, str]:
    """(shape, hue, texture) of class k."""
    if not 0 <= k < MAX_CLASSES:
        raise ValueError(f"synthetic classes go from 0 to {MAX_CLASSES - 1}, got {k}")
    return SHAPES[k % len(SHAPES)], HUES[k % len(HUES)], TEXTURES[k % len(TEXTURES)]


def class_words(k: int) -> str:
    shape, hue, texture = class_cues(k)
    return f"{hue} {texture} {shape}"


def class_wnid(k: int) -> str:
    """A WordNet-like id; sorted wnid order is deliberately not class order."""
    return f"n{1_000_000 + (k * 2_654_435_761) % 9_000_000:08d}"


# --------------------------------------------------------------------------- drawing


def _hsv(hue_deg: float, sat: float, val: float) -> tuple[int, int, int]:
    h = (hue_deg % 360.0) / 60.0
    c = val * sat
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = val - c
    return (round((r + m) * 255), round((g + m) * 255), round((b + m) * 255))


def _shape_points(shape: str, s: int, angle: float) -> list[tuple[float, float]]:
    """Polygon of `shape` in an s×s tile, rotated by `angle` radians."""
    if shape in ("disc", "ring"):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), 0.8 * np.sin(t)], 1)  # a slight ellipse
    elif shape == "square":
        pts = np.array([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)])
    elif shape == "triangle":
        t = np.array([0, 2, 4]) * np.pi / 3 - np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    else:  # cross
        a, b = 0.3, 0.95
        pts = np.array(
            [
                (-a, -b),
                (a, -b),
                (a, -a),
                (b, -a),
                (b, a),
                (a, a),
                (a, b),
                (-a, b),
                (-a, a),
                (-b, a),
                (-b, -a),
                (-a, -a),
            ]
        )
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = pts @ rot.T * (s / 2 - 1) + s / 2
    return [(float(x), float(y)) for x, y in pts]


def _object_tile(
    rng: np.random.Generator, shape: str, hue: float, texture: str, s: int
) -> tuple[Image.Image, Image.Image]:
    """The class object on an s×s tile, and its mask."""
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    angle = float(rng.uniform(0, 2 * np.pi))
    draw.polygon(_shape_points(shape, s, angle), fill=255)
    if shape == "ring":  # the disc with a hole of half its size
        outline = _shape_points("disc", s, angle)
        draw.polygon(
            [(s / 2 + (x - s / 2) / 2, s / 2 + (y - s / 2) / 2) for x, y in outline], fill=0
        )
    sat, val = rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)
    tile = Image.new("RGB", (s, s), _hsv(hue, sat, val))
    if texture != "plain":
        ink = _hsv(hue + rng.uniform(-10, 10), sat, val * rng.uniform(0.3, 0.55))
        tdraw = ImageDraw.Draw(tile)
        if texture == "striped":
            period = max(4, int(s * rng.uniform(0.1, 0.18)))
            width = max(2, period // 2)
            theta = rng.uniform(0, np.pi)
            dx, dy = math.cos(theta) * 2 * s, math.sin(theta) * 2 * s
            for c in range(-2 * s, 2 * s, period):
                cx, cy = s / 2 + c * -math.sin(theta), s / 2 + c * math.cos(theta)
                tdraw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=ink, width=width)
        else:  # dotted
            step = max(5, int(s * rng.uniform(0.12, 0.2)))
            r = max(1.5, step * 0.28)
            off = rng.uniform(0, step, 2)
            for y in np.arange(off[1], s, step):
                for x in np.arange(off[0], s, step):
                    tdraw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    return tile, mask


def synthetic_image(
    rng: np.random.Generator, k: int, size_range: tuple[int, int] = (300, 500)
) -> Image.Image:
    """One RGB image of class k, of a random ImageNet-like size (mostly landscape)."""
    lo, hi = size_range
    a, b = sorted(int(v) for v in rng.integers(lo, hi + 1, 2))
    w, h = (b, a) if rng.random() < 0.75 else (a, b)
    shape, hue_name, texture = class_cues(k)
    hue = HUES.index(hue_name) * 360 / len(HUES) + rng.uniform(-14, 14)
    # Background: a gradient between two dull colours of random hue.
    c0, c1 = (
        np.array(_hsv(rng.uniform(0, 360), rng.uniform(0, 0.4), rng.uniform(0.2, 0.9)), np.float32)
        for _ in range(2)
    )
    theta = rng.uniform(0, 2 * np.pi)
    ys = np.linspace(0, math.sin(theta), h, dtype=np.float32)
    xs = np.linspace(0, math.cos(theta), w, dtype=np.float32)
    ramp = np.add.outer(ys, xs)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    bg = c0 + ramp[..., None] * (c1 - c0)
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    short = min(w, h)
    # Distractors: smaller shapes of any kind and colour.
    for _ in range(int(rng.integers(1, 4))):
        s = max(2, int(short * rng.uniform(0.1, 0.25)))
        tile, mask = _object_tile(
            rng, SHAPES[int(rng.integers(len(SHAPES)))], rng.uniform(0, 360), "plain", s
        )
        img.paste(tile, (int(rng.integers(0, w - s)), int(rng.integers(0, h - s))), mask)
    # The object, mostly inside the central square that `prepare` keeps.
    s = max(2, int(short * rng.uniform(0.3, 0.6)))
    tile, mask = _object_tile(rng, shape, hue, texture, s)
    cx = w / 2 + rng.uniform(-0.25, 0.25) * short
    cy = h / 2 + rng.uniform(-0.25, 0.25) * short
    img.paste(tile, (int(cx - s / 2), int(cy - s / 2)), mask)
    amp = int(rng.integers(6, 22))  # uniform pixel noise (a Gaussian costs 5× more to draw)
    arr = np.asarray(img, np.int16) + rng.integers(-amp, amp + 1, (h, w, 3), dtype=np.int16)
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _rng(seed: int, split: str, k: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_IDS[split], k, i])


def _encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}), **kw)  # ImageNet-like
    return buf.getvalue()


# --------------------------------------------------------------------------- trees


def make_tree(
    root: Path,
    *,
    classes: int = 8,
    train_per_class: int = 20,
    val_per_class: int = 5,
    size_range: tuple[int, int] = (300, 500),
    seed: int = 0,
    traps: bool = False,
    val_form: ValForm = "kaggle",
) -> SyntheticTree:
    """Write an ILSVRC-2012-shaped tree under `root`.

    `train/<wnid>/<wnid>_<i>.JPEG`, and the validation images either flat
    (`val/ILSVRC2012_val_<n>.JPEG`, labelled by `LOC_val_solution.csv` for
    "kaggle" or by the devkit for "devkit") or in `val/<wnid>/` ("folders").
    `LOC_synset_mapping.txt` carries the class words (not with "devkit", whose
    meta.mat has them).
    """
    if not 1 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be 1..{MAX_CLASSES}, got {classes}")
    root = Path(root)
    wnids = [class_wnid(k) for k in range(classes)]
    words = {wnids[k]: class_words(k) for k in range(classes)}
    train: list[tuple[str, str]] = []
    for k, wnid in enumerate(wnids):
        for i in range(train_per_class):
            rel = f"train/{wnid}/{wnid}_{i + 1}.JPEG"
            img = synthetic_image(_rng(seed, "train", k, i), k, size_range)
            _write(root / rel, _encode(img))
            train.append((rel, wnid))
    val: list[tuple[str, str]] = []
    order = np.random.default_rng([seed, 7]).permutation(classes * val_per_class)
    for n, j in enumerate(order):  # flat val names interleave the classes, as in ILSVRC
        k, i = divmod(int(j), val_per_class)
        name = f"ILSVRC2012_val_{n + 1:08d}.JPEG"
        rel = f"val/{wnids[k]}/{name}" if val_form == "folders" else f"val/{name}"
        _write(root / rel, _encode(synthetic_image(_rng(seed, "val", k, i), k, size_range)))
        val.append((rel, wnids[k]))
    trap_kinds = _write_traps(root, wnids, train, val, seed, size_range) if traps else {}
    val.sort()
    if val_form == "kaggle":
        write_kaggle(root, val, words)
    elif val_form == "devkit":
        write_devkit(root, val, words, seed=seed)
    else:
        write_synset_mapping(root, words)
    return SyntheticTree(root, tuple(sorted(wnids)), words, tuple(train), tuple(val), trap_kinds)


def make_image_folder(
    root: Path,
    *,
    classes: int = 4,
    train_per_class: int = 10,
    val_per_class: int = 3,
    size_range: tuple[int, int] = (300, 500),
    seed: int = 0,
) -> SyntheticTree:
    """A generic `train/<class>/`, `val/<class>/` tree, in JPEG, PNG and BMP files."""
    root = Path(root)
    names = [class_words(k).replace(" ", "_") for k in range(classes)]
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    exts = (("jpg", "JPEG"), ("png", "PNG"), ("bmp", "BMP"))
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for k, name in enumerate(names):
            for i in range(per_class):
                ext, fmt = exts[i % len(exts)]
                rel = f"{split}/{name}/img_{i:04d}.{ext}"
                img = synthetic_image(_rng(seed, split, k, i), k, size_range)
                _write(root / rel, _encode(img, fmt))
                splits[split].append((rel, name))
    words = {n: n.replace("_", " ") for n in names}
    return SyntheticTree(
        root, tuple(sorted(names)), words, tuple(splits["train"]), tuple(splits["val"])
    )


def _write_traps(
    root: Path,
    wnids: Sequence[str],
    train: list[tuple[str, str]],
    val: list[tuple[str, str]],
    seed: int,
    size_range: tuple[int, int],
) -> dict[str, str]:
    """ImageNet's awkward files, in the first classes' training folders; one val image
    is made grayscale. Convertible ones join `train`; returns path → trap kind."""
    rng = np.random.default_rng([seed, 99])
    kinds: dict[str, str] = {}
    for n, kind in enumerate(CONVERTIBLE_TRAPS + UNREADABLE_TRAPS):
        k = n % len(wnids)
        wnid = wnids[k]
        base = synthetic_image(rng, k, size_range)
        ext = "txt" if kind == "stray" else "JPEG"
        rel = f"train/{wnid}/{wnid}_{kind}.{ext}"
        _write(root / rel, _trap_bytes(kind, base))
        kinds[rel] = kind
        if kind in CONVERTIBLE_TRAPS:
            train.append((rel, wnid))
    if val:
        rel = val[0][0]
        with Image.open(root / rel) as im:
            gray = im.convert("L")
        _write(root / rel, _encode(gray))
        kinds[rel] = "gray"
    return kinds


def _trap_bytes(kind: str, img: Image.Image) -> bytes:
    if kind == "cmyk":  # ImageNet has 22 (Adobe, inverted); PIL writes the marker too
        return _encode(img.convert("CMYK"))
    if kind == "gray":
        return _encode(img.convert("L"))
    if kind == "png":  # n02105855_2933.JPEG is a PNG
        return _encode(img, "PNG")
    if kind == "palette":
        return _encode(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG")
    if kind == "exif":  # stored sideways, shown upright: orientation 6 (rotate 90° CW)
        exif = Image.Exif()
        exif[0x0112] = 6
        return _encode(img.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    if kind == "rgba":
        rgba = img.convert("RGBA")
        alpha = np.full(rgba.size[::-1], 255, np.uint8)
        alpha[: alpha.shape[0] // 3] = 0  # the top third transparent
        rgba.putalpha(Image.fromarray(alpha, "L"))
        return _encode(rgba, "PNG")
    if kind == "truncated":
        data = _encode(img)
        return data[: len(data) * 3 // 5]
    if kind == "empty":
        return b""
    if kind == "stray":
        return b"downloaded from a mirror; see the synsets list\n"
    if kind == "bomb":
        return png_header(30_000, 30_000)
    raise ValueError(f"unknown trap {kind!r}")


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width×height pixels but holds none: a decompression bomb's
    header (PIL refuses it on open, before any decoding)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
