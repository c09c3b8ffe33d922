"""The HDF5 shard format: the paper's 256×256 RGB images, stored once, read fast.

One file holds up to a few thousand images of one split:

    images  uint8 (n, size, size, 3)  RGB, chunked one image per chunk, uncompressed
    labels  int32 (n,)                index into the manifest's `classes`
    paths   utf-8 (n,)                source path relative to SOURCE

Root attributes `format`, `schema_version`, `split`, `size`, `count` are written last
and checked on every open, so a foreign, truncated or older file is reported by name
with the command that fixes it. Writer and reader are symmetric (`ShardWriter` /
`open_shard`, `ShardSet`); the writer is atomic. `ShardImages` is the training
loader's reader: it memory-maps a shard and finds each image's bytes through HDF5's
chunk index.

One image per chunk: a random read touches exactly one chunk, and JPEG-sized
compression would cost more CPU than the disk it saves (docs/formats.md).
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from alexcli.core.atomic import atomic_path
from alexcli.errors import FormatError, first_line

if TYPE_CHECKING:
    import torch

FORMAT = "alexcli-shard"
SCHEMA_VERSION = 1
CHUNK_CACHE_BYTES = 4 << 20  # a few chunks: reads are one-image-per-chunk, cache rarely hits

_FIX = "run `alexcli prepare SOURCE DATA_DIR --verify` (it writes again the shards that differ)"


class ShardWriter:
    """Write one shard: `add()` images one by one, `close()` makes it appear atomically.

    Until `close()` returns, the shard exists only under a temporary name.
    """

    def __init__(
        self,
        path: Path,
        *,
        split: str,
        size: int,
        capacity: int,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.split = split
        self.size = size
        self.count = 0
        # Root attributes written by close(), beside the format's own; add to them until then.
        self.attrs: dict[str, Any] = dict(attrs or {})
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._file: h5py.File | None = None
        made = False
        try:
            with _disk_errors(self.path):
                self._file = h5py.File(tmp, "w")
                cap = max(capacity, 1)
                # Resizable along the image axis so `close()` can trim to the images added.
                self._images = self._file.create_dataset(
                    "images",
                    (cap, size, size, 3),
                    maxshape=(None, size, size, 3),
                    dtype=np.uint8,
                    chunks=(1, size, size, 3),
                )
            made = True
        finally:
            if not made:
                self.abort()
        # Labels and paths are a few bytes an image: kept in memory, written by close().
        self._labels: list[int] = []
        self._paths: list[str] = []

    def add(self, image: np.ndarray, label: int, source_path: str) -> None:
        if image.shape != (self.size, self.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 {(self.size, self.size, 3)}, got {image.shape}")
        if self.count >= self._images.shape[0]:
            raise ValueError(f"shard {self.path.name} is full ({self.count} images)")
        # One image is exactly one uncompressed chunk: hand its bytes to HDF5 as they
        # are, skipping h5py's selection and type machinery (docs/performance.md).
        with _disk_errors(self.path):
            self._images.id.write_direct_chunk(
                (self.count, 0, 0, 0), np.ascontiguousarray(image).tobytes()
            )
        self._labels.append(int(label))
        self._paths.append(source_path)
        self.count += 1

    def close(self) -> None:
        """Trim to the images added, stamp the attributes, and rename into place. A write
        that fails (a full disk) drops the temporary, as `abort` does."""
        n, f = self.count, self._file
        assert f is not None, "close() after abort()"
        done = False
        try:
            with _disk_errors(self.path):
                self._images.resize(n, axis=0)
                f.create_dataset("labels", data=np.asarray(self._labels, np.int32).reshape(n))
                f.create_dataset(
                    "paths", data=self._paths, shape=(n,), dtype=h5py.string_dtype("utf-8")
                )
                f.attrs.update(self.attrs)
                f.attrs.update(
                    format=FORMAT, schema_version=SCHEMA_VERSION, split=self.split,
                    size=self.size, count=n,
                )  # fmt: skip
                f.close()
            self._file = None
            done = True
        finally:
            if not done:
                self.abort()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the temporary file; the final name is never touched. Errors on the way
        (HDF5 flushing what a full disk refused) are ignored: the error that led here is
        the one to report."""
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()
        with contextlib.suppress(RuntimeError):
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """HDF5's write errors as the OSError they stand for, naming the shard: h5py raises
    OSError or RuntimeError with the system's errno (27: file too large, 28: no space) in
    a long message, and its reason for a full disk is not one line."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        errno = e.errno if isinstance(e, OSError) else None
        found = _ERRNO.search(str(e))
        errno = errno or (int(found.group(1)) if found else None)
        if errno:
            raise OSError(errno, os.strerror(errno), str(path)) from e
        raise


_ERRNO = re.compile(r"errno = (\d+)")


def write_shard(
    path: Path,
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    paths: Sequence[str],
    *,
    split: str,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write a whole shard at once (tests, small data)."""
    n, size = images.shape[0], images.shape[1]
    with ShardWriter(path, split=split, size=size, capacity=n, attrs=attrs) as w:
        for i in range(n):
            w.add(images[i], int(labels[i]), paths[i])


def open_shard(path: Path, expect_split: str | None = None) -> h5py.File:
    """Open a shard for reading after checking it is one of ours, whole, and current."""
    try:
        f = h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
    except FileNotFoundError:
        raise FormatError(f"{path}: shard missing", hint=_FIX) from None
    except OSError as e:
        raise FormatError(
            f"{path}: not a readable HDF5 shard ({first_line(e)})", hint=_FIX
        ) from None
    try:
        check_shard(f, path, expect_split)
    except BaseException:
        f.close()
        raise
    return f


def check_shard(f: h5py.File, path: Path, expect_split: str | None = None) -> int:
    """Validate an open shard's attributes and datasets; return its image count."""
    attrs = f.attrs
    if attrs.get("format") != FORMAT:
        raise FormatError(f"{path}: not an alexcli shard", hint=_FIX)
    version = int(attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise FormatError(
            f"{path}: shard schema version {version}, this alexcli reads {SCHEMA_VERSION}",
            hint=_FIX,
        )
    if expect_split is not None and attrs.get("split") != expect_split:
        raise FormatError(f"{path}: a {attrs.get('split')!r} shard, expected {expect_split!r}")
    try:
        n, size = int(attrs["count"]), int(attrs["size"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{path}: attributes `count` and `size` missing", hint=_FIX) from None
    for name, shape, kinds in _datasets(n, size):
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset) or ds.shape != shape:
            raise FormatError(f"{path}: dataset {name!r} missing or not {shape}", hint=_FIX)
        if ds.dtype.kind not in kinds or (name == "images" and ds.dtype != np.uint8):
            raise FormatError(f"{path}: dataset {name!r} has dtype {ds.dtype}", hint=_FIX)
    return n


def _datasets(n: int, size: int) -> list[tuple[str, tuple[int, ...], str]]:
    """Each dataset a shard must hold: name, shape, and its dtype's kinds (numpy's codes:
    u unsigned, i signed integer, O/S/T strings)."""
    return [("images", (n, size, size, 3), "u"), ("labels", (n,), "iu"), ("paths", (n,), "OST")]


class ShardSet:
    """The shards of one split as one indexable sequence of (image, label).

    Files open lazily, once per process (h5py handles do not survive fork), so a
    ShardSet can be built in the parent and handed to DataLoader workers.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        counts: Sequence[int],
        split: str | None = None,
        classes: int | None = None,
    ) -> None:
        if len(paths) != len(counts):
            raise ValueError("one count per shard")
        self.classes = classes  # labels must lie in [0, classes) when given
        self.paths = [Path(p) for p in paths]
        self.counts = [int(c) for c in counts]
        self.split = split
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._pid: int | None = None
        self._files: list[h5py.File | None] = []

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, index inside that shard) of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = bisect.bisect_right(self.offsets, index) - 1
        return s, index - int(self.offsets[s])

    def file(self, s: int) -> h5py.File:
        if self._pid != os.getpid():
            self._files = [None] * len(self.paths)
            self._pid = os.getpid()
        f = self._files[s]
        if f is None:
            f = open_shard(self.paths[s], self.split)
            n = int(f.attrs["count"])
            if n != self.counts[s]:
                f.close()
                raise FormatError(
                    f"{self.paths[s]}: holds {n} images, the manifest says {self.counts[s]}",
                    hint=_FIX,
                )
            self._check_labels(f, self.paths[s])
            self._files[s] = f
        return f

    def _check_labels(self, f: h5py.File, path: Path) -> None:
        """Labels outside the manifest's classes would index past fc8: refused by name."""
        if self.classes is None or not len(f["labels"]):
            return
        labels = f["labels"][:]
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.classes:
            f.close()
            bad = low if low < 0 else high
            raise FormatError(
                f"{path}: label {bad} outside the manifest's {self.classes} classes", hint=_FIX
            )

    def image(self, index: int) -> np.ndarray:
        s, i = self.locate(index)
        return np.asarray(self.file(s)["images"][i])

    def label(self, index: int) -> int:
        s, i = self.locate(index)
        return int(self.file(s)["labels"][i])

    def labels(self) -> np.ndarray:
        """All labels, in order (small: 4 bytes an image)."""
        return (
            np.concatenate(
                [
                    np.asarray(self.file(s)["labels"][:], dtype=np.int64)
                    for s in range(len(self.paths))
                ]
            )
            if self.paths
            else np.zeros(0, np.int64)
        )

    def close(self) -> None:
        for f in self._files:
            if f is not None:
                f.close()
        self._files = [None] * len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pid"], state["_files"] = None, []
        return state


class ShardImages:
    """One shard's images and labels in this process.

    The images are memory-mapped (`mmap`): the shard format stores each image as one
    uncompressed chunk, so HDF5's own chunk index gives each image's byte offset and a
    crop is a copy straight from the page cache, with no read call. A shard laid out
    otherwise (filters, another chunking) is read through h5py instead.
    """

    def __init__(self, f: h5py.File) -> None:
        self.dataset: h5py.Dataset = f["images"]
        self.labels = np.asarray(f["labels"][:], dtype=np.int64)
        self.size = int(self.dataset.shape[1])
        self._flat = self._map(f.filename)
        self._scratch: torch.Tensor | None = None

    def _map(self, path: str) -> tuple[torch.Tensor, np.ndarray] | None:
        """The file's bytes and each image's offset in it, or None if not one raw chunk each."""
        ds, n, s = self.dataset, int(self.dataset.shape[0]), self.size
        plain = (ds.dtype == np.uint8 and ds.chunks == (1, s, s, 3)
                 and ds.id.get_create_plist().get_nfilters() == 0)  # fmt: skip
        if not plain or n == 0:
            return None
        infos = [ds.id.get_chunk_info_by_coord((i, 0, 0, 0)) for i in range(n)]
        if any(i.byte_offset is None or i.size != s * s * 3 or i.filter_mask for i in infos):
            return None
        offsets = np.array([i.byte_offset for i in infos], dtype=np.int64)
        import torch  # here: prepare's workers read no shards and need no torch

        with open(path, "rb") as fh:
            if int(offsets.max()) + s * s * 3 > os.fstat(fh.fileno()).st_size:
                return None
            # Copy-on-write: torch wants writable memory; nothing ever writes to it.
            pages = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        return torch.frombuffer(pages, dtype=torch.uint8), offsets

    def image(self, i: int) -> torch.Tensor:
        """Image i (S, S, 3) uint8: a view of the mapped file, or read into a scratch array."""
        s = self.size
        if self._flat is not None:
            flat, offsets = self._flat
            start = int(offsets[i])
            return flat[start : start + s * s * 3].view(s, s, 3)
        if self._scratch is None:
            import torch

            self._scratch = torch.empty((s, s, 3), dtype=torch.uint8)
        self.dataset.read_direct(self._scratch.numpy(), np.s_[i])
        return self._scratch
