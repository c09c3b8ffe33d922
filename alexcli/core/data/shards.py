"""The HDF5 shard format: the paper's 256×256 RGB images, stored once, read fast.

One file holds up to a few thousand images of one split, stored raw (schema 1):

    images  uint8 (n, size, size, 3)  RGB, chunked one image per chunk, uncompressed
    labels  int32 (n,)                index into the manifest's `classes`
    paths   utf-8 (n,)                source path relative to SOURCE

or as JPEG records (schema 2, `encoding = "jpeg"`, core/data/records.py), FFCV's way:

    jpeg     uint8 (total,)  every image's JPEG bytes, one after the other, contiguous
    offsets  int64 (n + 1,)  image i is jpeg[offsets[i]:offsets[i + 1]]
    crc32    uint32 (n,)     each record's CRC-32
    labels, paths            as above

Root attributes `format`, `schema_version`, `split`, `size`, `count` (and for JPEG
`encoding`, `quality`, `subsampling`) are written last and checked on every open, so
a foreign, truncated or newer file is reported by name with the command that fixes it.
Raw shards are still written as schema 1, which an alexcli from before JPEG reads.
Writer and reader are symmetric (`ShardWriter` / `open_shard`, `ShardSet`); the writer
is atomic. `ImageReader` is the training loader's reader: the split's `ShardIndex`
(read once) gives each image's byte offset (through HDF5's chunk index for raw images,
the dataset's offset plus `offsets` for JPEG ones), and an image is one `pread`: a
crop's rows of a raw image, or the whole record of a JPEG one, then decoded.

Nothing a process holds grows with the number of shards: at most `OPEN_FILES` files
are open at once, and nothing is memory-mapped (mapped pages would count in the
process's resident memory as the epoch reads them).

One raw image per chunk: a random read touches exactly one chunk. HDF5's own
compression filters would cost more CPU than JPEG for far less space (docs/formats.md).
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
from alexcli.core.data.records import (
    ENCODINGS,
    SUBSAMPLING,
    BadRecord,
    Encoding,
    crc32,
    decode_jpeg,
    encode_jpeg,
)
from alexcli.errors import AlexcliError, FormatError, first_line, resource_error

if TYPE_CHECKING:
    import torch

FORMAT = "alexcli-shard"
SCHEMA_VERSION = 2  # the newest this alexcli reads and writes (JPEG records)
RAW_SCHEMA_VERSION = 1  # what raw shards are still written as, so older alexcli reads them
CHUNK_CACHE_BYTES = 4 << 20  # a few chunks: reads are one-image-per-chunk, cache rarely hits

_FIX = "run `alexcli prepare SOURCE DATA_DIR --verify` (it writes again the shards that differ)"


class ShardWriter:
    """Write one shard: `add()` images one by one, `close()` makes it appear atomically.

    Until `close()` returns, the shard exists only under a temporary name. JPEG records
    are kept in memory until then (~20 KB an image at quality 90) and written as one
    contiguous dataset, so each record lies at a fixed byte offset of the file.
    """

    def __init__(
        self,
        path: Path,
        *,
        split: str,
        size: int,
        capacity: int,
        attrs: Mapping[str, Any] | None = None,
        encoding: Encoding = "raw",
        quality: int = 90,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding {encoding!r}: not one of {', '.join(ENCODINGS)}")
        self.path = Path(path)
        self.split = split
        self.size = size
        self.encoding, self.quality = encoding, quality
        self.capacity = max(capacity, 1)
        self.count = 0
        self._records: list[bytes] = []
        # Root attributes written by close(), beside the format's own; add to them until then.
        self.attrs: dict[str, Any] = dict(attrs or {})
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._file: h5py.File | None = None
        made = False
        try:
            with _disk_errors(self.path):
                self._file = h5py.File(tmp, "w")
                if encoding == "raw":
                    # Resizable along the image axis so `close()` can trim to the images added.
                    self._images = self._file.create_dataset(
                        "images",
                        (self.capacity, size, size, 3),
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
        if self.count >= self.capacity:
            raise ValueError(f"shard {self.path.name} is full ({self.count} images)")
        if self.encoding == "jpeg":
            self._records.append(encode_jpeg(np.ascontiguousarray(image), self.quality))
        else:
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
                if self.encoding == "jpeg":
                    self._write_records(f)
                else:
                    self._images.resize(n, axis=0)
                f.create_dataset("labels", data=np.asarray(self._labels, np.int32).reshape(n))
                f.create_dataset(
                    "paths", data=self._paths, shape=(n,), dtype=h5py.string_dtype("utf-8")
                )
                f.attrs.update(self.attrs)
                f.attrs.update(
                    format=FORMAT, split=self.split, size=self.size, count=n, **self._encoding()
                )
                f.close()
            self._file = None
            done = True
        finally:
            if not done:
                self.abort()
        self._ctx.__exit__(None, None, None)

    def _write_records(self, f: h5py.File) -> None:
        """The JPEG records as one contiguous dataset (its bytes at one offset of the
        file), their offsets and CRCs."""
        sizes = [len(r) for r in self._records]
        offsets = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        f.create_dataset("jpeg", data=np.frombuffer(b"".join(self._records), np.uint8))
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("crc32", data=np.array([crc32(r) for r in self._records], np.uint32))
        self._records = []

    def _encoding(self) -> dict[str, Any]:
        if self.encoding == "raw":
            return {"schema_version": RAW_SCHEMA_VERSION}
        return {
            "schema_version": SCHEMA_VERSION,
            "encoding": self.encoding,
            "quality": self.quality,
            "subsampling": SUBSAMPLING,
        }

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
    encoding: Encoding = "raw",
    quality: int = 90,
) -> None:
    """Write a whole shard at once (tests, small data)."""
    n, size = images.shape[0], images.shape[1]
    with ShardWriter(
        path, split=split, size=size, capacity=n, attrs=attrs, encoding=encoding, quality=quality
    ) as w:
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
    if version not in (RAW_SCHEMA_VERSION, SCHEMA_VERSION):
        raise FormatError(
            f"{path}: shard schema version {version}, this alexcli reads "
            f"{RAW_SCHEMA_VERSION} and {SCHEMA_VERSION}",
            hint=_FIX,
        )
    if expect_split is not None and attrs.get("split") != expect_split:
        raise FormatError(f"{path}: a {attrs.get('split')!r} shard, expected {expect_split!r}")
    try:
        n, size = int(attrs["count"]), int(attrs["size"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{path}: attributes `count` and `size` missing", hint=_FIX) from None
    encoding = shard_encoding(f, path)
    for name, shape, kinds in _datasets(n, size, encoding):
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset) or (ds.shape != shape and shape != ()):
            raise FormatError(f"{path}: dataset {name!r} missing or not {shape}", hint=_FIX)
        if shape == () and ds.ndim != 1:
            raise FormatError(f"{path}: dataset {name!r} is not one-dimensional", hint=_FIX)
        if ds.dtype.kind not in kinds or (name in ("images", "jpeg") and ds.dtype != np.uint8):
            raise FormatError(f"{path}: dataset {name!r} has dtype {ds.dtype}", hint=_FIX)
    return n


def shard_encoding(f: h5py.File, path: Path) -> Encoding:
    """How an open shard stores its images: `raw` (schema 1, or said) or `jpeg`."""
    if int(f.attrs.get("schema_version", -1)) == RAW_SCHEMA_VERSION:
        return "raw"
    found = f.attrs.get("encoding")
    found = found.decode() if isinstance(found, bytes) else found
    for encoding in ENCODINGS:
        if found == encoding:
            return encoding
    raise FormatError(f"{path}: unknown image encoding {found!r}", hint=_FIX)


def _datasets(n: int, size: int, encoding: Encoding) -> list[tuple[str, tuple[int, ...], str]]:
    """Each dataset a shard must hold: name, shape (() for any length along one axis),
    and its dtype's kinds (numpy's codes: u unsigned, i signed integer, O/S/T strings)."""
    rest = [("labels", (n,), "iu"), ("paths", (n,), "OST")]
    if encoding == "jpeg":
        return [("jpeg", (), "u"), ("offsets", (n + 1,), "iu"), ("crc32", (n,), "u"), *rest]
    return [("images", (n, size, size, 3), "u"), *rest]


def read_image(f: h5py.File, i: int, path: Path) -> np.ndarray:
    """Image i of an open, checked shard, through h5py, whatever its encoding; a record
    that does not decode is a one-line FormatError naming the shard and the image."""
    return read_images(f, i, np.empty((1, *_image_shape(f)), np.uint8), path)[0]


def read_images(f: h5py.File, start: int, out: np.ndarray, path: Path) -> np.ndarray:
    """Images start … start + len(out) of an open, checked shard into `out`, in one
    h5py read (all their bytes) whatever the encoding; returns `out`."""
    stop = start + len(out)
    if shard_encoding(f, path) == "raw":
        f["images"].read_direct(out, np.s_[start:stop])
        return out
    size = int(f.attrs["size"])
    offsets = np.asarray(f["offsets"][start : stop + 1], np.int64)
    crcs = np.asarray(f["crc32"][start:stop])
    lo, hi = int(offsets[0]), int(offsets[-1])
    if not (0 <= lo <= hi <= f["jpeg"].shape[0]) or (np.diff(offsets) < 0).any():
        raise FormatError(f"{path}: image offsets {start}…{stop} out of order", hint=_FIX)
    data = f["jpeg"][lo:hi].tobytes()
    for k in range(len(out)):
        a, b = int(offsets[k]) - lo, int(offsets[k + 1]) - lo
        try:
            out[k] = decode_jpeg(data[a:b], size, int(crcs[k]))
        except BadRecord as e:
            raise bad_image(path, start + k, e) from None
    return out


def _image_shape(f: h5py.File) -> tuple[int, int, int]:
    size = int(f.attrs["size"])
    return size, size, 3


def bad_image(path: Path | str, i: int, e: BaseException) -> FormatError:
    """The one line for image i of shard `path` that cannot be read back."""
    return FormatError(f"{path}: unreadable image {i} ({first_line(e)})", hint=_FIX)


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
    """Where every image of a split lies: its label, the byte offset of its record in its
    shard file (a raw chunk or a JPEG record; -1 where the shard is laid out otherwise and
    is read through h5py), and for a JPEG record its length and CRC-32. Built once, by
    reading each shard's attributes, labels and chunk index or offsets, then closing it:
    20 bytes an image, whatever the number of shards."""

    labels: np.ndarray  # int32 (n,)
    starts: np.ndarray  # int64 (n,)
    lengths: np.ndarray  # int32 (n,): a JPEG record's bytes; 0 for a raw image
    crcs: np.ndarray  # uint32 (n,): a JPEG record's CRC-32
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
            n = len(self)
            labels = np.zeros(n, np.int32)
            starts = np.full(n, -1, np.int64)
            lengths, crcs = np.zeros(n, np.int32), np.zeros(n, np.uint32)
            sizes = set()
            for s, path in enumerate(self.paths):
                lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
                with open_shard(path, self.split) as f:
                    labels[lo:hi] = self._check(f, s)
                    if shard_encoding(f, path) == "jpeg":
                        starts[lo:hi], lengths[lo:hi], crcs[lo:hi] = _jpeg_records(f, path)
                    else:
                        starts[lo:hi] = _raw_chunk_starts(f, path)
                    sizes.add(int(f.attrs["size"]))
                if len(sizes) > 1:
                    raise FormatError(
                        f"{path}: images of another size than the shards before", hint=_FIX
                    )
            self._index = ShardIndex(labels, starts, lengths, crcs, sizes.pop() if sizes else 0)
        return self._index

    def image(self, index: int) -> np.ndarray:
        """Image `index` as uint8 (S, S, 3), decoded if it is stored as JPEG."""
        s, i = self.locate(index)
        return read_image(self.file(s), i, self.paths[s])

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


def _jpeg_records(f: h5py.File, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each JPEG record's byte offset in the file, length and CRC-32. The offsets are the
    `jpeg` dataset's own (contiguous, unfiltered, as `ShardWriter` writes it) plus each
    record's place in it; all -1 (read through h5py) for any other layout or when the
    dataset lies past the end of the file. Offsets out of order are a FormatError."""
    ds, n = f["jpeg"], int(f.attrs["count"])
    offsets = np.asarray(f["offsets"][:], np.int64)
    lengths = np.diff(offsets)
    if n and (offsets[0] != 0 or offsets[-1] != ds.shape[0] or (lengths < 0).any()):
        raise FormatError(f"{path}: image offsets out of order or past the records", hint=_FIX)
    if n and lengths.max() >= 2**31:
        raise FormatError(f"{path}: a record of {int(lengths.max()):,} bytes", hint=_FIX)
    crcs = np.asarray(f["crc32"][:], np.uint32)
    starts = np.full(n, -1, np.int64)
    base = ds.id.get_offset() if ds.chunks is None else None
    if base is None or ds.id.get_create_plist().get_nfilters() or not n:
        return starts, lengths.astype(np.int32), crcs
    if int(base) + int(offsets[-1]) <= os.stat(path).st_size:
        starts = int(base) + offsets[:-1]
    return starts, lengths.astype(np.int32), crcs


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
    """Images of a `ShardSet`, read with one `pread` each from at most `OPEN_FILES` open
    files: of a raw image only the rows a crop needs, a copy from the page cache into a
    scratch array; of a JPEG one its record, decoded into that array. Nothing is mapped,
    so a process's memory does not grow with the data it has read. Shards laid out
    otherwise are read through h5py."""

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
        scratch = self._scratch.numpy()
        view, nbytes = self._scratch[:count], count * size * 3
        into = [scratch.data.cast("B")[:nbytes]]
        shard_of = np.searchsorted(self.shards.offsets, indices, side="right") - 1
        starts, lengths = self.index.starts[indices], self.index.lengths[indices]
        places = zip(
            indices.tolist(),
            shard_of.tolist(),
            starts.tolist(),
            lengths.tolist(),
            ys.tolist(),
            strict=True,
        )
        for index, s, start, length, y in places:
            try:
                if start < 0:
                    yield torch.from_numpy(self.shards.image(index)[y : y + count])
                    continue
                if length:  # a JPEG record: read it whole, decode, keep the rows asked
                    data = os.pread(self._fds.get(s), length, start)
                    if len(data) != length:
                        raise OSError("the file ends before the record does")
                    crc = int(self.index.crcs[index])
                    scratch[:count] = decode_jpeg(data, size, crc)[y : y + count]
                elif os.preadv(self._fds.get(s), into, start + y * size * 3) != nbytes:
                    raise OSError("the file ends before the image does")
            except AlexcliError:
                raise
            except (OSError, MemoryError, KeyError, ValueError, TypeError, RuntimeError) as e:
                raise self._failed(e, index) from None
            yield view

    def _failed(self, e: BaseException, index: int) -> AlexcliError:
        s, i = self.shards.locate(index)
        path = str(self.shards.paths[s])
        return resource_error(e, path) or bad_image(path, i, e)

    def close(self) -> None:
        self._fds.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": None}
