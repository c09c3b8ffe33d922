"""ImageNet's shard count under an ordinary limit on open files: a tree prepared into more
than 300 shards goes through prepare, `prepare --verify`, stats, train (with loader
workers), eval and neighbors, each in a process that may open at most 128 files (the soft
and hard limit both, so alexcli cannot raise it). Full ILSVRC-2012 makes 1,252 training
shards at the default shard size, against a usual `ulimit -n` of 1,024: anything that
keeps a file open per shard fails here."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import h5py
import pytest

from tests.train_helpers import TINY

pytestmark = pytest.mark.slow

LIMIT = 128


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def alexcli(*args: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "alexcli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=_limited,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from alexcli.core.data.synthetic import make_tree

    root = tmp_path_factory.mktemp("many")
    tree = make_tree(
        root / "src", classes=10, train_per_class=62, val_per_class=6, size_range=(64, 80)
    )
    out = root / "data"
    alexcli("prepare", tree.root, out, "--size", "64", "--shard-size", "2", "--jobs", "2")
    return out


def test_a_data_dir_of_hundreds_of_shards_runs_every_stage_with_128_open_files(data, tmp_path):
    manifest = json.loads((data / "manifest.json").read_text())
    shards = [len(manifest["splits"][s]["shards"]) for s in ("train", "val")]
    assert shards == [310, 30]
    assert sum(shards) > 2 * LIMIT  # more than the limit, even at one file per shard

    verified = alexcli(
        "prepare",
        "--verify",
        "--json",
        data.parent / "src",
        data,
        "--size",
        "64",
        "--shard-size",
        "2",
    )
    assert json.loads(verified.stdout)["images"]["train"] == 620

    alexcli("stats", data, "--jobs", "2")
    with h5py.File(data / "stats.h5", "r") as f:
        assert int(f.attrs["images"]) == 620

    run = tmp_path / "run"
    sets = [a for s in (*TINY, "epochs=1", "workers=2") for a in ("--set", s)]
    alexcli("train", data, run, "--preset", "small", *sets)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["epoch"] == 1

    report = json.loads(
        alexcli("eval", run, data, "--views", "10", "--workers", "2", "--json").stdout
    )
    assert report["images"] == 60 and report["views"] == 10

    png = tmp_path / "neighbors.png"
    alexcli("neighbors", run, data, "--out", png, "--queries", "4")
    assert png.stat().st_size > 0
