"""Hostile SOURCE trees and archives: folder links that lead out of their class, tars cut
at a member's boundary, names that are not UTF-8, link loops, devkits without meta.mat,
label files that are empty or contradict themselves. Each is either read right (nothing
dropped or mislabelled, what cannot be read is skipped with a reason) or a one-line
error naming the file."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexcli.config import PrepareConfig
from alexcli.core.data import archives, decode, sources
from alexcli.core.data.synthetic import make_tree
from alexcli.errors import FormatError, UserError
from alexcli.stages.prepare import run_prepare

CFG = PrepareConfig(size=16, jobs=1)


def jpeg(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24, 3), value, np.uint8)).save(path, "JPEG")


def folder_tree(root: Path, classes=("bad", "good"), n=3) -> Path:
    for c in classes:
        for i in range(n):
            jpeg(root / "train" / c / f"{c}{i}.jpg")
    return root


def listed(root: Path, split: str = "train") -> tuple[dict[str, list[str]], sources.Source]:
    src = sources.find_source(root)
    by_class, _ = sources.list_split(src, split, src.classes)
    return {c: [f.path for f in fs] for c, fs in by_class.items()}, src


def stored(out: Path) -> dict[str, str]:
    """path → class name of every stored image (both splits)."""
    import h5py

    m = json.loads((out / "manifest.json").read_text())
    names = [c["name"] for c in m["classes"]]
    got = {}
    for split in ("train", "val"):
        for s in m["splits"][split]["shards"]:
            with h5py.File(out / s["path"]) as f:
                for p, lab in zip(f["paths"][:], f["labels"][:], strict=True):
                    got[p.decode()] = names[int(lab)]
    return got


# --------------------------------------------------------------------------- 1. links


@pytest.mark.parametrize("target", ["..", "../good", "../good/sub", "../..", "split-abs"])
def test_a_folder_link_out_of_its_class_is_not_followed_but_named(tmp_path, caplog, target):
    root = folder_tree(tmp_path / "src")
    jpeg(root / "train" / "good" / "sub" / "deep.jpg")
    link = root / "train" / "bad" / "uplink"
    link.symlink_to(root / "train" if target == "split-abs" else target)
    with caplog.at_level(logging.WARNING, logger="alexcli"):
        got, src = listed(root)
    assert got["bad"] == [f"train/bad/bad{i}.jpg" for i in range(3)]  # none of good's
    assert [p["path"] for p in src.problems] == ["train/bad/uplink"]
    assert src.problems[0]["reason"] == sources.LINK_OUT
    assert "train/bad/uplink: folder link out of its class" in caplog.text
    out = tmp_path / "out"
    run_prepare(root, out, CFG)
    assert {p: c for p, c in stored(out).items() if "uplink" in p} == {}
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]
    assert [s["reason"] for s in skipped if s["path"] == "train/bad/uplink"] == [sources.LINK_OUT]


def test_links_that_stay_in_their_class_or_lead_outside_the_split_are_followed(tmp_path):
    """Subsets built with symlinks: a class folder, a sub-folder and a file linked from
    elsewhere are read as before; a link back into its own class is listed once."""
    root = folder_tree(tmp_path / "src")
    pool = tmp_path / "pool"
    jpeg(pool / "cats" / "c0.jpg")
    jpeg(pool / "more" / "m0.jpg")
    jpeg(pool / "one.jpg")
    (root / "train" / "cats").symlink_to(pool / "cats")  # a symlinked class folder
    (root / "train" / "cats" / "more").symlink_to(pool / "more")  # a sub-folder outside
    (root / "train" / "good" / "one.jpg").symlink_to(pool / "one.jpg")  # a file outside
    (root / "train" / "good" / "self").symlink_to(".")  # its own class: listed once
    got, src = listed(root)
    assert got["cats"] == ["train/cats/c0.jpg", "train/cats/more/m0.jpg"]
    assert "train/good/one.jpg" in got["good"] and len(got["good"]) == 4
    assert src.problems == []


# --------------------------------------------------------------------------- 2. tars


def _cut(path: Path, at: int) -> None:
    os.truncate(path, at)


@pytest.fixture
def download(tmp_path):
    tree = make_tree(
        tmp_path / "made",
        classes=3,
        train_per_class=4,
        val_per_class=2,
        size_range=(40, 60),
        val_form="devkit",
    )
    archives.write_archives(tree.root, tmp_path / "download")
    return tmp_path / "download"


@pytest.mark.parametrize("name", [archives.TRAIN_TAR, archives.VAL_TAR])
@pytest.mark.parametrize("where", ["boundary", "header"])
def test_a_tar_cut_at_a_member_boundary_is_truncated(download, name, where):
    with tarfile.open(download / name) as tar:
        second = tar.getmembers()[1].offset
    _cut(download / name, second + (0 if where == "boundary" else 100))
    with pytest.raises(FormatError, match=rf"{name}: truncated \(no end-of-archive marker"):
        sources.find_source(download)


def test_an_inner_tar_cut_at_a_member_boundary_is_named(download, tmp_path):
    with tarfile.open(download / archives.TRAIN_TAR) as outer:
        parts = {m.name: outer.extractfile(m).read() for m in outer}  # type: ignore[union-attr]
    cut = sorted(parts)[1]
    with tarfile.open(fileobj=io.BytesIO(parts[cut])) as inner:
        parts[cut] = parts[cut][: inner.getmembers()[2].offset]  # two images, no end marker
    with tarfile.open(download / archives.TRAIN_TAR, "w", format=tarfile.GNU_FORMAT) as outer:
        for name, data in parts.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
    src = sources.find_source(download)
    by_class, _ = sources.list_split(src, "train", src.classes)
    assert len(by_class[cut.removesuffix(".tar")]) == 2
    assert src.archives is not None
    [problem] = src.archives.problems
    assert problem["path"] == f"train/{cut}" and problem["reason"] == archives.TRUNCATED_ARCHIVE
    assert "end-of-archive marker" in problem["detail"]


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar program")
def test_tars_written_by_gnu_tar_are_whole(download, tmp_path):
    files = tmp_path / "files"
    for i in range(3):
        jpeg(files / f"n0000000{i}" / f"n0000000{i}_{i}.JPEG", 40 * i)
        subprocess.run(
            ["tar", "-cf", f"../n0000000{i}.tar", "."], cwd=files / f"n0000000{i}", check=True
        )
    (download / archives.TRAIN_TAR).unlink()
    subprocess.run(
        ["tar", "-cf", str(download / archives.TRAIN_TAR), *[f"n0000000{i}.tar" for i in range(3)]],
        cwd=files,
        check=True,
    )
    (download / archives.VAL_TAR).unlink()
    src = sources.find_source(download)
    by_class, _ = sources.list_split(src, "train", src.classes)
    assert {c: len(fs) for c, fs in by_class.items()} == {f"n0000000{i}": 1 for i in range(3)}
    assert src.archives is not None and src.archives.problems == []


# --------------------------------------------------------------------------- 3. names


def test_a_file_name_that_is_not_utf8_is_read_under_an_escaped_name(tmp_path):
    root = folder_tree(tmp_path / "src")
    jpeg(Path(os.fsdecode(bytes(root / "train" / "bad") + b"/caf\xe9.jpg")))
    got, _ = listed(root)
    assert "train/bad/caf\\xe9.jpg" in got["bad"]
    out = tmp_path / "out"
    r = run_prepare(root, out, CFG)
    assert r.images["train"] == 7 and stored(out)["train/bad/caf\\xe9.jpg"] == "bad"
    assert json.loads((out / "manifest.json").read_text())["skipped"] == []


def test_a_class_folder_name_that_is_not_utf8_is_refused(tmp_path):
    root = folder_tree(tmp_path / "src")
    jpeg(Path(os.fsdecode(bytes(root / "train") + b"/caf\xe9/x.jpg")))
    with pytest.raises(UserError, match=r"caf\\xe9: a class folder whose name is not UTF-8"):
        sources.find_source(root)


def test_a_member_name_that_is_not_utf8_in_the_archives_is_escaped(tmp_path):
    tree = make_tree(
        tmp_path / "made",
        classes=2,
        train_per_class=2,
        val_per_class=1,
        size_range=(40, 60),
        val_form="devkit",
    )
    wnid = tree.classes[0]
    first = sorted((tree.root / "train" / wnid).iterdir())[0]
    first.rename(os.fsdecode(bytes(first.parent) + b"/caf\xe9.JPEG"))
    archives.write_archives(tree.root, tmp_path / "download")
    a, _ = listed(tmp_path / "download")
    b, _ = listed(tree.root)
    assert f"train/{wnid}/caf\\xe9.JPEG" in a[wnid] and a == b


# --------------------------------------------------------------------------- 4. loops


def test_a_link_loop_or_a_dangling_link_is_skipped_as_unreadable(tmp_path):
    root = folder_tree(tmp_path / "src")
    (root / "train" / "bad" / "loop.jpg").symlink_to("loop.jpg")  # ELOOP
    (root / "train" / "bad" / "gone.jpg").symlink_to("nowhere.jpg")
    (root / "train" / "loop").symlink_to("loop")  # beside the classes: not a class
    out = tmp_path / "out"
    r = run_prepare(root, out, CFG)
    assert r.images["train"] == 6 and r.classes == 2
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]
    assert {s["path"]: s["reason"] for s in skipped} == {
        "train/bad/loop.jpg": decode.UNREADABLE,
        "train/bad/gone.jpg": decode.UNREADABLE,
    }


# --------------------------------------------------------------------------- 5. devkit


@pytest.mark.parametrize("drop", ["meta.mat", "ILSVRC2012_validation_ground_truth.txt"])
def test_the_devkit_archive_without_meta_or_truth_is_refused_as_the_tree_is(download, drop):
    tar_path = download / archives.DEVKIT_TAR
    with tarfile.open(tar_path) as tar:
        kept = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]  # type: ignore[union-attr]
    with tarfile.open(tar_path, "w:gz") as tar:
        for m, data in kept:
            if not m.name.endswith("/" + drop):
                tar.addfile(m, io.BytesIO(data) if data is not None else None)
    message = "is there but not meta.mat beside it" if drop == "meta.mat" else "no labels for"
    with pytest.raises(UserError, match=message):
        sources.find_source(download)


# --------------------------------------------------------------------------- 6. label files


def tiny_tree(root: Path, annotations: str) -> Path:
    for i, wnid in enumerate(["n00000001", "n00000002"]):
        jpeg(root / "train" / wnid / "images" / f"{wnid}_0.JPEG", 100 * i)
    jpeg(root / "val" / "images" / "val_0.JPEG")
    jpeg(root / "val" / "images" / "val_1.JPEG")
    (root / "val" / "val_annotations.txt").write_text(annotations)
    return root


def test_an_empty_tiny_annotation_file_is_an_error(tmp_path):
    tiny_tree(tmp_path, "\n")
    with pytest.raises(FormatError, match=r"val_annotations.txt: no labels in it, though"):
        sources.find_source(tmp_path)


def test_a_tiny_val_image_listed_with_two_wnids_is_an_error(tmp_path):
    lines = "val_0.JPEG\tn00000001\t0 0 9 9\nval_1.JPEG\tn00000002\t0 0 9 9\n"
    tiny_tree(tmp_path, lines + "val_0.JPEG\tn00000002\t1 1 8 8\n")
    with pytest.raises(
        FormatError,
        match=r"val_annotations.txt:3: val_0 labelled n00000002, "
        r"but n00000001 on an earlier line",
    ):
        sources.find_source(tmp_path)
    tiny_tree(tmp_path, lines + "val_0.JPEG\tn00000001\t1 1 8 8\n")  # a second box: fine
    assert sources.find_source(tmp_path).val_labels == {"val_0": "n00000001", "val_1": "n00000002"}


def test_an_empty_kaggle_csv_is_an_error(tmp_path):
    make_tree(tmp_path, classes=2, train_per_class=1, val_per_class=1, size_range=(40, 60))
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    with pytest.raises(FormatError, match=r"LOC_val_solution.csv: no labels in it"):
        sources.find_source(tmp_path)
