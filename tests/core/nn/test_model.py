"""core/model.py: the paper's two-tower network, checked against the paper's numbers,
an independent grouped-convolution evaluation, and a direct numpy LRN."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexcli.config import PRESETS, ModelConfig
from alexcli.core.nn.lrn import local_response_norm, window_load
from alexcli.core.nn.model import (
    CONVS,
    LAYERS,
    AlexNet,
    build_model,
    layer_table,
)
from alexcli.errors import ConfigError, DeviceError
from tests.tiny import TINY_MODEL

PAPER = ModelConfig()
TINY = TINY_MODEL  # every structural feature, for the tests that run the network
TINY_CROP = TINY.crop
CPU = torch.device("cpu")

# docs/paper.md "Architecture" / the paper's Figure 2: each tower's maps at 224.
PAPER_SHAPES = {
    "conv1": (48, 55, 55),
    "conv2": (128, 27, 27),
    "conv3": (192, 13, 13),
    "conv4": (192, 13, 13),
    "conv5": (128, 13, 13),
    "fc6": (2048,),
    "fc7": (2048,),
    "fc8": (500,),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def record_outputs(model: AlexNet, x: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
    """Every layer's output in every tower, by (name, tower number)."""
    seen: dict[tuple[str, int], torch.Tensor] = {}
    hooks = [
        getattr(tower, name).register_forward_hook(
            lambda _m, _i, out, key=(name, t + 1): seen.__setitem__(key, out.detach())
        )
        for t, tower in enumerate(model.tower_list)
        for name in LAYERS
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.fixture(scope="module")
def paper_model() -> AlexNet:
    torch.manual_seed(0)
    return build_model(PAPER).eval()


def tiny(seed: int = 0, **changes: object) -> AlexNet:
    torch.manual_seed(seed)
    return build_model(dataclasses.replace(TINY, **changes)).eval()


# --------------------------------------------------------------------------- sizes


def test_paper_has_60_965_224_parameters(paper_model):
    assert n_params(paper_model) == 60_965_224
    assert sum(r.parameters for r in layer_table(PAPER)) == 60_965_224


def test_paper_layer_shapes_at_224(paper_model):
    seen = record_outputs(paper_model, torch.randn(2, 3, 224, 224))
    for (name, tower), out in seen.items():
        assert out.shape[1:] == PAPER_SHAPES[name], (name, tower)
    for row in layer_table(PAPER):
        assert row.output_shape == PAPER_SHAPES[row.name]


def test_paper_logits_features_and_kernels(paper_model):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert paper_model(x).shape == (2, 1000)
        assert paper_model.features(x).shape == (2, 4096)
    assert paper_model.conv1_weight().shape == (96, 3, 11, 11)


def test_multiply_adds_match_a_hand_count():
    # Per image: output positions × (kernel size × input depth) × kernels, weights only.
    by_hand = {
        "conv1": 55 * 55 * (11 * 11 * 3) * 96,
        "conv2": 27 * 27 * (5 * 5 * 48) * 256,
        "conv3": 13 * 13 * (3 * 3 * 256) * 384,
        "conv4": 13 * 13 * (3 * 3 * 192) * 384,
        "conv5": 13 * 13 * (3 * 3 * 192) * 256,
        "fc6": 6 * 6 * 256 * 4096,
        "fc7": 4096 * 4096,
        "fc8": 4096 * 1000,
    }
    rows = layer_table(PAPER)
    for name, macs in by_hand.items():
        assert sum(r.mult_adds for r in rows if r.name == name) == macs, name
    total = sum(r.mult_adds for r in rows)
    assert total == sum(by_hand.values()) == 724_406_816  # PAPER: ~724 M


@pytest.mark.parametrize("crop", [TINY_CROP, 63, 80])
def test_layer_table_matches_the_built_network(crop):
    cfg = dataclasses.replace(TINY, num_classes=9)  # odd: tower 1 gets 5, tower 2 gets 4
    cfg = dataclasses.replace(cfg, crop=crop)
    model = build_model(cfg).eval()
    seen = record_outputs(model, torch.randn(1, 3, crop, crop))
    rows = layer_table(cfg)
    assert len(rows) == 16
    for row in rows:
        layer = getattr(model.tower_list[row.tower - 1], row.name)
        out = seen[(row.name, row.tower)]
        assert row.output_shape == tuple(out.shape[1:])
        assert row.parameters == sum(p.numel() for p in layer.parameters())
        fan_in = layer.weight[0].numel()  # inputs per output, this tower's share
        assert row.mult_adds == out[0].numel() * fan_in
    assert [r.output_shape for r in rows if r.name == "fc8"] == [(5,), (4,)]


def test_caffe_227_without_padding_also_gives_55():
    cfg = dataclasses.replace(PAPER, conv1_padding=0)
    assert layer_table(dataclasses.replace(cfg, crop=227))[0].output_shape == (48, 55, 55)
    assert sum(r.parameters for r in layer_table(dataclasses.replace(cfg, crop=227))) == 60_965_224


def test_other_crops_size_fc6_from_the_conv_stack():
    # 256: conv1 (256 + 4 − 11)//4 + 1 = 63 → pools 31, 15, 7 → fc6 sees 256·7·7 inputs.
    rows = layer_table(dataclasses.replace(PAPER, crop=256))
    fc6 = next(r for r in rows if r.name == "fc6")
    assert rows[0].output_shape == (48, 63, 63)
    assert fc6.parameters == (256 * 7 * 7 + 1) * 2048
    model = build_model(dataclasses.replace(TINY, crop=80)).eval()
    assert model(torch.randn(2, 3, 80, 80)).shape == (2, 7)


def test_a_crop_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match="too small") as e:
        AlexNet(dataclasses.replace(TINY, crop=20))
    assert "at least" in (e.value.hint or "")
    smallest = int(e.value.hint.split()[-1])
    AlexNet(dataclasses.replace(TINY, crop=smallest))  # the hint's crop works
    with pytest.raises(ConfigError):
        AlexNet(dataclasses.replace(TINY, crop=smallest - 1))


def test_widths_that_do_not_split_into_towers_are_a_config_error():
    with pytest.raises(ConfigError, match="towers"):
        AlexNet(dataclasses.replace(TINY, conv_channels=(9, 16, 24, 24, 16)))


# --------------------------------------------------------------------------- towers


def grouped_reference(model: AlexNet, x: torch.Tensor) -> torch.Tensor:
    """The same weights evaluated as ONE network: grouped convolutions (groups=2) for
    conv2, conv4, conv5, full layers elsewhere, PyTorch's own LRN on each group."""
    cfg, towers = model.cfg, model.tower_list

    def cat(name: str, attr: str) -> torch.Tensor:
        return torch.cat([getattr(getattr(t, name), attr) for t in towers])

    lrn = torch.nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)  # the paper's α

    def norm_pool(h: torch.Tensor) -> torch.Tensor:
        h = torch.cat([lrn(part) for part in h.chunk(2, dim=1)], dim=1)
        return F.max_pool2d(h, 3, 2)

    h = F.relu(F.conv2d(x, cat("conv1", "weight"), cat("conv1", "bias"), cfg.conv1_stride, 2))
    h = norm_pool(h)
    h = norm_pool(F.relu(F.conv2d(h, cat("conv2", "weight"), cat("conv2", "bias"), 1, 2, 1, 2)))
    h = F.relu(F.conv2d(h, cat("conv3", "weight"), cat("conv3", "bias"), 1, 1))
    h = F.relu(F.conv2d(h, cat("conv4", "weight"), cat("conv4", "bias"), 1, 1, 1, 2))
    h = F.relu(F.conv2d(h, cat("conv5", "weight"), cat("conv5", "bias"), 1, 1, 1, 2))
    h = F.max_pool2d(h, 3, 2).flatten(1)
    for name in ("fc6", "fc7"):
        h = F.relu(F.linear(h, cat(name, "weight"), cat(name, "bias")))
    return F.linear(h, cat("fc8", "weight"), cat("fc8", "bias"))


def test_two_towers_equal_one_grouped_network():
    model = tiny(init="torch")  # default init: activations of a useful size
    x = torch.randn(4, 3, TINY_CROP, TINY_CROP) * 50
    with torch.no_grad():
        torch.testing.assert_close(model(x), grouped_reference(model, x), rtol=1e-4, atol=1e-4)


def test_placing_towers_on_two_devices_keeps_outputs_and_state_dict_keys():
    model = tiny(init="torch")
    x = torch.randn(3, 3, TINY_CROP, TINY_CROP)
    with torch.no_grad():
        one = model.place([CPU])(x)
        keys = list(model.state_dict())
        two = model.place([CPU, CPU])(x)  # the two-device code path, both on the CPU
    assert model.devices == [CPU, CPU]
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(one, two, rtol=0, atol=0)
    assert build_model(TINY, [CPU, CPU]).devices == [CPU, CPU]


def test_state_dict_moves_between_placements():
    a, b = tiny(seed=1, init="torch"), tiny(seed=2, init="torch").place([CPU, CPU])
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, TINY_CROP, TINY_CROP)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert all(k.startswith(("towers.0.", "towers.1.")) for k in a.state_dict())


def test_conv2_conv4_conv5_see_only_their_own_tower():
    model = tiny(init="torch")
    x = torch.randn(2, 3, TINY_CROP, TINY_CROP)
    before = record_outputs(model, x)
    # Silence tower 2's conv1: tower 1's conv2 must not notice; its conv3 must.
    hook = model.tower_list[1].conv1.register_forward_hook(lambda _m, _i, out: out * 0)
    after = record_outputs(model, x)
    hook.remove()
    torch.testing.assert_close(after[("conv2", 1)], before[("conv2", 1)], rtol=0, atol=0)
    assert not torch.allclose(after[("conv3", 1)], before[("conv3", 1)])
    # Silence tower 2's conv3: tower 1's conv4 and conv5 are untouched, fc6 is not.
    hook = model.tower_list[1].conv3.register_forward_hook(lambda _m, _i, out: out * 0)
    after = record_outputs(model, x)
    hook.remove()
    for name in ("conv4", "conv5"):
        torch.testing.assert_close(after[(name, 1)], before[(name, 1)], rtol=0, atol=0)
    assert not torch.allclose(after[("fc6", 1)], before[("fc6", 1)])


def test_features_are_fc7_after_relu_and_fc8_reads_them():
    model = tiny(init="torch")
    x = torch.randn(3, 3, TINY_CROP, TINY_CROP)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
        fc8 = [t.fc8 for t in model.tower_list]
        w, b = torch.cat([m.weight for m in fc8]), torch.cat([m.bias for m in fc8])
    assert feats.shape == (3, 32) and (feats >= 0).all()
    torch.testing.assert_close(logits, F.linear(feats, w, b))  # tower 1's classes first


def test_conv1_weight_puts_tower_1_first():
    model = tiny()
    w = model.conv1_weight()
    assert w.shape == (8, 3, 11, 11) and not w.requires_grad
    torch.testing.assert_close(w[:4], model.tower_list[0].conv1.weight.detach())
    torch.testing.assert_close(w[4:], model.tower_list[1].conv1.weight.detach())


def test_dropout_only_in_training():
    model = tiny(init="torch")
    x = torch.randn(4, 3, TINY_CROP, TINY_CROP)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        model.train()
        assert not torch.allclose(model(x), model(x))
        no_dropout = tiny(init="torch", dropout=0.0).train()
        torch.testing.assert_close(no_dropout(x), no_dropout(x), rtol=0, atol=0)


def test_channels_last_gives_the_same_logits():
    model = tiny(init="torch")
    x = torch.randn(2, 3, TINY_CROP, TINY_CROP)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), ref)


def test_gradients_reach_every_layer_of_both_towers():
    model = tiny(init="torch").train()
    loss = F.cross_entropy(model(torch.randn(4, 3, TINY_CROP, TINY_CROP)), torch.arange(4))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- LRN


def lrn_numpy(a: np.ndarray, n: int, k: float, alpha: float, beta: float) -> np.ndarray:
    """The paper's formula, term by term: b_i = a_i / (k + α Σ_j a_j²)^β over
    j = max(0, i − n/2) … min(N − 1, i + n/2)."""
    out = np.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        s = (a[:, lo : hi + 1] ** 2).sum(axis=1)
        out[:, i] = a[:, i] / (k + alpha * s) ** beta
    return out


def test_lrn_is_the_papers_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 60, size=(2, 11, 4, 5))  # α Σ a² ~ 2: the denominator matters
    expected = lrn_numpy(a, 5, 2.0, 1e-4, 0.75)
    got = local_response_norm(torch.from_numpy(a), 5, 1e-4, 0.75, 2.0, "paper").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert np.abs(expected / a - 1).max() > 0.3  # not a no-op at this scale


def test_lrn_torch_convention_is_pytorchs_layer():
    x = torch.randn(2, 9, 5, 5) * 60
    layer = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    torch.testing.assert_close(local_response_norm(x, 5, 1e-4, 0.75, 2.0, "torch"), layer(x))
    # …which is the paper's formula with α divided by n
    expected = lrn_numpy(x.double().numpy(), 5, 2.0, 1e-4 / 5, 0.75)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5)


def test_lrn_window_load_is_alpha_sum_of_squares_over_k():
    """What `alexcli ablate` measures: α·Σa²/k over the same window as the formula, in
    either memory layout; (1 + load)^−β is then the LRN's departure from a constant."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 60, size=(2, 11, 4, 5))
    channels = a.shape[1]
    want = np.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - 2), min(channels - 1, i + 2)
        want[:, i] = 1e-4 * (a[:, lo : hi + 1] ** 2).sum(axis=1) / 2.0
    x = torch.from_numpy(a)  # measured in float32
    np.testing.assert_allclose(window_load(x, 5, 1e-4, 2.0).numpy(), want, rtol=1e-6)
    last = window_load(x.contiguous(memory_format=torch.channels_last), 5, 1e-4, 2.0)
    np.testing.assert_allclose(last.numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(window_load(x, 5, 1e-4, 2.0, "torch").numpy(), want / 5, rtol=1e-6)
    lrn = local_response_norm(x, 5, 1e-4, 0.75, 2.0).numpy()
    np.testing.assert_allclose(lrn, a * 2.0**-0.75 * (1 + want) ** -0.75, rtol=1e-10)


def test_lrn_convention_changes_the_network():
    x = torch.randn(2, 3, TINY_CROP, TINY_CROP) * 100
    with torch.no_grad():
        paper = tiny(init="torch")(x)
        torch_style = tiny(init="torch", lrn_convention="torch")(x)
    assert not torch.allclose(paper, torch_style)


# --------------------------------------------------------------------------- init


def test_paper_init(paper_model):
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for tower in paper_model.tower_list:
        for name in LAYERS:
            layer = getattr(tower, name)
            w = layer.weight.detach()
            assert abs(w.mean().item()) < 1e-3, name
            assert w.std().item() == pytest.approx(0.01, rel=0.05 if name == "conv1" else 0.01)
            expected = 1.0 if name in ones else 0.0
            assert (layer.bias == expected).all(), name


def test_caffe_init():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(PAPER, init="caffe"))
    biases = {"conv2": 0.1, "conv4": 0.1, "conv5": 0.1, "fc6": 0.1, "fc7": 0.1}
    for tower in model.tower_list:
        for name in LAYERS:
            layer = getattr(tower, name)
            std = 0.005 if name in ("fc6", "fc7") else 0.01
            assert layer.weight.std().item() == pytest.approx(std, rel=0.05), name
            assert (layer.bias == biases.get(name, 0.0)).all(), name


def test_kaiming_init_keeps_the_activations_scale():
    model = tiny(init="kaiming", fc8_std=None)
    for tower in model.tower_list:
        for name in LAYERS:
            layer = getattr(tower, name)
            fan_in = layer.weight[0].numel()
            std = np.sqrt(2 / fan_in)
            assert layer.weight.std().item() == pytest.approx(std, rel=0.2), name
            assert (layer.bias == 0).all()
    # The paper's and PyTorch's inits shrink a unit-variance input layer by layer.
    x = torch.randn(8, 3, TINY_CROP, TINY_CROP)
    with torch.no_grad():
        he = tiny(init="kaiming", lrn=False).features(x).pow(2).mean().sqrt().item()
        default = tiny(init="torch", lrn=False).features(x).pow(2).mean().sqrt().item()
    assert 0.2 < he < 5 and default < he / 10


@pytest.mark.parametrize("init", ["kaiming", "torch", "paper"])
def test_fc8_std_draws_fc8_alone_and_starts_small_at_chance(init):
    """`fc8_std` redraws fc8's weights N(0, σ²) after any scheme draws each tower, and
    leaves every other layer as the scheme draws it (tower 1 to the last digit; tower 2
    draws after the redraw). Under "kaiming" (He's gain assumes a ReLU after fc8,
    which has the softmax) a fresh `small` network's loss on unit-variance input is
    about twice ln 10; with `small`'s fc8_std of 0.01 it is ln 10 within 5 %."""
    plain, drawn = tiny(init=init, fc8_std=None), tiny(init=init, fc8_std=0.003)
    for name in LAYERS[:-1]:
        a, b = getattr(plain.tower_list[0], name), getattr(drawn.tower_list[0], name)
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias), name
    for a, b in zip(plain.tower_list, drawn.tower_list, strict=True):
        assert b.fc8.weight.std().item() == pytest.approx(0.003, rel=0.2)
        assert a.fc8.weight.std().item() > 0.006 and torch.equal(a.fc8.bias, b.fc8.bias)
    cfg = dataclasses.replace(PRESETS["small"].model, num_classes=10, crop=64)
    x, y = (
        torch.randn(256, 3, 64, 64, generator=torch.Generator().manual_seed(1)),
        torch.arange(256) % 10,
    )
    losses = []
    for std in (None, cfg.fc8_std):
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(cfg, fc8_std=std)).eval()
        with torch.no_grad():
            losses.append(F.cross_entropy(model(x), y).item())
    assert cfg.fc8_std == 0.01
    assert losses[0] > 1.5 * np.log(10) and losses[1] == pytest.approx(np.log(10), rel=0.05)


def test_torch_init_is_pytorchs_default():
    model = tiny(init="torch", fc8_std=None)
    for tower in model.tower_list:
        for name in LAYERS:
            layer = getattr(tower, name)
            bound = 1 / np.sqrt(layer.weight[0].numel())  # kaiming_uniform(a=√5): 1/√fan_in
            assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
            assert layer.weight.std().item() == pytest.approx(bound / np.sqrt(3), rel=0.25)


# --------------------------------------------------------------------------- ablations


def test_one_tower_is_the_ungrouped_network():
    cfg = dataclasses.replace(PAPER, towers=1)
    # Ungrouped conv2, conv4, conv5 take all 96/384/384 maps: 62,378,344 parameters.
    assert sum(r.parameters for r in layer_table(cfg)) == 62_378_344
    rows = layer_table(cfg)
    assert [r.output_shape for r in rows][:2] == [(96, 55, 55), (256, 27, 27)]
    model = tiny(towers=1)
    assert len(model.tower_list) == 1 and model.conv1_weight().shape == (8, 3, 11, 11)
    assert model(torch.randn(2, 3, TINY_CROP, TINY_CROP)).shape == (2, 7)
    with pytest.raises(DeviceError, match="1 tower"):
        model.place([CPU, CPU])


def test_no_lrn_skips_the_normalisation():
    model, plain = tiny(init="torch"), tiny(init="torch", lrn=False)
    assert n_params(model) == n_params(plain)
    x = torch.randn(2, 3, TINY_CROP, TINY_CROP) * 100
    with torch.no_grad():
        seen = record_outputs(plain, x)
        tower = plain.tower_list[0]
        expected = F.max_pool2d(F.relu(tower.conv1(x)), 3, 2)
        expected = F.relu(tower.conv2(expected))  # conv2 sees pool1's maps, not normalised
        torch.testing.assert_close(F.relu(seen[("conv2", 1)]), expected)
        assert not torch.allclose(model(x), plain(x))
    assert "LRN" not in str(plain) and str(model).count("LRN(") == 4
    assert "LRN" not in layer_table(plain.cfg)[0].then


def test_non_overlapping_pooling():
    # At 228 conv1 gives 56×56 maps: 3/2 pooling → 27 → 13 → 6, 2/2 → 28 → 14 → 7.
    overlapping = layer_table(dataclasses.replace(PAPER, crop=228))
    cfg = dataclasses.replace(PAPER, pool_kernel=2)
    tiling = layer_table(dataclasses.replace(cfg, crop=228))
    assert [r.after_shape for r in overlapping if r.name in ("conv1", "conv2", "conv5")][::2] == [
        (48, 27, 27),
        (128, 13, 13),
        (128, 6, 6),
    ]
    assert [r.after_shape for r in tiling if r.name in ("conv1", "conv2", "conv5")][::2] == [
        (48, 28, 28),
        (128, 14, 14),
        (128, 7, 7),
    ]
    fc6 = next(r for r in tiling if r.name == "fc6")
    assert fc6.parameters == (256 * 7 * 7 + 1) * 2048
    model = tiny(pool_kernel=2)
    assert model(torch.randn(1, 3, TINY_CROP, TINY_CROP)).shape == (1, 7)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_activation_switch(activation):
    model = tiny(init="torch", activation=activation)
    seen = record_outputs(model, torch.randn(2, 3, TINY_CROP, TINY_CROP))
    with torch.no_grad():
        a = model.tower_list[0].act3(seen[("conv3", 1)])  # what conv4 receives
    if activation == "relu":
        assert (a >= 0).all()
    else:
        assert (a.abs() < 1).all() and (a < 0).any()
    assert layer_table(model.cfg)[0].then.startswith("ReLU" if activation == "relu" else "tanh")


# --------------------------------------------------------------------------- presets


def test_small_preset_keeps_every_structural_feature():
    small = PRESETS["small"]
    m = small.model
    assert (m.towers, m.lrn, m.pool_kernel, m.pool_stride) == (2, True, 3, 2)
    assert (m.activation, m.lrn_convention, m.lrn_k, m.lrn_size) == ("relu", "paper", 2.0, 5)
    cfg = dataclasses.replace(m, num_classes=10)
    model = build_model(cfg).train()
    # dropout on fc6 and fc7 as the paper's, at its own rate (docs/presets.md)
    drops = [mod.p for mod in model.modules() if isinstance(mod, torch.nn.Dropout)]
    assert drops and all(p == m.dropout == 0.25 for p in drops)
    x = torch.randn(small.batch_size, 3, small.crop, small.crop)
    F.cross_entropy(model(x), torch.randint(0, 10, (small.batch_size,))).backward()
    assert n_params(model) < 2_000_000


def test_paper_preset_is_the_paper():
    assert PRESETS["paper"].model == PAPER
    assert PRESETS["paper"].crop == 224


# --------------------------------------------------------------------------- GPU


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_towers_on_two_real_devices_match_one_device():
    """Tower 2 on the second GPU, or on the CPU when there is only one GPU: either way
    activations really cross devices at conv3 and the FC layers."""
    second = torch.device("cuda", 1) if torch.cuda.device_count() > 1 else CPU
    first = torch.device("cuda", 0)
    model = tiny(init="torch").double()
    x = torch.randn(4, 3, TINY_CROP, TINY_CROP, dtype=torch.float64)
    with torch.no_grad():
        ref = model.place([CPU])(x)
        split = model.place([first, second])(x.to(first))
    assert model.devices == [first, second] and split.device == first
    assert model.features(x.to(first)).device == first
    torch.testing.assert_close(split.cpu(), ref)
    model.train()
    F.cross_entropy(model(x.to(first)), torch.arange(4, device=first)).backward()
    assert model.tower_list[1].conv1.weight.grad.device == second


@pytest.mark.gpu
@needs_cuda
def test_paper_network_on_cuda_parameters_and_shapes():
    model = build_model(PAPER, [torch.device("cuda", 0)]).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224, device="cuda")).shape == (2, 1000)
    assert n_params(model) == 60_965_224
    assert {p.device.type for p in model.parameters()} == {"cuda"}


def test_every_conv_is_named_like_the_paper():
    names = {k.split(".")[2] for k in build_model(TINY).state_dict()}
    assert names == set(LAYERS) and set(CONVS) < names


FIGURE_2 = [  # Figure 2 from the image up
    *("conv1", "act1", "norm1", "pool1"),
    *("conv2", "act2", "norm2", "pool2"),
    *("conv3", "act3", "conv4", "act4", "conv5", "act5", "pool5"),
    *("fc6", "act6", "drop6", "fc7", "act7", "drop7", "fc8"),
]


def test_print_shows_figure_2_layer_by_layer(paper_model):
    """`print(model)` lists a tower's layers in the order the data flows through them,
    the ReLU, LRN, pooling and dropout included, under Caffe's bvlc_alexnet names."""
    text = str(paper_model)
    names = re.findall(r"\((\w+)\): ", text)
    assert names[names.index("conv1") :] == FIGURE_2
    assert "(0-1): 2 x Tower(" in text  # the two towers alike
    assert "Conv2d(256, 192" in text  # conv3 takes both towers' 128 conv2 maps
    assert "LRN(5, alpha=0.0001, beta=0.75, k=2.0, convention='paper'" in text
    assert "MaxPool2d(kernel_size=3, stride=2" in text and "Dropout(p=0.5" in text
    without_conv4 = re.findall(r"\((\w+)\): ", str(tiny(omit="conv4")))
    assert "conv4" not in without_conv4 and "act4" not in without_conv4
    assert [n for n in FIGURE_2 if n.startswith(("conv", "fc"))] == list(LAYERS)


# --------------------------------------------------------------------------- two devices


class _TwoDevices(AlexNet):
    """The towers on "two devices" that are both the CPU: torch.device("cpu") and
    torch.device("cpu", 0) are different keys, and `.to()` either is a copy on the CPU. So
    every transfer and exchange of the two-GPU path runs, and can be watched, here."""

    @property
    def devices(self) -> list[torch.device]:
        return [CPU, torch.device("cpu", 0)]


def _watched(monkeypatch):
    """Every copy between devices and every concatenation, in the order issued."""
    from alexcli.core.nn import loops, model

    log = []

    def send(t, device):
        log.append(("send", device, t.dtype, t.nbytes, tuple(t.shape)))
        return t.to(device)

    cat = torch.cat

    def watched_cat(tensors, dim=0):
        log.append(("cat",))
        return cat(tensors, dim)

    monkeypatch.setattr(model, "send", send)
    monkeypatch.setattr(loops, "send", send)
    monkeypatch.setattr(torch, "cat", watched_cat)
    return log


def _two_device_step(monkeypatch, elsewhere):
    from alexcli.bench.step import flat_normalizer, made_up_batch
    from alexcli.core.nn.loops import EpochProgress, NetworkInput, train_steps
    from alexcli.core.nn.optim import make_optimizer

    torch.manual_seed(0)
    net = _TwoDevices(dataclasses.replace(TINY, dropout=0.0))
    size = TINY_CROP + 8
    norms = {d: flat_normalizer(size, d, 1 / 64) for d in net.devices}
    inputs = NetworkInput(
        norms[CPU],
        towers=tuple(net.devices),
        elsewhere={d: n for d, n in norms.items() if d != CPU} if elsewhere else {},
    )
    batch = made_up_batch(4, TINY_CROP, size, TINY.num_classes)
    optimizer = make_optimizer(net, 0.01, 0.9, 5e-4)
    log = _watched(monkeypatch)
    state = EpochProgress()
    for _ in train_steps(net, optimizer, inputs, [batch], state, epoch=0, lr=lambda _: 0.01):
        pass
    monkeypatch.undo()
    return log, state, net.state_dict()


def test_the_second_tower_is_sent_uint8_crops_and_normalises_them_itself(monkeypatch):
    """Two towers on two GPUs: the float32 normalised batch sent to the second (77 MB a
    step at batch 128, crop 224) became its uint8 crops (19 MB), normalised there. The
    same step, the same weights after it, as sending the floats."""
    log, state, weights = _two_device_step(monkeypatch, elsewhere=True)
    floats_log, floats_state, floats_weights = _two_device_step(monkeypatch, elsewhere=False)
    image = (4, TINY_CROP, TINY_CROP, 3)
    to_second = [e for e in log if e[0] == "send" and e[1] == torch.device("cpu", 0)]
    first = to_second[0]  # before the network runs: the input
    assert first[2:] == (torch.uint8, 4 * TINY_CROP**2 * 3, image)
    as_float = [e for e in floats_log if e[0] == "send" and e[4] == (4, 3, TINY_CROP, TINY_CROP)]
    assert as_float and as_float[0][2] == torch.float32  # what went before
    assert not [e for e in to_second if e[4] == (4, 3, TINY_CROP, TINY_CROP)]
    assert state.loss_sum == floats_state.loss_sum
    for k in weights:
        torch.testing.assert_close(weights[k], floats_weights[k], rtol=0, atol=0, msg=k)


def test_each_exchange_issues_both_copies_before_either_concatenation(monkeypatch):
    """conv3, fc6, fc7 and fc8 see both towers' maps: with a concatenation between the
    two directions' copies, the second copy queued behind it on the GPU."""
    net = _TwoDevices(dataclasses.replace(TINY, dropout=0.0))
    log = _watched(monkeypatch)
    with torch.no_grad():
        net([torch.randn(2, 3, TINY_CROP, TINY_CROP)] * 2)
    kinds = "".join("s" if e[0] == "send" else "c" for e in log)
    # four exchanges (conv3, fc6, fc7, fc8's inputs), then the logits gathered on the first
    assert kinds == "sssscc" * 4 + "ssc"
