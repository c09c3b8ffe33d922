"""Local response normalisation: docs/paper.md "Architecture".

b_i = a_i / (k + α Σ_j a_j²)^β, the sum over `size` adjacent kernel maps around i,
after the ReLU of conv1 and conv2, with the paper's k = 2, n = 5, α = 1e-4, β = 0.75.

Two conventions: the paper's formula uses α as written; PyTorch's `LocalResponseNorm`
and Caffe's layer divide α by n (`convention="torch"`). The window sums are one matrix
product with a band of ones over the channels, along the innermost axis of a
channels-last tensor so the output keeps its layout, and the backward pass is written
out (`_LrnFunction`): fewer passes over memory than PyTorch's padded 3-D average pool or
autograd through the same formula (docs/performance.md "The training step" has the measurements).

`LRN` is the layer the network holds (norm1, norm2), so `print(model)` shows it; `Lrn`
is the signature of the function it calls, so a caller can hand it another
implementation (`alexcli bench` times PyTorch's own layer this way, inference runs
`inference.inference_lrn`, an export `torch_lrn`).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Lrn(Protocol):
    """An implementation of the normalisation: (x, size, α, β, k, convention) → b."""

    def __call__(
        self, x: Tensor, size: int, alpha: float, beta: float, k: float, convention: str
    ) -> Tensor: ...


def local_response_norm(
    x: Tensor, size: int, alpha: float, beta: float, k: float, convention: str = "paper"
) -> Tensor:
    """LRN across channels (the module docstring); the window is clipped at the first
    and last map. `convention` "paper" uses α as written, "torch" α / `size`."""
    scale = alpha if convention == "paper" else alpha / size
    return cast(Tensor, _LrnFunction.apply(x, size, scale, beta, k))


def window_load(x: Tensor, size: int, alpha: float, k: float, convention: str = "paper") -> Tensor:
    """α·Σ_j a_j² / k at every position of `x`: how far the divisor k + α·Σa² is from the
    constant k. Far below 1, the normalisation is a fixed rescaling by k^−β in effect
    (`alexcli ablate` measures it on trained activations, docs/ablations.md)."""
    scale = alpha if convention == "paper" else alpha / size
    a = x.detach().float()
    band = _band(a.shape[1], size, a)
    return _window_sums(a * a, band, _is_channels_last(a)).mul_(scale / k)


def _band(channels: int, size: int, like: Tensor) -> Tensor:
    """(C, C) ones where map j is in map i's window (row i), zeros elsewhere; made once
    per shape, device and dtype rather than on every call (under torch.compile, made
    inside the graph: a constant it folds)."""
    if torch.compiler.is_compiling():
        return _band_cached.__wrapped__(channels, size, like.device, like.dtype)
    return _band_cached(channels, size, like.device, like.dtype)


@functools.lru_cache(maxsize=64)
def _band_cached(channels: int, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):  # a plain tensor, usable by autograd later
        i = torch.arange(channels, device=device)
        offset = i[None, :] - i[:, None]  # j − i
        return ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).to(dtype)


def _is_channels_last(x: Tensor) -> bool:
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _window_sums(v: Tensor, band: Tensor, channels_last: bool) -> Tensor:
    """s_i = Σ_j band[i, j] v_j over the channel axis, in `v`'s memory layout."""
    if channels_last:  # (N, H, W, C) is contiguous: one (NHW, C) @ (C, C) product
        return (v.permute(0, 2, 3, 1) @ band.T).permute(0, 3, 1, 2)
    return torch.matmul(band, v.flatten(2)).view_as(v)


class _LrnFunction(torch.autograd.Function):
    """b = a · d^-β with d = k + α·band(a²); its gradient, for the incoming g:
    ∂L/∂a_m = g_m d_m^-β − 2αβ a_m Σ_i band[i, m] g_i a_i d_i^(-β-1).
    Saves a, d and d^-β (autograd through the formula keeps ~5 tensors per call).

    The half types keep d and d^-β in fp32. fp16 squares in fp32 too (a² overflows fp16
    above 256). bf16 rounds k + α·Σa² at its step of 1/64 near k = 2, where the paper
    init's activations put α·Σa² at a few hundredths: ~7 % too much of the effect kept on
    average, up to 1 % off per value. Its window sums may stay in bf16 (the band product
    runs at bf16's speed): they move d by under 10⁻⁴, so each output is the formula
    rounded once, to that. The backward pass sums in fp32: there the sums' terms have
    either sign, and a term rounded to bf16 can be a large part of a small gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, scale: float, beta: float, k: float) -> Tensor:
        a = x.float() if x.dtype == torch.float16 else x
        cl = _is_channels_last(a)
        band = _band(a.shape[1], size, a)
        with torch.autocast(a.device.type, enabled=False):  # autocast kept out of the sums
            sums = _window_sums(a * a, band, cl)
            d = (sums.float() if x.dtype == torch.bfloat16 else sums).mul_(scale).add_(k)
        r = d.pow(-beta)
        ctx.save_for_backward(a, d, r, band)
        ctx.cl, ctx.coef, ctx.dtype = cl, 2.0 * scale * beta, x.dtype
        return (a.to(r.dtype) * r).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        a, d, r, band = ctx.saved_tensors
        layout = torch.channels_last if ctx.cl else torch.contiguous_format
        a = a.to(r.dtype)
        gr = g.to(r.dtype).contiguous(memory_format=layout) * r
        s = _window_sums((gr * a).div_(d), band.T.to(r.dtype), ctx.cl)
        grad = torch.addcmul(gr, a, s, value=-ctx.coef)
        return grad.to(ctx.dtype), None, None, None, None


def torch_lrn(
    x: Tensor, size: int, alpha: float, beta: float, k: float, convention: str = "paper"
) -> Tensor:
    """The same normalisation by PyTorch's own `F.local_response_norm` (which divides α by
    `size`): the plain alternative `alexcli bench` compares the step against."""
    scale = alpha * size if convention == "paper" else alpha
    return F.local_response_norm(x, size, scale, beta, k)


class LRN(nn.Module):
    """The normalisation as a layer (Caffe's type name; the network's norm1 and norm2),
    calling `fn`: this module's `local_response_norm` unless another is given."""

    def __init__(
        self,
        size: int,
        alpha: float,
        beta: float,
        k: float,
        convention: str = "paper",
        fn: Lrn = local_response_norm,
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention = convention
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x, self.size, self.alpha, self.beta, self.k, self.convention)

    def extra_repr(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return (
            f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"convention={self.convention!r}, fn={name}"
        )
