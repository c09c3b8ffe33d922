"""The forward pass as eval, predict and neighbors run it: docs/paper.md "Architecture"
(the same network and arithmetic, LRN included), arranged for inference alone.
docs/performance.md "Inference" has the measurements, against onnxruntime running the
exported graph on the same cores.

- `inference_lrn`: the normalisation of core/nn/lrn.py without its backward's
  bookkeeping (three saved tensors per call, a (C, C) band product for a 5-map window),
  done in cache-sized slices of the channels-last maps: each slice's squares, window
  sums (shifted adds, one per neighbour), d^-β and product while it sits in the cache.
  Under autograd it hands over to the training LRN, so a `Classifier.model` still trains.
  On a CPU only (`lrn_for`): it was measured there.
- `for_inference`: eval mode, the weights channels-last (the Normalizer's output
  already is: oneDNN's convolutions and max-pooling prefer it), fc6…fc8 through
  oneDNN's matmul (`OneDnnLinear`) instead of the BLAS.
- `ThreadTuner`: a CPU run's compute threads chosen by timing its own forward passes,
  as `train` probes its step (core/nn/threads.py), but at no extra cost: the first
  passes take the candidate counts in turn. The count does not change the values
  (tests/core/nn/test_inference.py).
- `inference`: no autograd, and on a CPU glibc's heap kept (core/machine.py) while a
  pass runs, so the activations of one batch reuse the pages of the last.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from alexcli.core.machine import cpu_cores, keep_freed_memory
from alexcli.core.nn.lrn import Lrn, local_response_norm
from alexcli.core.nn.model import FCS, AlexNet
from alexcli.core.nn.threads import fastest

# A slice's floats: its four arrays (input, squares, sums, output), 2 MB each, stay in
# the last-level cache. Measured against 2^15, 2^17 and the whole tensor: fastest on
# one thread and on two (docs/performance.md "Inference").
SLICE = 1 << 19


def inference_lrn(
    x: Tensor, size: int, alpha: float, beta: float, k: float, convention: str = "paper"
) -> Tensor:
    """`lrn.local_response_norm`'s values, for a forward pass alone: b = a·d^-β with
    d = k + α Σ a² over the window, summed in float32 whatever `x`'s dtype. The output
    is channels-last (the layout the inference network runs in)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return local_response_norm(x, size, alpha, beta, k, convention)
    scale = alpha if convention == "paper" else alpha / size
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1)  # (N, H, W, C): a view when x is channels-last
    rows = rows.contiguous().view(-1, c)
    out = torch.empty_like(rows)
    step = rows.shape[0] if x.device.type != "cpu" else max(SLICE // c, 1)
    m = min(step, rows.shape[0])
    sq = torch.empty((m, c), device=x.device)
    d = torch.empty((m, c), device=x.device)
    for lo in range(0, rows.shape[0], step):
        a = rows[lo : lo + step].float()
        _normalise(a, out[lo : lo + step], sq[: len(a)], d[: len(a)], size, scale, beta, k)
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def lrn_for(device: torch.device) -> Lrn:
    """The LRN of an inference network on `device`: `inference_lrn` on a CPU, where it
    was measured; elsewhere the training LRN (a GPU's memory is fast enough that the
    band product and the saved tensors cost little; not measured)."""
    return inference_lrn if device.type == "cpu" else local_response_norm


def _normalise(
    a: Tensor, out: Tensor, sq: Tensor, d: Tensor, size: int, scale: float, beta: float, k: float
) -> None:
    """One slice (rows, C): d = k + scale·Σ_window a², out = a·d^-β."""
    torch.square(a, out=sq)
    torch.add(sq, k / scale, out=d)  # d/scale, so the window is added unscaled
    for j in range(1, size // 2 + 1):  # the maps before each one…
        d[:, j:].add_(sq[:, :-j])
    for j in range(1, (size - 1) // 2 + 1):  # …and after it
        d[:, :-j].add_(sq[:, j:])
    d.mul_(scale)
    if beta == 0.75:  # d^-¾ = d^-½·(d^-½)^½: two cheap roots instead of pow's exp and log
        d.rsqrt_()
        d.mul_(torch.sqrt(d, out=sq))
    else:
        d.pow_(-beta)
    torch.mul(a, d, out=out)


def for_inference(model: AlexNet) -> AlexNet:
    """`model` set up for forward passes, in eval mode, with the same weights under the
    same names: channels-last, and fc6…fc8 through oneDNN."""
    model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    for tower in model.tower_list:
        for name in FCS:
            setattr(tower, name, OneDnnLinear.of(getattr(tower, name)))
    return model


class OneDnnLinear(nn.Linear):
    """An FC layer whose fp32 forward pass on a CPU goes through oneDNN, as the
    convolutions do, rather than the BLAS behind `F.linear` (MKL, which on CPUs other
    than Intel's runs without AVX-512: half oneDNN's speed on this machine's EPYC,
    docs/performance.md "Inference"). Anywhere else — autograd, autocast, another
    device or dtype, a PyTorch without oneDNN — it is `nn.Linear`."""

    @classmethod
    def of(cls, layer: nn.Linear) -> nn.Linear:
        """`layer`'s parameters (shared, not copied) in this class."""
        if not _ONEDNN:
            return layer
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, device="meta")
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def forward(self, x: Tensor) -> Tensor:
        plain = (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or x.dim() != 2
            or not x.is_contiguous()
            or self.weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
            or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
        )
        if plain:
            return super().forward(x)
        out = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return cast(Tensor, out)


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@contextlib.contextmanager
def inference(device: torch.device) -> Iterator[None]:
    """No autograd; on a CPU, freed memory kept in the heap for the next batch."""
    with torch.no_grad(), keep_freed_memory(device.type == "cpu"):
        yield


# --------------------------------------------------------------------------- threads


def inference_threads(device: torch.device, workers: int = 0) -> ThreadTuner | None:
    """The compute threads of a pass on `device`: None (left as they are) on a GPU or
    when OMP_NUM_THREADS sets them; else a tuner over every core, half of them, and
    those the loader `workers` leave."""
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return None
    cores = cpu_cores()
    return ThreadTuner([cores, max(cores // 2, 1), max(cores - workers, 1)])


class ThreadTuner:
    """The compute threads of a run of forward passes, chosen by timing them.

    The first pass runs on the most threads, untimed (kernel choice, heap growth); the
    next `rounds` × candidates passes take the counts in turn, each count keeping its
    fastest pass, so a moment of other work slows one pass of one count, not every pass
    of it; then the fewest threads within `threads.MARGIN` of the fastest run the rest.
    Every `every` passes the counts are timed again: the machine's other work comes
    and goes over an evaluation of hours. Inside `with tuner:` the counts apply; the
    count before comes back on leaving.
    """

    def __init__(self, counts: Sequence[int], rounds: int = 2, every: int = 1000) -> None:
        self.counts = sorted(set(counts))
        self.rounds = rounds
        self.every = every
        self.passes = 0
        self.rates: dict[int, float] = {}  # images/s of each count's fastest timed pass
        self.chosen = self.counts[-1]
        self._before: list[int] = []  # the count at each open `with`, outermost first

    def __enter__(self) -> ThreadTuner:
        self._before.append(torch.get_num_threads())
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._before.pop())

    def _next(self) -> tuple[int, bool]:
        """The count of the next pass, and whether it is timed."""
        trials = self.rounds * len(self.counts) if len(self.counts) > 1 else 0
        if self.passes == 0:
            return self.counts[-1], False
        phase = (self.passes - 1) % self.every
        if phase < trials:
            return self.counts[phase % len(self.counts)], True
        return self.chosen, False

    @contextlib.contextmanager
    def timed(self, images: int) -> Iterator[None]:
        """Run one forward pass of `images` images on the count its turn gives."""
        count, timing = self._next()
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
        if timing and (self.passes - 1) % self.every == 0:
            self.rates = {}  # a new round of timings
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.passes += 1
        if timing:
            rate = images / seconds if seconds > 0 else math.inf
            self.rates[count] = max(self.rates.get(count, 0.0), rate)
            if len(self.rates) == len(self.counts):
                self.chosen = fastest(self.rates)

    def describe(self) -> str:
        if not self.rates:
            return f"{self.chosen} compute thread(s)"
        timed = ", ".join(f"{t}: {r:.1f}" for t, r in sorted(self.rates.items()))
        return f"{self.chosen} compute thread(s) (images/s of a forward pass at {timed})"


def timed(threads: ThreadTuner | None, images: int) -> contextlib.AbstractContextManager[None]:
    """`threads.timed(images)`, or nothing when the threads are left as they are."""
    return contextlib.nullcontext() if threads is None else threads.timed(images)
