"""Faults inside the parallel stages: a damaged file met by one worker, early, midway or
last, and Ctrl-C. Each case runs alexcli in a subprocess, several times, under a time
limit, and every run must end — in time, with the expected exit code, and in one
`error:` line (and a hint) — never an abort, a segfault, a traceback or a hang.

The damage is real (a truncated shard, a dataset of the wrong shape, a directory where a
shard belongs), as a user's disk would give it; nothing inside alexcli is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from alexcli.core.data.synthetic import make_tree
from tests.train_helpers import TINY

pytestmark = pytest.mark.slow
LIMIT = 90  # seconds: a run that takes longer is a hang
POSITIONS = ("first", "middle", "last")


def alexcli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m alexcli ARGS` in a fresh process; a hang fails the test, never stalls it."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "alexcli", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=LIMIT,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"alexcli {' '.join(map(str, args))} did not end within {LIMIT} s")


def assert_one_line(r: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Ended with `code`, its stderr ending in one `error:` line and at most one `hint:`
    line (status lines before them are fine), with no traceback anywhere."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "terminate called" not in r.stderr, r.stderr
    errors = [k for k, ln in enumerate(lines) if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr[-2000:]
    tail = lines[errors[0] + 1 :]
    assert len(tail) <= 1 and all(ln.startswith("hint: ") for ln in tail), r.stderr
    for needle in needles:
        assert needle in lines[errors[0]], (needle, lines[errors[0]])


def shard(data: Path, split: str, position: str) -> Path:
    shards = sorted((data / split).glob("*.h5"))
    return shards[{"first": 0, "middle": len(shards) // 2, "last": -1}[position]]


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def damaged_copy(data: Path, tmp_path: Path, split: str, position: str) -> tuple[Path, Path]:
    copy = tmp_path / f"data-{split}-{position}"
    shutil.copytree(data, copy)
    bad = shard(copy, split, position)
    truncate(bad)
    return copy, bad


@pytest.mark.parametrize("position", POSITIONS)
def test_stats_meets_a_bad_shard_with_two_threads(tiny_data, tmp_path, position):
    """The case that aborted, segfaulted or hung on most tries before the pool waited for
    its threads: a shard whose images have the wrong shape."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    bad = shard(copy, "train", position)
    with h5py.File(bad, "r+") as f:
        n = f["images"].shape[0]
        del f["images"]
        f.create_dataset("images", data=np.zeros((n, 8, 8, 4), np.uint8))
    for _ in range(4):
        r = alexcli("stats", copy, "--force", "--jobs", "2")
        assert_one_line(r, 2, str(bad), "dataset 'images'")


@pytest.mark.parametrize("position", POSITIONS)
def test_the_training_loaders_workers_meet_a_truncated_shard(tiny_data, tmp_path, position):
    copy, bad = damaged_copy(tiny_data, tmp_path, "train", position)
    sets = [a for s in (*TINY, "epochs=1", "workers=2") for a in ("--set", s)]
    for k in range(2):
        r = alexcli("train", copy, tmp_path / f"run{k}", "--preset", "small", *sets)
        assert_one_line(r, 2, str(bad))


@pytest.mark.parametrize("command", ["eval", "neighbors"])
def test_eval_and_neighbors_readers_meet_a_truncated_shard(tiny_data, tiny_run, tmp_path, command):
    split = "val" if command == "eval" else "train"
    copy, bad = damaged_copy(tiny_data, tmp_path, split, "middle")
    extra = ["--out", tmp_path / "n.png"] if command == "neighbors" else []
    for _ in range(2):
        r = alexcli(command, tiny_run, copy, "--devices", "cpu", "--workers", "2", *extra)
        assert_one_line(r, 2, str(bad))


def test_bench_meets_a_truncated_shard(tiny_data, tmp_path):
    copy, _ = damaged_copy(tiny_data, tmp_path, "train", "middle")
    for _ in range(2):
        r = alexcli("bench", copy, "--only", "loader", "--quick", "--preset", "small")
        assert r.returncode != 0
        assert_one_line(r, r.returncode)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "src"
    make_tree(
        root, classes=4, train_per_class=24, val_per_class=4, size_range=(80, 120), traps=False
    )
    return root


@pytest.mark.parametrize("position", POSITIONS)
def test_prepare_meets_a_directory_where_a_shard_goes_and_a_rerun_finishes(
    source, tmp_path, position
):
    out = tmp_path / "data"
    args = ("prepare", source, out, "--size", "32", "--shard-size", "8", "--jobs", "2")
    assert alexcli(*args).returncode == 0
    clean = {p.name: p.read_bytes() for p in (out / "train").glob("*.h5")}
    blocked = shard(out, "train", position)
    blocked.unlink()
    blocked.mkdir()  # a shard's path taken by a directory: the worker cannot write it
    for _ in range(2):
        r = alexcli(*args, "--force")
        assert_one_line(r, 1, "Is a directory", blocked.name)
    assert not list((out / "train").glob(".*.tmp"))  # nothing half-written left behind
    blocked.rmdir()
    r = alexcli(*args, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["shards_written"] >= 1 and report["shards_reused"] >= 1
    assert {p.name: p.read_bytes() for p in (out / "train").glob("*.h5")} == clean


def test_prepare_verify_meets_a_directory_where_a_shard_was(source, tmp_path):
    out = tmp_path / "data"
    args = ("prepare", source, out, "--size", "32", "--shard-size", "8", "--jobs", "2")
    assert alexcli(*args).returncode == 0
    blocked = shard(out, "train", "middle")
    blocked.unlink()
    blocked.mkdir()
    r = alexcli(*args, "--verify")
    assert_one_line(r, 1, blocked.name)
    assert blocked.is_dir()  # never removed: alexcli did not make it


@pytest.mark.parametrize(
    "sig, code, line",
    [
        (signal.SIGINT, 130, "error: interrupted"),
        (signal.SIGTERM, 143, "error: stopped by SIGTERM"),
    ],
)
def test_a_signal_during_prepare_ends_it_in_one_line_and_a_rerun_finishes(
    source, tmp_path, sig, code, line
):
    out = tmp_path / "data"
    args = [
        sys.executable,
        "-m",
        "alexcli",
        "prepare",
        str(source),
        str(out),
        "--size",
        "64",
        "--shard-size",
        "4",
        "--jobs",
        "2",
    ]
    for _ in range(2):
        proc = subprocess.Popen([*args, "--force"], stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        proc.stderr.readline()  # its first status line: the work has begun
        time.sleep(0.3)
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"prepare did not end after {sig.name}")
        assert "Traceback" not in err, err
        # 0: it finished before the signal (one during the interpreter's exit is
        # ignored: it no longer kills a finished command without a word)
        if proc.returncode == 0:
            continue
        assert proc.returncode == code and line in err, (proc.returncode, err)
        assert not list((out / "train").glob(".*.tmp"))
    r = alexcli("prepare", source, out, "--size", "64", "--shard-size", "4", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert not list((out / "train").glob(".*.tmp"))


def test_sigterm_during_stats_ends_it_in_one_line(tiny_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    args = [sys.executable, "-m", "alexcli", "stats", str(copy), "--force", "--jobs", "2"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # torch imported, the sums under way or done
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("stats did not end after SIGTERM")
    assert "Traceback" not in err and "terminate called" not in err, err
    assert proc.returncode in (0, 143), (proc.returncode, err)
    if proc.returncode == 143:
        assert "error: stopped by SIGTERM" in err


def test_prepare_force_on_a_full_disk_is_one_line_and_keeps_the_data_dir(source, tmp_path):
    """`ulimit -f` stands in for a full disk (Python ignores SIGXFSZ: writes fail with
    EFBIG). The redo fails naming the shard; the DATA_DIR it started from is still whole."""
    from alexcli.stages.datadir import open_data_dir

    out = tmp_path / "data"
    args = ["prepare", source, out, "--size", "32", "--shard-size", "8", "--jobs", "1"]
    assert alexcli(*args).returncode == 0
    manifest = (out / "manifest.json").read_bytes()
    command = 'ulimit -f 8; exec "$@"'
    full = [sys.executable, "-m", "alexcli", *map(str, args), "--force"]
    r = subprocess.run(
        ["bash", "-c", command, "bash", *full], capture_output=True, text=True, timeout=LIMIT
    )
    assert_one_line(r, 1, "File too large", "train/00000.h5")
    assert "unexpected" not in r.stderr
    assert (out / "manifest.json").read_bytes() == manifest
    assert not list(out.rglob(".*.tmp")) and not (out / "manifest.json.unfinished").exists()
    assert open_data_dir(out).manifest["splits"]["train"]["images"] == 96  # stats, train
