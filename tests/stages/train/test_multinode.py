"""`train` across "nodes": two torchrun agents on this machine joined by a c10d
rendezvous (what two machines do over the network), a worker killed and the job
restarted by torchrun, and a node whose disk lacks rank 0's checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexcli.core.nn.checkpoint import load_checkpoint
from alexcli.errors import FormatError
from tests.train_helpers import TINY, make_data_dir

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 48 a class: 12 steps an epoch, a wide enough window to kill a worker inside one
    return make_data_dir(tmp_path_factory.mktemp("data"), train=48, val=8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sets(*extra: str) -> list[str]:
    return [a for s in (*TINY, "model.dropout=0", *extra) for a in ("--set", s)]


def _node_cmd(port: int, data: Path, run: Path, *args: str, restarts: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "alexcli-test",
        "--max-restarts",
        str(restarts),
        "--monitor-interval",
        "0.2",
        "-m",
        "alexcli",
        "train",
        str(data),
        str(run),
        "--preset",
        "small",
        *args,
    ]


def _two_nodes(cmds: list[list[str]]) -> list[subprocess.Popen[str]]:
    # torchrun's agents share the rendezvous store with the workers by default, and a
    # restart then mixes attempts (pytorch/pytorch#135712): docs/cluster.md sets it off
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    return [
        subprocess.Popen(
            c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for c in cmds
    ]


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 300) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append((p.returncode, o, e))
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt").weights


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    cmd = [
        sys.executable,
        "-m",
        "alexcli",
        "train",
        str(data),
        str(run),
        "--preset",
        "small",
        *_sets("epochs=2"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def two_nodes(data, tmp_path_factory):
    """An uninterrupted two-node run (a shared RUN_DIR: both "nodes" see this disk)."""
    run = tmp_path_factory.mktemp("two") / "run"
    port = _free_port()
    cmd = _node_cmd(port, data, run, *_sets("epochs=2"))
    results = _finish(_two_nodes([cmd, cmd]))
    assert all(code == 0 for code, _, _ in results), [e[-2000:] for _, _, e in results]
    return run, results


def test_two_nodes_train_the_weights_one_process_does_and_write_once(one_process, two_nodes):
    run, results = two_nodes
    a, b = _weights(one_process), _weights(run)
    for k in a:  # the tolerance the single-node two-process test uses
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]  # written once, by rank 0
    reports = sum(out.count("best val top-1 error") for _, out, _ in results)
    assert reports == 1  # rank 0 alone reports
    epochs = sum(err.count("epoch 2/2:") for _, _, err in results)
    assert epochs == 1  # and prints its epoch lines
    ma = [json.loads(x) for x in (one_process / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(ma, map(json.loads, lines), strict=True):
        assert x["val_top1_error"] == y["val_top1_error"]  # every val image counted once
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.pt",
        "last.pt",
        "torchrun-job",  # the job that set RUN_DIR up (its restarts)
    ]


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                kids.append(int(entry.name))
    return kids


def test_a_killed_worker_is_restarted_by_torchrun_and_the_run_ends_as_uninterrupted(
    data, two_nodes, tmp_path
):
    """SIGKILL one node's worker inside epoch 2: torchrun (--max-restarts 1) restarts
    both nodes' workers, which continue from last.pt without --resume, and the final
    weights equal the uninterrupted two-node run's."""
    reference, _ = two_nodes
    run = tmp_path / "run"
    port = _free_port()
    cmd = _node_cmd(port, data, run, *_sets("epochs=2"), "--checkpoint-every", "1", restarts=1)
    procs = _two_nodes([cmd, cmd])
    last = run / "checkpoints" / "last.pt"
    killed = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if last.exists():
                try:
                    ck = load_checkpoint(last)
                except FormatError:
                    continue
                if (1, 1) <= (ck.epoch, ck.step) < (2, 0):  # inside the second epoch
                    workers = _children(procs[1].pid)
                    if workers:
                        os.kill(workers[0], signal.SIGKILL)
                        killed = (ck.epoch, ck.step)
                        break
            time.sleep(0.005)
        results = _finish(procs)
    finally:
        for p in procs:
            p.kill()
    assert killed is not None, "the run ended before a worker could be killed"
    assert all(code == 0 for code, _, _ in results), [e[-3000:] for _, _, e in results]
    said = "".join(e for _, _, e in results)
    assert said.count("continuing from the last checkpoint") == 1  # rank 0 says it
    want, got = _weights(reference), _weights(run)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]


def test_a_node_without_the_checkpoint_gets_rank_0s(data, tmp_path):
    """Node-local disks: each "node" trains into its own RUN_DIR path... of the same
    name. Rank 0 has last.pt after a first epoch; the other node's copy is missing, so
    --resume sends it the bytes; both finish, and the result equals a straight run."""
    straight = tmp_path / "straight"
    port = _free_port()
    results = _finish(_two_nodes([_node_cmd(port, data, straight, *_sets("epochs=2"))] * 2))
    assert all(code == 0 for code, _, _ in results), [e[-2000:] for _, _, e in results]

    shared = tmp_path / "shared"  # one epoch, then copy it to "node A"'s own disk only
    port = _free_port()
    results = _finish(_two_nodes([_node_cmd(port, data, shared, *_sets("epochs=1"))] * 2))
    assert all(code == 0 for code, _, _ in results), [e[-2000:] for _, _, e in results]
    node_a, node_b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    node_a.parent.mkdir()
    node_b.mkdir(parents=True)
    subprocess.run(["cp", "-r", str(shared), str(node_a)], check=True)
    port = _free_port()
    cmds = [
        _node_cmd(port, data, node_a, *_sets("epochs=2"), "--resume"),
        _node_cmd(port, data, node_b, *_sets("epochs=2"), "--resume"),
    ]
    # The two RUN_DIRs stand for one path on two machines. Rank 0 must be node A's: c10d
    # ranks the agents by (host name, pid), so start A's agent first (the lower pid).
    procs = _two_nodes(cmds[:1])
    time.sleep(1)
    procs += _two_nodes(cmds[1:])
    results = _finish(procs)
    assert all(code == 0 for code, _, _ in results), [e[-2000:] for _, _, e in results]
    assert "resuming from" in results[0][2]  # rank 0 on node A resumed its epoch 1
    want = _weights(straight)
    got = _weights(node_a)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    assert not (node_b / "checkpoints" / "last.pt").exists()  # rank 1 writes nothing


def test_nodes_with_different_data_are_refused_in_one_line(data, tmp_path):
    other = make_data_dir(tmp_path / "other", train=24, val=8, seed=5)
    port = _free_port()
    cmds = [
        _node_cmd(port, data, tmp_path / "run", *_sets("epochs=1")),
        _node_cmd(port, other, tmp_path / "run", *_sets("epochs=1")),
    ]
    results = _finish(_two_nodes(cmds), timeout=240)
    assert all(code != 0 for code, _, _ in results)
    for _, _, err in results:  # each worker ends with alexcli's one line (torchrun's own
        # report of a failed child follows it, with its traceback: not ours)
        ours = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(ours) == 1 and "sees another DATA_DIR than rank 0" in ours[0], err[-2000:]
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_restart_after_a_refusal_never_continues_another_jobs_run(data, tmp_path):
    """Job 1 trains RUN_DIR. Job 2, with the same --rdzv-id and more epochs but without
    --resume, is refused; torchrun restarts it (--max-restarts 1) and it is refused
    again: a restart continues only a run its own launch set up."""
    run = tmp_path / "run"
    port = _free_port()
    results = _finish(_two_nodes([_node_cmd(port, data, run, *_sets("epochs=1"))] * 2))
    assert all(code == 0 for code, _, _ in results), [e[-2000:] for _, _, e in results]
    before = (run / "checkpoints" / "last.pt").read_bytes()
    port = _free_port()
    again = _node_cmd(port, data, run, *_sets("epochs=2"), restarts=1)
    results = _finish(_two_nodes([again, again]))
    assert all(code != 0 for code, _, _ in results)
    said = "".join(e for _, _, e in results)
    assert "holds a finished run with another configuration" in said
    assert "continuing from the last checkpoint" not in said
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
