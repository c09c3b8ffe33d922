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
