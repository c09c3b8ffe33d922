"""Atomic writes: a reader never sees a half-written file, even across SIGKILL."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from alexcli.core.atomic import (
    atomic_path,
    check_writable,
    in_place,
    remove_stale_temps,
    write_bytes,
    write_json,
    write_text,
)


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


# --------------------------------------------------------------------------- not replaced


def _reader(fifo, got):
    """A thread reading `fifo` to its end into `got` (as `cat fifo` would)."""

    def read():
        with open(fifo, "rb") as f:
            got.append(f.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _reader(fifo, got)
    write_json(fifo, {"top1": 0.5})
    reader.join(timeout=10)
    assert got and json.loads(got[0]) == {"top1": 0.5}
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO, not a regular file
    assert os.listdir(tmp_path) == ["report.json"]
    assert in_place(fifo)


def test_a_fifo_whose_reader_goes_away_is_an_oserror_naming_it(tmp_path):
    """As a full device (/dev/full) is: the write's own error, naming the target."""
    fifo = tmp_path / "out.bin"
    os.mkfifo(fifo)
    reader = threading.Thread(target=lambda: open(fifo, "rb").close(), daemon=True)
    reader.start()
    with pytest.raises(OSError) as e:
        write_bytes(fifo, b"x" * (8 << 20))  # more than a pipe holds
    reader.join(timeout=10)
    assert e.value.errno == errno.EPIPE and e.value.filename == str(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_stays_and_the_file_it_points_to_is_replaced(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "shared").mkdir()
    real, link = tmp_path / "shared" / "eval.json", tmp_path / "runs" / "eval.json"
    write_text(real, "old")
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new" and not in_place(link)
    assert os.listdir(tmp_path / "runs") == ["eval.json"]  # no temporary beside the link
    assert os.listdir(tmp_path / "shared") == ["eval.json"]
    dangling = tmp_path / "runs" / "new.json"
    dangling.symlink_to(tmp_path / "shared" / "new.json")
    write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "shared" / "new.json").read_text() == "made"


_STDOUT = """
import sys
from alexcli.core.atomic import write_text
print("before")
write_text(sys.argv[1], "{report}\\n")
print("after")
"""


@pytest.mark.parametrize("name", ["stdout", "/dev/fd/1"])
def test_stdout_redirected_to_a_file_is_written_in_order(tmp_path, name):
    """`alexcli eval … --json-out /dev/stdout > out.txt`: the file that stdout is gets
    the report where it is printed, and is not replaced (the shell still holds it).
    "stdout" is a link made here as /dev/stdout is (to /proc/self/fd/1): a regression
    replaces that link, never the system's /dev/stdout."""
    out, link = tmp_path / "out.txt", tmp_path / "stdout"
    if name == "stdout":
        link.symlink_to("/proc/self/fd/1")
        name = str(link)
    with open(out, "wb") as f:
        subprocess.run([sys.executable, "-c", _STDOUT, name], stdout=f, check=True)
    assert out.read_text() == "before\n{report}\nafter\n"
    made = ["out.txt", "stdout"] if link.is_symlink() else ["out.txt"]
    assert sorted(os.listdir(tmp_path)) == made


def test_an_error_about_the_temporary_names_the_target(tmp_path):
    target = tmp_path / "m.safetensors"
    with pytest.raises(OSError) as e, atomic_path(target) as tmp:
        raise OSError(errno.EACCES, "Permission denied", str(tmp))
    assert e.value.filename == str(target) and os.listdir(tmp_path) == []


def test_check_writable_takes_a_fifo_and_follows_a_link(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    check_writable(fifo, "--json-out")  # no temporary file made beside it, no error
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere" / "x.json")
    check_writable(link, "--json-out")
    assert sorted(os.listdir(tmp_path)) == ["fifo", "link.json"]
