"""Source trees: docs/paper.md "Data" (ILSVRC-2012, 1000 classes).

These layouts are recognised by themselves:
- **ILSVRC-2012**, every training folder a WordNet id: `train/<wnid>/*.JPEG`, the
  validation images either in `val/<wnid>/`, or flat in `val/` and labelled by
  Kaggle's `LOC_val_solution.csv` (the first token of PredictionString) or by the
  devkit (`ILSVRC2012_validation_ground_truth.txt`, whose line n is the
  ILSVRC2012_ID of `ILSVRC2012_val_<n>.JPEG` in `meta.mat` order — not the sorted
  wnid order). Kaggle's own nesting (`ILSVRC/Data/CLS-LOC/train`) is found too.
  Class words come from `LOC_synset_mapping.txt` or the devkit's meta.mat.
- **Tiny ImageNet** (Stanford CS231N's 200-class, 64×64 subset): wnid training
  folders holding `images/` and a `<wnid>_boxes.txt` (not listed), the validation
  images flat in `val/images/` labelled by `val/val_annotations.txt` (file, wnid,
  box per line), words from `words.txt`.
- **Image folder**: `train/<class>/`, `val/<class>/`, any class names.
- **ILSVRC-2012 as downloaded**: its train and val tars beside the devkit tar.gz or
  Kaggle's label files, read in place (core/data/archives.py), every file listed under
  the path extraction would give it (core/data/archive_source.py), so the two sources
  give the same shards.

The classes are the training folders (or per-class tars); which of them, and which of
their files, a run takes is core/data/subsets.py's business. Files are listed, not
opened: whether a file holds an image is core/data/decode.py's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from alexcli.core.data import archive_source, archives
from alexcli.core.data.archives import printable
from alexcli.core.data.labels import (
    DEVKIT_DIRS,
    DEVKIT_META,
    SYNSET_MAPPING,
    TINY_ANNOTATIONS,
    TINY_WORDS,
    WNID,
    find_flat_val_labels,
    first_file,
    no_labels_error,
    read_devkit_meta,
    read_synset_mapping,
    read_tiny_labels,
)
from alexcli.core.data.listing import Source, SourceFile
from alexcli.core.progress import emit
from alexcli.errors import UserError

_BASES = ("", "ILSVRC/Data/CLS-LOC", "Data/CLS-LOC")
NO_LABEL = "no label"  # a flat validation file that no label file names
TINY_BOXES = "_boxes.txt"  # Tiny ImageNet: train/<wnid>/<wnid>_boxes.txt, not an image
LINK_OUT = "folder link out of its class"  # a link to the split, above, or another class

_LAYOUT_HINT = (
    "SOURCE must hold train/<class>/ folders of images (ILSVRC-2012: train/<wnid>/*.JPEG), "
    f"or ILSVRC-2012 as downloaded: {archives.TRAIN_TAR}, {archives.VAL_TAR} and the devkit"
)


# --------------------------------------------------------------------------- detection


def find_source(root: Path) -> Source:
    """Detect SOURCE's layout and read its label files; a one-line error if unknown."""
    root = Path(root)
    if not root.is_dir():
        what = "not a directory" if root.exists() else "no such directory"
        raise UserError(f"{root}: {what}", hint=_LAYOUT_HINT)
    if archives.is_archive_folder(root):
        return archive_source.find_source(root)
    base = next((b for b in _BASES if _class_dirs(root / b / "train")), None)
    if base is None:
        raise UserError(f"{root}: unknown layout, no train/<class>/ folders", hint=_LAYOUT_HINT)
    classes = tuple(sorted(_class_dirs(root / base / "train")))
    ilsvrc = all(WNID.fullmatch(c) for c in classes)
    _check_names(root / base / "train", classes)
    metas = [root / base, root] if base else [root]
    words: dict[str, str] = {}
    used: list[Path] = []
    mapping = first_file(metas, [SYNSET_MAPPING, TINY_WORDS])
    if ilsvrc and mapping is not None:
        words = read_synset_mapping(mapping)
        used.append(mapping)
    val_form, val_labels = "none", dict[str, str]()
    val_dir = root / base / "val"
    if val_dir.is_dir():
        tiny = val_dir / TINY_ANNOTATIONS
        if ilsvrc and tiny.is_file() and (val_dir / "images").is_dir():
            val_form, val_labels = "tiny", read_tiny_labels(tiny)
            used.append(tiny)
        elif _class_dirs(val_dir):
            val_form = "folders"
        elif not _has_files(val_dir):
            val_form = "none"
        elif ilsvrc:
            val_form, val_labels, files = find_flat_val_labels(metas, val_dir)
            used += files
        else:
            raise UserError(
                f"{val_dir}: expected val/<class>/ folders",
                hint="an image-folder tree keeps each class in its own folder",
            )
    flat = val_dir / "images" if val_form == "tiny" else val_dir
    if val_form in ("kaggle", "devkit", "tiny") and not val_labels and _has_files(flat):
        raise no_labels_error(used[-1], flat)
    if ilsvrc and not words:
        meta = first_file([d / sub for d in metas for sub in DEVKIT_DIRS], [DEVKIT_META])
        if meta is not None:
            words = {w: info[1] for w, info in read_devkit_meta(meta).items()}
            used.append(meta)
    layout = f"ilsvrc2012-{val_form}" if ilsvrc else "image-folder"
    if val_form == "tiny":
        layout = "tiny-imagenet"
    words = {c: words.get(c) or c for c in classes}
    label_files = tuple(SourceFile.of(root, p) for p in dict.fromkeys(used))
    return Source(root, layout, base, classes, words, val_form, val_labels, label_files)


def _check_names(train: Path, classes: Sequence[str]) -> None:
    """Class names are stored as UTF-8 (the manifest, `--wnids`). And wnid folders beside
    others (`__MACOSX`, `tmp`) would silently make an ILSVRC-2012 tree an image folder:
    its words lost, its flat val/ refused with a misleading reason."""
    bad = next((c for c in classes if printable(c) != c), None)
    if bad is not None:
        raise UserError(
            f"{train / printable(bad)}: a class folder whose name is not UTF-8",
            hint="rename it: class names are stored as UTF-8",
        )
    others = [c for c in classes if not WNID.fullmatch(c)]
    if others and len(others) < len(classes):
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        raise UserError(
            f"{train}: {', '.join(others[:3])}{more} not a wnid, beside "
            f"{len(classes) - len(others)} wnid folders",
            hint="move the other folders out of train/ (ILSVRC-2012 has only n######## ones)",
        )


# --------------------------------------------------------------------------- listing


def list_split(
    src: Source, split: str, classes: Sequence[str]
) -> tuple[dict[str, list[SourceFile]], list[SourceFile]]:
    """The files of `classes` in `split`, by class, sorted by path; and the flat
    validation files no label names. Only the chosen classes' folders are read; folder
    links that would bring in another class's images are not followed, but named."""
    by_class: dict[str, list[SourceFile]] = {c: [] for c in classes}
    unlabelled: list[SourceFile] = []
    for cls, files in iter_split(src, split, classes):
        if cls is None:
            unlabelled = files
        else:
            by_class[cls] = files
    return by_class, unlabelled


def iter_split(
    src: Source, split: str, classes: Sequence[str]
) -> Iterator[tuple[str | None, list[SourceFile]]]:
    """`list_split` a class at a time, so that a caller keeps only what it needs of one
    class before the next is listed (ILSVRC-2012's train split is 1.28 M files): first
    `(None, files)` for the flat validation files no label names, where there are any,
    then `(class, files)` in the order of `classes`."""
    if src.archives is not None:
        yield from archive_source.iter_split(src, src.archives, split, classes)
        return
    top = src.dir(split)
    if split == "val" and src.val_form in ("kaggle", "devkit", "tiny"):
        by_class: dict[str, list[SourceFile]] = {c: [] for c in classes}
        unlabelled: list[SourceFile] = []
        flat = top / "images" if src.val_form == "tiny" else top
        for f in _walk(src.root, flat, None, []):
            cls = src.val_labels.get(Path(f.path).stem)
            if cls is None:
                unlabelled.append(f)
            elif cls in by_class:
                by_class[cls].append(f)
        if unlabelled:
            yield None, unlabelled
        yield from by_class.items()
    elif split == "train" or src.val_form == "folders":
        real = {os.path.realpath(top / c): c for c in _class_dirs(top)}
        problems: list[dict[str, str]] = []
        for cls in classes:
            files: list[SourceFile] = []
            if (top / cls).is_dir():
                own = os.path.realpath(top / cls)
                fence = _Fence(os.path.realpath(top), own, real)
                files = _walk(src.root, top / cls, fence, problems)
                if src.val_form == "tiny":  # its box lists beside the images
                    files = [f for f in files if not f.path.endswith(TINY_BOXES)]
            yield cls, files
        _report(src, problems)


def listing_digest(files: Iterable[SourceFile]) -> str:
    """A fingerprint of a listing: paths, sizes and modification times."""
    return ListingDigest().add(files).hexdigest()


class ListingDigest:
    """`listing_digest` of a listing read a part at a time, the parts in order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, files: Iterable[SourceFile]) -> ListingDigest:
        for f in files:
            self._h.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]


@dataclass(frozen=True)
class _Fence:
    """Where a class folder's links may not lead (real paths): its split's folder or
    above, its own folder's ancestors, another class's folder (or into one)."""

    split: str
    own: str
    classes: dict[str, str]  # real path → name, of every class folder of the split

    def breach(self, target: str) -> str | None:
        if (target != self.own and _inside(self.own, target)) or _inside(self.split, target):
            return f"{target}, the split's folder or above its class"
        for other, name in self.classes.items():
            if other != self.own and (_inside(target, other) or _inside(other, target)):
                return f"{target}, into class {name}"
        return None


def _walk(
    root: Path, top: Path, fence: _Fence | None, problems: list[dict[str, str]]
) -> list[SourceFile]:
    """Regular files under `top` (hidden names skipped), sorted by relative path; the
    sub-folders too when `fence` is given. A name that is not UTF-8 is listed escaped
    (`printable`) and read through its real path (`SourceFile.at`). A link that leads
    nowhere (dangling, or a loop) is listed: decoding it names why it cannot be read."""
    out: list[SourceFile] = []
    prefix = top.relative_to(root).as_posix()
    stack = [(top, prefix, prefix)]
    seen = {_identity(top)}  # symlinked folders are followed, each real one listed once
    while stack:
        folder, rel, raw = stack.pop()
        for e in _scan(folder):
            if e.name.startswith("."):
                continue
            path, real = f"{rel}/{printable(e.name)}", f"{raw}/{e.name}"
            at = None if path == real else (real, 0)
            kind = _kind(e)
            if kind in ("file", "broken"):
                try:
                    st = e.stat(follow_symlinks=kind == "file")
                except OSError:  # gone since it was listed
                    continue
                out.append(SourceFile(path, st.st_size, st.st_mtime_ns, at))
            elif kind == "dir" and fence is not None:
                key = _identity(Path(e.path))
                why = fence.breach(os.path.realpath(e.path))
                if why is not None:
                    problems.append(
                        {
                            "path": path,
                            "reason": LINK_OUT,
                            "detail": f"it leads to {why}; not followed",
                        }
                    )
                elif key not in seen:
                    seen.add(key)
                    stack.append((Path(e.path), path, real))
    out.sort(key=lambda f: f.path)
    return out


def _kind(e: os.DirEntry[str]) -> str:
    """file, dir, broken (a link that leads nowhere: dangling, a loop) or other (a FIFO)."""
    try:
        if e.is_file():
            return "file"
        if e.is_dir():
            return "dir"
    except OSError:  # ELOOP, a target in a folder that cannot be searched
        return "broken"
    return "broken" if e.is_symlink() and not os.path.exists(e.path) else "other"


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _report(src: Source, problems: Sequence[dict[str, str]]) -> None:
    """Folder links not followed: a warning each, and kept in `src.problems`."""
    for p in problems:
        if p not in src.problems:
            src.problems.append(p)
            emit(f"warning: {p['path']}: {p['reason']} ({p['detail']})")


def _scan(folder: Path) -> list[os.DirEntry[str]]:
    """A folder's entries; one that cannot be listed is a one-line error naming it."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        raise UserError(
            f"{folder}: cannot list it ({e.strerror or e})",
            hint="make it readable (chmod a+rx), or move it out of SOURCE",
        ) from None


def _class_dirs(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return [e.name for e in _scan(path) if _kind(e) == "dir" and not e.name.startswith(".")]


def _has_files(path: Path) -> bool:
    return any(_kind(e) == "file" and not e.name.startswith(".") for e in _scan(path))


def _identity(folder: Path) -> tuple[int, int]:
    st = folder.stat()
    return st.st_dev, st.st_ino
