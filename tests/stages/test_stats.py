"""`alexcli stats`: the mean image and RGB PCA against float64 numpy, the stats.h5
format, caching, the fingerprint refusal, corrupt shards, and the command."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from alexcli.config import StatsConfig
from alexcli.core.data.shards import write_shard
from alexcli.core.data.stats import centred_moment, eigen, read_stats, shard_sums, write_stats
from alexcli.core.progress import Recorder
from alexcli.errors import FormatError, StaleInputError, UserError
from alexcli.stages.datadir import check_stats_current, open_data_dir
from alexcli.stages.stats import run_stats
from tests.helpers import write_data_dir


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Correlated colours (a shared brightness plus channel noise of different spreads),
    so that the three eigenvalues are distinct and the first component is brightness."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 160, (n, size, size, 1))
    noise = rng.integers(0, 96, (n, size, size, 3)) * np.array([1.0, 0.6, 0.3])
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _data_dir(root, n=11, size=6, shard_size=4, fingerprint="data-v1", seed=0):
    images = _images(n, size, seed)
    labels = np.arange(n) % 3
    val = _images(3, size, seed + 1)
    write_data_dir(
        root,
        {"train": (images, labels), "val": (val, labels[:3])},
        shard_size=shard_size,
        fingerprint=fingerprint,
    )
    return images


def _reference(images: np.ndarray) -> dict[str, np.ndarray]:
    """The same statistics the plain way, in float64."""
    x = images.reshape(-1, 3).astype(np.float64)
    values, vectors = np.linalg.eigh(np.cov(x.T, bias=True))
    return {
        "mean": images.astype(np.float64).mean(axis=0),
        "rgb_mean": x.mean(axis=0),
        "rgb_cov": np.cov(x.T, bias=True),
        "eigval": values[::-1],
        "eigvec": vectors[:, ::-1],
    }


# 11 images in shards of 4, 4, 3 (two boundaries, an odd count); 6×6 = 36 pixels an
# image, so the int8 GEMM (rows of 16 pixels) and the numpy tail both take part.
@pytest.mark.parametrize(("n", "size", "shard_size", "jobs"), [(11, 6, 4, 1), (9, 8, 2, 2)])
def test_every_array_matches_float64_numpy(tmp_path, n, size, shard_size, jobs):
    images = _data_dir(tmp_path, n=n, size=size, shard_size=shard_size)
    stats = run_stats(tmp_path, StatsConfig(jobs=jobs)).stats
    ref = _reference(images)
    assert stats.images == n and stats.mean.dtype == np.float32
    np.testing.assert_allclose(stats.mean, ref["mean"], rtol=1e-6)
    np.testing.assert_allclose(stats.rgb_mean, ref["rgb_mean"], rtol=1e-14)
    np.testing.assert_allclose(stats.rgb_cov, ref["rgb_cov"], rtol=1e-10)
    np.testing.assert_allclose(stats.eigval, ref["eigval"], rtol=1e-10)
    np.testing.assert_allclose(np.abs(stats.eigvec), np.abs(ref["eigvec"]), atol=1e-8)
    np.testing.assert_allclose(stats.eigstd, np.sqrt(ref["eigval"]), rtol=1e-10)


def test_moment_is_exact_integer_arithmetic():
    # All-zero pixels give the largest products (128²): 2.1 M of them (2¹⁷ rows of 16)
    # overflow int32 unless the GEMM is split; random ones check every entry
    # against Python integers.
    zeros = np.zeros((2**21 + 5, 3), np.uint8)
    assert (centred_moment(zeros) == 128 * 128 * len(zeros)).all()
    full = np.full((70_001, 3), 255, np.uint8)
    assert (centred_moment(full) == 127 * 127 * len(full)).all()
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (50_003, 3), dtype=np.uint8)
    y = pixels.astype(object) - 128
    expected = np.array([[sum(y[:, c] * y[:, d]) for d in range(3)] for c in range(3)])
    assert centred_moment(pixels).tolist() == expected.tolist()


@pytest.mark.parametrize("block", [None, 7])
def test_shard_sums_hold_more_than_a_uint16_of_white_images(tmp_path, block):
    # 600 white images: per-position sums pass 65,535 (uint16) twice; blocks of 7
    # leave a partial block at the end.
    images = np.full((600, 2, 2, 3), 255, np.uint8)
    images[-1] = 0
    write_shard(tmp_path / "s.h5", images, np.zeros(600, int), ["x"] * 600, split="train")
    sums = shard_sums(tmp_path / "s.h5", 600, 2, block=block)
    assert sums.images == 600 and (sums.pixel_sum == 599 * 255).all()
    assert (sums.moment == 599 * 4 * 127 * 127 + 4 * 128 * 128).all()
    with pytest.raises(FormatError, match="the manifest says 601"):
        shard_sums(tmp_path / "s.h5", 601, 2)
    write_shard(tmp_path / "v.h5", images[:2], [0, 0], ["x", "y"], split="val")
    with pytest.raises(FormatError, match="a 'val' shard, expected 'train'"):
        shard_sums(tmp_path / "v.h5")


def test_eigen_orientation_convention(tmp_path):
    _data_dir(tmp_path)
    stats = run_stats(tmp_path).stats
    cov, values, vectors = stats.rgb_cov, stats.eigval, stats.eigvec
    for i in range(3):  # column i is the eigenvector of eigval[i]
        np.testing.assert_allclose(cov @ vectors[:, i], values[i] * vectors[:, i], atol=1e-9)
        assert vectors[np.argmax(np.abs(vectors[:, i])), i] > 0  # the sign rule
    assert values[0] > values[1] > values[2] > 0
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-12)
    assert (vectors[:, 0] > 0).all()  # the first component: brightness, all positive
    # The rule holds whatever signs eigh hands back: fb.resnet.torch's published
    # eigenvectors have a negative first column; ours flips it.
    fb = np.array(
        [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    )
    fb_vals, fb_vecs = eigen(fb @ np.diag([0.2175, 0.0188, 0.0045]) @ fb.T)
    np.testing.assert_allclose(fb_vals, [0.2175, 0.0188, 0.0045], atol=1e-3)
    np.testing.assert_allclose(fb_vecs, fb * np.array([-1, 1, -1]), atol=2e-3)


def test_stats_h5_round_trip_attributes_and_png(tmp_path):
    images = _data_dir(tmp_path)
    result = run_stats(tmp_path)
    assert result.stats_path == tmp_path / "stats.h5"
    with h5py.File(result.stats_path, "r") as f:
        assert f.attrs["format"] == "alexcli-stats" and f.attrs["schema_version"] == 1
        assert f.attrs["images"] == len(images)
        assert f.attrs["data_fingerprint"] == open_data_dir(tmp_path).fingerprint
        assert f["mean"].dtype == np.float32 and f["mean"].shape == (6, 6, 3)
    back = read_stats(result.stats_path)
    for name in ("mean", "rgb_mean", "rgb_cov", "eigval", "eigvec"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result.stats, name))
    png = np.asarray(Image.open(result.mean_png))
    np.testing.assert_array_equal(png, np.rint(images.mean(axis=0)).astype(np.uint8))


def test_read_stats_refuses_foreign_and_other_versions(tmp_path):
    path = tmp_path / "stats.h5"
    with pytest.raises(UserError, match="not found"):
        read_stats(path)
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(FormatError, match="not an alexcli stats file") as e:
        read_stats(path)
    assert "alexcli stats" in e.value.hint and "--force" in e.value.hint
    _data_dir(tmp_path)
    write_stats(path, run_stats(tmp_path, force=True).stats)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(FormatError, match="schema version 99"):
        read_stats(path)
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(FormatError, match="unreadable"):
        read_stats(path)


def test_second_run_is_up_to_date_and_force_recomputes(tmp_path):
    _data_dir(tmp_path)
    first = run_stats(tmp_path)
    assert not first.up_to_date and (tmp_path / "stats.json").exists()
    rec = Recorder()
    second = run_stats(tmp_path, StatsConfig(jobs=2), progress=rec)  # jobs: not a result
    assert second.up_to_date and any("up to date" in line for line in rec.lines)
    mtime = first.stats_path.stat().st_mtime_ns
    assert run_stats(tmp_path, force=True).up_to_date is False
    assert first.stats_path.stat().st_mtime_ns != mtime
    _data_dir(tmp_path, seed=5, fingerprint="data-v2")  # new shards: recomputed
    third = run_stats(tmp_path)
    assert not third.up_to_date
    assert third.stats.data_fingerprint == open_data_dir(tmp_path).fingerprint


def test_train_refuses_stats_of_other_shards(tmp_path):
    _data_dir(tmp_path)
    with pytest.raises(UserError, match="not found") as e:
        check_stats_current(tmp_path)
    assert e.value.hint == f"run `alexcli stats {tmp_path}`"
    run_stats(tmp_path)
    fp = open_data_dir(tmp_path).fingerprint
    assert check_stats_current(tmp_path).data_fingerprint == fp
    _data_dir(tmp_path, seed=5, fingerprint="data-v2")
    with pytest.raises(StaleInputError, match="other shards") as e:
        check_stats_current(tmp_path)
    assert e.value.hint == f"run `alexcli stats {tmp_path}`"
    # Same prepare fingerprint, different shard contents (a non-deterministic rerun).
    run_stats(tmp_path)
    _data_dir(tmp_path, seed=6, fingerprint="data-v2")
    with pytest.raises(StaleInputError):
        check_stats_current(tmp_path)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path):
    path.unlink()
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 6, 6, 3), np.uint8)


@pytest.mark.parametrize("spoil", [_truncate, _foreign])
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_corrupt_shard_is_named_and_nothing_is_left_behind(tmp_path, spoil, jobs):
    _data_dir(tmp_path)
    spoil(tmp_path / "train" / "00001.h5")
    with pytest.raises(FormatError, match=r"00001\.h5") as e:
        run_stats(tmp_path, StatsConfig(jobs=jobs))
    assert "alexcli prepare" in e.value.hint  # also from a worker thread
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "train", "val"]


def test_corrupt_shard_from_the_command_line(tmp_path, cli):
    _data_dir(tmp_path)
    _truncate(tmp_path / "train" / "00002.h5")
    r = cli("stats", tmp_path, "--jobs", "1")
    assert r.code == 2 and "00002.h5" in r.err and "Traceback" not in r.err
    assert len([line for line in r.err.splitlines() if line.startswith("error:")]) == 1


def test_validation_shards_are_never_read(tmp_path):
    _data_dir(tmp_path)
    (tmp_path / "val" / "00000.h5").write_bytes(b"garbage")
    (tmp_path / "val" / "00000.h5").chmod(0)
    assert run_stats(tmp_path).stats.images == 11


def test_no_training_images(tmp_path):
    _data_dir(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["splits"]["train"] = {"images": 0, "shards": []}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="no training images") as e:
        run_stats(tmp_path)
    assert "--force" not in str(e.value.hint)  # rewriting the same nothing would not help
    assert "skipped" in str(e.value.hint)


@pytest.mark.parametrize("spoil", ["truncate", "garbage"])
def test_a_damaged_stats_h5_is_computed_again_not_up_to_date(tmp_path, cli, spoil):
    images = _data_dir(tmp_path)
    assert cli("stats", tmp_path, "--jobs", "1").code == 0
    path = tmp_path / "stats.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if spoil == "truncate" else b"junk")
    r = cli("stats", tmp_path, "--jobs", "1", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["up_to_date"] is False
    np.testing.assert_allclose(read_stats(path).rgb_mean, _reference(images)["rgb_mean"])


def test_command_prints_a_table_and_json(tmp_path, cli):
    images = _data_dir(tmp_path)
    ref = _reference(images)
    r = cli("stats", tmp_path, "--jobs", "1")
    assert r.code == 0, r.err
    assert "eigenvalue" in r.out and "11 training images" in r.out
    assert f"{ref['rgb_mean'][0]:.2f}" in r.out and f"{ref['eigval'][0]:.2f}" in r.out
    assert str(tmp_path / "stats.h5") in r.out
    r = cli("stats", tmp_path, "--json")
    data = json.loads(r.out)
    assert data["up_to_date"] and data["images"] == 11 and data["units"] == "0-255"
    np.testing.assert_allclose(data["eigval"], ref["eigval"], rtol=1e-10)
    np.testing.assert_allclose(data["rgb_mean"], ref["rgb_mean"], rtol=1e-12)
    assert np.array(data["eigvec"]).shape == (3, 3) and data["stats"].endswith("stats.h5")
