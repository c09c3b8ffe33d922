"""Configuration layering: presets, recipes, --set overrides, type checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from alexcli.config import (
    PRESETS,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    describe_batch_rule,
    describe_bound,
    fingerprint_view,
    from_dict,
    load_recipe,
    merge,
    parse_sets,
    preset,
    to_dict,
    train_config,
    with_values,
)
from alexcli.errors import ConfigError

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def test_defaults_are_the_papers_recipe():
    t = TrainConfig()
    assert (t.batch_size, t.lr, t.momentum, t.weight_decay) == (128, 0.01, 0.9, 5e-4)
    assert (t.crop, t.lighting_std, t.lr_drops) == (224, 0.1, 3)
    m = t.model
    assert m.conv_channels == (96, 256, 384, 384, 256) and m.fc_features == (4096, 4096)
    assert (m.lrn_k, m.lrn_size, m.lrn_alpha, m.lrn_beta) == (2.0, 5, 1e-4, 0.75)
    assert (m.pool_kernel, m.pool_stride, m.dropout, m.towers) == (3, 2, 0.5, 2)
    assert PRESETS["paper"] == TrainConfig()


def test_merge_coerces_and_nests():
    t = merge(TrainConfig(), {"lr": 1, "model": {"towers": 1, "lrn": "false"}}, "x.toml")
    assert t.lr == 1.0 and isinstance(t.lr, float)
    assert t.model.towers == 1 and t.model.lrn is False
    assert t.model.conv_channels == ModelConfig().conv_channels


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"lrr": 0.1}, "unknown key 'lrr'"),
        ({"model": {"towerz": 1}}, "unknown key 'model.towerz'"),
        ({"epochs": "many"}, "'epochs' must be an integer"),
        ({"epochs": True}, "'epochs' must be an integer"),
        ({"amp": "fp8"}, "'amp' must be one of"),
        ({"model": {"towers": 3}}, "'model.towers' must be one of"),
        ({"model": {"fc_features": [1, 2, 3]}}, "'model.fc_features' must be a list of 2"),
        ({"model": 5}, "'model' must be a table"),
    ],
)
def test_merge_rejects_bad_values_naming_key_and_source(data, needle):
    with pytest.raises(ConfigError) as e:
        merge(TrainConfig(), data, "my.toml")
    assert needle in str(e.value) and str(e.value).startswith("my.toml: ")


def test_parse_sets_reads_toml_literals():
    sets = parse_sets(["lr=0.02", "model.towers=1", "model.conv_channels=[1,2,3,4,5]", "a=b c"])
    assert sets == {
        "lr": 0.02,
        "model": {"towers": 1, "conv_channels": [1, 2, 3, 4, 5]},
        "a": "b c",
    }
    with pytest.raises(ConfigError):
        parse_sets(["novalue"])


def test_with_values_skips_unset_flags():
    t = with_values(TrainConfig(), epochs=3, lr=None)
    assert t.epochs == 3 and t.lr == 0.01


def test_optional_fields_take_none():
    e = merge(EvalConfig(), {"views": 1}, "--set")
    assert e.views == 1
    from alexcli.config import PrepareConfig

    p = merge(PrepareConfig(classes=5), {"classes": "none"}, "--set")
    assert p.classes is None


def test_runtime_fields_stay_out_of_fingerprints():
    a = fingerprint_view(TrainConfig())
    b = fingerprint_view(TrainConfig(devices="cuda:0", workers=8, amp="bf16"))
    assert a == b and "devices" not in a
    assert fingerprint_view(TrainConfig(lr=0.02)) != a


def test_to_dict_round_trips():
    t = preset("small")
    assert from_dict(TrainConfig, to_dict(t)) == t


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize("recipe", sorted(PIPELINES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    r = load_recipe(recipe)
    assert r.stages and r.data_dir and r.run_dir


def test_recipe_preset_then_file_then_sets(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('source = "/x"\n[train]\npreset = "small"\nepochs = 7\n')
    r = load_recipe(f, ["train.lr=0.5"])
    assert r.train.preset == "small" and r.train.epochs == 7 and r.train.lr == 0.5
    assert r.train.model == PRESETS["small"].model


def test_recipe_errors_name_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[train]\nepohcs = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key 'train.epohcs'"):
        load_recipe(f)
    f.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(f)
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(tmp_path / "missing.toml")
    f.write_text('stages = ["prepare", "fly"]\n')
    with pytest.raises(ConfigError, match="unknown stage 'fly'"):
        load_recipe(f)
    f.write_bytes(b"\xff\xd8\xff\xe0 a JPEG given as the recipe")
    with pytest.raises(ConfigError, match="not a TOML file"):
        load_recipe(f)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TrainConfig(lr=-0.1), "lr is -0.1: must be ≥ 0"),
        (lambda: TrainConfig(epochs=0), "epochs is 0: must be at least 1"),
        (lambda: ModelConfig(dropout=1.5), "dropout is 1.5: must be in [0, 1]"),
        (lambda: EvalConfig(batch_size=0), "batch_size is 0: must be at least 1"),
        # NaN passes every comparison: it trained to NaN weights and exited 0
        (lambda: TrainConfig(momentum=math.nan), "momentum is nan: must be a finite number"),
        (lambda: TrainConfig(lr=math.inf), "lr is inf: must be a finite number"),
        (lambda: ModelConfig(dropout=math.nan), "dropout is nan: must be a finite number"),
        (lambda: TrainConfig(seed=-1), "seed is -1: must be in [0, 9.22337e+18]"),
        (lambda: TrainConfig(seed=2**64), f"seed is {2**64}: must be in [0, 9.22337e+18]"),
        # a limit of 0 zeroes every gradient: the net would only decay, and say nothing
        (lambda: TrainConfig(clip_grad_norm=0), "clip_grad_norm is 0: must be ≥ 1e-06"),
    ],
)
def test_bounds_hold_however_a_configuration_is_made(make, message):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.message == message


def test_bounds_name_their_source():
    with pytest.raises(ConfigError, match=r"^x.toml: 'model.dropout' must be in \[0, 1\], got 2"):
        merge(TrainConfig(), {"model": {"dropout": 2}}, "x.toml")
    with pytest.raises(ConfigError, match=r"^--epochs 0: must be at least 1$"):
        with_values(TrainConfig(), epochs=0)
    assert with_values(TrainConfig(), workers=0, checkpoint_minutes=0).workers == 0  # ≥ 0 ok


def test_crop_is_the_networks_and_crop_still_names_it():
    t = merge(TrainConfig(), {"crop": 64}, "--set")
    assert t.model.crop == t.crop == 64 and "crop" not in to_dict(t)
    assert with_values(TrainConfig(), crop=96).model.crop == 96  # the --crop flag
    # a configuration saved before crop moved into the model (config.json, a checkpoint)
    saved = {k: v for k, v in to_dict(TrainConfig()).items()} | {"crop": 100}
    saved["model"] = {k: v for k, v in saved["model"].items() if k != "crop"}
    assert from_dict(TrainConfig, saved).model.crop == 100
    # given both ways, the network's own key wins
    assert merge(TrainConfig(), {"crop": 64, "model": {"crop": 80}}, "x").crop == 80


# --------------------------------------------------------------------------- the batch rule


def test_a_batch_other_than_the_presets_scales_the_lr_linearly_and_warms_a_rise():
    """Goyal et al. 2017: lr × k for a batch k times the preset's, warmed up when raised
    (5 epochs of 90; the same share of a shorter run); lowered, no warm-up."""
    small, paper = PRESETS["small"], PRESETS["paper"]
    up = train_config(preset_name="small", batch_size=64)
    assert up.lr == pytest.approx(2 * small.lr) and up.lr_scaled_from == (small.lr, 32)
    assert up.warmup_epochs == pytest.approx(30 / 18)
    down = train_config(preset_name="small", sets=["batch_size=16"])
    assert down.lr == pytest.approx(small.lr / 2) and down.warmup_epochs == 0
    big = train_config(batch_size=1024)  # the paper preset
    assert big.lr == pytest.approx(0.08) and big.warmup_epochs == 5
    assert big.lr_scaled_from == (paper.lr, 128)
    same = train_config(preset_name="small", epochs=4)
    assert same.lr == small.lr and same.lr_scaled_from is None and same.warmup_epochs == 0


@pytest.mark.parametrize(
    "how",
    [{"lr": 0.01}, {"sets": ["lr=0.01"]}, {"sets": ["lr_scaling=none"]}],
    ids=["--lr", "--set lr", "lr_scaling=none"],
)
def test_an_lr_given_or_the_rule_off_keeps_the_lr(how):
    cfg = train_config(preset_name="small", batch_size=128, **how)
    given = 0.01 if "lr=0.01" in how.get("sets", []) else PRESETS["small"].lr
    assert cfg.lr == how.get("lr", given)
    assert cfg.lr_scaled_from is None and cfg.warmup_epochs == 0


def test_a_warmup_given_is_kept_and_the_rule_is_recorded():
    cfg = train_config(preset_name="small", batch_size=128, sets=["warmup_epochs=0.5"])
    small = PRESETS["small"]
    assert cfg.lr == pytest.approx(4 * small.lr) and cfg.warmup_epochs == 0.5
    saved = to_dict(cfg)
    assert saved["lr_scaled_from"] == [small.lr, 32] and saved["lr_scaling"] == "linear"
    assert from_dict(TrainConfig, saved) == cfg
    assert "lr_scaled_from" not in fingerprint_view(cfg)  # the resolved lr is


def test_the_start_says_when_the_bound_on_lr_times_gradient_binds():
    """`small` bounds lr × the gradient's norm at 0.08: silent where lr × its clip of 2
    stays within it (batch 32 and 64 at the rule's lr), said with the clip it gives where
    the lr is higher (batch 256 at the rule's 0.16: 0.5); the paper bounds nothing."""
    assert describe_bound(train_config(preset_name="small")) is None
    assert describe_bound(train_config(preset_name="small", batch_size=64)) is None
    line = describe_bound(train_config(preset_name="small", batch_size=256))
    assert line is not None and "clipped to 0.5 instead of 2" in line
    line = describe_bound(train_config(preset_name="small", batch_size=256, lr=0.64))
    assert line is not None and "clipped to 0.125 instead of 2" in line
    unclipped = train_config(preset_name="small", lr=0.64, sets=["clip_grad_norm=none"])
    assert "clipped to 0.125 while" in (describe_bound(unclipped) or "")
    assert describe_bound(train_config(preset_name="paper", lr=10.0)) is None


def test_a_per_device_batch_times_the_processes_is_the_global_batch():
    cfg = train_config(batch_per_device=64, world=4)
    assert cfg.batch_size == 256 and cfg.lr == pytest.approx(0.02)
    line = describe_batch_rule(cfg, 4)
    assert "batch 256 (64 per device × 4)" in line and "Goyal" in line
    assert train_config(batch_per_device=64, batch_size=256, world=4).batch_size == 256
    with pytest.raises(ConfigError, match="disagree") as e:
        train_config(batch_per_device=64, batch_size=128, world=4)
    assert "--batch-per-device" in (e.value.hint or "")
    # the higher layer wins: a flag over --set, a new global batch over a resumed run's
    assert train_config(sets=["batch_size=16"], batch_per_device=48).batch_size == 48
    wider = train_config(base=cfg, batch_size=512, world=4)
    assert wider.batch_size == 512 and wider.batch_per_device is None


def test_a_resumed_run_scales_from_where_its_own_lr_came_from():
    """A run scaled to batch 256 (lr 0.02 from 0.01 at 128) resumed: the same batch keeps
    its lr and record; batch 512 scales from 0.01 at 128 again; 128 goes back to 0.01."""
    run = train_config(batch_size=256)
    assert train_config(base=run) == run
    wider = train_config(base=run, batch_size=512)
    assert wider.lr == pytest.approx(0.04) and wider.lr_scaled_from == (0.01, 128)
    back = train_config(base=run, batch_size=128)
    assert back.lr == pytest.approx(0.01) and back.lr_scaled_from is None


def test_a_recipe_follows_the_rule_too(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('source = "/x"\n[train]\npreset = "small"\nbatch_size = 64\n')
    assert load_recipe(f).train.lr == pytest.approx(2 * PRESETS["small"].lr)
    assert load_recipe(f, ["train.lr=0.003"]).train.lr == 0.003
