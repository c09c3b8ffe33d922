"""One shard from a plan: written whole, kept when its plan matches, never by an orphan."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from PIL import Image

from alexcli.core.data import decode
from alexcli.core.data.packing import ShardPlan, pack_shard
from alexcli.core.data.shards import open_shard


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    (root / "c").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        arr = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "c" / f"{i}.png")
    (root / "c" / "bad.JPEG").write_bytes(b"")
    return root


def plan(fp="plan-a"):
    names = ("c/0.png", "c/bad.JPEG", "c/1.png", "c/2.png")
    return ShardPlan("train", "train/00000.h5", names, (0, 1, 1, 0), fp)


def test_writes_the_images_and_reports_the_skipped(source, tmp_path):
    out = tmp_path / "out"
    done = pack_shard(str(source), str(out), plan(), 16, "bilinear", reuse=True)
    assert (done.images, done.reused) == (3, False)
    assert done.skipped == [{"path": "c/bad.JPEG", "reason": decode.EMPTY, "detail": "0 bytes"}]
    with open_shard(out / done.path, "train") as f:
        assert f.attrs["plan"] == "plan-a"
        assert [p.decode() for p in f["paths"][:]] == ["c/0.png", "c/1.png", "c/2.png"]
        assert list(f["labels"][:]) == [0, 1, 0]
        np.testing.assert_array_equal(f["images"][1], decode.load_image(source / "c/1.png", 16))


def test_a_finished_shard_of_the_same_plan_is_kept(source, tmp_path):
    out = tmp_path / "out"
    first = pack_shard(str(source), str(out), plan(), 16, "bilinear", reuse=True)
    stamp = (out / first.path).stat().st_mtime_ns
    again = pack_shard(str(source), str(out), plan(), 16, "bilinear", reuse=True)
    assert again.reused and again.sha256 == first.sha256 and again.skipped == first.skipped
    assert (out / first.path).stat().st_mtime_ns == stamp
    other = pack_shard(str(source), str(out), plan("plan-b"), 16, "bilinear", reuse=True)
    assert not other.reused
    forced = pack_shard(str(source), str(out), plan("plan-b"), 16, "bilinear", reuse=False)
    assert not forced.reused and forced.sha256 != first.sha256  # the new plan attribute


def test_a_worker_whose_parent_died_writes_nothing(source, tmp_path):
    out = tmp_path / "out"
    not_my_parent = os.getppid() + 1
    with pytest.raises(SystemExit):
        pack_shard(str(source), str(out), plan(), 16, "bilinear", True, parent=not_my_parent)
    assert not (out / "train").exists() or not any((out / "train").iterdir())


def test_conversions_are_reported_and_kept_with_the_shard(source, tmp_path):
    """A kept shard reports the same conversions as when it was written, without
    decoding; one written before conversions were recorded is written again."""
    Image.fromarray(np.full((30, 40), 90, np.uint8)).save(source / "c" / "gray.JPEG", "PNG")
    names = ("c/0.png", "c/bad.JPEG", "c/gray.JPEG", "c/1.png")
    p = ShardPlan("train", "train/00000.h5", names, (0, 1, 1, 0), "plan-c")
    out = tmp_path / "out"
    first = pack_shard(str(source), str(out), p, 16, "bilinear", reuse=True)
    assert first.converted == [{"path": "c/gray.JPEG", "what": ["png named .JPEG", "grayscale"]}]
    (source / "c" / "gray.JPEG").write_bytes(b"")  # were it decoded again, it would be skipped
    again = pack_shard(str(source), str(out), p, 16, "bilinear", reuse=True)
    assert again.reused and again.converted == first.converted
    with h5py.File(out / p.path, "r+") as f:  # as shards were before this attribute
        del f.attrs["converted"]
    older = pack_shard(str(source), str(out), p, 16, "bilinear", reuse=True)
    assert not older.reused and older.converted == [] and older.images == 2
