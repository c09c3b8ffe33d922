"""Processes and devices of one training job: docs/paper.md "Architecture" puts the two
towers on two GPUs (`devices.resolve_devices`, `AlexNet.place`); beyond the paper,
`torchrun` runs N such processes data parallel, and this module is how a process
finds its place in that job (rank, world, its own devices) and how the ranks agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

from alexcli import errors
from alexcli.core.nn.devices import resolve_devices
from alexcli.errors import AlexcliError

_CUDA = re.compile(r"^cuda(?::(\d+))?$")  # one CUDA device name in a --devices spec


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 outside one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank."""
        if self.world == 1:
            return flag
        box = [flag]
        torch_dist.broadcast_object_list(box, src=0)
        return bool(box[0])

    def decide(self, decision: Callable[[], bool]) -> bool:
        """Rank 0 runs `decision` (which may raise an AlexcliError); every rank gets its
        answer, or raises the same error: no rank acts on a file another is writing."""
        if self.world == 1:
            return decision()
        box: list[Any] = [None]
        if self.rank == 0:
            try:
                box[0] = decision()
            except AlexcliError as e:
                box[0] = (type(e).__name__, e.message, e.hint)
        torch_dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], tuple):
            name, message, hint = box[0]
            raise getattr(errors, name)(message, hint)
        return bool(box[0])

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def setup_distributed(devices: str) -> Dist:
    """Join the torchrun job when there is one (gloo on CPU, nccl on CUDA); `devices`
    is the `--devices` spec."""
    if torch_dist.is_available() and torch_dist.is_initialized():  # set up by the caller
        world = torch_dist.get_world_size()
        rank = torch_dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return Dist(rank, world, local, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # The collectives' tensors (the loss, the validation counts) live on the first device.
    first = process_devices(devices, local_rank)[0]
    if first.type == "cuda":
        torch.cuda.set_device(first)
    torch_dist.init_process_group("nccl" if first.type == "cuda" else "gloo")
    return Dist(
        torch_dist.get_rank(),
        world,
        local_rank,
        int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        owns_group=True,
    )


def process_devices(spec: str, local_rank: int) -> list[torch.device]:
    """This process's devices. Under torchrun a CUDA spec counts from the process's
    own first GPU, each process owning a block of GPUs as wide as the spec's highest
    index + 1: with `cuda:0,cuda:1`, local rank r holds cuda:2r and cuda:2r+1; with
    both towers on one GPU (`cuda:0,cuda:0`), cuda:r. Other parts (`cpu`) stay."""
    text = spec.strip().lower()
    if text == "auto":
        text = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif local_rank and "cuda" in text:
        parts = [p.strip() for p in text.split(",")]
        index = {p: int(m.group(1) or 0) for p in parts if (m := _CUDA.match(p))}
        if index:  # else nothing to move (a malformed name is resolve_devices' to refuse)
            width = max(index.values()) + 1
            text = ",".join(
                f"cuda:{index[p] + local_rank * width}" if p in index else p for p in parts
            )
    return resolve_devices(text)
