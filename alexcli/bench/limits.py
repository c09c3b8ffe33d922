"""The machine's ceilings, measured in the same run as the stages they bound.

No paper section of its own: the paper reports its throughput only as "5–6 days on two
GTX 580 3GB GPUs" for ~90 epochs (docs/paper.md "Learning"); this is how we find out how
close each stage runs to what the hardware allows.

- `matmul_peak`, `conv_peak`: FLOP/s of one big square matmul, and of one big 3×3
  convolution, in a given dtype (the ceiling of the conv and FC layers);
- `flops_per_image`: the network's arithmetic per training image, from the layer table;
- `describe_machine`: what the numbers were measured on.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alexcli.config import ModelConfig
from alexcli.core.machine import cpu_cores, cpu_model_and_flags
from alexcli.core.nn.model import layer_table


@dataclass(frozen=True)
class Rate:
    """`images` done in `seconds` of wall-clock time."""

    images: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (timings on CUDA are otherwise launch times)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    dtype: torch.dtype, device: torch.device, n: int = 4096, seconds: float = 1.0
) -> float:
    """FLOP/s (2n³ per product) of the best of repeated n×n @ n×n products in `dtype`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2.0 * n**3 / _best_time(lambda: torch.matmul(a, b), device, seconds)


def conv_peak(
    dtype: torch.dtype,
    device: torch.device,
    *,
    batch: int = 32,
    channels: int = 256,
    side: int = 28,
    seconds: float = 1.0,
) -> float:
    """FLOP/s of a channels-last 3×3 convolution (channels → channels, padding 1) in
    `dtype`. oneDNN's convolution kernels come closer to a CPU's arithmetic peak than
    `torch.matmul` does (docs/performance.md "This machine"), so a network of
    convolutions can outrun "the matmul peak"; the best of the two is the honest limit."""
    cl = torch.channels_last
    x = (
        torch.randn(batch, channels, side, side, device=device)
        .to(dtype)
        .contiguous(memory_format=cl)
    )
    w = torch.randn(channels, channels, 3, 3, device=device).to(dtype).contiguous(memory_format=cl)
    flop = 2.0 * batch * side * side * channels * channels * 9
    return flop / _best_time(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, seconds)


def _best_time(fn: Callable[[], object], device: torch.device, seconds: float) -> float:
    """The shortest of repeated calls of `fn` (after one untimed), repeated for `seconds`."""
    fn()  # the first call picks kernels and allocates
    synchronize(device)
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        start = time.perf_counter()
        fn()
        synchronize(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return best


def peaks(
    dtypes: Sequence[str], device: torch.device, *, quick: bool = False
) -> tuple[dict[str, float], dict[str, float]]:
    """FLOP/s of a big matmul and of a big 3×3 convolution for each dtype ("fp32",
    "bf16", "fp16"), sized for `device` (tiny and short with `quick`)."""
    seconds = 0.05 if quick else 1.0
    n = 256 if quick else (8192 if device.type == "cuda" else 2048)
    conv: dict[str, int] = {}
    if quick:
        conv = {"batch": 2, "channels": 64, "side": 14}
    elif device.type == "cuda":
        conv = {"batch": 256, "channels": 512, "side": 28}
    types = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    matmul = {k: matmul_peak(types[k], device, n, seconds) for k in dtypes}
    convs = {k: conv_peak(types[k], device, seconds=seconds, **conv) for k in dtypes}
    return matmul, convs


def flops_per_image(cfg: ModelConfig) -> float:
    """FLOPs of one training image: 2 per multiply-add, ×3 for forward + backward.

    The backward pass costs two forwards (∂input and ∂weights), so a step is 3× the
    forward's multiply-adds (`layer_table`: weights only, no LRN, pooling or ReLU). conv1
    needs no ∂input, so the exact count is ~2.4 % lower; we use the plain convention.
    """
    return 6.0 * sum(row.mult_adds for row in layer_table(cfg))


def describe_machine() -> dict[str, Any]:
    """The CPU (model, cores, the vector units that matter here), Python, torch, GPUs."""
    model, flags = cpu_model_and_flags()
    machine: dict[str, Any] = {
        "cpu": model,
        "cores": cpu_cores(),
        "cpu_features": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        machine["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return machine
