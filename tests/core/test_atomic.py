"""Atomic writes: a reader never sees a half-written file, even across SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alexcli.core.atomic import atomic_path, remove_stale_temps, write_json, write_text


def test_write_json_round_trip(tmp_path):
    write_json(tmp_path / "a" / "m.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "m.json").read_text()) == {"x": [1, 2]}
    assert os.listdir(tmp_path / "a") == ["m.json"]


def test_exception_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


_WRITER = """
import sys, time
from alexcli.core.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"n" * 1_000_000)
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def test_sigkill_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "shard.bin"
    write_text(target, "old")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_text() == "old"
    stale = [p for p in os.listdir(tmp_path) if p != "shard.bin"]
    assert len(stale) == 1 and stale[0].startswith(".shard.bin.")
    assert remove_stale_temps(tmp_path) == 1
    assert os.listdir(tmp_path) == ["shard.bin"]


def test_replacing_is_atomic_for_concurrent_readers(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"v": 0})
    for i in range(1, 50):
        write_json(target, {"v": i, "pad": "x" * 10_000})
        assert json.loads(target.read_text())["v"] == i
    time.sleep(0)
