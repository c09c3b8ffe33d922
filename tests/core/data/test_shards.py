"""The HDF5 shard format: round trip, self-description, corrupt and foreign files."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from alexcli.core.data.shards import (
    RAW_SCHEMA_VERSION,
    SCHEMA_VERSION,
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
    write_shard(
        tmp_path / "s.h5", imgs, [0, 1, 2, 1, 0], [f"a/{i}.JPEG" for i in range(5)], split="train"
    )
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
    with (
        pytest.raises(RuntimeError),
        ShardWriter(tmp_path / "s.h5", split="val", size=8, capacity=4) as w,
    ):
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


# --------------------------------------------------------------------------- JPEG records


def _photos(n, size=32, seed=0):
    """Smooth colour images (JPEG's kind), each its own gradient and noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0.2, 1, 3)
        base = np.stack(
            [
                a * np.outer(ramp, ramp),
                b * np.outer(1 - ramp, ramp),
                c * ramp[:, None] * np.ones(size),
            ],
            -1,
        )
        out.append((base * 230 + rng.normal(0, 5, base.shape)).clip(0, 255))
    return np.asarray(out, np.uint8)


def _pil(image, quality):
    """An independent reference: PIL's own encode and decode of the image."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_jpeg_round_trip(tmp_path):
    imgs = _photos(5)
    write_shard(
        tmp_path / "s.h5",
        imgs,
        [0, 1, 2, 1, 0],
        [f"a/{i}.JPEG" for i in range(5)],
        split="train",
        encoding="jpeg",
        quality=85,
    )
    with open_shard(tmp_path / "s.h5", "train") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION and f.attrs["encoding"] == "jpeg"
        assert f.attrs["quality"] == 85 and f.attrs["subsampling"] == "4:2:0"
        assert "images" not in f and f["jpeg"].chunks is None  # one contiguous dataset
        offsets = f["offsets"][:]
        assert offsets[0] == 0 and offsets[-1] == f["jpeg"].shape[0] and len(offsets) == 6
        assert f["paths"].asstr()[3] == "a/3.JPEG" and list(f["labels"][:]) == [0, 1, 2, 1, 0]
    ds = ShardSet([tmp_path / "s.h5"], [5], split="train")
    for i in range(5):
        np.testing.assert_array_equal(ds.image(i), _pil(imgs[i], 85))
    index = ds.index()
    assert (index.lengths == np.diff(offsets)).all() and (index.starts > 0).all()
    assert list(ds.labels()) == [0, 1, 2, 1, 0]


def test_an_image_reader_decodes_jpeg_records_with_one_read_each(tmp_path):
    from alexcli.core.data.shards import ImageReader

    imgs = _photos(6, seed=1)
    write_shard(tmp_path / "0.h5", imgs[:4], [0] * 4, ["x"] * 4, split="train", encoding="jpeg")
    write_shard(tmp_path / "1.h5", imgs[4:], [1] * 2, ["y"] * 2, split="train")  # raw beside
    reader = ImageReader(ShardSet([tmp_path / "0.h5", tmp_path / "1.h5"], [4, 2], split="train"))
    indices, ys = np.array([5, 2, 0, 4]), np.array([3, 0, 7, 1])
    for rows, i, y in zip(reader.rows(indices, ys, 20), indices, ys, strict=True):
        want = imgs[i] if i >= 4 else _pil(imgs[i], 90)
        np.testing.assert_array_equal(rows.numpy(), want[y : y + 20])
    reader.close()


def test_a_jpeg_shard_laid_out_otherwise_is_read_through_h5py(tmp_path):
    imgs = _photos(3)
    write_shard(tmp_path / "s.h5", imgs, [0] * 3, ["x"] * 3, split="train", encoding="jpeg")
    with h5py.File(tmp_path / "s.h5", "r+") as f:
        data = f["jpeg"][:]
        del f["jpeg"]
        f.create_dataset("jpeg", data=data, chunks=(1000,), compression="gzip")
    ds = ShardSet([tmp_path / "s.h5"], [3], split="train")
    assert (ds.index().starts == -1).all()
    from alexcli.core.data.shards import ImageReader

    rows = next(ImageReader(ds).rows(np.array([2]), np.array([5]), 10))
    np.testing.assert_array_equal(rows.numpy(), _pil(imgs[2], 90)[5:15])


def test_a_raw_shard_as_the_first_schema_wrote_it_still_reads(tmp_path):
    """Built by hand with h5py, as alexcli wrote every shard before JPEG records: schema
    1, no `encoding` attribute."""
    imgs = _images(3)
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.create_dataset("images", data=imgs, chunks=(1, 8, 8, 3), maxshape=(None, 8, 8, 3))
        f["labels"] = np.array([2, 0, 1], np.int32)
        f.create_dataset("paths", data=["a", "b", "c"], dtype=h5py.string_dtype("utf-8"))
        f.attrs.update(format="alexcli-shard", schema_version=1, split="val", size=8, count=3)
    ds = ShardSet([tmp_path / "old.h5"], [3], split="val")
    np.testing.assert_array_equal(ds.image(1), imgs[1])
    assert (ds.index().starts >= 0).all() and (ds.index().lengths == 0).all()


def test_a_newer_schema_or_unknown_encoding_is_refused_by_name(tmp_path):
    write_shard(tmp_path / "s.h5", _photos(2), [0, 0], ["a", "b"], split="train", encoding="jpeg")
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f.attrs["encoding"] = "webp"
    with pytest.raises(FormatError, match=r"s\.h5: unknown image encoding 'webp'"):
        open_shard(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f.attrs["schema_version"] = 3
    with pytest.raises(FormatError, match="schema version 3, this alexcli reads 1 and 2"):
        open_shard(tmp_path / "s.h5")


def _record_place(path, i):
    """The byte range of record i in the shard file."""
    with h5py.File(path, "r") as f:
        base, offsets = f["jpeg"].id.get_offset(), f["offsets"][:]
    return base + int(offsets[i]), base + int(offsets[i + 1])


def _damage_file(path, i, how):
    start, stop = _record_place(path, i)
    data = bytearray(path.read_bytes())
    if how == "flipped":
        data[start + 40 : start + 48] = bytes(b ^ 0xFF for b in data[start + 40 : start + 48])
    elif how == "zeroed":
        data[start:stop] = bytes(stop - start)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flipped", "zeroed", "cut short", "offsets out of order"])
def test_a_damaged_jpeg_record_is_one_line_naming_shard_and_image(tmp_path, how):
    from alexcli.core.data.shards import ImageReader

    path = tmp_path / "s.h5"
    write_shard(path, _photos(4), [0] * 4, ["x"] * 4, split="train", encoding="jpeg")
    if how == "cut short":  # record 2 loses its last bytes; the offsets follow
        with h5py.File(path, "r+") as f:
            data, offsets = f["jpeg"][:], f["offsets"][:]
            cut = np.concatenate([data[: offsets[3] - 50], data[offsets[3] :]])
            offsets[3:] -= 50
            del f["jpeg"]
            f.create_dataset("jpeg", data=cut)
            f["offsets"][:] = offsets
    elif how == "offsets out of order":
        with h5py.File(path, "r+") as f:
            f["offsets"][2] = f["offsets"][3] + 10
    else:
        _damage_file(path, 2, how)
    ds = ShardSet([path], [4], split="train")
    if how == "offsets out of order":
        with pytest.raises(FormatError, match=r"s\.h5: image offsets out of order"):
            ds.index()
        return
    with pytest.raises(FormatError, match=r"s\.h5: unreadable image 2 \(.*CRC-32") as e:
        list(ImageReader(ds).rows(np.array([0, 1, 2, 3]), np.zeros(4, np.int64), 8))
    assert "--verify" in (e.value.hint or "")
    with pytest.raises(FormatError, match=r"s\.h5: unreadable image 2"):
        ShardSet([path], [4], split="train").image(2)
    ds.image(3)  # the others still read


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads Linux's /proc")
def test_reading_many_jpeg_shards_keeps_a_bounded_number_of_files_open(tmp_path):
    """The loader's reader holds at most OPEN_FILES descriptors and maps nothing, however
    many shards an epoch visits, JPEG records as raw images."""
    import os

    from alexcli.core.data.shards import OPEN_FILES, ImageReader

    imgs = _photos(2 * (OPEN_FILES + 9), size=16)
    paths = []
    for s in range(OPEN_FILES + 9):
        paths.append(tmp_path / f"{s:05d}.h5")
        write_shard(
            paths[-1], imgs[2 * s : 2 * s + 2], [0, 1], ["a", "b"], split="train", encoding="jpeg"
        )
    reader = ImageReader(ShardSet(paths, [2] * len(paths), split="train"))
    before = len(os.listdir("/proc/self/fd"))
    order = np.random.default_rng(0).permutation(len(imgs))
    for rows, i in zip(reader.rows(order, np.zeros(len(order), np.int64), 16), order, strict=True):
        np.testing.assert_array_equal(rows.numpy(), _pil(imgs[i], 90))
    assert len(os.listdir("/proc/self/fd")) - before <= OPEN_FILES
    maps = Path("/proc/self/maps").read_text()
    assert not any(str(p) in maps for p in paths)
    reader.close()
    assert len(os.listdir("/proc/self/fd")) <= before
