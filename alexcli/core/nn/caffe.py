"""Caffe's bvlc_alexnet as an alexcli checkpoint, read without Caffe: docs/import.md.

A `.caffemodel` is a protobuf `NetParameter`; only the weights are needed, so the file is
walked with the protobuf wire format directly (varints, length-delimited fields), using
the field numbers of caffe.proto:

- NetParameter: `layer` = 100 (LayerParameter: name 1, blobs 7), or the older `layers`
  = 2 (V1LayerParameter: name 4, blobs 6), as the released bvlc_alexnet has;
- BlobProto: num 1, channels 2, height 3, width 4, data 5 (float, packed or not),
  shape 7 (BlobShape: dim 1, int64, packed or not), double_data 8.

bvlc_alexnet is the paper's network as Caffe trained it: two groups (towers) in conv2,
conv4 and conv5, 96/256/384/384/256 kernels, LRN after conv1 and conv2 with k = 1 and
α/n (Caffe's convention), 3×3 stride-2 pooling after the LRN, a 227 input with no conv1
padding, BGR channels, raw 0–255 values minus a mean image (ilsvrc_2012_mean.binaryproto,
BGR, 256×256). Its fully connected layers are whole matrices; alexcli's towers hold
their rows, which is the same map (each tower's fc6 sees both towers' conv5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from alexcli.config import PRESETS, TrainConfig, merge
from alexcli.core.nn.checkpoint import Checkpoint
from alexcli.core.nn.imports import imported_checkpoint
from alexcli.core.nn.model import build_model
from alexcli.errors import FormatError

# The model zoo's page for bvlc_alexnet: ILSVRC-2012 val, the centre crop only —
# top-1 accuracy 57.1 %, top-5 80.2 %.
CAFFE_VAL = {"top1_error": 1 - 0.571, "top5_error": 1 - 0.802}
# Caffe's ImageNet mean pixel (BGR), the mean image averaged: for a file without --mean.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
SIZE = 256
_HINT = "alexcli reads Caffe's bvlc_alexnet.caffemodel (or a model of its layout)"


def caffe_config(num_classes: int) -> TrainConfig:
    """bvlc_alexnet in alexcli's configuration (the paper's recipe otherwise)."""
    model = {
        "num_classes": num_classes,
        "crop": 227,
        "conv1_padding": 0,
        "lrn_k": 1.0,
        "lrn_convention": "torch",
        "lrn_span": "all",
        "init": "caffe",
    }
    return merge(PRESETS["paper"], {"preset": "caffe", "model": model}, "Caffe's bvlc_alexnet")


# --------------------------------------------------------------------------- wire format


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value): an int for varints and fixed widths (raw bits),
    a memoryview for length-delimited fields."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:  # invalid in protobuf: zeros, text, another format
            raise ValueError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise ValueError("truncated field")
            yield field, wire, int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            yield field, wire, buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"wire type {wire}")


def _ints(value: int | memoryview) -> list[int]:
    """A repeated integer field's values, packed (one length-delimited run) or not."""
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def read_blob(buf: memoryview) -> np.ndarray:
    """A BlobProto as a float32 array of its shape."""
    dims: list[int] = []
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    parts: list[np.ndarray] = []
    for field, wire, value in _fields(buf):
        if field == 7 and isinstance(value, memoryview):  # BlobShape
            for f, _, v in _fields(value):
                if f == 1:
                    dims += _ints(v)
        elif field in legacy and isinstance(value, int):
            legacy[field] = value
        elif field in (5, 8):  # float / double data: packed, or one value per field
            width, kind = (4, "<f4") if field == 5 else (8, "<f8")
            if isinstance(value, memoryview):
                if len(value) % width:
                    raise ValueError(f"packed data of {len(value)} bytes")
                raw = value
            elif wire == (5 if field == 5 else 1):
                raw = memoryview(value.to_bytes(width, "little"))
            else:
                raise ValueError(f"data in wire type {wire}")
            with np.errstate(over="ignore"):  # a double beyond float32: inf, as Caffe would
                parts.append(np.frombuffer(raw, kind).astype(np.float32))
    data = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    shape = dims or [d for d in legacy.values() if d] or [len(data)]
    if math.prod(shape) != len(data):
        raise ValueError(f"a blob of shape {tuple(shape)} holds {len(data)} values")
    return data.astype(np.float32).reshape(shape)


def read_caffemodel(path: Path) -> dict[str, list[np.ndarray]]:
    """Each named layer's blobs (weights, then biases) from a NetParameter file."""
    try:
        buf = memoryview(Path(path).read_bytes())
        layers: dict[str, list[np.ndarray]] = {}
        for field, _, value in _fields(buf):
            if field not in (2, 100) or not isinstance(value, memoryview):
                continue
            name_field, blobs_field = (1, 7) if field == 100 else (4, 6)
            name, blobs = "", []
            for f, _, v in _fields(value):
                if f == name_field and isinstance(v, memoryview):
                    name = bytes(v).decode("utf-8", "replace")
                elif f == blobs_field and isinstance(v, memoryview):
                    blobs.append(read_blob(v))
            if blobs:
                layers[name] = blobs
    except (ValueError, OverflowError) as e:  # (UnicodeDecodeError is a ValueError)
        raise FormatError(f"{path}: not a Caffe model ({e})", hint=_HINT) from None
    return layers


def read_binaryproto(path: Path) -> np.ndarray:
    """Caffe's mean file: one BlobProto (1, 3, H, W), BGR, 0–255."""
    try:
        blob = read_blob(memoryview(Path(path).read_bytes()))
    except (ValueError, OverflowError) as e:
        raise FormatError(f"{path}: not a Caffe mean file ({e})") from None
    if blob.ndim == 4 and blob.shape[0] == 1:
        blob = blob[0]
    if blob.ndim != 3 or blob.shape[0] != 3 or blob.shape[1] != blob.shape[2]:
        raise FormatError(f"{path}: a mean of shape {blob.shape}, not a square (3, H, W) image")
    return blob


# --------------------------------------------------------------------------- the import


def from_caffe(
    layers: dict[str, list[np.ndarray]],
    mean_bgr: np.ndarray | None,
    classes: Sequence[dict[str, str]] | None,
    source: Path,
) -> Checkpoint:
    """bvlc_alexnet's blobs (and its mean image, (3, S, S) BGR) as an alexcli checkpoint:
    conv1's input channels reversed (BGR → RGB), each layer's output rows split between
    the two towers. `mean_bgr` None: Caffe's mean pixel everywhere."""
    missing = [n for n in LAYERS if n not in layers or len(layers[n]) != 2]
    if missing:
        raise FormatError(
            f"{source}: no weights and biases for {', '.join(missing[:3])}"
            f"{'…' if len(missing) > 3 else ''}: not bvlc_alexnet",
            hint=_HINT,
        )
    fc8 = layers["fc8"][0]
    num_classes = int(fc8.shape[-2] if fc8.ndim >= 2 else 0)  # old files: (1, 1, out, in)
    cfg = caffe_config(num_classes)
    shapes = {k: tuple(v.shape) for k, v in build_model(cfg.model).state_dict().items()}
    weights: dict[str, torch.Tensor] = {}
    for name in LAYERS:
        w, b = layers[name]
        w = w.reshape(w.shape[-2:]) if name.startswith("fc") else w  # old (1, 1, out, in)
        if name == "conv1":
            w = w[:, ::-1]  # BGR → RGB
        halves = num_classes - num_classes // 2 if name == "fc8" else w.shape[0] // 2
        for t, (lo, hi) in enumerate([(0, halves), (halves, w.shape[0])]):
            for kind, value in (("weight", w[lo:hi]), ("bias", b.reshape(-1)[lo:hi])):
                key = f"towers.{t}.{name}.{kind}"
                if tuple(value.shape) != shapes[key]:
                    raise FormatError(
                        f"{source}: {name}'s {kind} gives tower {t + 1} {tuple(value.shape)}, "
                        f"bvlc_alexnet's has {shapes[key]}",
                        hint=_HINT,
                    )
                weights[key] = torch.from_numpy(np.ascontiguousarray(value, np.float32))
    if mean_bgr is None:
        mean = np.broadcast_to(np.asarray(CAFFE_MEAN_BGR[::-1], np.float32), (SIZE, SIZE, 3))
    else:
        mean = mean_bgr.transpose(1, 2, 0)[..., ::-1]
    size = int(mean.shape[0])
    if size < cfg.crop:
        raise FormatError(f"the mean image is {size}×{size}, smaller than the {cfg.crop} crop")
    return imported_checkpoint(source, cfg, weights, mean, num_classes, classes)
