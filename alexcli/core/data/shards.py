"""The HDF5 shard format: the paper's 256×256 RGB images, stored once, read fast.

One file holds up to a few thousand images of one split:

    images  uint8 (n, size, size, 3)  RGB, chunked one image per chunk, uncompressed
    labels  int32 (n,)                index into the manifest's `classes`
    paths   utf-8 (n,)                source path relative to SOURCE

Root attributes `format`, `schema_version`, `split`, `size`, `count` are written last
and checked on every open, so a foreign, truncated or older file is reported by name
with the command that fixes it. Writer and reader are symmetric (`ShardWriter` /
`open_shard`, `ShardSet`); the writer is atomic. `ImageReader` is the training
loader's reader: the split's `ShardIndex` (read once) gives each image's byte offset,
found through HDF5's chunk index, and a crop's rows are one `pread`.

Nothing a process holds grows with the number of shards: at most `OPEN_FILES` files
are open at once, and nothing is memory-mapped (mapped pages would count in the
process's resident memory as the epoch reads them).

One image per chunk: a random read touches exactly one chunk, and JPEG-sized
compression would cost more CPU than the disk it saves (docs/formats.md).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from alexcli.core.atomic import atomic_path
from alexcli.errors import AlexcliError, FormatError, first_line, resource_error

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


OPEN_FILES = 16
"""Shard files one process keeps open at once. A training epoch visits the shards in a
random order, so a larger set would rarely be hit again; this one stays far below the
usual `ulimit -n` of 1024 whatever the number of shards (full ILSVRC-2012 makes 1,252)."""


class _OpenFiles:
    """The last `capacity` files opened by this process, least recently used closed first.
    A fork starts with none (handles do not survive it)."""

    def __init__(self, opener: Callable[[int], Any], closer: Callable[[Any], None]) -> None:
        self._opener, self._closer = opener, closer
        self._pid: int | None = None
        self._open: OrderedDict[int, Any] = OrderedDict()

    def get(self, key: int) -> Any:
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), OrderedDict()
        handle = self._open.get(key)
        if handle is not None:
            self._open.move_to_end(key)
            return handle
        while len(self._open) >= OPEN_FILES:
            self._closer(self._open.popitem(last=False)[1])
        handle = self._opener(key)
        self._open[key] = handle
        return handle

    def close(self) -> None:
        if self._pid == os.getpid():
            while self._open:
                self._closer(self._open.popitem(last=False)[1])
        self._open = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for a worker) without its handles."""
        return {**self.__dict__, "_pid": None, "_open": OrderedDict()}


def _close(f: h5py.File) -> None:
    f.close()


@dataclass(frozen=True, eq=False)
class ShardIndex:
    """Where every image of a split lies: its label, and the byte offset of its pixels in
    its shard file (one raw chunk; -1 where the shard is laid out otherwise and is read
    through h5py). Built once, by reading each shard's attributes, labels and chunk index,
    then closing it: 12 bytes an image, whatever the number of shards."""

    labels: np.ndarray  # int32 (n,)
    starts: np.ndarray  # int64 (n,)
    size: int  # the images' side, S


class ShardSet:
    """The shards of one split as one indexable sequence of (image, label).

    Files open lazily and at most `OPEN_FILES` at a time per process (h5py handles do not
    survive fork), so a ShardSet can be built in the parent and handed to DataLoader
    workers, and holds a bounded number of descriptors whatever the number of shards.
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
        self._files = _OpenFiles(self._open, _close)
        self._index: ShardIndex | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, index inside that shard) of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = bisect.bisect_right(self.offsets, index) - 1
        return s, index - int(self.offsets[s])

    def file(self, s: int) -> h5py.File:
        """Shard s, open and checked; valid until `OPEN_FILES` other shards are opened."""
        return self._files.get(s)

    def _open(self, s: int) -> h5py.File:
        f = open_shard(self.paths[s], self.split)
        try:
            self._check(f, s)
        except BaseException:
            f.close()
            raise
        return f

    def _check(self, f: h5py.File, s: int) -> np.ndarray:
        """Its count against the manifest's and its labels against the classes (outside
        them they would index past fc8); return the labels."""
        path, n = self.paths[s], int(f.attrs["count"])
        if n != self.counts[s]:
            raise FormatError(
                f"{path}: holds {n} images, the manifest says {self.counts[s]}", hint=_FIX
            )
        labels = np.asarray(f["labels"][:])
        if self.classes is not None and len(labels):
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.classes:
                bad = low if low < 0 else high
                raise FormatError(
                    f"{path}: label {bad} outside the manifest's {self.classes} classes",
                    hint=_FIX,
                )
        return labels

    def index(self) -> ShardIndex:
        """Every image's label and place, read once (each shard opened, read and closed in
        turn) and kept: build it before forking workers and they share it."""
        if self._index is None:
            labels = np.zeros(len(self), np.int32)
            starts = np.full(len(self), -1, np.int64)
            sizes = set()
            for s, path in enumerate(self.paths):
                lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
                with open_shard(path, self.split) as f:
                    labels[lo:hi] = self._check(f, s)
                    starts[lo:hi] = _raw_chunk_starts(f, path)
                    sizes.add(int(f.attrs["size"]))
                if len(sizes) > 1:
                    raise FormatError(
                        f"{path}: images of another size than the shards before", hint=_FIX
                    )
            self._index = ShardIndex(labels, starts, sizes.pop() if sizes else 0)
        return self._index

    def image(self, index: int) -> np.ndarray:
        s, i = self.locate(index)
        return np.asarray(self.file(s)["images"][i])

    def label(self, index: int) -> int:
        s, i = self.locate(index)
        return int(self.file(s)["labels"][i])

    def labels(self) -> np.ndarray:
        """All labels, in order (small: 4 bytes an image)."""
        return self.index().labels.astype(np.int64)

    def source(self, index: int) -> str:
        """The source path prepare recorded for image `index`."""
        s, i = self.locate(index)
        value = self.file(s)["paths"][i]
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def close(self) -> None:
        self._files.close()


def _raw_chunk_starts(f: h5py.File, path: Path) -> np.ndarray:
    """Each image's byte offset in the file when the shard stores it as one raw chunk (as
    `ShardWriter` does); all -1 (read through h5py) for any other layout, or when an offset
    lies past the end of the file."""
    ds, s = f["images"], int(f.attrs["size"])
    n, frame = int(ds.shape[0]), s * s * 3
    starts = np.full(n, -1, np.int64)
    plain = (
        ds.dtype == np.uint8
        and ds.chunks == (1, s, s, 3)
        and ds.id.get_create_plist().get_nfilters() == 0
    )
    if not plain or n == 0:
        return starts
    found = np.zeros(n, bool)

    def visit(chunk: Any) -> None:
        i = chunk.chunk_offset[0]
        if chunk.size == frame and not chunk.filter_mask and chunk.byte_offset is not None:
            starts[i], found[i] = chunk.byte_offset, True

    if hasattr(ds.id, "chunk_iter"):  # HDF5 1.14 and later: one pass over the index
        ds.id.chunk_iter(visit)
    else:
        for i in range(n):
            visit(ds.id.get_chunk_info_by_coord((i, 0, 0, 0)))
    if not found.all() or int(starts.max()) + frame > os.stat(path).st_size:
        return np.full(n, -1, np.int64)
    return starts


class ImageReader:
    """Images of a `ShardSet`, read with one `pread` each (only the rows a crop needs) from
    at most `OPEN_FILES` open files: a copy from the page cache into a scratch array.
    Nothing is mapped, so a process's memory does not grow with the data it has read.
    Shards laid out otherwise are read through h5py."""

    def __init__(self, shards: ShardSet) -> None:
        self.shards = shards
        self.index = shards.index()
        self._fds = _OpenFiles(self._open, os.close)
        self._scratch: torch.Tensor | None = None

    def _open(self, s: int) -> int:
        return os.open(self.shards.paths[s], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def rows(self, indices: np.ndarray, ys: np.ndarray, count: int) -> Iterator[torch.Tensor]:
        """For each image `indices[k]`, its rows ys[k] … ys[k]+count as (count, S, 3) uint8,
        in a scratch array that the next one overwrites. What the file's bytes refuse is a
        one-line FormatError naming the shard and image (h5py's own errors say neither file
        nor fix); what the system refuses (open files, memory) a ResourceError saying what
        to change."""
        import torch  # here: prepare's workers read no shards and need no torch

        size = self.index.size
        if self._scratch is None:
            self._scratch = torch.empty((size, size, 3), dtype=torch.uint8)
        view, nbytes = self._scratch[:count], count * size * 3
        into = [self._scratch.numpy().data.cast("B")[:nbytes]]
        shard_of = np.searchsorted(self.shards.offsets, indices, side="right") - 1
        starts = self.index.starts[indices]
        places = zip(
            indices.tolist(),
            shard_of.tolist(),
            (starts + ys * size * 3).tolist(),
            (starts >= 0).tolist(),
            ys.tolist(),
            strict=True,
        )
        for index, s, at, direct, y in places:
            try:
                if not direct:
                    yield torch.from_numpy(self.shards.image(index)[y : y + count])
                    continue
                if os.preadv(self._fds.get(s), into, at) != nbytes:
                    raise OSError("the file ends before the image does")
            except AlexcliError:
                raise
            except (OSError, MemoryError, KeyError, ValueError, TypeError, RuntimeError) as e:
                raise self._failed(e, index) from None
            yield view

    def _failed(self, e: BaseException, index: int) -> AlexcliError:
        s, i = self.shards.locate(index)
        path = str(self.shards.paths[s])
        return resource_error(e, path) or FormatError(
            f"{path}: unreadable image {i} ({first_line(e)})", hint=_FIX
        )

    def close(self) -> None:
        self._fds.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": None}
