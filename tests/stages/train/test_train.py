"""`alexcli train`: learns, records, resumes exactly, runs data parallel, fails in one line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexcli.config import TrainConfig, train_config
from alexcli.core.nn.checkpoint import load_checkpoint
from alexcli.errors import ConfigError, FormatError
from alexcli.stages.train import run_train
from tests.helpers import write_data_dir
from tests.train_helpers import TINY, make_data_dir, make_images

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"), train=24, val=8)


def _args(*sets):
    return [a for s in (*TINY, *sets) for a in ("--set", s)]


def _train_command(data, run_dir, sets):
    """`alexcli train` with `small` as a command line, for a process the test signals."""
    return [
        sys.executable,
        "-m",
        "alexcli",
        "train",
        str(data),
        str(run_dir),
        "--preset",
        "small",
        *sets,
    ]


def _weights(run_dir):
    return load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt").weights


def test_the_small_recipe_learns_a_tiny_set_well_above_chance(tmp_path):
    """The `small` preset's recipe and widths, at 64-px crops to take seconds."""
    data = make_data_dir(tmp_path / "data", train=60, val=15)
    fast = ["crop=64", "batch_size=16", "devices=cpu", "workers=1", "epochs=5"]
    result = run_train(data, tmp_path / "run", train_config(preset_name="small", sets=fast))
    errors = [m["val_top1_error"] for m in result.metrics]
    assert len(errors) == 5 and result.epochs_run == 5
    assert errors[-1] < 0.25, errors  # chance 0.75; three seed pairs tried: 0.0 at epoch 5


def test_cli_writes_config_metrics_checkpoints_then_is_up_to_date(cli, data, tmp_path):
    run = tmp_path / "run"
    r = cli("train", data, run, "--preset", "small", "--epochs", "2", *_args())
    assert r.code == 0, r.err
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "small" and config["model"]["num_classes"] == 4
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for key in ("train_loss", "val_top1_error", "val_top5_error", "lr", "images_per_s"):
        assert all(isinstance(m[key], float) for m in lines), key
    last = load_checkpoint(run)  # best.pt, loadable by eval / viz
    assert last.classes[0]["name"] == "n00000000" and last.mean.shape == (72, 72, 3)
    assert (run / "checkpoints" / "last.pt").exists() and (run / "manifest.json").exists()

    again = cli("train", data, run, "--preset", "small", "--epochs", "2", *_args())
    assert again.code == 0 and "up to date" in again.out + again.err
    resumed = cli("train", data, run, "--resume")  # the saved config is the base
    assert resumed.code == 0 and "up to date" in resumed.out + resumed.err
    js = cli("train", data, run, "--resume", "--json")
    assert json.loads(js.out)["up_to_date"] is True


def test_an_existing_run_is_never_silently_overwritten(cli, data, tmp_path):
    run = tmp_path / "run"
    assert cli("train", data, run, "--preset", "small", "--epochs", "1", *_args()).code == 0
    r = cli("train", data, run, "--preset", "small", "--epochs", "2", *_args())
    assert r.code == 2 and "finished run" in r.err and "--resume" in r.err
    r = cli("train", data, run)  # --preset forgotten: the paper's 224 crop does not fit
    assert r.code == 2 and "finished run" in r.err, r.err  # what to do, not "crop 224"
    (run / "manifest.json").unlink()  # as a run killed before its end leaves it
    r = cli("train", data, run, "--preset", "small", "--epochs", "1", *_args())
    assert r.code == 2 and "unfinished" in r.err and "--force" in r.err
    r = cli("train", data, run, "--preset", "small", "--epochs", "2", "--force", *_args())
    assert r.code == 0 and load_checkpoint(run / "checkpoints" / "last.pt").epoch == 2


def test_a_finished_run_that_lost_a_checkpoint_says_so(cli, data, tmp_path):
    run, args = tmp_path / "run", ("--preset", "small", "--epochs", "1", *_args())
    assert cli("train", data, run, *args).code == 0
    (run / "checkpoints" / "best.pt").unlink()  # e.g. to save space
    r = cli("train", data, run, *args)  # the same settings: not "another configuration"
    assert r.code == 2 and "lacks checkpoints/best.pt" in r.err and "--force" in r.err, r.err


def test_more_epochs_with_resume_continues_a_finished_run(cli, data, tmp_path):
    run = tmp_path / "run"
    assert cli("train", data, run, "--preset", "small", "--epochs", "1", *_args()).code == 0
    r = cli("train", data, run, "--resume", "--epochs", "2")
    assert r.code == 0, r.err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_metrics_record_the_lr_each_epoch_trained_at(cli, data, tmp_path):
    """The "plateau" schedule drops the lr after an epoch's validation: that epoch still
    trained at the old one, and viz-curves places the drop by these lines."""
    run = tmp_path / "run"
    sets = _args('schedule="plateau"', "plateau_patience=1", "lr=1e-7", "epochs=4")
    assert cli("train", data, run, "--preset", "small", *sets).code == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    want, drops, lr, best = [], [], 1e-7, math.inf  # the plateau rule, by hand
    for k, m in enumerate(lines):
        want.append(lr)
        drops.append(round(math.log10(1e-7 / lr)))
        improved = m["val_top1_error"] < best
        best = min(best, m["val_top1_error"])
        left = len(lines) - (k + 1)  # a short run gets the drops it is due
        if drops[-1] < 3 and (not improved or 0 < left <= 3 - drops[-1]):
            lr /= 10
    assert want[-1] < want[0]  # at lr 1e-7 the error stands still: it did drop
    assert [m["lr"] for m in lines] == pytest.approx(want, rel=1e-9)
    assert [m["lr_drops"] for m in lines] == drops


def test_a_resume_that_cannot_continue_is_refused_before_the_run_changes(cli, data, tmp_path):
    run = tmp_path / "run"
    assert cli("train", data, run, "--preset", "small", "--epochs", "2", *_args()).code == 0
    files = [run / "config.json", run / "manifest.json", run / "checkpoints" / "last.pt"]
    before = {f: f.read_bytes() for f in files}
    other = make_data_dir(tmp_path / "other", train=4, val=2, classes=5)
    cases = [
        ((other, "--epochs", "3"), "5 classes, the run was trained on 4"),
        ((data, "--epochs", "3", "--set", "model.towers=1"), "weights do not fit"),
        ((data, "--epochs", "1"), "already trained 2 epochs"),
    ]
    for (data_dir, *args), message in cases:
        r = cli("train", data_dir, run, "--resume", *args)
        assert r.code == 2 and message in r.err and "--force" in r.err, r.err
        assert r.err.count("error:") == 1 and "Traceback" not in r.err
    assert all(f.read_bytes() == b for f, b in before.items())  # config.json too


@pytest.mark.slow
def test_a_run_killed_mid_epoch_and_resumed_ends_with_the_same_weights(cli, data, tmp_path):
    # last.pt after every step; 4 epochs leave the poll below two to find one inside
    sets = _args("epochs=4", "checkpoint_minutes=0")
    reference = tmp_path / "reference"
    assert cli("train", data, reference, "--preset", "small", *sets).code == 0

    victim = tmp_path / "victim"
    cmd = _train_command(data, victim, sets)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = victim / "checkpoints" / "last.pt"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if last.exists():
                try:
                    ck = load_checkpoint(last)
                except FormatError:
                    continue
                if (ck.epoch, ck.step) >= (1, 2):  # inside the second epoch or later
                    break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    killed_at = load_checkpoint(last)
    assert killed_at.epoch < 4 and not (victim / "manifest.json").exists()

    r = cli("train", data, victim, "--resume")
    assert r.code == 0, r.err
    want, got = _weights(reference), _weights(victim)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), "resumed weights differ"
    ref_lines = (reference / "metrics.jsonl").read_text().splitlines()
    got_lines = (victim / "metrics.jsonl").read_text().splitlines()
    strip = ("images_per_s", "seconds")
    assert [{k: v for k, v in json.loads(x).items() if k not in strip} for x in got_lines] == [
        {k: v for k, v in json.loads(x).items() if k not in strip} for x in ref_lines
    ]


@pytest.mark.slow
@pytest.mark.parametrize("to", ["process", "group"])
def test_sigterm_saves_where_it_is_and_resume_ends_as_if_uninterrupted(cli, data, tmp_path, to):
    """A scheduler preempting the job sends SIGTERM: the run saves last.pt at the step it
    reached, says so in one line, exits 143, and --resume finishes it exactly. SLURM's
    scancel, `timeout` and `kill -- -PGID` send it to the loader worker too (`group`):
    the worker must not die of it before the run has saved."""
    sets = _args("epochs=3")  # last.pt only at epoch ends, unless stopped
    reference = tmp_path / "reference"
    assert cli("train", data, reference, "--preset", "small", *sets).code == 0

    victim = tmp_path / "victim"
    cmd = _train_command(data, victim, sets)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    last = victim / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.02)  # the first epoch's end: training is under way
    if to == "group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.count("error:") == 1 and "stopped by SIGTERM" in err and "--resume" in err
    assert "Traceback" not in err
    stopped = load_checkpoint(last)
    assert (stopped.epoch, stopped.step) >= (1, 0) and not (victim / "manifest.json").exists()

    assert cli("train", data, victim, "--resume").code == 0
    want, got = _weights(reference), _weights(victim)
    assert all(torch.equal(want[k], got[k]) for k in want), "resumed weights differ"


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_equal_one_process(cli, data, tmp_path):
    sets = _args("epochs=2", "model.dropout=0")
    one = tmp_path / "one"
    assert cli("train", data, one, "--preset", "small", *sets).code == 0
    two = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd = [*torchrun, "-m", "alexcli", "train", str(data), str(two), "--preset", "small", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best val top-1 error") == 1  # rank 0 alone reports
    a, b = _weights(one), _weights(two)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    ma = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(ma, mb, strict=True):  # every validation image counted once, both ways
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4)
        assert x["val_top1_error"] == y["val_top1_error"]


def test_divergence_is_one_line_and_leaves_the_last_good_checkpoint(cli, data, tmp_path):
    run = tmp_path / "run"
    assert cli("train", data, run, "--preset", "small", "--epochs", "1", *_args()).code == 0
    good = (run / "checkpoints" / "last.pt").read_bytes()
    r = cli("train", data, run, "--resume", "--epochs", "2", "--lr", "1e6")
    assert r.code == 1
    assert "loss became" in r.err and "epoch 2" in r.err and r.err.count("error:") == 1
    assert "Traceback" not in r.err
    assert (run / "checkpoints" / "last.pt").read_bytes() == good
    assert load_checkpoint(run / "checkpoints" / "last.pt").epoch == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--amp", "fp8"], "amp"),
        (["--set", "no_such_key=1"], "unknown key"),
        (["--preset", "huge"], "'huge' is not one of 'paper', 'small'"),
        (["--set", "crop=80"], "crop 80 is larger"),
        (["--set", "batch_size=1000"], "larger than the"),
        (["--lr", "-1"], "--lr -1: must be ≥ 0"),
        (["--set", "model.dropout=1.5"], "--set: 'model.dropout' must be in [0, 1], got 1.5"),
        (["--resume", "--force"], "--resume and --force together"),
    ],
)
def test_bad_arguments_are_one_line_errors(cli, data, tmp_path, args, message):
    r = cli("train", data, tmp_path / "run", *_args(), *args)
    assert r.code == 2, r.err
    assert message in r.err and "Traceback" not in r.err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_inputs_name_the_command_that_makes_them(cli, data, tmp_path):
    r = cli("train", tmp_path / "nowhere", tmp_path / "run")
    assert r.code == 2 and "no such directory" in r.err and "alexcli prepare" in r.err
    bare = make_data_dir(tmp_path / "bare", train=4, val=2)
    (bare / "stats.h5").unlink()
    r = cli("train", bare, tmp_path / "run", *_args())
    assert r.code == 2 and "alexcli stats" in r.err


def test_a_run_dir_that_cannot_be_written_is_one_line(cli, data, tmp_path):
    (tmp_path / "a-file").write_text("")
    for run in (tmp_path / "a-file", tmp_path / "a-file" / "run"):
        r = cli("train", data, run, *_args())
        assert r.code == 2 and str(run) in r.err and "unexpected" not in r.err, r.err


def test_stale_stats_are_refused(cli, tmp_path):
    data = make_data_dir(tmp_path / "data", train=4, val=2)
    images, labels = make_images(np.random.default_rng(9), 4)
    write_data_dir(
        data, {"train": (images, labels), "val": (images, labels)}, fingerprint="prepared again"
    )
    r = cli("train", data, tmp_path / "run", *_args())
    assert r.code == 2 and "other shards" in r.err and "alexcli stats" in r.err
    assert not (tmp_path / "run").exists()


def test_a_config_file_sits_between_preset_and_set(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "small"\nlr = 0.5\nepochs = 7\n[model]\ntowers = 1\n')
    cfg = train_config(config_file=toml, sets=["lr=0.25"], epochs=3)
    assert (cfg.preset, cfg.lr, cfg.epochs, cfg.model.towers) == ("small", 0.25, 3, 1)
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "x"\n[train]\npreset = "small"\nbatch_size = 8\n')
    assert train_config(config_file=recipe, sets=["train.seed=4"]).seed == 4
    assert train_config(config_file=recipe).batch_size == 8


def test_momentum_buffers_follow_their_parameters_layout_on_resume():
    """A run saved with channels_last off and resumed with it on (or back): the buffers
    come back in the saved layout, which CUDA's fused SGD refuses; they are relaid."""
    from alexcli.core.nn.optim import match_layouts

    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    sgd = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    saved = torch.randn(8, 3, 3, 3)  # contiguous, as a run without channels_last saved it
    sgd.state[conv.weight]["momentum_buffer"] = saved.clone()
    match_layouts(sgd)
    buf = sgd.state[conv.weight]["momentum_buffer"]
    assert buf.stride() == conv.weight.stride() != saved.stride()
    assert torch.equal(buf, saved)


@pytest.mark.parametrize(
    "name, fingerprint", [("paper", "81527718538a38d9"), ("small", "63095005dc63fdbe")]
)
def test_runs_trained_before_crop_moved_into_the_model_stay_up_to_date(name, fingerprint):
    """The fingerprints alexcli 0.1 wrote into finished runs' manifests (computed with its
    code), for the presets on fixed upstream identities: a rerun must match them."""
    from alexcli.config import PRESETS
    from alexcli.core.fingerprint import stage_fingerprint
    from alexcli.stages.train import STAGE, VERSION, fingerprint_params

    # 0.1's `small` wrote its milestones as epochs (the same run then: fractions were of
    # epochs until 2026-12-07), had fc6/fc7 of 256 units (another network since),
    # Kaiming's fc8 and dropout 0.5, and trained at lr 0.005 unclipped and unbounded
    # (another recipe since)
    cfg = PRESETS[name]
    if name == "small":
        model = dataclasses.replace(cfg.model, fc_features=(256, 256), fc8_std=None, dropout=0.5)
        cfg = dataclasses.replace(
            cfg,
            lr_steps=(20, 26),
            model=model,
            lr=0.005,
            clip_grad_norm=None,
            max_step_norm=None,
        )
    params = fingerprint_params(cfg)
    got = stage_fingerprint(STAGE, VERSION, params, {"prepare": "a", "stats": "b"})
    assert got == fingerprint


def test_a_bound_that_never_binds_leaves_the_fingerprint_as_it_was():
    """`max_step_norm` changes a run only where lr × clip_grad_norm exceeds it (no step's
    lr is above the configured one): there it is part of the fingerprint, elsewhere not,
    so runs trained before it existed, at such lrs, stay up to date."""
    from alexcli.stages.train import fingerprint_params

    small = train_config(preset_name="small")
    assert small.max_step_norm == 0.08
    assert fingerprint_params(small) == fingerprint_params(
        dataclasses.replace(small, max_step_norm=None)
    )
    fast = train_config(preset_name="small", batch_size=256, lr=0.64)
    assert fingerprint_params(fast)["max_step_norm"] == 0.08
    assert fingerprint_params(fast) != fingerprint_params(
        dataclasses.replace(fast, max_step_norm=None)
    )


def test_runs_whose_fractions_fell_on_epochs_are_out_of_date():
    """Until 2026-12-07 a fraction of the run fell on an epoch's start; it falls on a step
    now, another run for the same configuration: such runs must train again, runs whose
    milestones are epochs (or that use none) stay up to date."""
    from alexcli.stages.train import fingerprint_params

    small = train_config(preset_name="small")
    assert fingerprint_params(small)["lr_steps_of"] == "steps"
    assert fingerprint_params(small)["model"]["fc8_std"] == 0.01
    for cfg in (
        train_config(preset_name="paper"),
        train_config(preset_name="small", sets=["lr_steps=[20, 26]"]),
    ):
        assert "lr_steps_of" not in fingerprint_params(cfg)


def test_a_saved_configuration_outside_todays_bounds_still_reads(tmp_path):
    """Bounds are for what users ask now; a run saved before one existed still loads."""
    from alexcli.config import from_dict, to_dict

    saved = to_dict(train_config(preset_name="small")) | {"lighting_std": -0.1}
    assert from_dict(TrainConfig, saved).lighting_std == -0.1
    with pytest.raises(ConfigError):
        train_config(preset_name="small", sets=["lighting_std=-0.1"])


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(data):
    """Under torchrun the batch is global: each of `world` ranks takes an equal part."""
    from alexcli.stages.datadir import open_data_dir
    from alexcli.stages.train.checks import check_trainable

    cfg = train_config(preset_name="small", sets=["crop=64", "batch_size=10"])
    data_dir = open_data_dir(data)
    check_trainable(cfg, data_dir, 2, torch.device("cpu"))  # 5 each: fine
    with pytest.raises(ConfigError, match="does not split over 3 processes"):
        check_trainable(cfg, data_dir, 3, torch.device("cpu"))


@pytest.mark.parametrize(
    ("epochs", "said"),
    [
        (4, ["from step 5 of epoch 3", "from step 4 of epoch 4"]),
        (6, ["from epoch 5", "from step 2 of epoch 6"]),
    ],
)
def test_a_short_small_run_drops_its_lr_where_its_fractions_fall_and_says_so(
    cli, data, tmp_path, epochs, said
):
    """`small`'s milestones are 0.67 and 0.87 of the run's steps. 96 images at batch 16
    are 6 steps an epoch: 4 epochs drop at steps 16 and 21 of 24 (0.67 × 24 = 16.08,
    0.87 × 24 = 20.88), inside epochs 3 and 4 (as epochs they could only be 3 and 4:
    half the run at the full lr); 6 epochs at 24 and 31 of 36, the first epoch 5's first.
    Batch 16 is half the preset's 32: the lr is the preset's ÷ 2 (the linear rule), said
    at the start and recorded in config.json; each epoch's line in metrics.jsonl has the
    lr it ended at."""
    run = tmp_path / "run"
    r = cli("train", data, run, "--preset", "small", "--epochs", epochs, *_args())
    assert r.code == 0, r.err
    lr = 0.01
    assert (
        "batch 16, lr 0.01: the linear rule (Goyal et al. 2017) from lr 0.02 at batch 32" in r.err
    )
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == lr and config["lr_scaled_from"] == [0.02, 32]
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    low = [int(w.split()[-1]) - 1 for w in said]  # the epochs the drops fall in (0-based)
    want = [lr / 10 ** sum(e >= m for m in low) for e in range(epochs)]
    assert [m["lr"] for m in lines] == pytest.approx(want)
    assert [m["lr_drops"] for m in lines] == [sum(e >= m for m in low) for e in range(epochs)]
    for m, where in zip(low, said, strict=True):
        assert f"lr ÷10 → {want[m]:.3g} {where}" in r.err
    assert "÷100" not in r.err


def test_a_batch_per_device_and_a_warm_up_are_said_and_recorded(cli, data, tmp_path):
    """One process: the global batch is the per-device batch; a rise of the lr warms up
    (here given by hand: the rule's would end within this run's first step)."""
    run = tmp_path / "run"
    sets = _args("warmup_epochs=1.5")
    r = cli(
        "train", data, run, "--preset", "small", "--epochs", "2", *sets, "--batch-per-device", "48"
    )
    assert r.code == 0, r.err
    assert "batch 48 (48 per device × 1), lr 0.03: the linear rule" in r.err
    assert "warmed up over 1.5 epochs" in r.err
    config = json.loads((run / "config.json").read_text())
    assert (config["batch_size"], config["batch_per_device"]) == (48, 48)
    epoch_lines = [ln for ln in r.err.splitlines() if ln.startswith("epoch ")]
    assert "(warming up)" in epoch_lines[0] and "(warming up)" not in epoch_lines[1]


@pytest.mark.slow
def test_compile_trains_as_eager_does_and_saves_the_plain_networks_weights(
    cli, data, tmp_path, monkeypatch
):
    """`train --compile` and `eval --compile` run the network through torch.compile; the
    checkpoints hold the plain network's weights (no `_orig_mod.` keys), so resume, eval
    and export read them as any run's. Traced here with torch.compile's "eager" backend
    (the same graph, run by PyTorch's kernels: inductor's C++ build takes minutes on this
    CPU; `bench --compile` measures it)."""
    from alexcli.core.nn import loops

    monkeypatch.setattr(loops, "COMPILE_BACKEND", "eager")
    runs = {}
    for name, flags in (("eager", []), ("compiled", ["--compile"])):
        run = tmp_path / name
        r = cli("train", data, run, "--preset", "small", "--epochs", "1", *_args(), *flags)
        assert r.code == 0, r.err
        r = cli("train", data, run, "--resume", "--epochs", "2", *flags)
        assert r.code == 0, r.err
        runs[name] = _weights(run)
    assert runs["compiled"].keys() == runs["eager"].keys()
    for k, w in runs["eager"].items():
        torch.testing.assert_close(runs["compiled"][k], w, rtol=1e-5, atol=1e-6, msg=k)
    reports = []
    for flags in ([], ["--compile"]):
        r = cli("eval", tmp_path / "compiled", data, "--workers", "0", "--json", *flags)
        assert r.code == 0, r.err
        reports.append(json.loads(r.out))
    assert reports[0]["top1_error"] == reports[1]["top1_error"]
