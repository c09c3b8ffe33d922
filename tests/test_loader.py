"""The loader: seeded shuffles, exact mid-epoch resume, disjoint DDP parts, crops read right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_data_dir

from alexcli.core.loader import CropDataset, EpochSampler, Sample, default_workers, make_loader
from alexcli.stages.datadir import open_data_dir

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


def test_batch_must_split_over_the_processes():
    with pytest.raises(ValueError, match="multiple"):
        EpochSampler(64, 10, size=S, crop=C, world=4)


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
    loader = make_loader(CropDataset(data.shard_set("train"), C), sampler, workers=0,
                         pin_memory=False)  # fmt: skip
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(loader)
    assert torch.equal(before, torch.get_rng_state())


def test_default_workers_leaves_a_core_for_training():
    assert default_workers() >= 0
    assert default_workers(processes_per_node=1000) == 0
