"""ILSVRC-2012 as it is downloaded, read in place: docs/paper.md "Data".

A folder holding `ILSVRC2012_img_train.tar` (one uncompressed tar of 1,000 per-wnid
tars, ~138 GB), `ILSVRC2012_img_val.tar` (50,000 flat JPEGs) and the validation labels
— `ILSVRC2012_devkit_t12.tar.gz` (meta.mat and the ground truth inside), or Kaggle's
`LOC_val_solution.csv` beside them — is a SOURCE like an extracted tree, and gives the
same shards: every image is listed under the path extraction would give it
(`train/<wnid>/<file>`, `val/<file>`) with the size and modification time the tar
records (which extraction keeps), and read straight out of the tar at its offset.
Nothing is ever extracted to disk.

Only the headers are read to list: the outer tar's 1,000 headers, then the headers of
the chosen classes' inner tars (a class subset never touches the others). A truncated
or corrupt inner tar keeps the images listed before the damage and is reported; an
image cut short by it is skipped like any truncated file. A tar must end in tar's
end-of-archive marker (two zero blocks): `tarfile` takes the end of the data at a
member's boundary for the end of the archive, so a download cut there would pass as whole.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from alexcli.core.data.labels import (
    DEVKIT_META,
    DEVKIT_TRUTH,
    KAGGLE_CSV,
    no_labels_error,
    read_devkit_labels,
    read_devkit_meta,
)
from alexcli.errors import FormatError, UserError, first_line

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
TRUNCATED_ARCHIVE = "truncated or corrupt archive"


@dataclass(frozen=True, slots=True)
class Member:
    """One file inside an archive: where extraction would put it, and where its bytes are."""

    rel: str  # the path an extracted tree has for it, relative to SOURCE
    size: int
    mtime_ns: int
    archive: str  # the archive's file name in SOURCE
    offset: int  # of its data in that file


@dataclass
class Archives:
    """The archive files of a SOURCE folder, indexed by their headers as they are needed."""

    root: Path
    inner: dict[str, tarfile.TarInfo]  # wnid → its tar inside the train tar
    val: list[Member]
    problems: list[dict[str, str]] = field(default_factory=list)  # damaged inner tars

    @property
    def files(self) -> list[str]:
        """The archive files present (what their sizes and mtimes are checked on)."""
        names = (TRAIN_TAR, VAL_TAR, DEVKIT_TAR)
        return [n for n in names if (self.root / n).is_file()]

    def class_members(self, wnid: str) -> list[Member]:
        """Every image of one class, from its inner tar's headers; a damaged inner tar
        gives the images before the damage, and is recorded in `problems`."""
        info = self.inner[wnid]
        start = info.offset_data
        found: list[Member] = []
        with open(self.root / TRAIN_TAR, "rb") as f:
            window = _Window(f, start, info.size)
            try:
                with tarfile.open(fileobj=window, mode="r:") as inner:
                    for m in _members(inner):
                        rel = f"train/{wnid}/{printable(Path(m.name).name)}"
                        # an image the damage cut short keeps only the bytes that are its
                        size = max(0, min(m.size, info.size - m.offset_data))
                        found.append(
                            Member(
                                rel, size, int(m.mtime) * 10**9, TRAIN_TAR, start + m.offset_data
                            )
                        )
                    _check_end(inner, len(found))
            except (tarfile.TarError, EOFError, OSError) as e:
                self.problems.append(
                    {
                        "path": f"train/{wnid}.tar",
                        "reason": TRUNCATED_ARCHIVE,
                        "detail": f"{TRAIN_TAR}: {first_line(e)}; {len(found)} images kept",
                    }
                )
        return found


def is_archive_folder(root: Path) -> bool:
    return (Path(root) / TRAIN_TAR).is_file()


def printable(name: str) -> str:
    """A file name as listed: one that is not UTF-8 (os and tarfile give its bytes as
    surrogates) with those bytes escaped, `caf\\xe9.jpg`, as shards store UTF-8."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def open_archives(root: Path) -> Archives:
    """Index the train tar's per-class tars and the val tar's images (headers only)."""
    root = Path(root)
    inner: dict[str, tarfile.TarInfo] = {}
    for m in _listing(root / TRAIN_TAR):
        name = Path(m.name).name
        if name.endswith(".tar"):
            if printable(name) != name:
                raise FormatError(
                    f"{root / TRAIN_TAR}: {printable(name)}: not a UTF-8 name",
                    hint="this is not the ILSVRC-2012 training archive",
                )
            inner[name.removesuffix(".tar")] = m
    if not inner:
        raise UserError(
            f"{root / TRAIN_TAR}: no per-class tars (n########.tar) inside",
            hint="this is the ILSVRC-2012 training archive as downloaded, or not it",
        )
    val = []
    if (root / VAL_TAR).is_file():
        val = [
            Member(
                f"val/{printable(Path(m.name).name)}",
                m.size,
                int(m.mtime) * 10**9,
                VAL_TAR,
                m.offset_data,
            )
            for m in _listing(root / VAL_TAR)
        ]
    return Archives(root, inner, val)


def devkit_files(root: Path) -> dict[str, tuple[bytes, int]]:
    """The devkit tar.gz's `data/` files: {path inside it: (bytes, mtime_ns)}."""
    path = Path(root) / DEVKIT_TAR
    out: dict[str, tuple[bytes, int]] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for m in _members(tar):
                if "/data/" in f"/{m.name}":
                    data = tar.extractfile(m)
                    if data is not None:
                        out[m.name] = (data.read(), int(m.mtime) * 10**9)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        raise FormatError(f"{path}: unreadable ({first_line(e)})") from None
    return out


def devkit_labels(
    root: Path, val: bool, words: bool
) -> tuple[dict[str, str], dict[str, str], list[tuple[str, int, int]]]:
    """The devkit tar.gz's labels as a tree of its extraction gives them: {val image:
    wnid} when `val` (the val tar holds images), meta.mat's words when `words`, and the
    files read (path inside it, size, mtime_ns). `val` without the ground truth, or
    without meta.mat beside it, is a one-line error, as a tree's flat val/ is."""
    devkit = Path(root) / DEVKIT_TAR
    files = devkit_files(root)
    meta = next((n for n in files if n.endswith("/" + DEVKIT_META)), None)
    truth = next((n for n in files if n.endswith("/" + DEVKIT_TRUTH)), None)
    labels: dict[str, str] = {}
    if val:
        hint = f"download {DEVKIT_TAR} again, or put {KAGGLE_CSV} beside it"
        if truth is None:
            raise UserError(
                f"{devkit}: no {DEVKIT_TRUTH} in it: no labels for {VAL_TAR}'s images", hint=hint
            )
        meta = f"{truth.rpartition('/')[0]}/{DEVKIT_META}"
        if meta not in files:
            raise UserError(
                f"{devkit}: {truth} is there but not meta.mat beside it: its "
                "IDs cannot be mapped to wnids",
                hint=hint,
            )
        labels = read_devkit_labels(meta, truth, files[meta][0], files[truth][0])
        if not labels:
            raise no_labels_error(f"{devkit}: {truth}", devkit.parent / VAL_TAR)
    found: dict[str, str] = {}
    if meta is not None and words:
        found = {w: i[1] for w, i in read_devkit_meta(meta, files[meta][0]).items()}
    read = (meta, truth) if val else (meta,)
    return labels, found, [(n, len(files[n][0]), files[n][1]) for n in read if n is not None]


def read_member(root: Path | str, archive: str, offset: int, size: int) -> bytes:
    """A file's bytes, straight from its archive (`os.pread`: no seek shared with others)."""
    fd = os.open(os.path.join(root, archive), os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def _listing(path: Path) -> list[tarfile.TarInfo]:
    """A tar's regular files, from its headers; a damaged one is a one-line error."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            found = list(_members(tar))
            _check_end(tar, len(found))
            return found
    except (tarfile.TarError, EOFError, OSError) as e:
        cut = isinstance(e, _Truncated) or "unexpected end of data" in str(e)
        what = "truncated" if cut else "not a readable tar"
        raise FormatError(
            f"{path}: {what} ({first_line(e)})",
            hint="download it again (its checksum is on the ILSVRC site)",
        ) from None


class _Truncated(tarfile.ReadError):
    """A tar without its end-of-archive marker."""


def _check_end(tar: tarfile.TarFile, members: int) -> None:
    """`tarfile` stops at the first header it cannot read, as if the archive ended there:
    a tar cut at a member's boundary (or inside a header) lists as whole. A whole one
    has two zero blocks where the headers stop (GNU tar and tarfile pad them further);
    one is enough here (GNU tar reads a "lone zero block" too, and every member before
    it is whole)."""
    assert tar.fileobj is not None
    tar.fileobj.seek(tar.offset)
    if tar.fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
        raise _Truncated(
            f"no end-of-archive marker after its {members} files, at byte {tar.offset}"
        )


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Regular files, in archive order, hidden names skipped (as listing a tree does)."""
    for m in tar:
        if m.isfile() and not Path(m.name).name.startswith("."):
            yield m


class _Window(io.RawIOBase):
    """`length` bytes of an open file from `start`: an inner tar, for `tarfile` to read
    without ever seeing past its end."""

    def __init__(self, f: io.BufferedReader, start: int, length: int) -> None:
        self.f, self.start, self.length, self.pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(buffer), self.length - self.pos))
        if n == 0:
            return 0
        data = os.pread(self.f.fileno(), n, self.start + self.pos)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


# --------------------------------------------------------------------------- writing


def write_archives(tree: Path, out: Path) -> list[Path]:
    """Pack an extracted ILSVRC-2012 tree (train/<wnid>/, val/ flat, the devkit's data/ or
    Kaggle's label files) into the archives as they are downloaded, in `out`: the train
    tar of per-wnid tars, the flat val tar, the devkit tar.gz; Kaggle's CSV and synset
    mapping are copied beside them. For the tests and `alexcli demo --archives`."""
    tree, out = Path(tree), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / TRAIN_TAR, "w", format=tarfile.GNU_FORMAT) as outer:
        for folder in sorted(p for p in (tree / "train").iterdir() if p.is_dir()):
            inner = out / f".{folder.name}.tar"
            with tarfile.open(inner, "w", format=tarfile.GNU_FORMAT) as tar:
                for f in sorted(folder.iterdir()):
                    tar.add(f, arcname=f.name)
            outer.add(inner, arcname=f"{folder.name}.tar")
            inner.unlink()
    written = [out / TRAIN_TAR]
    if (tree / "val").is_dir():
        with tarfile.open(out / VAL_TAR, "w", format=tarfile.GNU_FORMAT) as tar:
            for f in sorted((tree / "val").iterdir()):
                tar.add(f, arcname=f.name)
        written.append(out / VAL_TAR)
    devkit = tree / "ILSVRC2012_devkit_t12"
    if devkit.is_dir():
        with tarfile.open(out / DEVKIT_TAR, "w:gz", format=tarfile.GNU_FORMAT) as tar:
            tar.add(devkit, arcname=devkit.name)
        written.append(out / DEVKIT_TAR)
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        if (tree / name).is_file():
            (out / name).write_bytes((tree / name).read_bytes())
            os.utime(
                out / name, ns=((tree / name).stat().st_atime_ns, (tree / name).stat().st_mtime_ns)
            )
            written.append(out / name)
    return written
