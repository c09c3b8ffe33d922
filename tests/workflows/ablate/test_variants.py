"""The ablation study's networks (workflows/ablate/variants.py): each switches exactly its choice
off against its reference, the counts in claims.json are the hand-counted ones, and
the pooling and depth variants hand fc6 inputs of the reference's size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from alexcli.config import PRESETS, ModelConfig
from alexcli.core.nn.model import build_model
from alexcli.errors import ConfigError
from alexcli.workflows.ablate.variants import (
    VARIANTS,
    check_variants,
    network,
    pooling_crop,
    same_as_baseline,
    variant_config,
)


def _built(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg).parameters())


def _conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cout * (cin // groups) * k * k + cout


def _fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_the_variants_parameter_counts_are_the_hand_counted_ones():
    """Counted by hand from the layer definitions (the paper's Figure 2 and footnote;
    grouped layers see half their inputs), at 224 crops and 1000 classes: the count
    claims.json carries (`network`) and the built network's agree with it."""
    paper = PRESETS["paper"]
    fc = _fc(9216, 4096) + _fc(4096, 4096) + _fc(4096, 1000)
    two = (
        _conv(3, 96, 11)
        + _conv(96, 256, 5, 2)
        + _conv(256, 384, 3)
        + _conv(384, 384, 3, 2)
        + _conv(384, 256, 3, 2)
        + fc
    )
    assert two == 60_965_224
    one = (
        _conv(3, 48, 11)
        + _conv(48, 128, 5)
        + _conv(128, 192, 3)
        + _conv(192, 192, 3)
        + _conv(192, 256, 3)
        + fc
    )
    assert one == 59_798_312  # the footnote's net: conv5 and the FC layers whole
    counts = {
        "baseline": two,
        "fig1-relu": two,
        "fig1-tanh": two,
        "no-lrn": two,
        "no-pca": two,
        "no-crop-flip": two,
        "no-dropout": two,
        "no-weight-decay": two,
        "pool-3x3": two,
        "pool-2x2": two,  # 55 → 27 → 13 → 6 either way at 224
        "one-tower": one,
        # conv4 keeps its grouping and reads its own tower's 128 conv2 maps
        "no-conv3": two - _conv(256, 384, 3) - _conv(384, 384, 3, 2) + _conv(256, 384, 3, 2),
        "no-conv4": two - _conv(384, 384, 3, 2),
    }
    assert set(counts) == set(VARIANTS)
    for name, want in counts.items():
        model = variant_config(paper, name, 0).model
        assert network(model).parameters == want == _built(model), name
        assert network(model).fc6_inputs == 9216, name


def test_each_variant_switches_off_exactly_its_choice_and_keeps_the_seed():
    base = PRESETS["small"]
    changed = {
        "no-lrn": {"model.lrn": False},
        "pool-2x2": {"model.pool_kernel": 2, "model.crop": 98},
        "pool-3x3": {"model.crop": 98},
        "no-pca": {"lighting_std": 0.0},
        "no-crop-flip": {"random_crop": False, "flip": False},
        "no-dropout": {"model.dropout": 0.0},
        "no-weight-decay": {"weight_decay": 0.0},
        "no-conv3": {"model.omit": "conv3"},
        "no-conv4": {"model.omit": "conv4"},
        "one-tower": {"model.towers": 1, "model.conv_channels": (16, 32, 48, 48, 64)},
    }
    for name, want in changed.items():
        cfg = variant_config(base, name, 7)
        assert cfg.seed == 7 and cfg.epochs == base.epochs and cfg.lr == base.lr
        for key, value in want.items():
            obj = cfg.model if key.startswith("model.") else cfg
            assert getattr(obj, key.split(".")[-1]) == value, (name, key)
        others = {k.split(".")[-1] for k in want}
        for f in dataclasses.fields(cfg.model):  # nothing else of the network moved
            if f.name not in others:
                assert getattr(cfg.model, f.name) == getattr(base.model, f.name), (name, f.name)
    two = dataclasses.replace(base, devices="cuda:0,cuda:1")
    assert variant_config(two, "one-tower", 0).devices == "cuda:0"  # one tower, one device
    assert variant_config(two, "no-lrn", 0).devices == "cuda:0,cuda:1"


def test_figure_1s_networks_have_no_regularisation_and_their_own_lr():
    base = PRESETS["small"]
    lrs = {"relu": 0.01, "tanh": 0.0025}
    relu = variant_config(base, "fig1-relu", 3, lrs, figure1_epochs=12)
    tanh = variant_config(base, "fig1-tanh", 3, lrs, figure1_epochs=12)
    for cfg, act, lr in ((relu, "relu", 0.01), (tanh, "tanh", 0.0025)):
        assert cfg.model.activation == act and cfg.lr == lr and cfg.epochs == 12
        assert cfg.model.dropout == 0 and cfg.weight_decay == 0 and cfg.lighting_std == 0
        assert not cfg.random_crop and not cfg.flip and cfg.lr_steps == () and cfg.seed == 3
        assert cfg.clip_grad_norm is None and cfg.max_step_norm is None  # as the paper
    assert dataclasses.replace(tanh, lr=0.01, model=relu.model) == relu  # only these differ


def test_the_pooling_networks_hand_fc6_inputs_of_one_size():
    """At the small preset's 112 crops 2/2 pooling would leave 3² maps where 3/2 leaves
    2²; both run at the crop where every map is the same (98: 23 → 11 → 5 → 2), checked
    on the built networks' fc6."""
    small = PRESETS["small"]
    assert pooling_crop(small.model) == 98 and pooling_crop(PRESETS["paper"].model) == 224
    x = torch.zeros(2, 3, 98, 98)
    fc6 = []
    for name in ("pool-3x3", "pool-2x2"):
        model = build_model(variant_config(small, name, 0).model).eval()
        tower = model.tower_list[0]
        seen: list[int] = []

        def hook(
            _m: object, args: tuple[torch.Tensor], _out: object, seen: list[int] = seen
        ) -> None:
            seen.append(args[0].shape[1])

        tower.fc6.register_forward_hook(hook)
        model(x)
        fc6.append((seen[0], tower.fc6.in_features))
    assert fc6[0] == fc6[1] == (256, 256)  # 64 maps × 2 × 2
    assert same_as_baseline(PRESETS["paper"], "pool-3x3")  # 224 already is such a crop
    assert not same_as_baseline(small, "pool-3x3")


def test_the_depth_networks_keep_fc6s_input():
    for name in ("no-conv3", "no-conv4"):
        for preset in ("small", "paper"):
            base = PRESETS[preset]
            got = network(variant_config(base, name, 0).model).fc6_inputs
            assert got == network(base.model).fc6_inputs, (name, preset)


def test_a_variant_that_changes_nothing_is_refused():
    base = dataclasses.replace(PRESETS["small"], weight_decay=0.0)
    with pytest.raises(ConfigError, match="'no-weight-decay' changes nothing"):
        check_variants(base, {"baseline", "no-weight-decay"})
    check_variants(base, {"baseline", "no-lrn", "pool-3x3", "pool-2x2", "fig1-tanh"})
    one = dataclasses.replace(base, model=dataclasses.replace(base.model, towers=1))
    with pytest.raises(ConfigError, match="'one-tower'"):
        check_variants(one, {"one-tower"})
