"""What makes the training step fast changes no results: the LRN's hand-written backward
(core/model.py), channels-last, the fused SGD (core/engine.py), the kept heap
(core/heap.py). Each is checked against the plain computation it replaces."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexcli.config import TrainConfig
from alexcli.core.machine import keep_freed_memory
from alexcli.core.nn.lrn import local_response_norm, torch_lrn
from alexcli.core.nn.model import build_model
from alexcli.core.nn.optim import make_optimizer
from tests.tiny import TINY_MODEL

TINY = TINY_MODEL
CROP = TINY.crop


def lrn_by_autograd(x: torch.Tensor, n: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The paper's formula term by term, differentiated by autograd (the reference)."""
    sq = F.pad(x * x, (0, 0, 0, 0, n // 2, (n - 1) // 2))  # zero maps past both ends
    sums = sum(sq[:, i : i + x.shape[1]] for i in range(n))
    return x / (k + alpha * sums) ** beta


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_lrn_gradient_is_exact_in_both_layouts(layout):
    x = (torch.randn(2, 9, 4, 5, dtype=torch.float64) * 60).contiguous(memory_format=layout)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: local_response_norm(v, 5, 1e-4, 0.75, 2.0), (x,))
    g = torch.randn(2, 9, 4, 5, dtype=torch.float64)
    ours = torch.autograd.grad(local_response_norm(x, 5, 1e-4, 0.75, 2.0), x, g)[0]
    ref = torch.autograd.grad(lrn_by_autograd(x, 5, 1e-4, 0.75, 2.0), x, g)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_lrn_keeps_the_memory_layout():
    x = torch.rand(2, 16, 6, 6).contiguous(memory_format=torch.channels_last) * 50
    y = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, lrn_by_autograd(x.contiguous(), 5, 1e-4, 0.75, 2.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lrn_in_half_precision_is_the_formula_to_its_rounding(dtype):
    x = torch.rand(2, 12, 5, 5, dtype=torch.float64) * 400  # a² > fp16's range at 400
    y = local_response_norm(x.to(dtype), 5, 1e-4, 0.75, 2.0)
    assert y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(
        y.double(), lrn_by_autograd(x, 5, 1e-4, 0.75, 2.0), rtol=2e-2, atol=0
    )


def test_lrn_under_fp16_autocast_sums_in_fp32():
    x = (torch.rand(2, 12, 5, 5) * 400).half()  # a² up to 160,000: inf in fp16
    with torch.autocast("cpu", dtype=torch.float16):
        y = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    ref = lrn_by_autograd(x.double(), 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(y.double(), ref, rtol=2e-2, atol=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_lrn_under_bf16_autocast_is_rounded_once_not_at_each_step(layout):
    """conv1's maps at the paper init's scale (ReLU of N(0, 11²): the 0.01-std kernels on
    mean-subtracted pixels) put α·Σa² at ~0.03, so k + α·Σa² sits just above 2, where
    bf16's step is 1/64: computed in bf16 it kept ~7 % too much of LRN's effect on
    average (up to 1 % off per value). With the denominator in fp32, each output is the
    float64 formula rounded once to bf16 (≤ 2⁻⁸ relative) but for the window sums, left
    in bf16: they move it by under 10⁻⁴."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(4, 48, 13, 13) * 11).to(torch.bfloat16)
    x = x.contiguous(memory_format=layout).requires_grad_()
    g = torch.randn(4, 48, 13, 13, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    (grad,) = torch.autograd.grad(y, x, g.to(torch.bfloat16))
    x64 = x.detach().double().requires_grad_()
    ref = lrn_by_autograd(x64, 5, 1e-4, 0.75, 2.0)
    (ref_grad,) = torch.autograd.grad(ref, x64, g.to(torch.bfloat16).double())
    assert y.dtype == grad.dtype == torch.bfloat16
    on = x64.detach() > 1  # where the effect is measurable
    err = (y.detach().double() - ref.detach()).abs() / ref.detach().abs()
    assert err[on].max() <= 2**-8 + 1e-4
    effect = 1 - y.detach().double()[on] / (x64.detach()[on] * 2.0**-0.75)
    ref_effect = 1 - ref.detach()[on] / (x64.detach()[on] * 2.0**-0.75)
    assert float(ref_effect.mean()) == pytest.approx(0.013, rel=0.2)  # the case's scale
    assert float(effect.mean()) == pytest.approx(float(ref_effect.mean()), rel=0.01)
    big = ref_grad.abs() > 1e-3 * ref_grad.abs().max()  # away from cancellations to zero
    assert ((grad.double() - ref_grad).abs() / ref_grad.abs())[big].max() <= 2**-8 + 1e-4


def test_plain_lrn_layer_is_the_same_network():
    torch.manual_seed(0)
    x = torch.randn(3, 3, CROP, CROP) * 80
    ours = build_model(TINY).eval()
    plain = build_model(TINY, lrn=torch_lrn).eval()
    plain.load_state_dict(ours.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)


def step_grads(channels_last: bool, plain_lrn: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    lrn = torch_lrn if plain_lrn else local_response_norm
    model = build_model(dataclasses.replace(TINY, dropout=0.0), lrn=lrn)
    x = torch.randn(4, 3, CROP, CROP) * 80
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    F.cross_entropy(model(x), torch.arange(4)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_channels_last_step_has_the_plain_steps_gradients():
    fast, plain = step_grads(True, False), step_grads(False, True)
    assert fast.keys() == plain.keys() and len(fast) == 32  # 8 layers × 2 towers × (w, b)
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_training_defaults_to_channels_last():
    assert TrainConfig().channels_last is True


def test_fused_sgd_is_the_default_on_the_cpu_and_follows_foreach():
    weights = {}
    for fused in (None, False):
        torch.manual_seed(0)
        model = build_model(TINY)
        opt = make_optimizer(model, 0.01, 0.9, 5e-4, fused=fused)
        assert opt.defaults["fused"] is (fused is None)
        for step in range(3):
            torch.manual_seed(step)
            opt.zero_grad()
            F.cross_entropy(
                model(torch.randn(2, 3, CROP, CROP) * 50), torch.tensor([1, 2])
            ).backward()
            opt.step()
        weights[fused] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(weights[None], weights[False], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_kept_heap_changes_no_values_and_is_undone():
    torch.manual_seed(0)
    a, b = torch.randn(300, 300), torch.randn(300, 300)
    expected = (a @ b).numpy()
    with keep_freed_memory() as kept:
        inside = (a @ b).numpy()
        big = np.ones(10_000_000, np.uint8)  # 10 MB: above malloc's mmap threshold
        del big
    np.testing.assert_array_equal(inside, expected)
    with keep_freed_memory(enabled=False) as off:
        assert off is False
    assert isinstance(kept, bool)


def _faults_of_reallocating(mb: int, times: int) -> int:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        torch.ones(mb * 2**18)  # float32: mb MB, written, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_kept_heap_stops_the_page_faults_of_each_step():
    with keep_freed_memory() as kept:
        if not kept:
            pytest.skip("not glibc")
        _faults_of_reallocating(40, 8)  # the heap grows to what the loop needs…
        inside = _faults_of_reallocating(40, 5)  # …and is reused from then on
    outside = _faults_of_reallocating(40, 5)
    # Every 4 KiB page of every 40 MB block, each time (51,200); now and then the kernel
    # serves some blocks with larger pages here (20,480 seen): a quarter at least.
    assert outside > 5 * 40 * 256 * 0.25
    assert inside < outside / 20
