"""A torchrun process's devices and the one-process defaults (no process group here)."""

from __future__ import annotations

import pytest
import torch

from alexcli.core.nn import distributed
from alexcli.core.nn.distributed import Dist, process_devices, setup_distributed


@pytest.mark.parametrize(
    "spec, local_rank, want",
    [
        ("cuda:0", 0, "cuda:0"),
        ("cuda:0", 3, "cuda:3"),
        ("cuda:0,cuda:1", 0, "cuda:0,cuda:1"),
        ("cuda:0,cuda:1", 2, "cuda:4,cuda:5"),  # two towers per process
        ("cuda:0,cuda:0", 3, "cuda:3,cuda:3"),  # both towers on the process's one GPU
        ("cuda:1", 2, "cuda:5"),  # a block of two GPUs per process, the second used
        ("cuda:0,cpu", 1, "cuda:1,cpu"),  # the CPU stays the CPU
        ("CUDA:0", 2, "cuda:2"),
        ("cuda:x", 1, "cuda:x"),  # left for resolve_devices to refuse in one line
        ("cpu", 5, "cpu"),
    ],
)
def test_a_cuda_spec_counts_from_the_processs_own_first_gpu(monkeypatch, spec, local_rank, want):
    monkeypatch.setattr(distributed, "resolve_devices", lambda text: text)
    assert process_devices(spec, local_rank) == want


def test_auto_is_the_local_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setattr(distributed, "resolve_devices", lambda text: text)
    want = "cuda:2" if torch.cuda.is_available() else "cpu"
    assert process_devices("auto", 2) == want


def test_outside_torchrun_there_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = setup_distributed("cpu")
    assert (d.rank, d.world) == (0, 1)
    assert d.agree(True) and d.decide(lambda: False) is False
    d.barrier()
    d.close()


def test_decide_passes_errors_through_in_one_process():
    from alexcli.errors import UserError

    def refuse() -> bool:
        raise UserError("no", hint="h")

    with pytest.raises(UserError, match="no"):
        Dist().decide(refuse)


# --------------------------------------------------------------------------- a lost peer

_RANK = """
import os, sys, time
from alexcli.core.nn.distributed import collective_errors, setup_distributed
from alexcli.errors import AlexcliError
rank, how = int(os.environ["RANK"]), sys.argv[1]
dist = setup_distributed("cpu", timeout_minutes=0.05)  # 3 s
dist.barrier()
if rank == 1:
    if how == "dies":
        os._exit(9)
    time.sleep(20)  # hangs (a stopped or deadlocked peer)
    os._exit(0)
start = time.monotonic()
try:
    with collective_errors(dist, 0.05):
        dist.agree(True)
except AlexcliError as e:
    print(f"{type(e).__name__}|{e.message}|{e.hint}|{time.monotonic() - start:.1f}")
    os._exit(1)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("how", "said"), [("dies", "lost"), ("hangs", "outwaited")])
def test_a_lost_peer_ends_the_rank_in_one_line_naming_it_within_the_timeout(tmp_path, how, said):
    """gloo, two processes as torchrun starts them: rank 1 dies (its socket closes) or
    hangs. Rank 0 ends in one line naming itself, within the collective timeout (3 s
    here) rather than PyTorch's default 30 minutes."""
    import os
    import subprocess
    import sys

    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = os.environ | {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONPATH": os.getcwd(),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RANK, how],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    out, err = procs[0].communicate(timeout=60)
    procs[1].kill()
    procs[1].communicate()
    assert procs[0].returncode == 1, err
    name, message, hint, seconds = out.strip().split("|")
    assert name == "PeerLost" and message.startswith(f"rank 0 of 2: a collective {said}")
    assert "\n" not in message and "pair.cc" not in message and "collective_minutes" in hint
    assert float(seconds) < 15


def test_restarts_across_nodes_sharing_the_agents_store_are_named():
    """torchrun's workers use the agent's rendezvous store unless
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (it then sets TORCHELASTIC_USE_AGENT_STORE=False):
    with restarts across nodes that can hang."""
    env = {
        "TORCHELASTIC_MAX_RESTARTS": "3",
        "GROUP_WORLD_SIZE": "2",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }
    line = distributed.restart_hazard(env)
    assert line is not None and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in line
    assert "--max-restarts 3" in line and "2 nodes" in line
    for change in (
        {"TORCHELASTIC_USE_AGENT_STORE": "False"},
        {"GROUP_WORLD_SIZE": "1"},
        {"TORCHELASTIC_MAX_RESTARTS": "0"},
    ):
        assert distributed.restart_hazard(env | change) is None
    assert distributed.restart_hazard({}) is None


def test_train_says_so_at_the_start(cli, tmp_path, monkeypatch):
    from tests.train_helpers import TINY, make_data_dir

    data = make_data_dir(tmp_path / "data", train=24, val=8)
    for key, value in {
        "TORCHELASTIC_MAX_RESTARTS": "3",
        "GROUP_WORLD_SIZE": "2",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }.items():
        monkeypatch.setenv(key, value)
    sets = [a for s in TINY for a in ("--set", s)]
    r = cli("train", data, tmp_path / "run", "--preset", "small", "--epochs", "1", *sets)
    assert r.code == 0, r.err
    (line,) = [ln for ln in r.err.splitlines() if "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" in ln]
    assert line.startswith("warning: torchrun restarts workers")
