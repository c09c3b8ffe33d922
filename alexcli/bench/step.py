"""The SGD step of `core/nn/loops.py` on a made-up batch, set up as `train` runs it
("tuned") or as plain eager PyTorch would ("plain": PyTorch's own LRN layer, foreach SGD,
contiguous tensors, fp32), and where a step's time goes (torch.profiler).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alexcli.bench.limits import Rate, synchronize
from alexcli.config import ModelConfig
from alexcli.core.data.batches import Batch
from alexcli.core.data.transforms import Normalizer
from alexcli.core.machine import keep_freed_memory
from alexcli.core.nn.loops import Amp, EpochProgress, NetworkInput, compiled, train_steps
from alexcli.core.nn.lrn import local_response_norm, torch_lrn
from alexcli.core.nn.model import build_model
from alexcli.core.nn.optim import make_optimizer


@dataclass(frozen=True)
class StepSetup:
    """How the SGD step runs. The defaults are plain eager PyTorch; `tuned()` is ours."""

    amp: Amp = "off"
    channels_last: bool = False
    fused: bool = False  # fused SGD kernel instead of the foreach ones
    keep_heap: bool = False  # `machine.keep_freed_memory` (CPU)
    plain_lrn: bool = False  # PyTorch's F.local_response_norm instead of ours
    compiled: bool = False  # the network through torch.compile (inductor)
    threads: int | None = None  # compute threads while it runs (CPU); None: as set

    @classmethod
    def plain(cls, threads: int | None = None, compiled: bool = False) -> StepSetup:
        return cls(plain_lrn=True, threads=threads, compiled=compiled)

    @classmethod
    def tuned(
        cls, amp: Amp = "off", threads: int | None = None, compiled: bool = False
    ) -> StepSetup:
        return cls(
            amp=amp,
            channels_last=True,
            fused=True,
            keep_heap=True,
            threads=threads,
            compiled=compiled,
        )


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
        clip_grad_norm: float | None = None,
    ) -> None:
        torch.manual_seed(0)
        crop = cfg.crop
        model = build_model(cfg, devices, lrn=torch_lrn if setup.plain_lrn else local_response_norm)
        if setup.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.device = device = devices[0]
        self.scaler = torch.amp.GradScaler("cuda") if setup.amp == "fp16" else None
        self.sgd = make_optimizer(
            model, lr, 0.9, 5e-4, fused=setup.fused, scaled=self.scaler is not None
        )
        self.net = compiled(model) if setup.compiled else model
        normalize = flat_normalizer(crop + crop // 7, device, input_scale)
        self.inputs = NetworkInput(normalize, setup.channels_last)
        self.lr = lr
        batch = made_up_batch(batch_size, crop, crop + crop // 7, cfg.num_classes)
        # Pinned on CUDA as the loader delivers it: a non_blocking copy from pageable
        # memory is synchronous, and the step would look slower than it is.
        self.batch = batch.pin_memory() if device.type == "cuda" else batch
        self.setup = setup
        self.clip_grad_norm = clip_grad_norm  # the preset's: `small` clips every step

    def steps(self, n: int) -> Rate:
        """`n` SGD steps (normalise, forward, loss, backward, update), timed."""
        start = time.perf_counter()
        steps = train_steps(
            self.net,
            self.sgd,
            self.inputs,
            [self.batch] * n,
            EpochProgress(),
            epoch=0,
            lr=lambda step: self.lr,
            amp=self.setup.amp,
            scaler=self.scaler,
            clip_grad_norm=self.clip_grad_norm,
        )
        for _ in steps:
            pass
        synchronize(self.device)
        return Rate(n * self.batch.n, time.perf_counter() - start)

    def rate(self, seconds: float, warmup: int = 1, at_least: int = 2) -> Rate:
        """The fastest of the steps after `warmup` untimed ones, stepping until `seconds`
        have passed (≥ `at_least` steps): on a shared machine other work only ever
        slows a step down, so the best one is the step's own speed."""
        with keep_freed_memory(self.setup.keep_heap), self._threads():
            self.steps(warmup)  # torch.compile compiles here
            times: list[float] = []
            while sum(times) < seconds or len(times) < at_least:
                times.append(self.steps(1).seconds)
        return Rate(self.batch.n, min(times))

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        before = torch.get_num_threads()
        if self.setup.threads:
            torch.set_num_threads(self.setup.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def top_ops(self, k: int = 8) -> list[tuple[str, float]]:
        """The `k` operators taking most of one step's time, with their share of it."""
        with keep_freed_memory(self.setup.keep_heap), self._threads():
            self.steps(1)
            return profile_ops(lambda: self.steps(1), self.device, k)


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
