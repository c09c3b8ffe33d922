"""What a source lists: docs/paper.md "Data" (ILSVRC-2012 and its kin, as trees or as
downloaded). `Source` is a detected source, its layout, classes and validation labels;
`SourceFile` one file of it, as a tree's walk (core/data/sources.py) or an archive's
headers (core/data/archive_source.py) list it. Both listings build these, so they
live apart from either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alexcli.core.data.archives import Archives


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One listed file: its path relative to SOURCE (posix), size and mtime; and, for a file
    inside an archive, which archive and where its bytes start (core/data/archives.py).
    A file whose name is not UTF-8 is listed under the name with its bytes escaped
    (`caf\\xe9.jpg`) and read through its real one: `at` is (that real path, 0)."""

    path: str
    size: int
    mtime_ns: int
    at: tuple[str, int] | None = None  # (archive file in SOURCE, offset of the bytes)

    @classmethod
    def of(cls, root: Path, path: Path) -> SourceFile:
        """The file at `path` on disk, listed relative to `root`."""
        st = path.stat()
        return cls(path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Source:
    """A detected source tree: its layout, classes, and how validation is labelled."""

    root: Path
    layout: str  # "ilsvrc2012-{folders,kaggle,devkit,none}", "tiny-imagenet", "image-folder"
    base: str  # the folder holding train/ and val/, relative to root ("" mostly)
    classes: tuple[str, ...]  # every training folder, sorted
    words: dict[str, str]
    val_form: str  # "folders", "kaggle", "devkit", "tiny" or "none"
    val_labels: dict[str, str]  # flat val: file stem → class name
    label_files: tuple[SourceFile, ...]  # metadata files read; they enter the fingerprint
    archives: Archives | None = None  # ILSVRC-2012 as downloaded, read in place
    problems: list[dict[str, str]] = field(default_factory=list)  # folder links not followed

    def dir(self, split: str) -> Path:
        return self.root / self.base / split

    def classless_val_labels(self) -> dict[str, int]:
        """Classes the flat validation labels name that have no training folder, with how
        many images each: a per-class tar not extracted, mostly. Their images are not
        listed (they could never be predicted)."""
        known = set(self.classes)
        counts: dict[str, int] = {}
        for cls in self.val_labels.values():
            if cls not in known:
                counts[cls] = counts.get(cls, 0) + 1
        return counts
