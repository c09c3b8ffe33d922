"""The HDF5 shard format: round trip, self-description, corrupt and foreign files."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from alexcli.core.data.shards import (
    RAW_SCHEMA_VERSION,
    ShardSet,
    ShardWriter,
    open_shard,
    write_shard,
)
from alexcli.errors import FormatError


def _images(n, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_round_trip(tmp_path):
    imgs = _images(5)
    write_shard(tmp_path / "s.h5", imgs, [0, 1, 2, 1, 0], [f"a/{i}.JPEG" for i in range(5)],
                split="train")  # fmt: skip
    with open_shard(tmp_path / "s.h5", "train") as f:
        assert f.attrs["format"] == "alexcli-shard" and f.attrs["count"] == 5
        assert f.attrs["schema_version"] == RAW_SCHEMA_VERSION and f.attrs["size"] == 8
        np.testing.assert_array_equal(f["images"][:], imgs)
        assert list(f["labels"][:]) == [0, 1, 2, 1, 0]
        assert f["paths"].asstr()[3] == "a/3.JPEG"
        assert f["images"].chunks == (1, 8, 8, 3)


def test_writer_trims_to_what_was_added(tmp_path):
    with ShardWriter(tmp_path / "s.h5", split="val", size=8, capacity=10) as w:
        for i, img in enumerate(_images(3)):
            w.add(img, i, f"{i}.png")
    with open_shard(tmp_path / "s.h5") as f:
        assert f["images"].shape == (3, 8, 8, 3) and f.attrs["count"] == 3


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "s.h5", split="val", size=8,
                                                  capacity=4) as w:  # fmt: skip
        w.add(_images(1)[0], 0, "x")
        raise RuntimeError("decode failed")
    assert list(tmp_path.iterdir()) == []


def test_foreign_truncated_and_old_files_are_refused_by_name(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FormatError, match=r"junk\.h5") as e:
        open_shard(tmp_path / "junk.h5")
    assert "alexcli prepare" in (e.value.hint or "")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["images"] = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(FormatError, match="not an alexcli shard"):
        open_shard(tmp_path / "foreign.h5")
    write_shard(tmp_path / "old.h5", _images(2), [0, 0], ["a", "b"], split="train")
    with h5py.File(tmp_path / "old.h5", "a") as f:
        f.attrs["schema_version"] = 0
    with pytest.raises(FormatError, match="schema version 0"):
        open_shard(tmp_path / "old.h5")
    write_shard(tmp_path / "whole.h5", _images(40, 32), [0] * 40, ["p"] * 40, split="train")
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"cut\.h5"):
        open_shard(tmp_path / "cut.h5")


def test_shardset_indexes_across_shard_boundaries(tmp_path):
    a, b = _images(3, seed=1), _images(4, seed=2)
    write_shard(tmp_path / "0.h5", a, [0, 1, 2], ["x"] * 3, split="train")
    write_shard(tmp_path / "1.h5", b, [3, 4, 5, 6], ["y"] * 4, split="train")
    ds = ShardSet([tmp_path / "0.h5", tmp_path / "1.h5"], [3, 4], split="train")
    assert len(ds) == 7 and ds.locate(3) == (1, 0)
    np.testing.assert_array_equal(ds.image(2), a[2])
    np.testing.assert_array_equal(ds.image(6), b[3])
    assert list(ds.labels()) == [0, 1, 2, 3, 4, 5, 6]
    with pytest.raises(IndexError):
        ds.locate(7)
    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives
    np.testing.assert_array_equal(clone.image(4), b[1])


def test_shardset_refuses_a_count_that_disagrees_with_the_manifest(tmp_path):
    write_shard(tmp_path / "0.h5", _images(3), [0, 1, 2], ["x"] * 3, split="train")
    with pytest.raises(FormatError, match="holds 3 images, the manifest says 5"):
        ShardSet([tmp_path / "0.h5"], [5]).image(0)
