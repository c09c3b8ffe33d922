"""Shared-memory arrays that loader workers fill batch after batch, reused once the
training process is done with them. No paper section: the machinery under
docs/paper.md "Reducing overfitting"'s crops (docs/training.md "Data feeding").

A DataLoader worker normally sends each batch in a fresh shared-memory segment:
created, zero-filled page by page as the worker writes it, its descriptor passed over
a socket, mapped and faulted in again by the receiver, unlinked after. For a batch of
128 crops at 224 (19 MB) that cost more than reading the images
(docs/performance.md). So the arrays are made once, before the workers start (they
inherit them), `slots` per worker, with one shared flag per slot:

- a worker takes a slot whose flag is 0, sets it to 1, fills it and sends only the
  slot's number (the loader's shipment pickles as `(ring key, slot, n)`); with every
  slot taken it sends a fresh array instead, so a consumer that keeps batches is never
  overwritten, only slower;
- the training process (`RingBuffers.receive`, called as the shipment is unpickled:
  by the main thread, or by the DataLoader's pin thread on CUDA) wraps the slot in a
  tensor of its own storage and sets the flag back to 0 once nothing refers to that
  storage any longer (a weak reference: the pin thread's copy drops it at once).

Each flag has one writer per transition (the worker 0 → 1, the trainer 1 → 0, only
after receiving the batch), so no lock is needed. The ring's space in /dev/shm is
reserved when it is made (not enough is a one-line error naming `--shm-size`, not a bus
error later), but its pages are only written when a slot is first used: a worker that
keeps up uses the first few.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
import weakref
from typing import TYPE_CHECKING

import numpy as np
import torch

from alexcli.errors import UserError, first_line

if TYPE_CHECKING:
    from torch.multiprocessing.reductions import StorageWeakRef

_RINGS: weakref.WeakValueDictionary[str, RingBuffers] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


class RingBuffers:
    """`slots` shared uint8 arrays of `shape` per worker and the flags saying which ones
    the training process still holds. Build before the workers start."""

    def __init__(self, workers: int, slots: int, shape: tuple[int, ...]) -> None:
        slots = slots if weak_refs_work() else 0  # 0: every batch in a fresh array
        self.arrays = (
            _shared_uint8((workers, slots, *shape))
            if slots
            else torch.empty((workers, 0, *shape), dtype=torch.uint8)
        )
        self.flags = torch.zeros((workers, slots), dtype=torch.uint8).share_memory_()
        self._held: list[tuple[tuple[int, int], StorageWeakRef]] = []
        self.key = f"{os.getpid()}-{next(_KEYS)}"
        _RINGS[self.key] = self

    @staticmethod
    def find(key: str) -> RingBuffers:
        """The ring `key` of this process (the training process's, for arriving batches)."""
        return _RINGS[key]

    def acquire(self, worker: int, n: int) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """In a worker: an array for n images and its (worker, slot); slot None: a fresh
        shared array (every slot is still held, or n is more than a slot holds)."""
        flags = self.flags.numpy()[worker]
        free = np.flatnonzero(flags == 0)
        if n > self.arrays.shape[2] or not len(free):
            fresh = torch.empty((n, *self.arrays.shape[3:]), dtype=torch.uint8)
            return fresh.share_memory_(), None
        slot = int(free[0])
        flags[slot] = 1
        return self.arrays[worker, slot, :n], (worker, slot)

    def release(self, slot: tuple[int, int] | None) -> None:
        """In a worker: give back a slot it acquired but will not send (its batch failed)."""
        if slot is not None:
            self.flags.numpy()[slot] = 0

    def receive(self, slot: tuple[int, int], n: int) -> torch.Tensor:
        """In the training process: the n images a worker wrote into `slot`, as a tensor
        with a storage of its own, so that the slot is handed back once it is dropped."""
        from torch.multiprocessing.reductions import StorageWeakRef

        self.sweep()
        images = torch.from_numpy(self.arrays.numpy()[slot[0], slot[1], :n])
        self._held.append((slot, StorageWeakRef(images.untyped_storage())))
        return images

    def sweep(self) -> None:
        """Hand back the slots of batches nothing refers to any longer."""
        held, flags = [], self.flags.numpy()
        for slot, ref in self._held:
            if ref.expired():
                flags[slot] = 0
            else:
                held.append((slot, ref))
        self._held = held

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_held"] = []  # the training process's bookkeeping stays there
        return state


def _shared_uint8(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor in shared memory (/dev/shm), its space reserved now
    but none of its pages written: `torch.empty(...).share_memory_()` would fill the
    process's own memory first and copy it over (~2 GB per loader with 15 workers)."""
    nbytes = math.prod(shape)
    free = _shm_free()
    if free is not None and nbytes > free:
        raise UserError(
            f"the loader's batches need {nbytes / 2**20:,.0f} MiB of shared memory, "
            f"/dev/shm has {free / 2**20:,.0f} MiB free",
            hint="fewer --workers or a smaller --batch-size; in Docker, run with a larger "
            "--shm-size (e.g. 8g)",
        )
    # `_new_shared` is torch's own (not public) way to reserve shared memory without
    # touching it; a torch where it is missing or does not give shared memory of the
    # size asked takes the public path, which costs the copy, and says so once.
    try:
        storage = torch.UntypedStorage._new_shared(nbytes)
        if not (storage.is_shared() and storage.nbytes() == nbytes):
            raise TypeError("not shared memory of the size asked")
    except (AttributeError, TypeError, RuntimeError) as e:
        _warn_once(f"the loader's ring is made the slow way ({first_line(e)})")
        return torch.empty(shape, dtype=torch.uint8).share_memory_()
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def weak_refs_work() -> bool:
    """Whether `StorageWeakRef` (how the ring learns that a batch was dropped; torch's own,
    not public) behaves here: alive while a tensor holds the storage, expired after. If
    not, the ring is not reused: every batch travels in a fresh array, slower but right."""
    try:
        from torch.multiprocessing.reductions import StorageWeakRef

        probe = torch.empty(1, dtype=torch.uint8)
        ref = StorageWeakRef(probe.untyped_storage())
        alive = not ref.expired()
        del probe
        ok = alive and ref.expired()
    except Exception as e:  # an import or behaviour this torch does not have
        _warn_once(f"the loader's ring is off ({first_line(e)})")
        return False
    if not ok:
        _warn_once("the loader's ring is off (storage weak references do not expire here)")
    return ok


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _shm_free() -> int | None:
    """Bytes free in /dev/shm, where torch puts shared tensors on Linux; None elsewhere."""
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize
