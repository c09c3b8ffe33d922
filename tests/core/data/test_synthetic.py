"""The synthetic ILSVRC-shaped trees the tests and `alexcli demo` use."""

from __future__ import annotations

import csv
import struct

import numpy as np
import pytest
from PIL import Image

from alexcli.core.data import synthetic as sy


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_deterministic_for_a_seed(tmp_path):
    kw = {
        "classes": 3,
        "train_per_class": 2,
        "val_per_class": 2,
        "traps": True,
        "size_range": (60, 90),
    }
    sy.make_tree(tmp_path / "a", seed=1, **kw)
    sy.make_tree(tmp_path / "b", seed=1, **kw)
    sy.make_tree(tmp_path / "c", seed=2, **kw)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_tree_shape_labels_and_words(tmp_path):
    tree = sy.make_tree(tmp_path, classes=5, train_per_class=3, val_per_class=2)
    assert len(tree.classes) == 5 and list(tree.classes) == sorted(tree.classes)
    assert [sy.class_wnid(k) for k in range(5)] != sorted(tree.classes)  # wnid order ≠ k order
    assert len(tree.train) == 15 and len(tree.val) == 10
    for rel, wnid in tree.train:
        assert rel.startswith(f"train/{wnid}/") and (tmp_path / rel).is_file()
    with open(tmp_path / "LOC_val_solution.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ImageId", "PredictionString"]
    assert {f"val/{r[0]}.JPEG": r[1].split()[0] for r in rows[1:]} == dict(tree.val)
    mapping = (tmp_path / "LOC_synset_mapping.txt").read_text().splitlines()
    assert mapping[0] == f"{tree.classes[0]} {tree.words[tree.classes[0]]}"
    assert len({tree.words[c] for c in tree.classes}) == 5


def test_images_have_imagenet_like_sizes(tmp_path):
    tree = sy.make_tree(tmp_path, classes=4, train_per_class=6, val_per_class=0)
    sizes = []
    for rel, _ in tree.train:
        with Image.open(tmp_path / rel) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            sizes.append(img.size)
    assert all(300 <= s <= 500 for size in sizes for s in size)
    assert len(set(sizes)) > len(sizes) // 2  # varied
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes)


def test_classes_combine_shape_hue_and_texture():
    cues = [sy.class_cues(k) for k in range(sy.MAX_CLASSES)]
    assert len(set(cues)) == sy.MAX_CLASSES == 105  # every combination once
    with pytest.raises(ValueError):
        sy.class_cues(105)


def test_class_colour_is_a_cue_but_not_the_whole_story():
    """Mean hue of the central region separates the classes somewhat, not perfectly."""
    rng = np.random.default_rng(0)
    feats, labels = [], []
    for k in range(6):
        for _ in range(12):
            img = sy.synthetic_image(rng, k, (120, 160)).resize((24, 24))
            feats.append(np.asarray(img, np.float32)[6:18, 6:18].reshape(-1, 3).mean(0))
            labels.append(k)
    x, y = np.array(feats), np.array(labels)
    train, test = np.arange(len(y)) % 3 != 0, np.arange(len(y)) % 3 == 0
    centroids = np.array([x[train & (y == k)].mean(0) for k in range(6)])
    pred = np.argmin(((x[test, None] - centroids[None]) ** 2).sum(-1), 1)
    accuracy = (pred == y[test]).mean()
    assert 1 / 6 < accuracy < 0.95


def test_traps(tmp_path):
    tree = sy.make_tree(tmp_path, classes=4, train_per_class=1, val_per_class=1, traps=True)
    kinds = {kind: rel for rel, kind in tree.traps.items() if rel.startswith("train/")}
    assert set(kinds) == set(sy.CONVERTIBLE_TRAPS + sy.UNREADABLE_TRAPS)
    with Image.open(tmp_path / kinds["cmyk"]) as img:
        assert (img.format, img.mode) == ("JPEG", "CMYK")
    with Image.open(tmp_path / kinds["gray"]) as img:
        assert (img.format, img.mode) == ("JPEG", "L")
    with Image.open(tmp_path / kinds["png"]) as img:
        assert img.format == "PNG" and kinds["png"].endswith(".JPEG")
    with Image.open(tmp_path / kinds["palette"]) as img:
        assert img.mode == "P"
    with Image.open(tmp_path / kinds["exif"]) as img:
        assert img.getexif()[0x0112] == 6
    with Image.open(tmp_path / kinds["rgba"]) as img:
        assert img.mode == "RGBA"
    assert (tmp_path / kinds["empty"]).stat().st_size == 0
    header = (tmp_path / kinds["bomb"]).read_bytes()
    width, height = struct.unpack(">II", header[16:24])  # IHDR, read by hand: PIL refuses it
    assert header[:4] == b"\x89PNG" and width * height > 10**8
    with pytest.raises(OSError), Image.open(tmp_path / kinds["truncated"]) as img:
        img.load()
    trains = dict(tree.train)
    assert all(kinds[k] in trains for k in sy.CONVERTIBLE_TRAPS)
    assert not any(kinds[k] in trains for k in sy.UNREADABLE_TRAPS)
    val_traps = [rel for rel in tree.traps if rel.startswith("val/")]
    with Image.open(tmp_path / val_traps[0]) as img:
        assert img.mode == "L"


def test_devkit_and_folder_forms(tmp_path):
    dev = sy.make_tree(
        tmp_path / "d", classes=3, train_per_class=1, val_per_class=2, val_form="devkit"
    )
    data = tmp_path / "d" / "ILSVRC2012_devkit_t12" / "data"
    assert (data / "meta.mat").is_file()
    assert len((data / "ILSVRC2012_validation_ground_truth.txt").read_text().split()) == 6
    assert not (tmp_path / "d" / "LOC_val_solution.csv").exists()
    fold = sy.make_tree(
        tmp_path / "f", classes=3, train_per_class=1, val_per_class=2, val_form="folders"
    )
    assert all(rel == f"val/{w}/{rel.split('/')[-1]}" for rel, w in fold.val)
    assert [w for _, w in dev.val] == [w for _, w in sorted(dev.val)]


def test_image_folder_mixes_formats(tmp_path):
    tree = sy.make_image_folder(tmp_path, classes=2, train_per_class=3, val_per_class=1)
    formats = set()
    for rel, name in tree.train:
        assert rel.startswith(f"train/{name}/")
        with Image.open(tmp_path / rel) as img:
            formats.add(img.format)
    assert formats == {"JPEG", "PNG", "BMP"}
