"""core/nn/inference.py: the forward pass eval, predict and neighbors run gives the
training network's values (to float rounding), whatever its slices, layout and
threads; the LRN against the paper's formula written in numpy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexcli.config import ModelConfig
from alexcli.core.nn import inference
from alexcli.core.nn.inference import (
    OneDnnLinear,
    ThreadTuner,
    for_inference,
    inference_lrn,
    inference_threads,
)
from alexcli.core.nn.lrn import local_response_norm
from alexcli.core.nn.model import build_model
from tests.tiny import TINY_MODEL


def paper_lrn(a: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """b_i = a_i / (k + α Σ_j a_j²)^β over maps j from i − size//2 to i + (size−1)//2,
    clipped at the first and last map: docs/paper.md "Architecture", in float64."""
    a = a.astype(np.float64)
    c = a.shape[1]
    out = np.empty_like(a)
    for i in range(c):
        lo, hi = max(0, i - size // 2), min(c, i + (size - 1) // 2 + 1)
        d = k + alpha * (a[:, lo:hi] ** 2).sum(1)
        out[:, i] = a[:, i] / d**beta
    return out


def relu_maps(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(shape, generator=g) * 60)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("size,beta", [(5, 0.75), (3, 0.5), (4, 0.75), (7, 1.0)])
@pytest.mark.parametrize("channels", [1, 2, 11])
def test_lrn_is_the_papers_formula(channels_last, size, beta, channels):
    x = relu_maps((3, channels, 5, 6))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = inference_lrn(x, size, 1e-3, beta, 2.0)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert got.is_contiguous(memory_format=torch.channels_last)
    want = paper_lrn(x.numpy(), size, 1e-3, beta, 2.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=1e-6)


def test_lrn_slices_change_nothing_but_rounding(monkeypatch):
    """Slices of a few rows each, cut mid-image, against the whole tensor at once and
    against the training LRN (the band product)."""
    x = relu_maps((4, 24, 9, 9)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        whole = inference_lrn(x, 5, 1e-4, 0.75, 2.0, "torch")
        monkeypatch.setattr(inference, "SLICE", 24 * 7)  # 7 rows a slice
        sliced = inference_lrn(x, 5, 1e-4, 0.75, 2.0, "torch")
        training = local_response_norm(x, 5, 1e-4, 0.75, 2.0, "torch")
    assert torch.equal(sliced, whole)  # the same arithmetic, row by row
    torch.testing.assert_close(sliced, training, rtol=1e-6, atol=1e-6)


def test_lrn_of_bf16_maps_sums_in_float32():
    x = relu_maps((2, 16, 5, 5)).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = inference_lrn(x, 5, 1e-4, 0.75, 2.0)
    assert got.dtype == torch.bfloat16
    want = paper_lrn(x.float().numpy(), 5, 1e-4, 0.75, 2.0)
    np.testing.assert_allclose(got.float().numpy(), want, rtol=1e-2)  # bf16's 8 bits


def test_under_autograd_the_lrn_is_the_training_one():
    x = relu_maps((2, 6, 4, 4)).requires_grad_()
    inference_lrn(x, 5, 1e-4, 0.75, 2.0).square().sum().backward()
    got = x.grad.clone()
    x.grad = None
    local_response_norm(x, 5, 1e-4, 0.75, 2.0).square().sum().backward()
    assert torch.equal(got, x.grad)


# --------------------------------------------------------------------------- layers


def test_onednn_linear_shares_the_layers_weights_and_gives_its_values():
    torch.manual_seed(0)
    layer = nn.Linear(300, 70)
    fast = OneDnnLinear.of(layer)
    assert fast.weight is layer.weight and fast.bias is layer.bias
    assert fast.state_dict().keys() == layer.state_dict().keys()
    x = torch.randn(9, 300)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), layer(x), rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: nn.Linear itself
            assert torch.equal(fast(x), layer(x))
    y = torch.randn(9, 300, requires_grad=True)
    fast(y).sum().backward()  # under autograd too
    assert y.grad is not None and layer.weight.grad is not None


CROP = TINY_MODEL.crop


def model_config(**changes) -> ModelConfig:
    """The tiny network with the paper's init: on inputs ×50 its LRN's denominators
    matter while its logits stay near 1, where 1e-5 is the rounding of float32 sums."""
    return dataclasses.replace(TINY_MODEL, init="paper", **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"towers": 1},
        {"lrn_span": "all"},
        {"omit": "conv4"},
        {"activation": "tanh"},
        {"lrn": False},
        {"lrn_convention": "torch"},
    ],
)
def test_the_inference_network_gives_the_training_networks_logits(changes):
    cfg = model_config(**changes)
    torch.manual_seed(1)
    reference = build_model(cfg).eval()
    fast = for_inference(build_model(cfg, lrn=inference_lrn))
    fast.load_state_dict(reference.state_dict())
    assert not fast.training
    x = torch.randn(5, 3, CROP, CROP) * 50
    with torch.no_grad():
        want = reference(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
        features = fast.features(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(features, reference.features(x), rtol=1e-5, atol=1e-5)
    state = fast.state_dict()  # the same weights under the same names
    assert state.keys() == reference.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())


def test_the_inference_network_still_trains():
    """`alexcli.load(...).model` is an nn.Module a user may fine-tune."""
    cfg = model_config()
    fast = for_inference(build_model(cfg, lrn=inference_lrn)).train()
    F.cross_entropy(fast(torch.randn(2, 3, CROP, CROP)), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in fast.parameters())


# --------------------------------------------------------------------------- threads


def test_the_tuner_times_each_count_in_turn_then_keeps_the_fastest():
    seen = []
    with ThreadTuner([1, 2], rounds=2, every=100) as tuner:
        for _ in range(8):
            with tuner.timed(4):
                seen.append(torch.get_num_threads())
                torch.randn(64, 64) @ torch.randn(64, 64)
        # untimed first pass on the most threads, then 1, 2, 1, 2 timed, then the choice
        assert seen[:5] == [2, 1, 2, 1, 2]
        assert set(tuner.rates) == {1, 2} and tuner.chosen in (1, 2)
        assert seen[5:] == [tuner.chosen] * 3
        assert str(tuner.chosen) in tuner.describe()


def test_the_tuner_gives_back_the_threads_it_found():
    before = torch.get_num_threads()
    tuner = ThreadTuner([1, before + 1])
    with tuner, tuner, tuner.timed(1):  # nested, as predict's batches are
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_the_thread_count_does_not_change_the_values():
    cfg = model_config()
    torch.manual_seed(2)
    net = for_inference(build_model(cfg, lrn=inference_lrn))
    x = (torch.randn(6, 3, CROP, CROP) * 50).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    outs = []
    try:
        with torch.no_grad():
            for count in (1, 2, 1):
                torch.set_num_threads(count)
                outs.append(net(x))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0], o) for o in outs)


def test_threads_are_left_alone_on_a_gpu_and_when_the_environment_sets_them(monkeypatch):
    assert inference_threads(torch.device("cuda", 0)) is None
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    tuner = inference_threads(torch.device("cpu"), workers=1)
    assert tuner is not None and tuner.counts[-1] >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert inference_threads(torch.device("cpu")) is None
