"""`alexcli ablate`: the variants are the paper's counterparts, the verdicts respect the
noise, the study is cached and resumable, and its report carries every claim."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexcli.config import PRESETS, ModelConfig, train_config
from alexcli.core.data.batches import EpochSampler
from alexcli.core.nn.model import build_model
from alexcli.stages.ablate import VARIANTS, curve_measures, plan, variant_config
from alexcli.stages.claims import (
    CLAIMS,
    OPPOSITE,
    REPRODUCED,
    UNRESOLVED,
    assess,
    claim_verdict,
    claims_named,
    judge,
)
from alexcli.stages.eval import run_eval
from alexcli.stages.train import run_train
from tests.train_helpers import TINY, make_data_dir

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- variants


def _parameters(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg).parameters())


def _conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cout * (cin // groups) * k * k + cout


def _fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_the_variants_networks_have_the_papers_parameter_counts():
    """Counted by hand from the layer definitions (the paper's Figure 2 and footnote;
    grouped layers see half their inputs), at 224 crops and 1000 classes."""
    paper = PRESETS["paper"]
    fc = _fc(9216, 4096) + _fc(4096, 4096) + _fc(4096, 1000)
    two = (_conv(3, 96, 11) + _conv(96, 256, 5, 2) + _conv(256, 384, 3)
           + _conv(384, 384, 3, 2) + _conv(384, 256, 3, 2) + fc)  # fmt: skip
    assert two == 60_965_224
    one = (_conv(3, 48, 11) + _conv(48, 128, 5) + _conv(128, 192, 3) + _conv(192, 192, 3)
           + _conv(192, 256, 3) + fc)  # fmt: skip
    assert one == 59_798_312  # the footnote's net: conv5 and the FC layers whole
    counts = {
        "baseline": two, "tanh": two, "no-lrn": two, "no-pca": two, "no-crop-flip": two,
        "no-dropout": two, "no-weight-decay": two,
        "pool-2x2": two,  # 55 → 27 → 13 → 6 either way at 224
        "one-tower": one,
        # conv4 keeps its grouping and reads its own tower's 128 conv2 maps
        "no-conv3": two - _conv(256, 384, 3) - _conv(384, 384, 3, 2) + _conv(256, 384, 3, 2),
        "no-conv4": two - _conv(384, 384, 3, 2),
        "no-conv5": two - _conv(384, 256, 3, 2) - _fc(9216, 4096) + _fc(384 * 36, 4096),
    }  # fmt: skip
    assert set(counts) == set(VARIANTS)
    for name, want in counts.items():
        assert _parameters(variant_config(paper, name, 0).model) == want, name


def test_each_variant_switches_off_exactly_its_choice_and_keeps_the_seed():
    base = PRESETS["small"]
    changed = {
        "tanh": {"model.activation": "tanh"}, "no-lrn": {"model.lrn": False},
        "pool-2x2": {"model.pool_kernel": 2}, "no-pca": {"lighting_std": 0.0},
        "no-crop-flip": {"random_crop": False, "flip": False},
        "no-dropout": {"model.dropout": 0.0}, "no-weight-decay": {"weight_decay": 0.0},
        "no-conv3": {"model.omit": "conv3"}, "one-tower": {"model.towers": 1},
    }  # fmt: skip
    for name, want in changed.items():
        cfg = variant_config(base, name, 7)
        assert cfg.seed == 7 and cfg.epochs == base.epochs and cfg.lr == base.lr
        for key, value in want.items():
            obj = cfg.model if key.startswith("model.") else cfg
            assert getattr(obj, key.split(".")[-1]) == value, (name, key)
    assert variant_config(base, "one-tower", 0).model.conv_channels == (16, 32, 48, 48, 64)
    two = dataclasses.replace(base, devices="cuda:0,cuda:1")
    assert variant_config(two, "one-tower", 0).devices == "cuda:0"  # one tower, one device
    assert variant_config(two, "no-lrn", 0).devices == "cuda:0,cuda:1"


def test_without_random_crops_the_order_and_colour_draws_stay_the_same():
    """Paired runs: switching crops off must not move the data order or the noise."""
    kw = {"size": 72, "crop": 64, "seed": 3}
    on, off = EpochSampler(40, 8, **kw), EpochSampler(40, 8, random_crop=False, **kw)
    a, b = list(on), list(off)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.index, y.index) and np.array_equal(x.alpha, y.alpha)
        assert np.array_equal(x.flip, y.flip)
        assert set(y.y.tolist()) == {4} and set(y.x.tolist()) == {4}
    assert len({int(v) for x in a for v in x.y}) > 1


def test_a_study_runs_the_baseline_then_each_variant_seed_by_seed():
    runs = plan(claims_named(["lrn", "depth"]), 2)
    assert runs[:4] == [("baseline", 0), ("no-lrn", 0), ("no-conv3", 0), ("no-conv4", 0)]
    assert len(runs) == 10 and runs[5] == ("baseline", 1)
    assert {v for v, _ in plan(CLAIMS, 1)} == set(VARIANTS)


# --------------------------------------------------------------------------- verdicts


def test_the_verdict_reads_the_paired_mean_against_the_t_interval():
    # n = 3: t(0.975, 2) = 4.3027 (tables); mean 1.0, sd 0.1, se 0.0577: half 0.2484
    d = judge([0.9, 1.0, 1.1], +1)
    assert d.mean == pytest.approx(1.0) and d.sd == pytest.approx(0.1)
    assert d.half_width == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    assert d.verdict == REPRODUCED
    assert judge([0.9, 1.0, 1.1], -1).verdict == OPPOSITE
    assert judge([0.5, -0.2, 0.3], +1).verdict == UNRESOLVED  # mean 0.2, half 0.89
    assert judge([2.0], +1).verdict == UNRESOLVED  # one seed: no spread, no verdict
    assert judge([0.0, 0.0], +1).verdict == UNRESOLVED
    assert judge([0.3, 0.3], +1).verdict == UNRESOLVED  # no spread, two seeds: weak
    assert judge([0.3, 0.3, 0.3], +1).verdict == REPRODUCED  # three equal: the sign stands
    assert judge([], +1).verdict == UNRESOLVED
    # ten seeds: t(0.975, 9) = 2.2622; the same mean and sd resolve what 3 seeds did not
    ten = judge([0.2 + 0.1 * (-1) ** k for k in range(10)], +1)
    assert ten.half_width == pytest.approx(2.2622 * ten.sd / math.sqrt(10), rel=1e-4)
    assert ten.verdict == REPRODUCED


def test_a_claim_is_reproduced_only_when_all_its_primary_measures_are():
    assert claim_verdict([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert claim_verdict([REPRODUCED, UNRESOLVED]) == UNRESOLVED
    assert claim_verdict([REPRODUCED, OPPOSITE]) == OPPOSITE
    assert claim_verdict([]) == UNRESOLVED


def _fake_runs(effect: float, seeds: int = 3) -> dict[str, dict[int, dict[str, float]]]:
    """Every variant's numbers: the baseline's plus `effect` in the paper's direction."""
    rng = np.random.default_rng(0)
    runs: dict[str, dict[int, dict[str, float]]] = {}
    keys = ("val_top1_error", "val_top5_error", "val_top1_error_1", "val_top5_error_1",
            "gap", "train_top1_error", "epochs_to_threshold", "seconds_to_threshold",
            "epochs_to_best", "seconds")  # fmt: skip
    for v in VARIANTS:
        runs[v] = {s: {k: 0.3 + 0.01 * s for k in keys} for s in range(seeds)}
    for claim in CLAIMS:
        for m in claim.measures:
            for s in range(seeds):
                noise = float(rng.normal(0, abs(effect) / 20))
                runs[m.variant][s][m.key] = runs["baseline"][s][m.baseline_key or m.key] + (
                    m.sign * effect + noise
                )
    return runs


def test_every_claim_of_the_paper_is_in_the_report_with_its_fields():
    rows = assess(CLAIMS, _fake_runs(0.05))
    assert [r["claim"] for r in rows] == [
        "relu", "lrn", "overlapping-pooling", "two-towers", "pca-lighting",
        "crops-reflections", "dropout", "weight-decay", "depth", "ten-views",
    ]  # fmt: skip
    for r in rows:
        assert r["paper"] and r["statement"] and r["verdict"] == REPRODUCED, r
        for m in r["measures"]:
            assert m["effect"]["n"] == 3 and m["seeds"] == [0, 1, 2]
            assert m["effect"]["mean"] == pytest.approx(m["expected_sign"] * 0.05, abs=0.01)
            assert set(m) >= {"paper_effect", "unit", "baseline", "ablated", "verdict"}
    flipped = assess(CLAIMS, _fake_runs(-0.05))
    assert all(r["verdict"] == OPPOSITE for r in flipped)
    depth = next(r for r in rows if r["claim"] == "depth")
    assert [m["variant"] for m in depth["measures"]] == ["no-conv3", "no-conv4", "no-conv5"]


def test_a_baseline_that_never_reached_the_threshold_pairs_nothing():
    runs = _fake_runs(2.0)
    runs["baseline"][1]["threshold_censored"] = True  # type: ignore[assignment]
    relu = assess(claims_named(["relu"]), runs)[0]["measures"][0]
    assert relu["seeds"] == [0, 2] and relu["baseline_censored"] == [1]


def test_epochs_to_the_threshold_are_interpolated_from_chance_at_epoch_0():
    lines = [
        {"train_top1_error": 0.6, "val_top1_error": 0.5, "seconds": 10.0},
        {"train_top1_error": 0.2, "val_top1_error": 0.3, "seconds": 20.0},
        {"train_top1_error": 0.1, "val_top1_error": 0.35, "seconds": 10.0},
    ]
    m = curve_measures(lines, 0.25, classes=4)  # chance 0.75 at epoch 0
    assert m["epochs_to_threshold"] == pytest.approx(1 + (0.6 - 0.25) / 0.4)
    assert m["seconds_to_threshold"] == pytest.approx(10 + 20 * (0.35 / 0.4))
    assert not m["threshold_censored"] and m["epochs_to_best"] == 2 and m["seconds"] == 40
    never = curve_measures(lines, 0.05, classes=4)
    assert never["threshold_censored"] and never["epochs_to_threshold"] == 3


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"), train=16, val=6)


def test_the_training_error_in_metrics_counts_the_batches_as_trained(data, tmp_path):
    """At lr 0 with no dropout and no augmentation the weights stand still and a training
    batch is the centre crop: the epoch's training error must equal eval's on the
    training split (64 images, 4 whole batches of 16)."""
    sets = [*TINY, "lr=0", "model.dropout=0", "random_crop=false", "flip=false",
            "lighting_std=0", "epochs=1"]  # fmt: skip
    run = tmp_path / "run"
    result = run_train(data, run, train_config(preset_name="small", sets=sets))
    got = result.metrics[0]["train_top1_error"]
    from alexcli.config import EvalConfig

    want = run_eval(run, data, EvalConfig(views=1, split="train", devices="cpu")).top1_error
    assert got == pytest.approx(want, abs=1e-12) and 0 < want < 1


def _study(cli, data, out, *extra):
    args = ["--preset", "small", "--seeds", "2", "--epochs", "1", "--only", "lrn",
            "--only", "ten-views", *[a for s in TINY for a in ("--set", s)], *extra]  # fmt: skip
    r = cli("ablate", data, out, *args, "--json")
    return r, (json.loads(r.out, parse_constant=_no_nan) if r.code == 0 else None)


def _no_nan(name: str) -> None:
    raise AssertionError(f"{name} in JSON output")


def test_a_tiny_study_reports_its_claims_then_is_up_to_date(cli, data, tmp_path):
    out = tmp_path / "study"
    r, result = _study(cli, data, out)
    assert r.code == 0, r.err
    assert result["trained"] == 4 and not result["up_to_date"]
    for variant in ("baseline", "no-lrn"):
        for seed in (0, 1):
            run = out / variant / f"seed-{seed}"
            assert (run / "manifest.json").is_file() and (run / "measures.json").is_file()
    saved = json.loads((out / "claims.json").read_text())
    assert [c["claim"] for c in saved["claims"]] == ["lrn", "ten-views"]
    assert saved["study"]["seeds"] == 2 and saved["study"]["train_images"] == 64
    lrn = saved["claims"][0]["measures"][0]
    for seed in (0, 1):  # the report pairs exactly what each run's measures.json holds
        for variant, values in (("baseline", lrn["baseline"]), ("no-lrn", lrn["ablated"])):
            text = (out / variant / f"seed-{seed}" / "measures.json").read_text()
            assert values[seed] == json.loads(text)["measures"]["val_top1_error"]
    assert "| lrn |" in (out / "claims.md").read_text()
    assert (out / "effects.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "effects.svg").read_text().startswith("<svg")
    # eval on a run of the study works as on any run
    assert cli("eval", out / "no-lrn" / "seed-0", data, "--views", "1").code == 0

    before = (out / "baseline" / "seed-0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    r, again = _study(cli, data, out)
    assert r.code == 0 and again["up_to_date"] and again["trained"] == 0
    assert (out / "baseline" / "seed-0" / "checkpoints" / "last.pt").stat().st_mtime_ns == before
    r, more = _study(cli, data, out, "--seeds", "3")  # the later --seeds wins
    assert r.code == 0 and more["trained"] == 2, r.err

    r, _ = _study(cli, data, out, "--epochs", "2")
    assert r.code == 2 and "other settings" in r.err and "--force" in r.err
    assert r.err.count("error:") == 1 and "Traceback" not in r.err


def test_a_study_of_one_seed_reports_no_verdict_and_valid_json(cli, data, tmp_path):
    r, result = _study(cli, data, tmp_path / "s", "--seeds", "1")  # the later --seeds wins
    assert r.code == 0, r.err
    for row in result["claims"]:  # no spread from one seed: null, never NaN
        assert row["verdict"] == UNRESOLVED and row["measures"][0]["effect"]["sd"] is None


def test_the_recipe_stage_runs_a_study(data, tmp_path):
    from alexcli.config import find_recipe, load_recipe
    from alexcli.workflows.pipeline import run_chain

    sets = [f"train.{s}" for s in TINY] + [
        f"data_dir={json.dumps(str(data))}", 'stages=["ablate"]', "ablate.seeds=1",
        'ablate.only=["ten-views"]', "train.epochs=1",
    ]  # fmt: skip
    recipe = load_recipe(find_recipe("ablations"), sets)
    result = run_chain(recipe, base=tmp_path)
    (step,) = result.steps
    assert step.stage == "ablate" and "ten-views: not resolved" in step.notes
    assert (tmp_path / "study" / "claims.md").is_file()
    assert run_chain(recipe, base=tmp_path).steps[0].up_to_date


def test_bad_studies_are_refused_in_one_line(cli, data, tmp_path):
    r, _ = _study(cli, data, tmp_path / "s", "--only", "nonsense")
    assert r.code == 2 and "unknown claim 'nonsense'" in r.err
    r, _ = _study(cli, data, data)
    assert r.code == 2 and "DATA_DIR" in r.err
    r, _ = _study(cli, data, tmp_path / "s", "--set", "model.lrn=false")
    assert r.code == 2 and "'no-lrn' changes nothing" in r.err and "Traceback" not in r.err
    assert not (data / "baseline").exists()


@pytest.mark.slow
def test_a_killed_study_trains_only_what_was_missing(data, tmp_path):
    out = tmp_path / "study"
    sets = [a for s in TINY for a in ("--set", s)]
    cmd = [sys.executable, "-m", "alexcli", "ablate", str(data), str(out), "--preset", "small",
           "--seeds", "2", "--epochs", "2", "--only", "lrn", *sets, "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = out / "baseline" / "seed-0" / "measures.json"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not first.exists():
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and first.exists()
    kept = (out / "baseline" / "seed-0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["trained"] == 3  # the other three runs (one of them perhaps begun)
    assert (out / "baseline" / "seed-0" / "checkpoints" / "last.pt").stat().st_mtime_ns == kept
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout)["up_to_date"]


def test_the_ablations_recipe_ships_with_the_package():
    from alexcli.config import find_recipe, load_recipe

    recipe = load_recipe(find_recipe("ablations"), ["ablate.seeds=2", 'ablate.only=["lrn"]'])
    assert recipe.stages == ("prepare", "stats", "ablate") and recipe.train.preset == "small"
    assert recipe.ablate.seeds == 2 and recipe.ablate.only == ("lrn",)
    assert recipe.study_dir == "study"
