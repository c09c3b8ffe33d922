"""A trained network for use without alexcli: docs/export.md.

`Deployable` wraps the network so it takes what a user has — uint8 crops, NCHW or NHWC —
and returns class probabilities: the mean image's centre window and the input scale are
buffers inside it, LRN is PyTorch's own `F.local_response_norm` (plain operators that
every exporter knows; `core/nn/lrn.py`'s hand-written backward is for training), and
the towers stay as they are, so the exported graph is the two-tower network.

The writers: `safetensors` (the weights, the mean image and eigen data, and the
configuration and classes as metadata: `alexcli.load` rebuilds the run from it),
`torchscript` (`torch.jit.trace`), `pt2` (`torch.export`) and `onnx` (`torch.onnx.export`
through `torch.export`, opset `ONNX_OPSET`). Each reloader opens a file the way a user
without alexcli would (safetensors, `torch.jit.load`, `torch.export.load`, onnxruntime).
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexcli.core.atomic import atomic_path
from alexcli.core.nn.checkpoint import (
    Checkpoint,
    file_metadata,
    read_safetensors,
    safetensors_bytes,
)
from alexcli.core.nn.lrn import torch_lrn
from alexcli.core.nn.model import AlexNet
from alexcli.errors import ConfigError

Format = Literal["safetensors", "torchscript", "pt2", "onnx"]
Layout = Literal["nchw", "nhwc"]
FORMATS: tuple[Format, ...] = ("safetensors", "torchscript", "pt2", "onnx")
SUFFIXES: dict[str, Format] = {
    ".safetensors": "safetensors",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".pt2": "pt2",
    ".onnx": "onnx",
}
ONNX_OPSET = 18  # torch.export's ONNX translator targets 18 and up; onnxruntime ≥ 1.16 runs it


class Deployable(nn.Module):
    """uint8 crops (n, 3, crop, crop), or (n, crop, crop, 3) with `layout="nhwc"` →
    class probabilities (n, classes), float32: (x − the mean image's centre window) ×
    input scale, the network, softmax. Exactly `alexcli predict --views 1` on a crop."""

    mean: torch.Tensor  # (3, crop, crop) float32, 0–255: a buffer

    def __init__(self, model: AlexNet, mean: torch.Tensor, input_scale: float, layout: Layout):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.input_scale = float(input_scale)
        self.layout = layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2) if self.layout == "nhwc" else images
        x = x.float() - self.mean
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return F.softmax(self.model(x), dim=1)


def deployable(ckpt: Checkpoint, layout: Layout = "nchw") -> Deployable:
    """The checkpoint's network on the CPU, in eval mode, with its preprocessing inside."""
    crop, size = ckpt.config.crop, ckpt.size
    c = (size - crop) // 2  # transforms.center_offset: the centre view's window
    mean = torch.from_numpy(np.ascontiguousarray(ckpt.mean[c : c + crop, c : c + crop]))
    model = ckpt.build_model(lrn=torch_lrn)
    return Deployable(model, mean.permute(2, 0, 1).contiguous(), ckpt.config.input_scale, layout)


def example_input(module: Deployable, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Random uint8 crops in the module's layout (what tracing and the checks feed it)."""
    crop = int(module.mean.shape[-1])
    shape = (n, crop, crop, 3) if module.layout == "nhwc" else (n, 3, crop, crop)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


# --------------------------------------------------------------------------- writers


def write(
    ckpt: Checkpoint,
    path: Path,
    fmt: Format,
    layout: Layout = "nchw",
    check: Callable[[Path], None] | None = None,
) -> None:
    """Write `ckpt` as `fmt` to `path`, atomically: under a temporary name, which `check`
    (if given) reopens and may refuse by raising, before it replaces `path`. A failed
    export leaves nothing, and an earlier file at `path` as it was."""
    with atomic_path(path) as tmp:
        if fmt == "safetensors":
            tmp.write_bytes(safetensors_bytes(ckpt))
        else:
            _write_graph(ckpt, tmp, fmt, layout)
        if check is not None:
            check(tmp)


def _write_graph(ckpt: Checkpoint, tmp: Path, fmt: Format, layout: Layout) -> None:
    module = deployable(ckpt, layout)
    example = example_input(module)
    meta = file_metadata(ckpt, layout)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracers' deprecation and tracer notes
        if fmt == "torchscript":
            traced = torch.jit.trace(module, example)
            torch.jit.save(traced, str(tmp), _extra_files={"alexcli.json": json.dumps(meta)})
        elif fmt == "pt2":
            program = torch.export.export(module, (example,), dynamic_shapes=_batch_dim())
            buffer = io.BytesIO()  # torch.export.save wants a name ending .pt2 or a buffer
            torch.export.save(program, buffer, extra_files={"alexcli.json": json.dumps(meta)})
            tmp.write_bytes(buffer.getvalue())
        else:
            _write_onnx(module, example, tmp, meta)


def _batch_dim() -> dict[str, Any]:
    return {"images": {0: torch.export.Dim("n", min=1, max=65536)}}


def _write_onnx(
    module: Deployable, example: torch.Tensor, path: Path, meta: dict[str, str]
) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (what torch.onnx's exporter needs)
    except ImportError as e:
        raise ConfigError(
            f"--format onnx needs the `{e.name}` package",
            hint="pip install 'alexcli[onnx]'",
        ) from None
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed. Skipping…"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_shapes=_batch_dim(),
            verbose=False,
        )
    finally:
        quiet.setLevel(level)
    assert program is not None
    proto = program.model_proto
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


# --------------------------------------------------------------------------- reloading


def reload(path: Path, fmt: Format) -> Callable[[np.ndarray], np.ndarray]:
    """Open an exported file as a user would without alexcli; returns uint8 crops →
    probabilities. (safetensors holds weights, not a graph: `alexcli.load` rebuilds it.)"""
    if fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
        return lambda x: _run_torch(module, x)
    if fmt == "pt2":
        with open(path, "rb") as f:  # a file object: the name need not end in .pt2
            program = torch.export.load(f)
        return lambda x: _run_torch(program.module(), x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: np.asarray(session.run(None, {"images": x})[0])
    module = deployable(read_safetensors(path))
    return lambda x: _run_torch(module, x)


def _run_torch(module: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()
