"""One shard of the paper's 256×256 images from a list of source files (docs/paper.md "Data").

The unit of work of `alexcli prepare`, run in a worker process: decode and resize
each file of a `ShardPlan` (core/data/decode.py), write them through
`core/shards.ShardWriter` (atomic: a shard under its final name is whole), and
return only metadata: the count, the sha256, the files skipped and why, the files
converted and how. `reencode_shard` is the unit of work of converting a prepared
DATA_DIR to another encoding: one shard's images read back and written again.

A plan carries a fingerprint of everything that decides the shard's content (its
files with their sizes and mtimes, labels, size, decoding choices), stored in the
shard's `plan` attribute, so a finished shard of the same plan is recognised and
kept (resuming after a kill) instead of written again. What was converted is
stored beside it (the `converted` attribute: JSON, the kinds of a file → the rows
that had them), so a kept shard reports its conversions without decoding anything.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexcli.core.data import decode
from alexcli.core.data.archives import read_member
from alexcli.core.data.records import Encoding
from alexcli.core.data.shards import ShardWriter, open_shard, read_images
from alexcli.core.fingerprint import file_digest
from alexcli.errors import UserError

_SEP = ", "  # joins one file's kinds in the keys of the `converted` attribute


@dataclass(frozen=True)
class Located:
    """Where the bytes of a plan's files are, file by file, for files read out of another
    file of SOURCE (an archive; or, for a name that is not UTF-8, the file under its real
    name at offset 0): that file or None (read the file itself), the offset and the size.
    In arrays: at ILSVRC-2012's 1.28 M images the plans are most of prepare's memory."""

    files: tuple[str | None, ...]
    offsets: array[int]
    sizes: array[int]


@dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its path in DATA_DIR, its source files (paths relative to
    SOURCE) and their labels; where their bytes are when they are inside another file
    (`Located`); how the shard stores its images (core/data/records.py)."""

    split: str
    path: str
    names: tuple[str, ...]
    labels: tuple[int, ...]
    fingerprint: str
    located: Located | None = None
    encoding: Encoding = "raw"
    quality: int = 90  # of JPEG records

    def __len__(self) -> int:
        return len(self.names)

    def source(self, root: str, k: int) -> decode.ImageSource:
        """Item k's file, or its bytes read out of its archive."""
        at = self.located
        inside = None if at is None else at.files[k]
        if at is None or inside is None:
            return os.path.join(root, self.names[k])
        try:
            return read_member(root, inside, at.offsets[k], at.sizes[k])
        except OSError as e:  # the archive vanished or cannot be read: as an unreadable file
            raise decode.Unreadable(decode.UNREADABLE, e.strerror or str(e)) from None


@dataclass(frozen=True)
class ShardDone:
    """What a worker returns for a shard: metadata only, never pixels."""

    path: str
    images: int
    sha256: str
    bytes: int
    skipped: list[dict[str, str]]
    converted: list[dict[str, Any]]  # {path, what: [kinds]}, in the shard's order
    reused: bool


def pack_shard(
    source: str,
    data_dir: str,
    plan: ShardPlan,
    size: int,
    resample: str,
    reuse: bool,
    parent: int | None = None,
) -> ShardDone:
    """Decode, resize and store one shard's images (in a worker); or, if a whole shard
    of the same plan is already there, keep it. `parent`: the pid of the process that
    dispatched the work, when this runs in a worker process."""
    path = Path(data_dir) / plan.path
    if reuse:
        kept = _reusable(source, path, plan, size, resample)
        if kept is not None:
            return kept
    skipped: list[dict[str, str]] = []
    stored: list[str] = []
    rows: dict[str, list[int]] = {}  # "kind, kind" → rows converted that way
    attrs = {"plan": plan.fingerprint}
    with ShardWriter(
        path,
        split=plan.split,
        size=size,
        capacity=len(plan),
        attrs=attrs,
        encoding=plan.encoding,
        quality=plan.quality,
    ) as writer:
        for k, (rel, label) in enumerate(zip(plan.names, plan.labels, strict=True)):
            if parent is not None and os.getppid() != parent:
                # The command was killed (-9): a worker left behind drops its shard rather
                # than rename it into place under a rerun that may plan differently.
                raise SystemExit("prepare: the parent process is gone")
            try:
                image, notes = decode.load_image_noted(
                    plan.source(source, k), size, name=rel, resample=resample
                )
            except decode.Unreadable as e:
                skipped.append(_skip(rel, e))
                continue
            if notes:
                rows.setdefault(_SEP.join(notes), []).append(len(stored))
            writer.add(image, label, rel)
            stored.append(rel)
        writer.attrs["converted"] = json.dumps(rows, separators=(",", ":"))
        count = writer.count
    return ShardDone(
        plan.path,
        count,
        file_digest(path),
        path.stat().st_size,
        skipped,
        converted_list(stored, rows),
        False,
    )


def converted_list(paths: Sequence[str], rows: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
    """The manifest's `converted` entries of one shard, in row order, from its rows by kinds."""
    what = {int(r): kinds.split(_SEP) for kinds, rs in rows.items() for r in rs}
    return [{"path": paths[r], "what": what[r]} for r in sorted(what)]


def _skip(rel: str, e: decode.Unreadable) -> dict[str, str]:
    return {"path": rel, "reason": e.reason, "detail": e.detail}


def _reusable(
    source: str, path: Path, plan: ShardPlan, size: int, resample: str
) -> ShardDone | None:
    """A finished shard of this very plan, or None. The files it lacks were skipped;
    their reasons are found again by decoding just those (few) files. Its conversions
    are in its attributes (a shard written before they were recorded is not kept)."""
    if not path.is_file():
        return None
    try:
        with open_shard(path, plan.split) as f:
            if f.attrs.get("plan") != plan.fingerprint:
                return None
            count = int(f.attrs["count"])
            paths = [p.decode() if isinstance(p, bytes) else str(p) for p in f["paths"][:]]
            converted = converted_list(paths, json.loads(f.attrs["converted"]))
    except (UserError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    stored = set(paths)
    skipped = []
    for k, rel in enumerate(plan.names):
        if rel not in stored:
            try:
                decode.load_image(plan.source(source, k), size, resample=resample)
            except decode.Unreadable as e:
                skipped.append(_skip(rel, e))
            else:
                return None  # it decodes now: the shard is not what this plan gives
    return ShardDone(
        plan.path, count, file_digest(path), path.stat().st_size, skipped, converted, True
    )


@dataclass(frozen=True)
class ReencodePlan:
    """One shard of a prepared DATA_DIR (`source`, absolute) to write again at `path` in
    another DATA_DIR, stored as `encoding`; `fingerprint` names the source shard's bytes
    and the encoding, so a finished one is kept by a rerun."""

    split: str
    path: str
    source: str
    images: int
    fingerprint: str
    encoding: Encoding
    quality: int


REENCODE_BLOCK = 64  # images read back at a time


def reencode_shard(
    data_dir: str, plan: ReencodePlan, reuse: bool, parent: int | None = None
) -> ShardDone:
    """The images of one shard, in order with their labels and paths, written again in
    `plan.encoding` (in a worker); or, if a whole shard of this plan is there, kept."""
    path = Path(data_dir) / plan.path
    if reuse and _finished(path, plan):
        return ShardDone(
            plan.path, plan.images, file_digest(path), path.stat().st_size, [], [], True
        )
    source = Path(plan.source)
    with open_shard(source, plan.split) as f:
        n, size = int(f.attrs["count"]), int(f.attrs["size"])
        labels = np.asarray(f["labels"][:])
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in f["paths"][:]]
        attrs = {"plan": plan.fingerprint, "converted": f.attrs.get("converted", "{}")}
        buffer = np.empty((min(REENCODE_BLOCK, max(n, 1)), size, size, 3), np.uint8)
        with ShardWriter(
            path,
            split=plan.split,
            size=size,
            capacity=n,
            attrs=attrs,
            encoding=plan.encoding,
            quality=plan.quality,
        ) as writer:
            for start in range(0, n, REENCODE_BLOCK):
                if parent is not None and os.getppid() != parent:
                    raise SystemExit("prepare: the parent process is gone")
                block = read_images(f, start, buffer[: min(REENCODE_BLOCK, n - start)], source)
                for k, image in enumerate(block):
                    writer.add(image, int(labels[start + k]), paths[start + k])
    return ShardDone(plan.path, n, file_digest(path), path.stat().st_size, [], [], False)


def _finished(path: Path, plan: ReencodePlan) -> bool:
    if not path.is_file():
        return False
    try:
        with open_shard(path, plan.split) as f:
            return bool(f.attrs.get("plan") == plan.fingerprint)
    except (UserError, OSError):
        return False
