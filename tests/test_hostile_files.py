"""Hostile files where alexcli's own belong: each is a one-line error naming the file and a
non-zero exit, never a crash — shards of the wrong dtype, shape or labels, stats.h5 with
NaNs, manifests and configurations that are not what they claim, checkpoints of another
network. And no hint points a destructive command at another stage's directory."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from tests.train_helpers import TINY


def one_line(r, code=2):
    assert r.code == code, r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.err, r.err
    return errors[0]


def _rewrite(path, name, data):
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, data=data)


SHARD_DAMAGE = {
    "float images": lambda f, n, s: _rewrite(f, "images", np.zeros((n, s, s, 3), np.float32)),
    "images of another shape": lambda f, n, s: _rewrite(f, "images", np.zeros((n, 8, 8, 4), "u1")),
    "float labels": lambda f, n, s: _rewrite(f, "labels", np.zeros(n, np.float64)),
    "too few labels": lambda f, n, s: _rewrite(f, "labels", np.zeros(n - 1, np.int32)),
    "a label past the classes": lambda f, n, s: _rewrite(f, "labels", np.full(n, 9, np.int32)),
    "no paths": lambda f, n, s: h5py.File(f, "r+").__delitem__("paths"),
}


@pytest.mark.parametrize("damage", sorted(SHARD_DAMAGE))
@pytest.mark.parametrize("command", ["stats", "train", "eval"])
def test_a_hostile_shard_is_one_line_naming_it(cli, tiny_data, tiny_run, tmp_path, damage, command):
    if (command, damage) == ("stats", "a label past the classes"):
        pytest.skip("stats reads no labels: the mean and the PCA do not depend on them")
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    split = "val" if command == "eval" else "train"
    bad = sorted((copy / split).glob("*.h5"))[0]
    with h5py.File(bad, "r") as f:
        n, size = f["images"].shape[:2]
    SHARD_DAMAGE[damage](bad, n, size)
    args = {
        "stats": ("stats", copy, "--force"),
        "train": (
            "train",
            copy,
            tmp_path / "run",
            "--preset",
            "small",
            *[a for s in (*TINY, "epochs=1") for a in ("--set", s)],
        ),
        "eval": ("eval", tiny_run, copy, "--devices", "cpu", "--workers", "0", "--views", "1"),
    }[command]
    line = one_line(cli(*args))
    assert bad.name in line, line


def test_stats_with_nans_is_refused_by_name(cli, tiny_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    with h5py.File(copy / "stats.h5", "r+") as f:
        f["eigval"][1] = np.nan
    sets = [a for s in (*TINY, "epochs=1") for a in ("--set", s)]
    line = one_line(cli("train", copy, tmp_path / "run", "--preset", "small", *sets))
    assert "stats.h5" in line and "NaN" in line


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"stage": "prepare"}'])
def test_a_manifest_that_is_not_one_is_named(cli, tiny_data, tmp_path, text):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    (copy / "manifest.json").write_text(text)
    assert "manifest.json" in one_line(cli("stats", copy))


@pytest.mark.parametrize("text", ["{not json", '{"epochs": 3, "no_such_key": 1}'])
def test_a_run_config_that_is_not_one_is_named(cli, tiny_data, tiny_run, tmp_path, text):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    (copy / "config.json").write_text(text)
    line = one_line(cli("train", tiny_data, copy, "--resume"))
    assert "config.json" in line


def test_a_checkpoint_of_another_network_or_class_count_is_named(
    cli, tiny_data, tiny_run, tmp_path
):
    from alexcli.core.nn.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(tiny_run)
    wider = {k: v.repeat(2, *[1] * (v.dim() - 1)) for k, v in ck.weights.items()}
    save_checkpoint(tmp_path / "wider.pt", type(ck)(**{**vars(ck), "weights": wider}))
    assert "weights do not fit" in one_line(cli("eval", tmp_path / "wider.pt", tiny_data))
    five = [{"name": f"n{i:08d}", "words": ""} for i in range(5)]
    save_checkpoint(tmp_path / "five.pt", type(ck)(**{**vars(ck), "classes": five}))
    assert "classes" in one_line(cli("eval", tmp_path / "five.pt", tiny_data))


def test_no_hint_points_a_destructive_command_at_another_stages_directory(cli, tiny_data, tiny_run):
    """A RUN_DIR where a DATA_DIR belongs (and the reverse), for every command that reads
    or writes one: the error names what the directory is; no hint says --force."""
    for args in (
        ("stats", tiny_run),
        ("train", tiny_run, tiny_data),
        ("train", tiny_data, tiny_data),
        ("prepare", tiny_data, tiny_run),
        ("eval", tiny_data, tiny_run),
        ("neighbors", tiny_data, tiny_run, "--out", tiny_run / "x.png"),
        ("viz-kernels", tiny_data, "--out", tiny_run / "k.png"),
        ("eval", tiny_run, tiny_run),
    ):
        r = cli(*args)
        line = one_line(r)
        assert "DATA_DIR" in line or "RUN_DIR" in line or "swapped" in line, (args, line)
        assert "--force" not in r.err, (args, r.err)
    assert json.loads((tiny_run / "manifest.json").read_text())["stage"] == "train"  # untouched
