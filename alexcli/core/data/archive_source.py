"""ILSVRC-2012 as downloaded, as a source: docs/paper.md "Data". The archives
(core/data/archives.py reads them) listed as the tree their extraction gives —
`train/<wnid>/<file>`, `val/<file>`, the devkit's label files — so that prepare
treats them as it treats that tree (core/data/sources.py calls in here when SOURCE
holds the archives).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from alexcli.core.data import archives
from alexcli.core.data.archives import Archives
from alexcli.core.data.labels import (
    KAGGLE_CSV,
    SYNSET_MAPPING,
    no_labels_error,
    read_kaggle_labels,
    read_synset_mapping,
)
from alexcli.core.data.listing import Source, SourceFile
from alexcli.errors import UserError


def find_source(root: Path) -> Source:
    """ILSVRC-2012's archives as a Source whose files, paths and label files are those of
    the tree their extraction gives (train/<wnid>/, val/ flat, the devkit's data/)."""
    index = archives.open_archives(root)
    classes = tuple(sorted(index.inner))
    used: list[SourceFile] = []
    words: dict[str, str] = {}
    mapping = root / SYNSET_MAPPING
    if mapping.is_file():
        words = read_synset_mapping(mapping)
        used.append(SourceFile.of(root, mapping))
    val_form, val_labels = "none", dict[str, str]()
    kaggle = root / KAGGLE_CSV
    if index.val and kaggle.is_file():
        val_form, val_labels = "kaggle", read_kaggle_labels(kaggle)
        if not val_labels:
            raise no_labels_error(kaggle, root / archives.VAL_TAR)
        used.append(SourceFile.of(root, kaggle))
    elif (root / archives.DEVKIT_TAR).is_file():
        val_labels, meta_words, read = archives.devkit_labels(root, bool(index.val), not words)
        val_form = "devkit" if index.val else "none"
        words = words or meta_words
        used += [SourceFile(*r) for r in read]
    elif index.val:
        raise UserError(
            f"{root / archives.VAL_TAR}: no labels for its images",
            hint=f"put {archives.DEVKIT_TAR} or {KAGGLE_CSV} beside it",
        )
    words = {c: words.get(c) or c for c in classes}
    layout = f"ilsvrc2012-{val_form}"
    return Source(
        root, layout, "", classes, words, val_form, val_labels, tuple(dict.fromkeys(used)), index
    )


def iter_split(
    src: Source, index: Archives, split: str, classes: Sequence[str]
) -> Iterator[tuple[str | None, list[SourceFile]]]:
    """`sources.iter_split` for archives: the chosen classes' inner tars, or the val tar."""

    def listed(m: archives.Member) -> SourceFile:
        return SourceFile(m.rel, m.size, m.mtime_ns, (m.archive, m.offset))

    if split == "train":
        for cls in classes:
            yield cls, sorted((listed(m) for m in index.class_members(cls)), key=_path)
    elif src.val_form != "none":
        by_class: dict[str, list[SourceFile]] = {c: [] for c in classes}
        unlabelled: list[SourceFile] = []
        for m in sorted(index.val, key=lambda m: m.rel):
            label = src.val_labels.get(Path(m.rel).stem)
            if label is None:
                unlabelled.append(listed(m))
            elif label in by_class:
                by_class[label].append(listed(m))
        if unlabelled:
            yield None, unlabelled
        yield from by_class.items()


def _path(f: SourceFile) -> str:
    return f.path
