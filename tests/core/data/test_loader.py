"""The loader: seeded shuffles, exact mid-epoch resume, disjoint DDP parts, crops read right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexcli.core.data.batches import BatchPlan, CropDataset, EpochSampler, Sample
from alexcli.core.data.batchring import RingBuffers
from alexcli.core.data.loader import PREFETCH, default_workers, make_loader, most_workers
from alexcli.stages.datadir import open_data_dir
from tests.helpers import write_data_dir

S, C = 16, 12


def _indices(sampler):
    return [[s.index for s in batch] for batch in sampler]


def test_each_epoch_is_a_fresh_seeded_permutation_of_whole_batches():
    sampler = EpochSampler(50, 8, size=S, crop=C, seed=1)
    assert sampler.steps_per_epoch == 6 and len(sampler) == 6  # 50 // 8, the rest dropped
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = _indices(sampler)
        flat = [i for b in batches for i in b]
        assert all(len(b) == 8 for b in batches) and len(set(flat)) == 48
        epochs.append(flat)
    assert epochs[0] != epochs[1] != epochs[2]
    again = EpochSampler(50, 8, size=S, crop=C, seed=1)
    again.set_epoch(1)
    assert [i for b in _indices(again) for i in b] == epochs[1]
    other = EpochSampler(50, 8, size=S, crop=C, seed=2)
    assert [i for b in _indices(other) for i in b] != epochs[0]


def test_starting_mid_epoch_yields_exactly_the_rest():
    full = EpochSampler(40, 4, size=S, crop=C, seed=0)
    full.set_epoch(3)
    whole = list(full)
    part = EpochSampler(40, 4, size=S, crop=C, seed=0)
    part.set_epoch(3, start_step=6)
    assert len(part) == 4 and list(part) == whole[6:]  # indices, crops, flips, noise alike


@pytest.mark.parametrize("world", [2, 4])
def test_ddp_ranks_take_disjoint_parts_whose_union_is_the_one_process_batch(world):
    one = EpochSampler(64, 16, size=S, crop=C, seed=5)
    parts = [
        EpochSampler(64, 16, size=S, crop=C, seed=5, rank=r, world=world) for r in range(world)
    ]
    for s in (one, *parts):
        s.set_epoch(2)
    per_rank = [list(p) for p in parts]
    for step, batch in enumerate(one):
        pieces = [per_rank[r][step] for r in range(world)]
        assert all(len(p) == 16 // world for p in pieces)
        merged = [s for p in pieces for s in p]
        assert sorted(merged, key=lambda s: s.index) == sorted(batch, key=lambda s: s.index)
        assert len({s.index for s in merged}) == 16


@pytest.mark.parametrize("world", [1, 2, 3])
def test_validation_covers_every_image_exactly_once_without_padding(world):
    seen = []
    for r in range(world):
        s = EpochSampler(23, 6, size=S, crop=C, train=False, rank=r, world=world)
        for batch in s:
            assert all((b.y, b.x, b.flip) == (2, 2, False) for b in batch)  # centre crop
            seen += [b.index for b in batch]
    assert sorted(seen) == list(range(23))


def _data(tmp_path, n=20):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, n)
    write_data_dir(tmp_path, {"train": (images, labels), "val": (images[:4], labels[:4])})
    return open_data_dir(tmp_path), images, labels


def test_dataset_reads_the_crop_across_shards(tmp_path):
    data, images, labels = _data(tmp_path)  # shards of 4 images
    ds = CropDataset(data.shard_set("train"), C)
    samples = [Sample(13, 1, 3, False), Sample(2, 4, 0, True), Sample(19, 0, 4, True)]
    batch = ds.__getitems__(samples)
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (3, C, C, 3)
    for k, s in enumerate(samples):
        want = images[s.index, s.y : s.y + C, s.x : s.x + C]
        want = want[:, ::-1] if s.flip else want
        np.testing.assert_array_equal(batch.images[k].numpy(), want)
        assert batch.labels[k] == labels[s.index]
    assert batch.flips.tolist() == [False, True, True] and batch.ys.tolist() == [1, 4, 0]


def test_workers_deliver_the_same_batches_as_the_main_process(tmp_path):
    data, _, _ = _data(tmp_path)
    out = []
    for workers in (0, 1):
        sampler = EpochSampler(20, 4, size=S, crop=C, seed=3)
        loader = make_loader(
            CropDataset(data.shard_set("train"), C), sampler, workers=workers, pin_memory=False
        )
        epochs = []
        for epoch in range(2):  # persistent workers see the new epoch
            sampler.set_epoch(epoch)
            epochs.append([b.images.clone() for b in loader])
        out.append(epochs)
    for e in range(2):
        assert all(torch.equal(a, b) for a, b in zip(out[0][e], out[1][e], strict=True))
    assert not torch.equal(out[0][0][0], out[0][1][0])


def test_iterating_the_loader_leaves_torchs_global_rng_alone(tmp_path):
    data, _, _ = _data(tmp_path)
    sampler = EpochSampler(20, 4, size=S, crop=C)
    loader = make_loader(
        CropDataset(data.shard_set("train"), C), sampler, workers=0, pin_memory=False
    )
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(loader)
    assert torch.equal(before, torch.get_rng_state())


def test_default_workers_leaves_a_core_for_training():
    assert default_workers() >= 0
    assert default_workers(processes_per_node=1000) == 0


def _reference(images, labels, plan, crop=C):
    """What a batch must hold: numpy crops, reflected with numpy's own reversal."""
    want = [images[s.index, s.y : s.y + crop, s.x : s.x + crop] for s in plan]
    want = [w[:, ::-1] if s.flip else w for w, s in zip(want, plan, strict=True)]
    return np.stack(want), labels[[s.index for s in plan]]


def _plans(sampler, epochs=(0,)):
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out += list(sampler)
    return out


def test_the_sampler_hands_out_plans_that_iterate_as_samples():
    sampler = EpochSampler(30, 6, size=S, crop=C, seed=4)
    plan = next(iter(sampler))
    assert isinstance(plan, BatchPlan) and len(plan) == 6
    assert BatchPlan.of(list(plan)) == plan  # arrays → samples → arrays, nothing lost
    assert plan[2] == list(plan)[2] and plan != BatchPlan.of(list(plan)[::-1])


def test_kept_batches_are_never_overwritten_by_later_ones(tmp_path):
    """A consumer that holds on to every batch (more than a worker's ring has slots)
    gets the same images as the in-process loader: slots are reused only once dropped."""
    data, images, labels = _data(tmp_path)
    sampler = EpochSampler(20, 2, size=S, crop=C, seed=7)
    plans = _plans(sampler, (0, 1))
    loader = make_loader(
        CropDataset(data.shard_set("train"), C), sampler, workers=1, pin_memory=False
    )
    kept = []
    for e in (0, 1):
        sampler.set_epoch(e)
        kept += list(loader)  # 20 batches, all alive at once
    assert len(kept) == len(plans) > PREFETCH + 3
    for batch, plan in zip(kept, plans, strict=True):
        want, want_labels = _reference(images, labels, plan)
        np.testing.assert_array_equal(batch.images.numpy(), want)
        np.testing.assert_array_equal(batch.labels.numpy(), want_labels)
        np.testing.assert_array_equal(batch.alphas.numpy(), plan.alpha)


def test_dropped_batches_hand_their_slot_back(tmp_path, monkeypatch):
    """The fast path: a consumer that lets each batch go gets every batch through the
    worker's reused shared arrays (none freshly allocated), with the right contents."""
    data, images, labels = _data(tmp_path)
    received = []
    real = RingBuffers.receive

    def counting(self, slot, n):
        received.append(slot)
        return real(self, slot, n)

    monkeypatch.setattr(RingBuffers, "receive", counting)  # runs in this process
    sampler = EpochSampler(20, 2, size=S, crop=C, seed=8)
    plans = _plans(sampler, range(3))
    loader = make_loader(
        CropDataset(data.shard_set("train"), C), sampler, workers=1, pin_memory=False
    )
    got = []
    for e in range(3):
        sampler.set_epoch(e)
        for batch in loader:
            got.append((batch.images.sum().item(), batch.labels.tolist()))
    assert len(received) == len(plans) == 30  # every batch came through a slot
    assert len(set(received)) <= PREFETCH + 3
    for (total, labs), plan in zip(got, plans, strict=True):
        want, want_labels = _reference(images, labels, plan)
        assert total == want.sum() and labs == want_labels.tolist()


def test_validation_through_workers_ends_with_its_partial_batch(tmp_path):
    data, images, labels = _data(tmp_path, n=19)
    sampler = EpochSampler(19, 4, size=S, crop=S, train=False)  # whole images, as eval reads
    batches = list(
        make_loader(CropDataset(data.shard_set("train"), S), sampler, workers=1, pin_memory=False)
    )
    assert [b.n for b in batches] == [4, 4, 4, 4, 3]
    np.testing.assert_array_equal(torch.cat([b.images for b in batches]).numpy(), images)
    np.testing.assert_array_equal(torch.cat([b.labels for b in batches]).numpy(), labels)


def test_shards_stored_another_way_are_read_through_h5py(tmp_path):
    """The direct reads rely on one raw chunk per image; a shard written with
    compression (as another tool might) is read through h5py, with the same crops."""
    import h5py

    data, images, labels = _data(tmp_path)
    shards = data.shard_set("train")
    path = shards.paths[1]
    with h5py.File(path, "r+") as f:
        pixels = f["images"][:]
        del f["images"]
        f.create_dataset("images", data=pixels, chunks=(2, S, S, 3), compression="gzip")
    ds = CropDataset(shards, C)
    starts = ds.index.starts  # shards of 4 images: the second holds images 4…7
    assert (starts[4:8] == -1).all() and (np.delete(starts, range(4, 8)) >= 0).all()
    sampler = EpochSampler(20, 20, size=S, crop=C, seed=2)
    plan = next(iter(sampler))
    batch = ds.__getitems__(plan)
    want, want_labels = _reference(images, labels, plan)
    np.testing.assert_array_equal(batch.images.numpy(), want)
    np.testing.assert_array_equal(batch.labels.numpy(), want_labels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_batches_come_through_the_pin_thread_and_free_their_slots(tmp_path):
    data, images, labels = _data(tmp_path)
    sampler = EpochSampler(20, 2, size=S, crop=C, seed=9)
    plans = _plans(sampler, range(2))
    loader = make_loader(
        CropDataset(data.shard_set("train"), C), sampler, workers=1, pin_memory=True
    )
    kept = []
    for e in range(2):
        sampler.set_epoch(e)
        kept += list(loader)
    for batch, plan in zip(kept, plans, strict=True):
        assert all(t.is_pinned() for t in batch)
        want, _ = _reference(images, labels, plan)
        np.testing.assert_array_equal(batch.images.numpy(), want)
    loader.ring.sweep()
    assert not loader.ring.flags.any()  # the pinned copies hold no slot


def test_more_workers_than_the_machine_can_use_are_lowered_with_a_warning(tmp_path, caplog):
    """`--workers 1000` forked a thousand copies of the process (hundreds of MB each)."""
    data, _, _ = _data(tmp_path)
    sampler = EpochSampler(20, 2, size=S, crop=C, seed=7)
    dataset = CropDataset(data.shard_set("train"), C)
    loader = make_loader(dataset, sampler, workers=1000, pin_memory=False)
    assert loader._loader is not None and loader._loader.num_workers == most_workers()
    assert loader.ring.arrays.shape[0] == most_workers()
    assert "1000 loader workers asked for" in caplog.text
    caplog.clear()
    fine = make_loader(dataset, sampler, workers=most_workers(), pin_memory=False)
    assert fine._loader is not None and fine._loader.num_workers == most_workers()
    assert not caplog.text


def test_running_out_of_open_files_says_so_and_never_blames_the_data(tmp_path):
    """EMFILE while reading is the limit's fault, not the shard's: the error says to raise
    `ulimit -n` or use fewer workers, and never to write the data again."""
    import os
    import resource

    from alexcli.errors import ResourceError

    data, _, _ = _data(tmp_path)
    ds = CropDataset(data.shard_set("train"), C)
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)  # the lowest free descriptor: with the limit there, no file opens
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
    try:
        with pytest.raises(ResourceError) as caught:
            ds.__getitems__([Sample(5, 0, 0, False)])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "too many open files" in caught.value.message
    assert "ulimit -n" in caught.value.hint and "verify" not in caught.value.hint
