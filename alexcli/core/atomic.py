"""Atomic file writes: a temporary name in the same directory, fsync, rename.

A reader never sees a half-written file under its final name: a kill at any
moment leaves either the old file or the new one, plus at worst a stray
temporary (`.<name>.<pid>.tmp`), which `remove_stale_temps` clears.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TMP_SUFFIX = ".tmp"


def temp_name(final: Path) -> Path:
    """The temporary sibling under which `final` is written."""
    return final.with_name(f".{final.name}.{os.getpid()}{_TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to `final`.

    On an exception the temporary is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(final: Path | str, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text(final: Path | str, text: str) -> None:
    write_bytes(final, text.encode("utf-8"))


def write_json(final: Path | str, obj: Any) -> None:
    write_text(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def remove_stale_temps(directory: Path) -> int:
    """Delete temporaries left by killed writers in `directory`; return how many."""
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob(f".*{_TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
