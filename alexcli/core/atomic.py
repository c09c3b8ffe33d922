"""Atomic file writes: a temporary name in the same directory, fsync, rename.

A reader never sees a half-written file under its final name: a kill at any
moment leaves either the old file or the new one, plus at worst a stray
temporary (`.<name>.<pid>.tmp`), which `remove_stale_temps` clears.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alexcli.errors import UserError

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


def check_writable(path: Path, flag: str) -> None:
    """Refuse, before the work, an output that could not be written after it (a directory,
    a path under a file, a folder not ours); missing folders are fine: writes make them."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory", hint="give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(
            f"{flag} {path}: cannot write there ({e.strerror or e})",
            hint="choose a place you can write",
        ) from None
