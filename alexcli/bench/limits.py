"""Measurements for `alexcli bench`: each stage's rate and the machine's limit beside it.

No paper section of its own: the paper reports its throughput only as "5–6 days on two
GTX 580 3GB GPUs" for ~90 epochs (PAPER.md "Learning"); this is how we find out how
close each of our stages runs to what the hardware allows.

- `matmul_peak`, `conv_peak`: FLOP/s of one big square matmul, and of one big 3×3
  convolution, in a given dtype (the ceiling of the conv and FC layers);
- `flops_per_image`: the network's arithmetic per training image, from the layer table;
- `raw_read_rate`: whole images read at random positions of the shards with nothing
  done to them (the ceiling of the loader);
- `loader_rate`: the training loader, augmentation included, on the training device;
- `StepBench` / `StepSetup`: the SGD step of `core/engine.py` on a made-up batch, tuned
  or plain; `profile_ops`: where a step's time goes (torch.profiler).
Each returns plain numbers; the stage (`stages/bench.py`) puts them side by side.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from alexcli.config import ModelConfig
from alexcli.core.data.loader import Batch, CropDataset, EpochSampler, make_loader
from alexcli.core.data.shards import ShardSet
from alexcli.core.data.transforms import Normalizer
from alexcli.core.machine import cpu_cores, keep_freed_memory
from alexcli.core.nn.loops import Amp, EpochProgress, StepContext, train_epoch
from alexcli.core.nn.lrn import local_response_norm, torch_lrn
from alexcli.core.nn.model import build_model, layer_table
from alexcli.core.nn.optim import LrSchedule, make_optimizer


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


# --------------------------------------------------------------------------- limits


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
    `torch.matmul` does (on this Zen 4: 124 against 97 GFLOP/s fp32), so a network of
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


def _read_for(paths: Sequence[Path], counts: Sequence[int], seconds: float, seed: int) -> Rate:
    """One process: whole images at random positions, handles kept open, for `seconds`."""
    handles = [h5py.File(p, "r") for p in paths]
    datasets = [f["images"] for f in handles]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng(seed)
    done, start = 0, time.perf_counter()
    try:
        while True:
            for index in rng.integers(0, offsets[-1], 64):
                s = int(np.searchsorted(offsets, index, side="right") - 1)
                datasets[s][int(index - offsets[s])]
            done += 64
            took = time.perf_counter() - start
            if took >= seconds:
                return Rate(done, took)
    finally:
        for f in handles:
            f.close()


def raw_read_rate(shards: ShardSet, processes: int = 1, seconds: float = 2.0) -> Rate:
    """Images/s of `processes` processes reading whole images at random, nothing else:
    the loader's ceiling (it reads the same way, then crops, reflects and normalises)."""
    args = [(shards.paths, shards.counts, seconds, seed) for seed in range(processes)]
    if processes == 1:
        return _read_for(*args[0])
    with mp.get_context("fork").Pool(processes) as pool:
        rates = pool.starmap(_read_for, args)
    return Rate(sum(r.images for r in rates), max(r.seconds for r in rates))


# --------------------------------------------------------------------------- stages


def loader_rate(
    shards: ShardSet,
    normalize: Normalizer,
    *,
    size: int,
    batch_size: int,
    crop: int,
    workers: int,
    channels_last: bool = True,
    seconds: float = 2.0,
) -> Rate:
    """Training batches as `alexcli train` makes them: random crops, reflections and
    colour noise read by `workers` processes from `size`-px shards, then normalised on
    `normalize`'s device. The first batch (worker start-up) is not timed."""
    sampler = EpochSampler(len(shards), batch_size, size=size, crop=crop, seed=0)
    device = normalize.mean.device
    loader = make_loader(
        CropDataset(shards, crop), sampler, workers=workers, pin_memory=device.type == "cuda"
    )
    with keep_freed_memory(device.type == "cpu"):  # as `train` runs it (~4× on the CPU)
        done, start, epoch = 0, 0.0, 0
        while True:
            sampler.set_epoch(epoch)
            for batch in loader:
                x = normalize(batch.images, batch.ys, batch.xs, batch.flips, batch.alphas,
                              channels_last=channels_last)  # fmt: skip
                synchronize(device)
                if not start:  # the clock starts once the first batch is through
                    start = time.perf_counter()
                    continue
                done += int(x.shape[0])
                took = time.perf_counter() - start
                if took >= seconds and done >= 2 * batch_size:
                    return Rate(done, took)
            epoch += 1


@dataclass(frozen=True)
class StepSetup:
    """How the SGD step runs. The defaults are plain eager PyTorch; `tuned()` is ours."""

    amp: Amp = "off"
    channels_last: bool = False
    fused: bool = False  # fused SGD kernel instead of the foreach ones
    keep_heap: bool = False  # `heap.keep_freed_memory` (CPU)
    plain_lrn: bool = False  # PyTorch's F.local_response_norm instead of ours

    @classmethod
    def plain(cls) -> StepSetup:
        return cls(plain_lrn=True)

    @classmethod
    def tuned(cls, amp: Amp = "off") -> StepSetup:
        return cls(amp=amp, channels_last=True, fused=True, keep_heap=True)


def made_up_batch(n: int, crop: int, size: int, classes: int, seed: int = 0) -> Batch:
    """A batch as the loader delivers it, of random pixels, crops and labels."""
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randint(0, 256, (n, crop, crop, 3), dtype=torch.uint8, generator=g),
        torch.randint(0, classes, (n,), generator=g),
        torch.randint(0, size - crop + 1, (n,), generator=g),
        torch.randint(0, size - crop + 1, (n,), generator=g),
        torch.rand(n, generator=g) < 0.5,
        torch.randn(n, 3, generator=g) * 0.1,
    )


def flat_normalizer(size: int, device: torch.device, input_scale: float = 1.0) -> Normalizer:
    """A Normalizer with a grey mean and unit eigen data: the same work as the real one."""
    return Normalizer.create(
        np.full((size, size, 3), 120.0), np.ones(3), np.eye(3), device, input_scale=input_scale
    )


class StepBench:
    """One network and optimizer, set up as `setup` says, stepping on one made-up batch."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        batch_size: int,
        devices: Sequence[torch.device],
        setup: StepSetup,
        lr: float = 0.01,
        input_scale: float = 1.0,
    ) -> None:
        torch.manual_seed(0)
        crop = cfg.crop
        model = build_model(cfg, devices, lrn=torch_lrn if setup.plain_lrn else local_response_norm)
        if setup.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        device = devices[0]
        scaler = torch.amp.GradScaler("cuda") if setup.amp == "fp16" else None
        self.ctx = StepContext(
            model, make_optimizer(model, lr, 0.9, 5e-4, fused=setup.fused), LrSchedule(lr),
            flat_normalizer(crop + crop // 7, device, input_scale), device, setup.amp, scaler,
            setup.channels_last,
        )  # fmt: skip
        self.batch = made_up_batch(batch_size, crop, crop + crop // 7, cfg.num_classes)
        self.setup = setup

    def steps(self, n: int) -> Rate:
        """`n` SGD steps (normalise, forward, loss, backward, update), timed."""
        start = time.perf_counter()
        train_epoch(self.ctx, [self.batch] * n, epoch=0, steps_per_epoch=n, state=EpochProgress())
        synchronize(self.ctx.device)
        return Rate(n * self.batch.n, time.perf_counter() - start)

    def rate(self, seconds: float, warmup: int = 1, at_least: int = 2) -> Rate:
        """The fastest of the steps after `warmup` untimed ones, stepping until `seconds`
        have passed (≥ `at_least` steps): on a shared machine other work only ever
        slows a step down, so the best one is the step's own speed."""
        with keep_freed_memory(self.setup.keep_heap):
            self.steps(warmup)
            times: list[float] = []
            while sum(times) < seconds or len(times) < at_least:
                times.append(self.steps(1).seconds)
        return Rate(self.batch.n, min(times))

    def top_ops(self, k: int = 8) -> list[tuple[str, float]]:
        """The `k` operators taking most of one step's time, with their share of it."""
        with keep_freed_memory(self.setup.keep_heap):
            self.steps(1)
            return profile_ops(lambda: self.steps(1), self.ctx.device, k)


def profile_ops(
    fn: Callable[[], object], device: torch.device, k: int = 8
) -> list[tuple[str, float]]:
    """Self time per operator while `fn` runs (device time on CUDA), the top `k`, as a
    share of the total over all operators."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with _quiet_stderr(), profile(activities=activities) as prof:
        fn()
    events = [e for e in prof.key_averages() if not e.key.startswith(("Optimizer.", "autograd::"))]

    def self_time(e: object) -> float:
        attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        return float(getattr(e, attr))

    total = sum(self_time(e) for e in events) or 1.0
    ranked = sorted(events, key=self_time, reverse=True)[:k]
    return [(e.key, self_time(e) / total) for e in ranked]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's native layer logs "profiler_start/stop" lines on fd 2; drop them."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------- machine


def describe_machine() -> dict[str, Any]:
    """The CPU (model, cores, the vector units that matter here), Python, torch, GPUs."""
    info = _cpu_info()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    flags = next(
        (set(ln.split(":", 1)[1].split()) for ln in info.splitlines() if ln.startswith("flags")),
        set(),
    )
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


def _cpu_info() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
