"""The loader's ring of shared arrays: a slot is reused only once its batch is dropped."""

from __future__ import annotations

import pickle

import torch

from alexcli.core.data.batchring import RingBuffers


def test_a_slot_comes_back_only_when_nothing_refers_to_its_batch():
    ring = RingBuffers(workers=2, slots=2, shape=(3, 4))
    a, slot_a = ring.acquire(1, 3)
    a.fill_(7)
    assert slot_a == (1, 0) and ring.flags.tolist() == [[0, 0], [1, 0]]
    got = ring.receive(slot_a, 3)  # the training process's view of the same memory
    assert torch.equal(got, torch.full((3, 4), 7, dtype=torch.uint8))
    view = got[1:]  # views keep the batch alive, as the batch itself does
    del got
    ring.sweep()
    assert ring.flags[1, 0] == 1
    del view
    ring.sweep()
    assert ring.flags[1, 0] == 0


def test_with_every_slot_held_a_fresh_array_is_handed_out():
    ring = RingBuffers(workers=1, slots=2, shape=(3, 4))
    held = [ring.receive(ring.acquire(0, 3)[1], 3) for _ in range(2)]
    fresh, slot = ring.acquire(0, 2)
    assert slot is None and fresh.shape == (2, 4) and fresh.is_shared()
    assert ring.acquire(0, 4)[1] is None  # more rows than a slot holds
    assert len(held) == 2


def test_a_ring_travels_to_a_worker_without_the_trainers_bookkeeping():
    ring = RingBuffers(workers=1, slots=2, shape=(3, 4))
    kept = ring.receive(ring.acquire(0, 3)[1], 3)
    copy = pickle.loads(pickle.dumps(ring))
    assert copy.key == ring.key and copy._held == [] and len(ring._held) == 1
    assert kept.shape == (3, 4)


def test_too_little_shared_memory_is_one_line_naming_the_fix(monkeypatch):
    """Docker's default /dev/shm is 64 MB; the ring (2 workers × 7 slots of 16 crops at 224
    here, 32 MiB) is refused up front when it does not fit, not with a bus error later."""
    import pytest

    from alexcli.core.data import batchring
    from alexcli.errors import UserError

    monkeypatch.setattr(batchring, "_shm_free", lambda: 20 * 2**20)
    with pytest.raises(UserError, match="need 32 MiB of shared memory, /dev/shm has 20 MiB free"):
        RingBuffers(workers=2, slots=7, shape=(16, 224, 224, 3))
    monkeypatch.setattr(batchring, "_shm_free", lambda: None)  # not Linux: no check
    ring = RingBuffers(workers=2, slots=7, shape=(16, 224, 224, 3))
    assert ring.arrays.is_shared() and ring.arrays.shape == (2, 7, 16, 224, 224, 3)
