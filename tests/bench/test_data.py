"""bench/data.py: the plain alternatives prepare, stats and the loader are timed against."""

from __future__ import annotations

import numpy as np
import pytest

from alexcli.bench.data import (
    decode_only,
    decode_throughput,
    plain_read,
    prepare_vs_decode,
    stats_vs_read,
)
from alexcli.core.data import archives
from alexcli.core.data.synthetic import make_tree, synthetic_image
from alexcli.stages.datadir import open_data_dir
from tests.helpers import write_data_dir


def test_the_plain_decode_loop_counts_only_what_decodes(tmp_path):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.jpg")
        synthetic_image(np.random.default_rng(i), i, (60, 90)).save(paths[-1], "JPEG")
    (tmp_path / "bad.jpg").write_bytes(b"")
    assert decode_only(paths[0]) > 0  # its pixel count
    assert decode_throughput([*paths, tmp_path / "bad.jpg"], jobs=2, chunk=2) > 0


def test_stats_is_timed_beside_a_plain_read_of_the_same_shards(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, 6, 6, 3), dtype=np.uint8)
    labels = np.arange(11) % 3
    write_data_dir(tmp_path, {"train": (images, labels), "val": (images[:3], labels[:3])})
    shards = open_data_dir(tmp_path).shard_set("train")
    assert plain_read(shards.paths, block=4) == 11
    b = stats_vs_read(tmp_path, jobs=1, repeats=1)
    assert b.images == 11 and b.read_images_per_s > 0 and b.stats_images_per_s > 0
    assert b.ratio == pytest.approx(b.stats_images_per_s / b.read_images_per_s)


def test_prepare_is_timed_against_decoding_the_same_files_inside_the_archives(tmp_path):
    """From ILSVRC-2012's archives the plain loop decodes the files' bytes (read out of
    the tars), not paths that exist only in an extracted tree: every image decodes."""
    tree = make_tree(tmp_path / "tree", classes=3, train_per_class=4, val_per_class=2)
    archives.write_archives(tree.root, tmp_path / "download")
    got = prepare_vs_decode(tmp_path / "download", tmp_path / "data", jobs=1)
    assert got["images"] == 3 * 4 + 3 * 2
    assert got["decode_only_images_per_s"] > 0 and got["prepare_images_per_s"] > 0
    one = next((tree.root / "train").rglob("*.JPEG")).read_bytes()
    assert decode_only(one) > 0 and decode_throughput([one], jobs=1) > 0
