"""Signals as they arrive in real use: SIGTERM while a library is at work, a signal just
after the command has finished, Ctrl-C reaching a pool's worker processes. Each case runs
alexcli in a subprocess, as a shell or a scheduler starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from alexcli.core import pool
from tests.eval_helpers import save_run

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 90  # seconds: longer is a hang


def _wait_for_reader(fifo: Path, proc: subprocess.Popen[str]) -> int:
    """Open `fifo` for writing once `proc` has it open for reading (it then blocks in
    read() until the writer writes or closes); the writer's fd."""
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            time.sleep(0.05)
    pytest.fail(f"predict never opened the FIFO (exit {proc.returncode})")


@pytest.mark.parametrize("run", range(2))
@pytest.mark.parametrize("rank", ["0", "1"])
def test_sigterm_while_a_file_is_read_stops_the_command_and_blames_no_file(tmp_path, run, rank):
    """predict reads a FIFO named .jpg, which blocks until SIGTERM comes. The signal must
    end the command (one line, exit 143), not be taken by the decoder's catch-all for a
    corrupt image (it was: `p.jpg: corrupt image: Stopped: stopped by SIGTERM`). Under
    torchrun, rank 0 alone says a job's stop (every rank of a cancelled job gets it)."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    save_run(tmp_path / "run" / "checkpoints" / "last.pt")
    fifo = tmp_path / "p.jpg"
    os.mkfifo(fifo)
    cmd = [sys.executable, "-m", "alexcli", "predict", str(tmp_path / "run"), str(fifo)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RANK": rank},
    )
    writer = _wait_for_reader(fifo, proc)
    try:
        time.sleep(0.2)  # into read()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=LIMIT)
    finally:
        os.close(writer)
    assert proc.returncode == 143, (out, err)
    if rank == "0":
        assert err.splitlines()[0] == "error: stopped by SIGTERM", err
    else:
        assert "error" not in err, err
    assert "corrupt" not in out + err and "Traceback" not in err


def test_a_signal_after_the_command_has_finished_changes_nothing():
    """The result is printed; a SIGTERM or Ctrl-C during the interpreter's teardown (torch's
    takes half a second) must not turn a finished command into one killed without a word."""
    script = (
        "import os, signal, sys, time\n"
        "from alexcli.cli import main\n"
        "sys.argv = ['alexcli', '--version']\n"
        "code = main()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.2)\n"
        "print('still here')\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=LIMIT
    )
    assert done.returncode == 0, done.stderr
    assert "alexcli" in done.stdout and "still here" in done.stdout
    assert "Traceback" not in done.stderr


def _sigint_ignored() -> bool:
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_pool_workers_leave_ctrl_c_to_their_parent():
    """Ctrl-C reaches every process of the terminal's group: a worker still importing
    printed a traceback. The workers start with SIGINT ignored; this process keeps it."""
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT)
    assert list(pool.processes(_sigint_ignored, [()] * 4, jobs=2)) == [True] * 4
    assert signal.getsignal(signal.SIGINT) == before
