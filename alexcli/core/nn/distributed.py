"""Processes and devices of one training job: docs/paper.md "Architecture" puts the two
towers on two GPUs (`devices.resolve_devices`, `AlexNet.place`); beyond the paper,
`torchrun` runs N such processes data parallel, and this module is how a process
finds its place in that job (rank, world, its own devices) and how the ranks agree.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from alexcli import errors
from alexcli.core.nn.devices import resolve_devices
from alexcli.errors import AlexcliError, PeerLost

T = TypeVar("T")
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
            except Exception as e:  # every rank must reach the broadcast
                box[0] = _failure(e, "")
        torch_dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], tuple):
            _raise(box[0])
        return bool(box[0])

    def share(self, value: T) -> T:
        """Rank 0's `value` on every rank (settings that decide which collectives run)."""
        if self.world == 1:
            return value
        box: list[Any] = [value]
        torch_dist.broadcast_object_list(box, src=0)
        shared: T = box[0]
        return shared

    def everywhere(self, work: Callable[[], T]) -> T:
        """`work` on every rank; when it raises an AlexcliError on any, every rank raises
        the first such rank's (a node that cannot read its DATA_DIR ends the whole job in
        one line instead of leaving the others waiting in a collective)."""
        if self.world == 1:
            return work()
        result: T | None = None
        failure: tuple[str, str, str | None] | None = None
        try:
            result = work()
        except Exception as e:  # every rank must reach the gather
            failure = _failure(e, f"rank {self.rank}: ")
        failures: list[Any] = [None] * self.world
        torch_dist.all_gather_object(failures, failure)
        first = next((f for f in failures if f is not None), None)
        if first is not None:
            _raise(first)
        return result  # type: ignore[return-value]

    def anywhere(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any."""
        if self.world == 1:
            return flag
        flags: list[Any] = [None] * self.world
        torch_dist.all_gather_object(flags, flag)
        return any(flags)

    def same_everywhere(self, value: str, what: str) -> None:
        """Refuse, on every rank alike, a job whose ranks see different `value`s (the
        DATA_DIR each node reads, by its fingerprint)."""
        if self.world == 1:
            return
        values: list[Any] = [None] * self.world
        torch_dist.all_gather_object(values, value)
        other = next((r for r, v in enumerate(values) if v != values[0]), None)
        if other is not None:
            raise errors.UserError(
                f"rank {other} sees another {what} than rank 0 (fingerprint "
                f"{str(values[other])[:12]} vs {str(values[0])[:12]})",
                hint=f"every node needs the same {what} at the same path: a shared "
                "filesystem, or an exact copy (docs/cluster.md)",
            )

    def shared_file(self, path: Path) -> Path | bytes | None:
        """Rank 0's file at `path` as this rank can read it: the path where this rank sees
        the same bytes (a shared filesystem, or a copy), else its bytes sent by rank 0
        (node-local disks); None on every rank when rank 0 has no file there."""
        if self.world == 1:
            return path if path.is_file() else None
        values: list[Any] = [None] * self.world
        torch_dist.all_gather_object(values, self.everywhere(lambda: _digest(path)))
        holder = next((r for r, v in enumerate(values) if v is not None), None)
        if values[0] is None and holder is not None:
            raise errors.UserError(
                f"rank {holder} has {path}, rank 0 has none: rank 0 decides what to resume",
                hint="put RUN_DIR on a shared filesystem, or copy the run to rank 0's node "
                "(docs/cluster.md)",
            )
        if values[0] is None:
            return None
        if all(v == values[0] for v in values):
            return path
        box: list[Any] = [path.read_bytes() if self.rank == 0 else None]
        torch_dist.broadcast_object_list(box, src=0)
        return path if values[self.rank] == values[0] else bytes(box[0])

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _failure(e: Exception, where: str) -> tuple[str, str, str | None]:
    """An error as plain data another rank can raise again: an AlexcliError as itself,
    anything else as a UserError naming it."""
    if isinstance(e, AlexcliError):
        return (type(e).__name__, where + e.message, e.hint)
    return ("UserError", f"{where}unexpected {type(e).__name__}: {e}", "rerun with --debug")


def _raise(failure: tuple[str, str, str | None]) -> None:
    name, message, hint = failure
    raise getattr(errors, name, errors.AlexcliError)(message, hint)


def _digest(path: Path) -> str | None:
    """sha256 of a file, None when there is none (a checkpoint: hundreds of MB, ~1 s)."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    except OSError as e:
        raise errors.UserError(f"{path}: unreadable ({e.strerror})") from None
    return h.hexdigest()


def restart_count() -> int:
    """How many times torchrun has restarted this process's workers after a failure (0
    outside torchrun). A node whose workers were only stopped for a new rendezvous (its
    peer's failed) keeps 0: ask `Dist.anywhere`."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def setup_distributed(devices: str, timeout_minutes: float | None = None) -> Dist:
    """Join the torchrun job when there is one (gloo on CPU, nccl on CUDA); `devices`
    is the `--devices` spec, `timeout_minutes` how long a collective waits for the other
    ranks (None: PyTorch's default)."""
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
    timeout = None if timeout_minutes is None else datetime.timedelta(minutes=timeout_minutes)
    torch_dist.init_process_group("nccl" if first.type == "cuda" else "gloo", timeout=timeout)
    return Dist(
        torch_dist.get_rank(),
        world,
        local_rank,
        int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        owns_group=True,
    )


# What gloo and NCCL say when a peer is gone or a collective outwaited its timeout.
_LOST = re.compile(
    r"Connection closed by peer|Connection reset by peer|Timed out waiting|"
    r"timeout caused pair closure|Broken pipe|NCCL communicator was aborted|Watchdog caught"
)
_SOURCE = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*")  # gloo's "[…/pair.cc:553] "


@contextlib.contextmanager
def collective_errors(dist: Dist, minutes: float) -> Iterator[None]:
    """A collective that failed for want of another rank (it died, hangs, or was stopped)
    becomes one line naming this rank, rather than a backend's traceback, or a wait of
    PyTorch's default 30 minutes (gloo) before it."""
    try:
        yield
    except RuntimeError as e:  # gloo raises RuntimeError; NCCL DistBackendError, one
        if dist.world == 1 or not (isinstance(e, torch_dist.DistError) or _LOST.search(str(e))):
            raise
        reason = _SOURCE.sub("", str(e).splitlines()[0]).split(". ")[0].rstrip(".")
        waited = "outwaited" if re.search("timed? ?out", reason, re.IGNORECASE) else "lost"
        raise PeerLost(
            f"rank {dist.rank} of {dist.world}: a collective {waited} the other ranks (one "
            f"died, hangs or was stopped; the wait is {minutes:g} min): {reason}",
            hint="the other ranks' logs name the first failure; under torchrun "
            "--max-restarts the job restarts and continues from last.pt; --set "
            "collective_minutes=N sets the wait (docs/cluster.md)",
        ) from None


RESTART_HAZARD_ELSEWHERE = (
    "warning: on some node torchrun restarts workers across nodes without "
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: a restart can hang in the rendezvous; export it "
    "on every node before torchrun (docs/cluster.md)"
)


def restart_hazard(env: Mapping[str, str]) -> str | None:
    """What to say when torchrun restarts workers across nodes whose workers share the
    agent's rendezvous store: after a restart the workers can read each other's stale
    keys and hang in `init_process_group` (pytorch/pytorch#135712; here 2 of 4 tries,
    5–10 minutes each until killed). None when it does not apply."""
    try:
        restarts = int(env.get("TORCHELASTIC_MAX_RESTARTS", "0"))
        nodes = int(env.get("GROUP_WORLD_SIZE", "1"))
    except ValueError:
        return None
    if restarts <= 0 or nodes <= 1 or env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    return (
        f"warning: torchrun restarts workers (--max-restarts {restarts}) across {nodes} "
        "nodes without TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: a restart can hang in the "
        "rendezvous; export it on every node before torchrun (docs/cluster.md)"
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
