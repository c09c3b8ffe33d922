"""core/data/archives.py: ILSVRC-2012 as downloaded (a train tar of per-wnid tars, a flat
val tar, the devkit tar.gz or Kaggle's labels), read in place, gives exactly the shards,
manifest and fingerprint of the tree its extraction gives."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from alexcli.config import PrepareConfig
from alexcli.core.data import archives
from alexcli.core.data.synthetic import make_tree
from alexcli.stages.prepare import run_prepare

CFG = PrepareConfig(size=32, shard_size=8, jobs=2)


def extract(archive_dir: Path, tree: Path) -> None:
    """What a user does before a tree-reading tool can start: every tar unpacked, the
    per-class tars into train/<wnid>/ (times kept, as tar does)."""
    with tarfile.open(archive_dir / archives.TRAIN_TAR) as outer:
        for m in outer:
            data = outer.extractfile(m)
            assert data is not None
            with tarfile.open(fileobj=io.BytesIO(data.read())) as inner:
                inner.extractall(tree / "train" / m.name.removesuffix(".tar"), filter="data")
    if (archive_dir / archives.VAL_TAR).is_file():
        with tarfile.open(archive_dir / archives.VAL_TAR) as tar:
            tar.extractall(tree / "val", filter="data")
    if (archive_dir / archives.DEVKIT_TAR).is_file():
        with tarfile.open(archive_dir / archives.DEVKIT_TAR) as tar:
            tar.extractall(tree, filter="data")
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        if (archive_dir / name).is_file():
            (tree / name).write_bytes((archive_dir / name).read_bytes())
            st = (archive_dir / name).stat()
            os.utime(tree / name, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture(scope="module", params=["devkit", "kaggle"])
def downloaded(request, tmp_path_factory):
    """The archives of a 5-class tree with ImageNet's awkward files, and their extraction."""
    root = tmp_path_factory.mktemp(f"ilsvrc-{request.param}")
    tree = make_tree(
        root / "made",
        classes=5,
        train_per_class=9,
        val_per_class=3,
        size_range=(40, 90),
        val_form=request.param,
        traps=True,
    )
    archives.write_archives(tree.root, root / "download")
    extract(root / "download", root / "extracted")
    return root / "download", root / "extracted"


def shards(data: Path) -> dict[str, bytes]:
    return {p.relative_to(data).as_posix(): p.read_bytes() for p in sorted(data.rglob("*.h5"))}


def comparable(manifest: Path) -> dict:
    """A manifest without what names where it came from (the paths) or when."""
    m = json.loads(manifest.read_text())
    return {k: v for k, v in m.items() if k not in ("source", "created", "archives")}


@pytest.mark.parametrize("classes", [None, 3])
def test_the_archives_give_the_extracted_trees_shards_byte_for_byte(downloaded, tmp_path, classes):
    download, extracted = downloaded
    before = sorted(p.name for p in download.iterdir())
    cfg = PrepareConfig(size=32, shard_size=8, jobs=2, classes=classes)
    a = run_prepare(download, tmp_path / "from-archives", cfg)
    b = run_prepare(extracted, tmp_path / "from-tree", cfg)
    assert a.fingerprint == b.fingerprint and a.layout == b.layout
    assert a.images == b.images and a.images["train"] > 0 and a.images["val"] > 0
    assert a.skipped == b.skipped and a.converted == b.converted  # the traps, both ways
    assert shards(tmp_path / "from-archives") == shards(tmp_path / "from-tree")
    assert comparable(tmp_path / "from-archives" / "manifest.json") == comparable(
        tmp_path / "from-tree" / "manifest.json"
    )
    # nothing extracted: the download folder holds what it held, DATA_DIR only shards
    assert sorted(p.name for p in download.iterdir()) == before
    made = {p.suffix for p in (tmp_path / "from-archives").rglob("*") if p.is_file()}
    assert made <= {".h5", ".json", ""}, made


def test_a_subset_reads_only_its_classes_inner_tars(downloaded, tmp_path, monkeypatch):
    download, _ = downloaded
    opened: list[str] = []
    real = archives.Archives.class_members

    def counted(self, wnid):
        opened.append(wnid)
        return real(self, wnid)

    monkeypatch.setattr(archives.Archives, "class_members", counted)
    r = run_prepare(download, tmp_path / "d", PrepareConfig(size=32, classes=2, jobs=1))
    assert r.classes == 2 and len(opened) == 2


def test_up_to_date_verify_force_and_a_changed_archive(downloaded, tmp_path):
    download, _ = downloaded
    out = tmp_path / "d"
    first = run_prepare(download, out, CFG)
    assert run_prepare(download, out, CFG).up_to_date
    assert run_prepare(download, out, CFG, verify=True).up_to_date
    train_tar = download / archives.TRAIN_TAR
    st = train_tar.stat()
    try:
        os.utime(train_tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        again = run_prepare(download, out, CFG)
        assert not again.up_to_date and again.shards_reused > 0 and again.shards_written == 0
        assert again.fingerprint == first.fingerprint
        assert run_prepare(download, out, CFG).up_to_date
    finally:
        os.utime(train_tar, ns=(st.st_atime_ns, st.st_mtime_ns))
    forced = run_prepare(download, out, CFG, force=True)
    assert forced.shards_written > 0 and forced.shards_reused == 0


def test_a_truncated_inner_tar_is_named_and_its_readable_images_kept(tmp_path):
    tree = make_tree(
        tmp_path / "made",
        classes=3,
        train_per_class=12,
        val_per_class=2,
        size_range=(40, 60),
        val_form="devkit",
        traps=False,
    )
    download = tmp_path / "download"
    archives.write_archives(tree.root, download)
    cut = sorted(tree.classes)[1]
    with tarfile.open(download / archives.TRAIN_TAR) as outer:
        parts = {m.name: outer.extractfile(m).read() for m in outer}  # type: ignore[union-attr]
    whole = parts[f"{cut}.tar"]
    parts[f"{cut}.tar"] = whole[: len(whole) * 2 // 3]  # cut mid-way, as a failed download
    with tarfile.open(download / archives.TRAIN_TAR, "w", format=tarfile.GNU_FORMAT) as outer:
        for name, data in parts.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
    out = tmp_path / "d"
    r = run_prepare(download, out, PrepareConfig(size=32, jobs=1))
    manifest = json.loads((out / "manifest.json").read_text())
    problems = [s for s in manifest["skipped"] if s["reason"] == archives.TRUNCATED_ARCHIVE]
    assert [p["path"] for p in problems] == [f"train/{cut}.tar"]
    label = [c["name"] for c in manifest["classes"]].index(cut)
    import h5py
    import numpy as np

    kept = 0
    for s in manifest["splits"]["train"]["shards"]:
        with h5py.File(out / s["path"]) as f:
            kept += int(np.sum(f["labels"][:] == label))
    assert 0 < kept < 12 and r.images["train"] < 36
