"""`alexcli prepare`: image trees in, shards + manifest out, as a user sees it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image, ImageOps

from alexcli.config import PrepareConfig
from alexcli.core.data import decode
from alexcli.core.data.synthetic import make_image_folder, make_tree
from alexcli.core.fingerprint import file_digest
from alexcli.stages.datadir import open_data_dir
from alexcli.stages.prepare import run_prepare
from alexcli.stages.prepare.source import shard_count
from tests.core.data.test_decode import close_to
from tests.core.data.test_decode import reference as resize_reference

EXPECTED_REASONS = {
    "truncated": decode.TRUNCATED,
    "empty": decode.EMPTY,
    "stray": decode.NOT_IMAGE,
    "bomb": decode.BOMB,
}
# What prepare says it did to each convertible trap (core/data/synthetic.py), as a user reads it.
EXPECTED_CONVERSIONS = {
    "cmyk": ["cmyk"],
    "gray": ["grayscale"],
    "png": ["png named .JPEG"],
    "palette": ["png named .JPEG", "palette"],
    "exif": ["exif rotated"],
    "rgba": ["png named .JPEG", "alpha"],
}


def reference(path: Path, size: int) -> np.ndarray:
    """Independently: the upright image, transparency over white, the paper's resize."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "P"):
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        return resize_reference(img, size)


def read_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and paths of a split, straight from the shards the manifest lists."""
    d = open_data_dir(data_dir)
    imgs, labels, paths = [], [], []
    for entry in d.shards(split):
        with h5py.File(data_dir / entry.path, "r") as f:
            imgs.append(f["images"][:])
            labels.append(f["labels"][:])
            paths += [p.decode() for p in f["paths"][:]]
    size = d.size
    return (
        np.concatenate(imgs) if imgs else np.zeros((0, size, size, 3), np.uint8),
        np.concatenate(labels) if labels else np.zeros(0, np.int32),
        paths,
    )


def run(src, out, *args, jobs=1):
    return ["prepare", str(src), str(out), "--jobs", str(jobs), *map(str, args)]


def test_an_ilsvrc_tree_with_traps(cli, synthetic_tree, tmp_path):
    tree, out = synthetic_tree, tmp_path / "data"
    r = cli(*run(tree.root, out, "--size", 64))
    assert r.code == 0, r.err
    assert "train images" in r.out and "skipped" in r.out
    d = open_data_dir(out)
    assert d.class_names == sorted(tree.classes) and d.size == 64
    assert [c["words"] for c in d.classes] == [tree.words[c] for c in d.class_names]
    # Counts: every image, the converted traps among them, none of the unreadable ones.
    truth = dict(tree.train) | dict(tree.val)
    assert d.images("train") == len(tree.train) == 4 * 6 + 6
    assert d.images("val") == len(tree.val) == 4 * 3
    skipped = {(s["path"], s["reason"]) for s in d.manifest["skipped"]}
    assert skipped == {
        (rel, EXPECTED_REASONS[kind])
        for rel, kind in tree.traps.items()
        if kind in EXPECTED_REASONS
    }
    # Every convertible trap is listed with what was done to it; plain RGB JPEGs are not.
    converted = {c["path"]: c["what"] for c in d.manifest["converted"]}
    assert converted == {
        rel: EXPECTED_CONVERSIONS[kind]
        for rel, kind in tree.traps.items()
        if kind in EXPECTED_CONVERSIONS
    }
    assert "converted: png named .JPEG" in r.out and "converted: cmyk" in r.out
    # Contents and labels, image by image, against the source files.
    for split in ("train", "val"):
        imgs, labels, paths = read_split(out, split)
        assert sorted(paths) == sorted(rel for rel, _ in getattr(tree, split))
        for img, label, rel in zip(imgs, labels, paths, strict=True):
            assert d.class_names[label] == truth[rel]
            close_to(img, reference(tree.root / rel, 64))
    # The manifest: what docs/formats.md promises.
    m = d.manifest
    assert m["layout"] == "ilsvrc2012-kaggle" and m["config"]["size"] == 64
    for split in ("train", "val"):
        for shard in m["splits"][split]["shards"]:
            assert shard["sha256"] == file_digest(out / shard["path"])
    assert m["preprocess"]["resample"] == "bilinear" and m["version"] == 1


@pytest.mark.parametrize("form", ["kaggle", "devkit", "folders", "image-folder"])
def test_every_validation_form_gives_the_right_labels(cli, tmp_path, form):
    if form == "image-folder":
        tree = make_image_folder(
            tmp_path / "src", classes=3, train_per_class=2, val_per_class=2, size_range=(40, 70)
        )
    else:
        tree = make_tree(
            tmp_path / "src",
            classes=3,
            train_per_class=2,
            val_per_class=2,
            size_range=(40, 70),
            val_form=form,
        )
    assert cli(*run(tree.root, tmp_path / "out", "--size", 32)).code == 0
    names = open_data_dir(tmp_path / "out").class_names
    assert names == sorted(tree.classes)
    for split, truth in (("train", dict(tree.train)), ("val", dict(tree.val))):
        _, labels, paths = read_split(tmp_path / "out", split)
        assert len(paths) == len(truth)
        assert {p: names[lab] for p, lab in zip(paths, labels, strict=True)} == truth


def test_train_is_shuffled_val_sorted_and_runs_repeat(tmp_path):
    tree = make_tree(
        tmp_path / "src", classes=4, train_per_class=8, val_per_class=3, size_range=(40, 60)
    )
    cfg = PrepareConfig(size=32, shard_size=8, jobs=1)
    run_prepare(tree.root, tmp_path / "a", cfg)
    _, labels, paths = read_split(tmp_path / "a", "train")
    assert paths != sorted(paths) and len(set(labels[:8])) > 1  # classes mixed in a shard
    _, _, val_paths = read_split(tmp_path / "a", "val")
    assert val_paths == sorted(val_paths)
    run_prepare(tree.root, tmp_path / "b", cfg)
    shards = open_data_dir(tmp_path / "a").manifest["splits"]
    assert shards == open_data_dir(tmp_path / "b").manifest["splits"]  # same bytes (sha256)
    run_prepare(tree.root, tmp_path / "c", PrepareConfig(size=32, shard_size=8, jobs=1, seed=1))
    assert read_split(tmp_path / "c", "train")[2] != paths


def test_subsets_and_caps(cli, synthetic_tree, tmp_path):
    tree = synthetic_tree
    r = cli(*run(tree.root, tmp_path / "two", "--size", 32, "--classes", 2, "--seed", 3))
    assert r.code == 0, r.err
    d = open_data_dir(tmp_path / "two")
    assert len(d.class_names) == 2 and set(d.class_names) <= set(tree.classes)
    _, labels, paths = read_split(tmp_path / "two", "train")
    assert set(labels) == {0, 1}
    assert all(p.split("/")[1] == d.class_names[lab] for p, lab in zip(paths, labels, strict=True))
    wnids = tmp_path / "wnids.txt"
    wnids.write_text(f"# two classes\n{tree.classes[3]}\n{tree.classes[1]} some words\n")
    args = ("--size", 32, "--wnids", wnids, "--train-per-class", 4, "--val-per-class", 1)
    assert cli(*run(tree.root, tmp_path / "named", *args)).code == 0
    d = open_data_dir(tmp_path / "named")
    assert d.class_names == [tree.classes[1], tree.classes[3]]
    assert d.images("val") == 2
    # Caps count listed files; an unreadable one among them is skipped, not replaced.
    skipped = sum(1 for s in d.manifest["skipped"] if s["path"].startswith("train/"))
    assert d.images("train") + skipped == 2 * 4
    assert d.manifest["selection"]["how"] == "wnids"


def test_up_to_date_force_and_changes(cli, synthetic_tree, tmp_path):
    out = tmp_path / "data"
    assert cli(*run(synthetic_tree.root, out, "--size", 32)).code == 0
    files = sorted(out.rglob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    r = cli(*run(synthetic_tree.root, out, "--size", 32))
    assert r.code == 0 and "up to date" in r.err and "(up to date)" in r.out
    assert {p: p.stat().st_mtime_ns for p in sorted(out.rglob("*"))} == stamps  # untouched
    r = cli(*run(synthetic_tree.root, out, "--size", 32, "--force"))
    assert r.code == 0 and "up to date" not in r.err
    assert all(p.stat().st_mtime_ns != stamps[p] for p in files if p.suffix == ".h5")
    r = cli(*run(synthetic_tree.root, out, "--size", 48))
    assert "up to date" not in r.err and open_data_dir(out).size == 48


def test_the_encoding_is_part_of_the_data_and_quality_only_of_jpeg(cli, synthetic_tree, tmp_path):
    """Switching the encoding rewrites every shard (no --force needed); a JPEG quality
    asked for raw shards changes nothing; the same images, labels and order either way."""
    out, src = tmp_path / "data", synthetic_tree.root
    assert cli(*run(src, out, "--size", 32)).code == 0
    raw = open_data_dir(out)
    r = cli(*run(src, out, "--size", 32, "--quality", 50))
    assert r.code == 0 and "up to date" in r.err
    r = cli(*run(src, out, "--size", 32, "--encoding", "jpeg", "--json"))
    assert r.code == 0 and json.loads(r.out)["shards_written"] == len(raw.manifest["outputs"])
    jpeg = open_data_dir(out)
    assert (jpeg.encoding, jpeg.quality, raw.encoding, raw.quality) == ("jpeg", 90, "raw", None)
    assert jpeg.fingerprint != raw.fingerprint
    assert [s["images"] for s in jpeg.manifest["splits"]["train"]["shards"]] == [
        s["images"] for s in raw.manifest["splits"]["train"]["shards"]
    ]
    r = cli(*run(src, out, "--size", 32, "--encoding", "jpeg", "--quality", 75, "--json"))
    assert json.loads(r.out)["shards_written"] == len(raw.manifest["outputs"])
    assert json.loads(r.out)["bytes"] < jpeg.manifest["bytes"]
    assert cli(*run(src, out, "--size", 32)).code == 0
    assert open_data_dir(out).fingerprint == raw.fingerprint  # back to the raw DATA_DIR


def test_a_changed_source_file_is_noticed(cli, tmp_path):
    tree = make_tree(
        tmp_path / "src", classes=2, train_per_class=3, val_per_class=1, size_range=(40, 60)
    )
    out = tmp_path / "out"
    assert cli(*run(tree.root, out, "--size", 32)).code == 0
    rel = tree.train[0][0]
    Image.new("RGB", (50, 40), (0, 0, 255)).save(tree.root / rel, "JPEG")
    r = cli(*run(tree.root, out, "--size", 32))
    assert r.code == 0 and "up to date" not in r.err
    imgs, _, paths = read_split(out, "train")
    assert imgs[paths.index(rel)][..., 2].min() > 200  # the new, blue image


def test_a_truncated_shard_is_rewritten_by_a_plain_rerun(cli, tmp_path):
    """A shard cut short (a full disk, a copy interrupted) is not "up to date": the rerun
    writes that shard again and keeps the others."""
    tree = make_tree(
        tmp_path / "src", classes=2, train_per_class=10, val_per_class=2, size_range=(40, 60)
    )
    out = tmp_path / "out"
    assert cli(*run(tree.root, out, "--size", 32, "--shard-size", 5)).code == 0
    shard = out / "train" / "00001.h5"
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    r = cli(*run(tree.root, out, "--size", 32, "--shard-size", 5, "--json"))
    assert r.code == 0 and "up to date" not in r.err
    data = json.loads(r.out)
    assert data["shards_written"] == 1 and data["shards_reused"] == 4
    assert shard.read_bytes() == whole


def test_verify_finds_flipped_bytes_and_writes_that_shard_again(cli, tmp_path):
    """Bytes changed in place (bit rot, a bad copy) keep the size: a plain rerun cannot see
    them, --verify hashes every shard against the manifest and rewrites the one that differs."""
    tree = make_tree(
        tmp_path / "src", classes=2, train_per_class=10, val_per_class=2, size_range=(40, 60)
    )
    out = tmp_path / "out"
    args = run(tree.root, out, "--size", 32, "--shard-size", 5)
    assert cli(*args).code == 0
    r = cli(*args, "--verify")
    assert r.code == 0 and "all 5 shards match their sha256" in r.err and "up to date" in r.err
    shard = out / "train" / "00002.h5"
    original = shard.read_bytes()
    whole = bytearray(original)
    whole[len(whole) // 2] ^= 0xFF  # one byte, in the middle of the images
    shard.write_bytes(bytes(whole))
    assert "up to date" in cli(*args).err  # same sizes: not seen without --verify
    r = cli(*args, "--verify", "--json")
    assert r.code == 0 and "1 shard(s) differ from their sha256 (train/00002.h5)" in r.err
    assert json.loads(r.out)["shards_written"] == 1
    assert (
        file_digest(shard)
        == json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"][2]["sha256"]
    )
    assert shard.read_bytes() == original


def test_fewer_shards_than_before_leave_no_strays(tmp_path):
    tree = make_tree(
        tmp_path / "src", classes=2, train_per_class=10, val_per_class=1, size_range=(40, 60)
    )
    out = tmp_path / "out"
    run_prepare(tree.root, out, PrepareConfig(size=32, shard_size=3, jobs=1))
    assert len(list((out / "train").glob("*.h5"))) == 7
    run_prepare(tree.root, out, PrepareConfig(size=32, shard_size=100, jobs=1))
    assert [p.name for p in (out / "train").glob("*.h5")] == ["00000.h5"]


def test_result_and_json(cli, synthetic_tree, tmp_path):
    r = run_prepare(synthetic_tree.root, tmp_path / "a", PrepareConfig(size=32, jobs=1))
    assert not r.up_to_date and r.classes == 4
    assert r.images == {"train": 30, "val": 12}
    assert r.skipped == {reason: 1 for reason in EXPECTED_REASONS.values()}
    assert r.converted == {
        "png named .JPEG": 3,
        "grayscale": 2,
        "palette": 1,
        "alpha": 1,
        "exif rotated": 1,
        "cmyk": 1,
    }
    assert r.images_per_s > 0 and r.bytes == sum(
        p.stat().st_size for p in (tmp_path / "a").rglob("*.h5")
    )
    out = cli(*run(synthetic_tree.root, tmp_path / "a", "--size", 32, "--json"))
    data = json.loads(out.out)
    assert data["up_to_date"] and data["images"] == r.images and data["skipped"] == r.skipped
    assert data["converted"] == r.converted


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_two_workers_write_what_one_writes(synthetic_tree, tmp_path, encoding):
    """Byte for byte (the sha256 in the manifests), JPEG records included."""
    one = run_prepare(
        synthetic_tree.root,
        tmp_path / "one",
        PrepareConfig(size=32, shard_size=5, jobs=1, encoding=encoding),
    )
    two = run_prepare(
        synthetic_tree.root,
        tmp_path / "two",
        PrepareConfig(size=32, shard_size=5, jobs=2, encoding=encoding),
    )
    assert one.shards_written == two.shards_written > 2
    splits = [open_data_dir(tmp_path / d).manifest["splits"] for d in ("one", "two")]
    assert splits[0] == splits[1]


def test_shard_count_spreads_small_splits():
    assert shard_count(0, 1024) == 0
    assert shard_count(10, 1024) == 1
    assert shard_count(480, 1024) == 15  # ≥ 32 images each, so several workers share it
    assert shard_count(5000, 1024) == 16
    assert shard_count(1_281_167, 1024) == 1252


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # not Linux: nothing to clean up after
        return []


def _kill_after_first_shard(args: list[str], shards: Path, log: Path) -> list[int]:
    """Run alexcli in a subprocess, kill -9 it once a shard exists; return its children."""
    with open(log, "wb") as err:  # not a pipe: orphaned workers would hold it open
        proc = subprocess.Popen(
            [sys.executable, "-m", "alexcli", *args], stdout=subprocess.DEVNULL, stderr=err
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if list(shards.glob("*.h5")):
                break
            time.sleep(0.002)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    return workers


@pytest.mark.parametrize("jobs", [1, 2])
def test_kill_then_rerun_is_a_clean_run(tmp_path, jobs):
    """kill -9 in the middle: the rerun keeps the finished shards and ends with exactly
    the shards of an uninterrupted run; workers left behind write nothing more."""
    tree = make_tree(
        tmp_path / "src",
        classes=4,
        train_per_class=30,
        val_per_class=4,
        size_range=(200, 320),
        traps=True,
    )
    out = tmp_path / "killed"
    args = run(tree.root, out, "--size", 96, "--shard-size", 4, jobs=jobs)
    workers = _kill_after_first_shard(args, out / "train", tmp_path / "stderr.txt")
    time.sleep(0.3)  # a worker caught inside close() may still rename its shard
    finished = sorted(p.name for p in (out / "train").glob("*.h5"))
    time.sleep(0.7)
    try:
        assert sorted(p.name for p in (out / "train").glob("*.h5")) == finished
    finally:
        for pid in workers:  # idle loky workers would linger for minutes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    assert not (out / "manifest.json").exists()
    assert 1 <= len(finished) < shard_count(4 * 30 + 6, 4)
    cfg = PrepareConfig(size=96, shard_size=4, jobs=1)
    rerun = run_prepare(tree.root, out, cfg)
    assert rerun.shards_reused >= len(finished)
    assert not list(out.rglob(".*.tmp"))  # the killed writer's temporary is gone
    clean = run_prepare(tree.root, tmp_path / "clean", cfg)
    assert rerun.images == clean.images and rerun.skipped == clean.skipped
    m_rerun, m_clean = (open_data_dir(d).manifest for d in (out, tmp_path / "clean"))
    assert m_rerun["splits"] == m_clean["splits"]  # the same shards, byte for byte
    assert m_rerun["skipped"] == m_clean["skipped"]
    assert len(m_rerun["converted"]) == 7 and rerun.converted == clean.converted
    del m_rerun["created"], m_clean["created"]
    assert m_rerun == m_clean  # the kept shards' conversions too
    for split in ("train", "val"):
        a, b = read_split(out, split), read_split(tmp_path / "clean", split)
        np.testing.assert_array_equal(a[0], b[0])
        assert list(a[1]) == list(b[1]) and a[2] == b[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{missing}", "{out}"), "no such directory"),
        (("{src}", "{out}", "--size", "0"), "--size 0: must be at least 1"),
        (("{src}", "{out}", "--classes", "9"), "--classes 9: SOURCE has 4 classes"),
        (("{empty}", "{out}"), "unknown layout"),
        (("{src}", "{out}", "--wnids", "{missing}"), "no such file"),
        (("{src}", "{out}", "--wnids", "{bad_wnids}"), "n12345678 not among"),
        (("{src}", "{out}", "--shard-size", "-1"), "--shard-size -1: must be at least 1"),
        (("{no_files}", "{out}"), "no training files in the 2 chosen classes"),
        (("{src}", "{out}", "--encoding", "jpeg", "--quality", "101"), "--quality 101: must be"),
        (("{src}", "{out}", "--encoding", "png"), "'png' is not one of"),
    ],
)
def test_bad_arguments_are_one_line(cli, synthetic_tree, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.txt").write_text("n12345678\n")
    for cls in ("cat", "dog"):  # class folders, nothing in them (tar files not extracted)
        (tmp_path / "no_files" / "train" / cls).mkdir(parents=True)
    paths = {
        "no_files": tmp_path / "no_files",
        "src": synthetic_tree.root,
        "out": tmp_path / "out",
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "bad_wnids": tmp_path / "bad.txt",
    }
    r = cli("prepare", *(a.format(**paths) for a in args), "--jobs", "1")
    assert r.code == 2
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and message in lines[0], r.err
    assert len(lines) <= 2 and "Traceback" not in r.err
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("inside", "message"),
    [
        ("train/data", "is inside SOURCE's train/"),
        ("val/data", "is inside SOURCE's val/"),
        (".", "is SOURCE itself"),
    ],
)
def test_a_data_dir_inside_the_source_is_refused(cli, tmp_path, inside, message):
    """Its shards would be listed as images of SOURCE on the next run (so never up to
    date), or its train/ and val/ mixed with SOURCE's own."""
    tree = make_tree(
        tmp_path / "src",
        classes=2,
        train_per_class=2,
        val_per_class=1,
        size_range=(40, 60),
        val_form="folders",
    )
    before = sorted(tree.root.rglob("*"))
    r = cli("prepare", tree.root, tree.root / inside, "--size", 32)
    assert r.code == 2 and message in r.err.splitlines()[0], r.err
    assert sorted(tree.root.rglob("*")) == before


def test_the_resize_filter_can_be_chosen(cli, synthetic_tree, tmp_path):
    out = tmp_path / "lanczos"
    assert cli(*run(synthetic_tree.root, out, "--size", 64, "--resample", "lanczos")).code == 0
    d = open_data_dir(out)
    assert d.manifest["preprocess"]["resample"] == "lanczos"
    imgs, _, paths = read_split(out, "val")
    with Image.open(synthetic_tree.root / paths[-1]) as img:
        close_to(imgs[-1], resize_reference(img, 64, "lanczos"))
    r = cli(*run(synthetic_tree.root, out, "--resample", "nearest"))
    assert r.code == 2 and "'--resample': 'nearest' is not one of 'bilinear'" in r.err


def test_validation_labels_of_classes_without_training_folders_are_named(cli, tmp_path):
    """An ILSVRC copy with one class's training tar not extracted: its validation images
    cannot be used (no label index), and prepare says so instead of dropping them quietly."""
    tree = make_tree(
        tmp_path / "src", classes=3, train_per_class=4, val_per_class=2, size_range=(80, 120)
    )
    missing = sorted(p.name for p in (tree.root / "train").iterdir() if p.is_dir())[1]
    shutil.rmtree(tree.root / "train" / missing)
    r = cli("prepare", tree.root, tmp_path / "out", "--size", "32")
    assert r.code == 0, r.err
    assert (
        f"2 validation images are labelled with 1 classes that have no train/ folder ({missing})"
        in r.err
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [c["name"] for c in manifest["classes"]] == sorted(set(tree.classes) - {missing})
    assert manifest["splits"]["val"]["images"] == 4


def _tiny_imagenet(root, wnids=("n01443537", "n01629819", "n01641577"), per_class=3):
    """Tiny ImageNet as Stanford ships it: train/<wnid>/images/*.JPEG beside a box list,
    val/images/ flat with val_annotations.txt, words.txt with more nouns than classes, and
    an unlabelled test/. Class k is a colour; each val image's annotation says which."""
    colours = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]
    (root / "val" / "images").mkdir(parents=True)
    (root / "test" / "images").mkdir(parents=True)
    lines, n = [], 0
    for k, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for i in range(per_class):
            Image.new("RGB", (64, 64), colours[k]).save(folder / f"{wnid}_{i}.JPEG")
            Image.new("RGB", (64, 64), colours[k]).save(root / "val" / "images" / f"val_{n}.JPEG")
            lines.append(f"val_{n}.JPEG\t{wnid}\t0\t0\t63\t63")
            n += 1
    Image.new("RGB", (64, 64)).save(root / "test" / "images" / "test_0.JPEG")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    words = [
        "n00001740\tentity",
        "n01443537\tgoldfish, Carassius auratus",
        "n01629819\tEuropean fire salamander",
        "n01641577\tbullfrog, Rana catesbeiana",
    ]
    (root / "words.txt").write_text("\n".join(words) + "\n")
    return dict(line.split("\t")[:2] for line in lines)


def test_tiny_imagenet_is_read_as_stanford_ships_it(cli, tmp_path):
    truth = _tiny_imagenet(tmp_path / "tiny")
    r = cli("prepare", tmp_path / "tiny", tmp_path / "out", "--size", "32", "--json")
    assert r.code == 0, r.err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["layout"] == "tiny-imagenet" and manifest["skipped"] == []
    assert [c["words"] for c in manifest["classes"]] == [
        "goldfish, Carassius auratus",
        "European fire salamander",
        "bullfrog, Rana catesbeiana",
    ]
    assert manifest["splits"]["train"]["images"] == manifest["splits"]["val"]["images"] == 9
    names = [c["name"] for c in manifest["classes"]]
    with h5py.File(tmp_path / "out" / manifest["splits"]["val"]["shards"][0]["path"]) as f:
        for path, label, image in zip(f["paths"][:], f["labels"][:], f["images"][:], strict=True):
            want = truth[Path(path.decode()).name]
            assert names[label] == want
            assert image[16, 16].argmax() == names.index(want)  # its colour is its class


def test_too_little_space_is_refused_before_anything_is_made(synthetic_tree, tmp_path, monkeypatch):
    from collections import namedtuple

    from alexcli.errors import UserError
    from alexcli.stages.prepare import checks as stage

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(stage.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    out = tmp_path / "new" / "data"
    with pytest.raises(UserError, match="the shards need ~"):
        run_prepare(synthetic_tree.root, out, PrepareConfig(size=64, jobs=1))
    assert not (tmp_path / "new").exists()


def test_force_rewrites_only_what_prepare_wrote(tmp_path, synthetic_tree):
    """A file of the user's inside DATA_DIR (not one of prepare's numbered shards) survives
    --force, in the split folders and beside them."""
    out = tmp_path / "data"
    cfg = PrepareConfig(size=32, jobs=1)
    run_prepare(synthetic_tree.root, out, cfg)
    mine = [out / "train" / "x.h5", out / "val" / "notes.txt", out / "README"]
    for path in mine:
        path.write_text("mine")
    run_prepare(synthetic_tree.root, out, cfg, force=True)
    assert all(p.read_text() == "mine" for p in mine)
