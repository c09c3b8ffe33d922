"""Source layouts, label files and class subsets."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io

from alexcli.core.data import sources, subsets
from alexcli.core.data.sources import SourceFile
from alexcli.core.data.subsets import choose_classes
from alexcli.core.data.synthetic import make_image_folder, make_tree
from alexcli.errors import FormatError, UserError


def small_tree(root, **kw):
    kw = {"classes": 4, "train_per_class": 2, "val_per_class": 2, "size_range": (40, 60)} | kw
    return make_tree(root, **kw)


def val_labels(src, tree):
    by_class, unlabelled = sources.list_split(src, "val", src.classes)
    got = {f.path: cls for cls, files in by_class.items() for f in files}
    return got, unlabelled


@pytest.mark.parametrize("form", ["kaggle", "devkit", "folders"])
def test_ilsvrc_layouts_label_val_by_wnid(tmp_path, form):
    tree = small_tree(tmp_path, val_form=form)
    src = sources.find_source(tmp_path)
    assert src.layout == f"ilsvrc2012-{form}"
    assert src.classes == tree.classes
    assert src.words == tree.words  # from LOC_synset_mapping.txt, or the devkit's meta.mat
    got, unlabelled = val_labels(src, tree)
    assert got == dict(tree.val) and not unlabelled
    train, _ = sources.list_split(src, "train", src.classes)
    assert {f.path: c for c, fs in train.items() for f in fs} == dict(tree.train)


def test_devkit_ids_follow_meta_mat_order_not_sorted_wnids(tmp_path):
    tree = small_tree(tmp_path, classes=6, val_form="devkit")
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    meta = scipy.io.loadmat(data / "meta.mat", squeeze_me=True)["synsets"]
    leaves = [(int(s["ILSVRC2012_ID"]), str(s["WNID"])) for s in meta if s["num_children"] == 0]
    assert [w for _, w in sorted(leaves)] != sorted(tree.classes)  # the trap is there
    truth = (data / "ILSVRC2012_validation_ground_truth.txt").read_text().split()
    by_id = dict(leaves)
    for n, line in enumerate(truth, start=1):  # independent decoding of the ground truth
        rel = f"val/ILSVRC2012_val_{n:08d}.JPEG"
        assert dict(tree.val)[rel] == by_id[int(line)]
    got, _ = val_labels(sources.find_source(tmp_path), tree)
    assert got == dict(tree.val)


def test_kaggle_nesting_and_unlabelled_val_files(tmp_path):
    tree = small_tree(tmp_path / "k")
    nested = tmp_path / "kaggle"
    (nested / "ILSVRC" / "Data").mkdir(parents=True)
    shutil.move(tmp_path / "k" / "train", nested / "ILSVRC/Data/CLS-LOC/train")
    shutil.move(tmp_path / "k" / "val", nested / "ILSVRC/Data/CLS-LOC/val")
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        shutil.move(tmp_path / "k" / name, nested / name)
    (nested / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_99999999.JPEG").write_bytes(b"x")
    (nested / "ILSVRC/Data/CLS-LOC/val/.DS_Store").write_bytes(b"x")  # hidden: not listed
    src = sources.find_source(nested)
    assert src.base == "ILSVRC/Data/CLS-LOC" and src.layout == "ilsvrc2012-kaggle"
    got, unlabelled = val_labels(src, tree)
    prefix = "ILSVRC/Data/CLS-LOC/"
    assert got == {prefix + p: c for p, c in tree.val}
    assert [f.path for f in unlabelled] == [prefix + "val/ILSVRC2012_val_99999999.JPEG"]


def test_image_folder_and_train_only_trees(tmp_path):
    tree = make_image_folder(tmp_path / "f", classes=3, train_per_class=2, val_per_class=1)
    src = sources.find_source(tmp_path / "f")
    assert src.layout == "image-folder" and src.classes == tree.classes
    assert src.words["red_plain_disc"] == "red_plain_disc"  # no word list: the name
    got, _ = val_labels(src, tree)
    assert got == dict(tree.val)
    shutil.rmtree(tmp_path / "f" / "val")
    assert sources.find_source(tmp_path / "f").val_form == "none"


def test_unknown_layouts_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        sources.find_source(tmp_path / "missing")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="unknown layout"):
        sources.find_source(tmp_path / "photos")
    (tmp_path / "photos" / "train").mkdir()  # train/ without class folders
    with pytest.raises(UserError, match="unknown layout"):
        sources.find_source(tmp_path / "photos")


def test_flat_val_without_labels_is_an_error(tmp_path):
    small_tree(tmp_path)
    (tmp_path / "LOC_val_solution.csv").unlink()
    with pytest.raises(UserError, match="no labels"):
        sources.find_source(tmp_path)


def test_malformed_label_files(tmp_path):
    small_tree(tmp_path)
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nx,12 3 4\n")
    with pytest.raises(FormatError, match=r"LOC_val_solution\.csv:2"):
        sources.find_source(tmp_path)
    (tmp_path / "LOC_val_solution.csv").write_text("id,label\n")
    with pytest.raises(FormatError, match="not a LOC_val_solution"):
        sources.find_source(tmp_path)


def test_choose_classes_is_seeded_sorted_and_checked():
    available = [f"n{i:08d}" for i in range(50)]
    a = choose_classes(available, count=10, wnids=(), seed=0)
    assert a == sorted(a) and len(set(a)) == 10 and set(a) <= set(available)
    assert a == choose_classes(available, count=10, wnids=(), seed=0)
    assert a != choose_classes(available, count=10, wnids=(), seed=1)
    assert choose_classes(available, count=None, wnids=(), seed=0) == available
    named = choose_classes(available, count=3, wnids=("n00000007", "n00000002"), seed=0)
    assert named == ["n00000002", "n00000007"]
    with pytest.raises(UserError, match="--classes 51: SOURCE has 50 classes"):
        choose_classes(available, count=51, wnids=(), seed=0)
    with pytest.raises(UserError, match="n99999999 not among"):
        choose_classes(available, count=None, wnids=("n99999999",), seed=0)


def test_caps_keep_a_seeded_sorted_choice_per_class():
    files = [SourceFile(f"train/c/{i:03d}.JPEG", 1, 1) for i in range(100)]
    kept = subsets.cap_per_class(files, 10, seed=0, key="train/c")
    assert len(kept) == 10 and kept == sorted(kept, key=lambda f: f.path)
    assert kept == subsets.cap_per_class(files, 10, seed=0, key="train/c")
    assert kept != subsets.cap_per_class(files, 10, seed=0, key="train/d")
    assert kept[0].path != "train/c/000.JPEG" or kept[-1].path != "train/c/009.JPEG"
    assert subsets.cap_per_class(files, None, seed=0, key="k") == files
    assert subsets.cap_per_class(files[:5], 10, seed=0, key="k") == files[:5]


def test_read_wnids(tmp_path):
    path = tmp_path / "wnids.txt"
    path.write_text("# my subset\nn01440764 tench, Tinca tinca\n\nn01443537\nn01440764\n")
    assert subsets.read_wnids(path) == ("n01440764", "n01443537")
    path.write_text("# nothing\n\n")
    with pytest.raises(UserError, match="no class names"):
        subsets.read_wnids(path)
    with pytest.raises(UserError, match="no such file"):
        subsets.read_wnids(tmp_path / "nope.txt")


def test_listing_digest_sees_size_and_mtime():
    a = [SourceFile("train/c/1.JPEG", 10, 5)]
    assert sources.listing_digest(a) == sources.listing_digest(list(a))
    assert sources.listing_digest(a) != sources.listing_digest([SourceFile(a[0].path, 11, 5)])
    assert sources.listing_digest(a) != sources.listing_digest([SourceFile(a[0].path, 10, 6)])


def test_only_chosen_classes_are_listed(tmp_path):
    tree = small_tree(tmp_path, classes=5)
    src = sources.find_source(tmp_path)
    chosen = list(tree.classes[:2])
    train, _ = sources.list_split(src, "train", chosen)
    val, _ = sources.list_split(src, "val", chosen)
    assert set(train) == set(val) == set(chosen)
    assert sum(len(v) for v in val.values()) == 4
    assert np.all([f.size > 0 for fs in train.values() for f in fs])


def test_label_files_saved_by_spreadsheets_and_editors_are_read(tmp_path):
    """A byte-order mark (Excel's "CSV UTF-8", Notepad), CRLF line ends and trailing blank
    rows are how these files come back from a spreadsheet or an editor."""
    tree = small_tree(tmp_path)
    csv_path = tmp_path / "LOC_val_solution.csv"
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    csv_path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([*rows, "", ""]).encode())
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_bytes(b"\xef\xbb\xbf" + mapping.read_bytes())
    src = sources.find_source(tmp_path)
    assert val_labels(src, tree)[0] == dict(tree.val)
    assert src.words == tree.words
    wnids = tmp_path / "wnids.txt"
    wnids.write_bytes(b"\xef\xbb\xbf" + f"{tree.classes[1]}\r\n".encode())
    assert subsets.read_wnids(wnids) == (tree.classes[1],)


def test_label_files_that_cannot_be_read_are_format_errors(tmp_path):
    small_tree(tmp_path, val_form="devkit")
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    (data / "meta.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(FormatError, match=r"meta\.mat: not the ILSVRC-2012 devkit's"):
        sources.find_source(tmp_path)
    (data / "meta.mat").unlink()
    with pytest.raises(UserError, match=r"ground_truth\.txt is there but not meta\.mat"):
        sources.find_source(tmp_path)
    shutil.rmtree(tmp_path / "ILSVRC2012_devkit_t12")
    (tmp_path / "LOC_val_solution.csv").write_bytes(
        b"ImageId,PredictionString\ncaf\xe9,n00000001 1 2 3 4\n"
    )  # Latin-1, not UTF-8
    with pytest.raises(FormatError, match=r"LOC_val_solution\.csv: not UTF-8 text"):
        sources.find_source(tmp_path)


def test_a_stray_folder_among_wnids_is_named(tmp_path):
    """ILSVRC-2012 with one `__MACOSX` or `tmp` folder in train/ must not turn into an
    image-folder tree (words lost, flat val/ refused with a misleading message)."""
    small_tree(tmp_path)
    (tmp_path / "train" / "__MACOSX").mkdir()
    with pytest.raises(UserError, match=r"__MACOSX.*not a wnid"):
        sources.find_source(tmp_path)


def test_listing_survives_symlink_loops_and_names_unreadable_folders(tmp_path, monkeypatch):
    tree = small_tree(tmp_path, val_form="folders")
    cls = tree.classes[0]
    (tmp_path / "train" / cls / "loop").symlink_to(".")  # `ln -s . loop`: endless nesting
    elsewhere = tmp_path / "elsewhere"
    shutil.move(tmp_path / "train" / tree.classes[1], elsewhere)
    (tmp_path / "train" / tree.classes[1]).symlink_to(elsewhere)  # a class on another disk
    src = sources.find_source(tmp_path)
    train, _ = sources.list_split(src, "train", src.classes)
    assert {f.path: c for c, fs in train.items() for f in fs} == dict(tree.train)

    denied = str(tmp_path / "train" / cls)
    real_scandir = sources.os.scandir

    def scandir(path):  # chmod 000 does not stop root, who runs CI here
        if str(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    with pytest.raises(UserError, match=f"{cls}: cannot list it .Permission denied."):
        sources.list_split(src, "train", src.classes)
