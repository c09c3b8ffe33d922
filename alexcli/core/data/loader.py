"""Feeding the network from the HDF5 shards: worker processes carry out the batch plans
(core/data/batches.py) and hand out `Batch`es; the float work happens on the training
device (`transforms.Normalizer`).

Why it is fast (docs/training.md "Data feeding" has the numbers): a worker's call is a
whole batch, read into one preallocated array in shared memory and sent as one tensor
(its small fields travel as numpy); the arrays are a ring reused batch after batch
(`core/data/batchring.py`: allocating and sending a fresh shared array per batch cost more
than reading the images); a crop's rows are one `pread` from the page cache, from at most
16 open files whatever the number of shards (a JPEG record is one `pread` too, decoded by
the worker on its one thread); and a reflection is torch's flip, not numpy's 3-byte
reversed copy.

A worker's AlexcliError (a damaged shard, say) comes back as a `_Failure` and is raised
again here whole, so the command ends in one line; any other failure of a worker ends
it in one line too.

A SIGTERM sent to the whole process group (SLURM's scancel and preemption, `timeout`,
`kill -- -PGID`) reaches the workers too. Dying of it, they would end the command with
DataLoader's "worker killed by signal" wherever the parent happened to be, before it could
save where it was; so a worker leaves SIGTERM to its parent and goes on serving batches
until the parent shuts it down, unless the parent itself sent it (DataLoader's terminate
of a worker that did not stop) or the parent is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from alexcli import errors
from alexcli.core.data.batches import Batch, BatchPlan, CropDataset, EpochSampler
from alexcli.core.data.batchring import RingBuffers
from alexcli.core.machine import cpu_cores
from alexcli.core.progress import emit
from alexcli.errors import AlexcliError


def default_workers(processes_per_node: int = 1) -> int:
    """Loader processes: this process's share of the cores, minus one for it (at least 0)."""
    return max(cpu_cores() // max(processes_per_node, 1) - 1, 0)


PREFETCH = 4  # batches each worker works ahead


def most_workers() -> int:
    """More loader processes than cores only cost memory (each holds its ring slots and
    a copy of the process) and make PyTorch warn that they may freeze the machine."""
    return max(cpu_cores(), 1)


@dataclass(frozen=True, eq=False)
class _Shipment:
    """A batch as a worker makes it: the images in a slot of the ring, or a fresh shared
    array when every slot is held; the rest numpy (pickled inline: no shared memory).
    Not a tuple: torch versions before ~2.12 pin a named tuple field by field before
    asking for an object's own `pin_memory`, which would leave the labels unpinned."""

    images: torch.Tensor  # uint8 (n, crop, crop, 3)
    labels: np.ndarray
    plan: BatchPlan
    ring: str = ""  # the ring's key
    slot: tuple[int, int] | None = None  # (worker, slot); None: `images` is its own array

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """A slot travels as its number; the receiving process looks the memory up."""
        if self.slot is None:
            return _Shipment, (self.images, self.labels, self.plan)
        return _arrive, (self.ring, self.slot, self.labels, self.plan)

    def batch(self) -> Batch:
        return Batch.of(self.images, self.labels, self.plan)

    def pin_memory(self) -> Batch:
        """The DataLoader's pin thread (CUDA): the batch in page-locked copies; dropping
        this shipment hands its slot back."""
        return self.batch().pin_memory()


def _arrive(ring: str, slot: tuple[int, int], labels: np.ndarray, plan: BatchPlan) -> _Shipment:
    """Unpickling a shipment in the training process: the slot's images, tracked."""
    return _Shipment(RingBuffers.find(ring).receive(slot, len(labels)), labels, plan)


@dataclass(frozen=True)
class _Failure:
    """A worker's AlexcliError on its way to the training process, which raises it again
    (DataLoader would re-raise it with the worker's traceback as its message)."""

    kind: str
    message: str
    hint: str | None

    def error(self) -> AlexcliError:
        cls = getattr(errors, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, AlexcliError)):
            cls = AlexcliError
        return cls(self.message, self.hint)


class _RingDataset(Dataset[_Shipment]):
    """What the workers run: `CropDataset.fill` into the worker's slots of the ring."""

    def __init__(self, dataset: CropDataset, ring: RingBuffers) -> None:
        self.dataset, self.ring = dataset, ring

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, plan: BatchPlan) -> _Shipment | _Failure:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        images, slot = self.ring.acquire(worker, len(plan))
        try:
            labels = self.dataset.fill(plan, images)
        except AlexcliError as e:  # sent back whole, to end the command in one line
            self.ring.release(slot)
            return _Failure(type(e).__name__, e.message, e.hint)
        return _Shipment(images, labels, plan, self.ring.key, slot)

    def __getitem__(self, index: int) -> _Shipment:
        raise TypeError("the loader reads whole batches (`__getitems__`)")


def _leave_sigterm_to_parent(worker_id: int) -> None:
    """A loader worker's SIGTERM goes to a thread that ends the worker only when its
    parent sent it; any other sender (a group signal) is left to the parent, which stops
    the command and then shuts the workers down. The thread also ends the worker within
    a second of the parent's death, wherever the worker is stuck."""
    if not hasattr(signal, "sigtimedwait"):  # not on Linux: SIGTERM keeps its default
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        while True:
            info = signal.sigtimedwait({signal.SIGTERM}, 1.0)
            if os.getppid() != parent or (info is not None and info.si_pid == parent):
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=wait, name="sigterm", daemon=True).start()


class BatchLoader:
    """`Batch`es of `sampler`'s plans, read by `workers` processes (or in this one).

    With workers, a batch's images live in a slot of a shared ring (`core/data/batchring.py`)
    until the batch is dropped; keeping a batch is allowed (its slot stays taken)."""

    def __init__(
        self,
        dataset: CropDataset,
        sampler: EpochSampler,
        *,
        workers: int,
        pin_memory: bool,
        capped: bool = True,
    ) -> None:
        self.dataset, self.sampler, self.pin_memory = dataset, sampler, pin_memory
        self._loader: DataLoader[_Shipment | Batch] | None = None
        if capped and workers > most_workers():
            emit(
                f"warning: {workers} loader workers asked for, {most_workers()} used "
                "(the cores this process may run on)"
            )
            workers = most_workers()
        if workers > 0:
            # Slots per worker: its prefetched batches, the one in use, the one before
            # (still referenced while the next is fetched), one spare.
            shape = (sampler.rank_batch, dataset.crop, dataset.crop, 3)
            self.ring = RingBuffers(workers, PREFETCH + 3, shape)
            self._loader = DataLoader(
                _RingDataset(dataset, self.ring),
                # DataLoader hands whatever the batch sampler yields to `__getitems__`;
                # its annotation says list.
                batch_sampler=sampler,  # type: ignore[arg-type]
                num_workers=workers,
                collate_fn=_as_is,
                pin_memory=pin_memory,
                persistent_workers=True,
                prefetch_factor=PREFETCH,
                worker_init_fn=_leave_sigterm_to_parent,
                # Forked, whatever Python's default (a forkserver from 3.14): the workers
                # inherit the ring, and their parent is this process.
                multiprocessing_context="fork" if sys.platform == "linux" else None,
                # Its own generator: `iter(loader)` draws a worker seed, and must not draw
                # it from torch's global RNG (dropout's), or a resumed run would diverge.
                generator=torch.Generator(),
            )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        if self._loader is None:
            for plan in self.sampler:
                batch = self.dataset.__getitems__(plan)
                yield batch.pin_memory() if self.pin_memory else batch
            return
        try:
            for item in self._loader:  # Batch: already pinned by the pin thread
                if isinstance(item, _Failure):
                    raise item.error()
                yield item if isinstance(item, Batch) else item.batch()
        except AlexcliError:
            raise
        except Exception as e:  # a worker's bug or death: DataLoader's text, last line
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            reason = lines[-1] if lines else type(e).__name__
            raise AlexcliError(
                f"a data loader worker failed: {reason[:200]}",
                hint="rerun with --debug for the traceback; --workers 0 reads in this process",
            ) from e


def make_loader(
    dataset: CropDataset,
    sampler: EpochSampler,
    *,
    workers: int,
    pin_memory: bool,
    capped: bool = True,
) -> BatchLoader:
    """Whole batches of `dataset` in `sampler`'s order; workers persist across epochs.
    `capped`: more `workers` than cores are lowered to them (not for `bench`, which
    measures the count it is given)."""
    return BatchLoader(dataset, sampler, workers=workers, pin_memory=pin_memory, capped=capped)


def _as_is(shipment: Any) -> Any:
    """The worker already built the batch (a `_Shipment`); nothing left to collate."""
    return shipment
