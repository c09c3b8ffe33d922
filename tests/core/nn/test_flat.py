"""core/nn/flat.py: a run that learns nothing is named in its first epoch, on the demo's
own data with the paper's init; a healthy `small` run never is."""

from __future__ import annotations

import json
import math

import pytest

from alexcli.config import PrepareConfig
from alexcli.core.data.synthetic import make_tree
from alexcli.core.nn.flat import Flatness, diverging_message
from tests.train_helpers import TINY, make_data_dir


def test_flat_means_loss_at_ln_c_and_validation_at_chance():
    # 10 classes, 300 validation images: chance 0.9, two standard errors ≈ 0.035
    assert Flatness(10, 2.40, 0.90, 300).flat
    assert Flatness(10, math.log(10), 0.87, 300).flat  # within the band
    assert not Flatness(10, 2.40, 0.83, 300).flat  # a slow but learning first epoch
    assert not Flatness(10, 2.20, 0.90, 300).flat  # the loss came down: not flat yet
    assert Flatness(1000, 6.91, 0.999, 50_000).flat
    assert not Flatness(1000, 6.91, 0.99, 50_000).flat  # 1 % right: 10× chance


def test_a_validation_loss_below_ln_c_is_not_flat():
    """Healthy first epochs of the demo's ablation study (fc6/fc7 1,024) that ended near
    chance: their validation losses were below ln 10; the flat run's was above."""
    assert Flatness(10, 2.774, 0.903, 300, val_loss=2.291).flat is False
    assert Flatness(10, 2.455, 0.867, 300, val_loss=2.232).flat is False
    assert Flatness(10, 2.676, 0.900, 300, val_loss=2.459).flat  # model.init=paper
    assert Flatness(10, 2.403, 0.900, 300, val_loss=2.312).flat  # its second epoch
    message = Flatness(10, 2.676, 0.900, 300, val_loss=2.459).message(1)
    assert "validation loss 2.459" in message


def test_a_loss_far_above_ln_c_is_divergence_never_a_flat_run():
    """The issue's `small` run at batch 16: loss 27.6 on 6 classes (15 × ln 6) was called
    flat, blaming the init and the input scale."""
    diverged = Flatness(6, 27.6, 0.83, 120, val_loss=19.0)
    assert diverged.diverging and not diverged.flat
    assert Flatness(6, 3.0, 0.83, 120, val_loss=6.0).diverging  # the validation loss alone
    assert not Flatness(10, 2.46, 0.75, 300, val_loss=2.2).diverging  # a healthy epoch 1
    assert not Flatness(10, 2.676, 0.900, 300, val_loss=2.459).diverging  # a flat one
    assert not Flatness(6, 3 * math.log(6), 0.83, 120).diverging  # 3 × ln C: the limit
    message = diverging_message(diverged, 13, 0.005, 16)
    assert message.startswith("epoch 13 is diverging: training loss 27.6 = 15.4 × ln 6")
    assert "lr 0.005 at batch 16" in message


def test_a_diverging_epoch_says_so_with_the_lr_and_batch(cli, tmp_path):
    """Raw pixels into He-initialised layers, fc8 too: the first epoch's loss is ~7 × ln 4
    (`small`'s fc8 of N(0, 0.01²) keeps it under 3 × ln 4 on these few images)."""
    data = make_data_dir(tmp_path / "data", train=24, val=8)
    sets = [a for s in (*TINY, "input_scale=1", "model.fc8_std=null") for a in ("--set", s)]
    run = tmp_path / "run"
    r = cli("train", data, run, "--preset", "small", "--epochs", "1", *sets)
    assert r.code == 0, r.err
    (warning,) = [ln for ln in r.err.splitlines() if ln.startswith("warning: epoch")]
    assert warning.startswith("warning: epoch 1 is diverging") and "at batch 16" in warning
    assert "--lr" in warning and "learned nothing" not in r.err
    (line,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert line["diverging"] is True and line["flat"] is False


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """The demo's data: 10 synthetic classes, 100 training and 30 validation images each,
    stored at 128 px, with its stats."""
    from alexcli.stages.prepare import run_prepare
    from alexcli.stages.stats import run_stats

    root = tmp_path_factory.mktemp("flat")
    tree = make_tree(root / "source", classes=10, train_per_class=100, val_per_class=30)
    run_prepare(tree.root, root / "data", PrepareConfig(size=128))
    run_stats(root / "data")
    return root / "data"


def test_the_papers_init_on_the_demo_is_named_in_the_first_epoch(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    r = cli(
        "train",
        demo_data,
        run,
        "--preset",
        "small",
        "--set",
        "model.init=paper",
        "--epochs",
        "2",
        "--devices",
        "cpu",
    )
    assert r.code == 0, r.err
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("warning: epoch")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: epoch 1 learned nothing")
    assert "model.init=caffe" in warnings[0]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["flat"] for m in lines] == [True, True]
    r = cli(
        "train",
        demo_data,
        tmp_path / "stopped",
        "--preset",
        "small",
        "--set",
        "model.init=paper",
        "--epochs",
        "3",
        "--devices",
        "cpu",
        "--stop-if-flat",
    )
    assert r.code == 1 and "error: epoch 1 learned nothing" in r.err
    assert len((tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_healthy_small_run_is_never_flat(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    r = cli("train", demo_data, run, "--preset", "small", "--epochs", "3", "--devices", "cpu")
    assert r.code == 0, r.err
    assert "learned nothing" not in r.err
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any(m["flat"] for m in lines)
