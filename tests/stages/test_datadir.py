"""Reading a prepared DATA_DIR."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alexcli.errors import FormatError, UserError
from alexcli.stages.datadir import open_data_dir
from tests.helpers import write_data_dir


def test_open_data_dir_reads_classes_splits_and_shards(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    write_data_dir(tmp_path, {"train": (imgs, labels), "val": (imgs[:3], labels[:3])})
    d = open_data_dir(tmp_path)
    assert d.class_names == ["n00000000", "n00000001", "n00000002"] and d.size == 8
    assert [s.images for s in d.shards("train")] == [4, 4, 2] and d.images("val") == 3
    ds = d.shard_set("train")
    np.testing.assert_array_equal(ds.image(9), imgs[9])
    assert list(ds.labels()) == list(labels)
    with pytest.raises(UserError, match="no 'test' split"):
        d.shards("test")


def test_missing_and_malformed_data_dirs(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        open_data_dir(tmp_path / "nope")
    with pytest.raises(UserError, match="has not run"):
        open_data_dir(tmp_path)
    (tmp_path / "manifest.json").write_text('{"stage": "prepare", "classes": 3}')
    with pytest.raises(FormatError, match="malformed"):
        open_data_dir(tmp_path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(size=-5),  # was: "negative dimensions are not allowed"
        lambda m: m["splits"]["train"]["shards"][0].update(images="x"),  # int() failed late
        lambda m: m["splits"]["train"]["shards"][0].update(path=None),
    ],
)
def test_a_hand_edited_manifest_is_one_line_naming_it(tmp_path, edit):
    imgs = np.zeros((4, 8, 8, 3), np.uint8)
    write_data_dir(tmp_path, {"train": (imgs, np.arange(4) % 2), "val": (imgs, np.arange(4) % 2)})
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match=r"manifest\.json: malformed manifest"):
        open_data_dir(tmp_path)


def test_a_manifest_nested_beyond_the_parser_is_not_a_manifest(tmp_path):
    imgs = np.zeros((4, 8, 8, 3), np.uint8)
    write_data_dir(tmp_path, {"train": (imgs, np.arange(4) % 2), "val": (imgs, np.arange(4) % 2)})
    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError
    with pytest.raises(UserError, match="manifest"):
        open_data_dir(tmp_path)
