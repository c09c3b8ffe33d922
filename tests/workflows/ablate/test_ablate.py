"""`alexcli ablate`: the study trains the networks its claims need (Figure 1's lr search
first), is cached and resumable, and its report carries every claim with its verdicts,
sizes, parameter counts and per-seed values."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alexcli.config import AblateConfig, train_config
from alexcli.core.data.batches import EpochSampler
from alexcli.stages.eval import run_eval
from alexcli.stages.train import run_train
from alexcli.workflows.ablate import choose_lrs, plan
from alexcli.workflows.ablate.claims import CLAIMS, UNRESOLVED, claims_named
from alexcli.workflows.ablate.measures import curve_measures
from alexcli.workflows.ablate.variants import VARIANTS
from tests.train_helpers import TINY, make_data_dir

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- plan


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


def test_a_study_runs_the_baseline_then_each_network_seed_by_seed():
    runs = plan(claims_named(["lrn", "depth", "overlapping-pooling"]), 2, first_seed=3)
    assert runs[:5] == [
        ("baseline", 3),
        ("no-lrn", 3),
        ("no-conv3", 3),
        ("no-conv4", 3),
        ("pool-3x3", 3),
    ]
    assert len(runs) == 12 and runs[6] == ("baseline", 4)
    assert {v for v, _ in plan(CLAIMS, 1)} == set(VARIANTS)


def _tuned(activation: str, lr: float, epochs: float, censored: bool, final: float) -> dict:
    return {
        "activation": activation,
        "lr": lr,
        "epochs_to_threshold": epochs,
        "censored": censored,
        "final_train_error": final,
    }


def test_figure_1s_lr_is_each_activations_fastest():
    tuning = [
        _tuned("relu", 0.01, epochs=3.0, censored=False, final=0.01),
        _tuned("relu", 0.02, epochs=2.5, censored=False, final=0.2),
        _tuned("tanh", 0.01, epochs=12.0, censored=True, final=0.3),
        _tuned("tanh", 0.02, epochs=12.0, censored=True, final=0.28),
        _tuned("tanh", 0.04, epochs=11.0, censored=False, final=0.2),
    ]
    assert choose_lrs(tuning) == {"relu": 0.02, "tanh": 0.04}
    assert choose_lrs(tuning[2:4]) == {"tanh": 0.02}  # none reached it: the lowest error


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
    sets = [
        *TINY,
        "lr=0",
        "model.dropout=0",
        "random_crop=false",
        "flip=false",
        "lighting_std=0",
        "epochs=1",
    ]
    run = tmp_path / "run"
    result = run_train(data, run, train_config(preset_name="small", sets=sets))
    got = result.metrics[0]["train_top1_error"]
    from alexcli.config import EvalConfig

    want = run_eval(run, data, EvalConfig(views=1, split="train", devices="cpu")).top1_error
    assert got == pytest.approx(want, abs=1e-12) and 0 < want < 1


def _study(cli, data, out, *extra):
    args = ["--preset", "small", "--seeds", "2", "--epochs", "1", "--only", "lrn"]
    args += [*[a for s in TINY for a in ("--set", s)], *extra]
    r = cli("ablate", data, out, *args, "--json")
    return r, (json.loads(r.out, parse_constant=_no_nan) if r.code == 0 else None)


def _no_nan(name: str) -> None:
    raise AssertionError(f"{name} in JSON output")


# TINY's network counted by hand (4 classes, crop 64: conv maps 15 → 7 → 3 → 1): conv1
# 3→8 11×11; conv2 8→16 5×5 in two groups; conv3 16→24 3×3 across the towers; conv4
# 24→24 and conv5 24→16 in two groups; fc6 16→32, fc7 32→32, fc8 32→4.
TINY_PARAMETERS = (
    (8 * 3 * 121 + 8)
    + (16 * 4 * 25 + 16)
    + (24 * 16 * 9 + 24)
    + (24 * 12 * 9 + 24)
    + (16 * 12 * 9 + 16)
    + (16 * 32 + 32)
    + (32 * 32 + 32)
    + (32 * 4 + 4)
)


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
    assert [c["claim"] for c in saved["claims"]] == ["lrn"]
    assert [m["name"] for m in saved["measurements"]] == ["ten-views"]
    assert saved["study"]["seeds"] == 2 and saved["study"]["train_images"] == 64
    row = saved["claims"][0]
    assert row["direction"] in ("reproduced", "opposite", "not resolved")
    assert row["size"] in ("consistent", "smaller", "larger", "not resolved")
    assert 0 <= row["p_value"] <= row["p_holm"] <= 1 and row["family"] == 1
    assert row["parameters"] == {"baseline": TINY_PARAMETERS, "no-lrn": TINY_PARAMETERS}
    assert saved["study"]["networks"]["baseline"]["parameters"] == 14_100 == TINY_PARAMETERS
    lrn = row["measures"][0]
    assert lrn["paper_size"] == {
        "value": pytest.approx(0.014 / 0.375),
        "unit": "relative change in error",
    }
    md = (out / "claims.md").read_text()
    for seed in (0, 1):  # the report pairs exactly what each run's measures.json holds
        for variant, values in (("baseline", lrn["baseline"]), ("no-lrn", lrn["ablated"])):
            text = (out / variant / f"seed-{seed}" / "measures.json").read_text()
            measures = json.loads(text)["measures"]
            assert values[seed] == measures["val_top1_error"]
            assert f"| {seed} | {100 * lrn['baseline'][seed]:.2f} % |" in md  # per seed
        assert ("lrn_load" in measures) == (variant == "baseline")  # the LRN's load
    # claims.md leads with the paper's kind of table, then the verdicts in two words
    assert md.index("## The networks") < md.index("## Verdicts") < md.index("## Per seed")
    assert (
        f"| no-lrn | no LRN after conv1, conv2 | {TINY_PARAMETERS:,} |" in md
        and "| +1.4 / +1.2 |" in md
    )
    assert f"direction {row['direction']}" in md and f"size {row['size']}" in md
    assert md.count("reproduced") == md.count("direction reproduced")  # never bare
    assert any("α·Σa²/k" in flag for flag in row["flags"])
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
    r, other = _study(cli, data, out, "--first-seed", "2", "--seeds", "1")  # another set
    assert r.code == 0 and other["up_to_date"] and other["claims"][0]["measures"][0]["seeds"] == [2]

    r, _ = _study(cli, data, out, "--epochs", "2")
    assert r.code == 2 and "other settings" in r.err and "--force" in r.err
    assert r.err.count("error:") == 1 and "Traceback" not in r.err


def test_figure_1_and_pooling_train_their_own_networks(data, tmp_path):
    """Figure 1's lr is each activation's fastest on the tuning seed, its runs have no
    regularisation; the pooling claim's two networks share a crop (66 at 72)."""
    from alexcli.stages.train import saved_config
    from alexcli.workflows.ablate import TUNING_DIR, TUNING_SEED, run_ablate

    base = train_config(preset_name="small", sets=[*TINY, "crop=72"], epochs=1)
    study = AblateConfig(only=("relu", "overlapping-pooling"), seeds=1, figure1_lrs=(1.0, 2.0))
    result = run_ablate(data, tmp_path / "s", base, study)
    assert result.trained == 4 + 5  # the lr search, then five networks
    tuning = result.study["figure1"]["tuning"]
    assert [(t["activation"], t["lr"]) for t in tuning] == [
        ("relu", base.lr),
        ("relu", 2 * base.lr),
        ("tanh", base.lr),
        ("tanh", 2 * base.lr),
    ]
    for t in tuning:
        run = (
            tmp_path / "s" / TUNING_DIR / f"{t['activation']}-lr{t['lr']:g}" / f"seed-{TUNING_SEED}"
        )
        assert saved_config(run).lr == t["lr"]  # type: ignore[union-attr]
    lrs = result.study["figure1"]["lr"]
    assert lrs == choose_lrs(tuning)
    tanh = saved_config(tmp_path / "s" / "fig1-tanh" / "seed-0")
    assert tanh is not None and tanh.lr == lrs["tanh"] and tanh.model.activation == "tanh"
    assert tanh.model.dropout == 0 and tanh.weight_decay == 0 and not tanh.random_crop
    nets = result.study["networks"]
    assert nets["pool-3x3"]["crop"] == nets["pool-2x2"]["crop"] == 66
    assert nets["pool-3x3"]["fc6_inputs"] == nets["pool-2x2"]["fc6_inputs"]
    assert not nets["pool-3x3"]["same_as_baseline"] and nets["baseline"]["crop"] == 72
    pool = saved_config(tmp_path / "s" / "pool-2x2" / "seed-0")
    assert pool is not None and pool.model.pool_kernel == 2 and pool.crop == 66
    assert (tmp_path / "s" / "figure1.png").is_file()
    md = (tmp_path / "s" / "claims.md").read_text()
    assert "## Figure 1's learning rates" in md and "| pool-3x3 |" in md


def test_a_study_of_one_seed_reports_no_verdict_and_valid_json(cli, data, tmp_path):
    r, result = _study(cli, data, tmp_path / "s", "--seeds", "1")  # the later --seeds wins
    assert r.code == 0, r.err
    for row in result["claims"]:  # no spread from one seed: null, never NaN
        assert row["direction"] == UNRESOLVED and row["measures"][0]["effect"]["sd"] is None
        assert row["verdict"] == "not resolved at this scale"  # the field before the split


def test_the_recipe_stage_runs_a_study(data, tmp_path):
    from alexcli.config import find_recipe, load_recipe
    from alexcli.workflows.pipeline import run_chain

    sets = [f"train.{s}" for s in TINY] + [
        f"data_dir={json.dumps(str(data))}",
        'stages=["ablate"]',
        "ablate.seeds=1",
        'ablate.only=["lrn"]',
        "train.epochs=1",
    ]
    recipe = load_recipe(find_recipe("ablations"), sets)
    result = run_chain(recipe, base=tmp_path)
    (step,) = result.steps
    assert step.stage == "ablate"
    assert "lrn: direction not resolved, size not resolved" in step.notes
    assert (tmp_path / "study" / "claims.md").is_file()
    assert run_chain(recipe, base=tmp_path).steps[0].up_to_date


def test_bad_studies_are_refused_in_one_line(cli, data, tmp_path):
    r, _ = _study(cli, data, tmp_path / "s", "--only", "nonsense")
    assert r.code == 2 and "unknown claim 'nonsense'" in r.err
    r, _ = _study(cli, data, tmp_path / "s", "--only", "ten-views")
    assert r.code == 2 and "no claim of the paper" in r.err
    r, _ = _study(cli, data, tmp_path / "s", "--first-seed", "999999", "--seeds", "2")
    assert r.code == 2 and "stay below 1,000,000" in r.err
    r, _ = _study(cli, data, data)
    assert r.code == 2 and "DATA_DIR" in r.err
    r, _ = _study(cli, data, tmp_path / "s", "--set", "model.lrn=false")
    assert r.code == 2 and "'no-lrn' changes nothing" in r.err and "Traceback" not in r.err
    assert not (data / "baseline").exists() and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_killed_study_trains_only_what_was_missing(data, tmp_path):
    out = tmp_path / "study"
    sets = [a for s in TINY for a in ("--set", s)]
    study = ["--preset", "small", "--seeds", "2", "--epochs", "2", "--only", "lrn"]
    cmd = [sys.executable, "-m", "alexcli", "ablate", str(data), str(out), *study, *sets, "--json"]
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
