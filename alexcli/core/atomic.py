"""Atomic file writes: a temporary name in the same directory, fsync, rename.

A reader never sees a half-written file under its final name: a kill at any
moment leaves either the old file or the new one, plus at worst a stray
temporary (`.<name>.<pid>.tmp`), which `remove_stale_temps` clears.

Two kinds of target are not replaced but written into (`atomic_path` says how):
a symlink (its target is replaced, the link stays) and what is not a regular
file at all (a device such as /dev/null, a FIFO, /dev/stdout).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from alexcli.errors import UserError

_TMP_SUFFIX = ".tmp"
# A directory of a process's open files: /dev/stdout → /proc/self/fd/1 → whatever fd 1 is.
_FD_DIR = re.compile(r"/proc/[^/]+/fd|/dev/fd")


def temp_name(final: Path) -> Path:
    """The temporary sibling under which `final` is written."""
    return final.with_name(f".{final.name}.{os.getpid()}{_TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to `final`.

    On an exception the temporary is removed and `final` is untouched; an OSError
    about the temporary names `final` instead (the temporary is gone).

    - A symlink is never replaced: the file it points to is (written beside that
      file and renamed over it), as `>` in a shell writes through a link. A dangling
      link gets its target created.
    - A target that exists and is not a regular file (following links: a character
      device, a FIFO, a terminal, /dev/stdout, /dev/fd/N, whatever that descriptor
      is) cannot be renamed over: the caller still writes a temporary file (in the
      system's temporary directory: writers such as HDF5 need a seekable file), which
      is then copied into the target. A full device gives the OSError (ENOSPC) of
      that copy; there is no "old file" to keep.
    """
    final = Path(final)
    if in_place(final):
        with _copied_in(final) as tmp:
            yield tmp
        return
    final = through_links(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    done = False
    try:
        try:
            yield tmp
            _fsync_file(tmp)  # NFS reports a full disk or quota here, not at write()
            os.replace(tmp, final)
        except OSError as e:
            _rename_error(e, tmp, final)
            raise
        done = True
        _fsync_dir(final.parent)
    finally:
        if not done:
            tmp.unlink(missing_ok=True)


def in_place(path: Path | str) -> bool:
    """Whether `path` is written into rather than replaced: it exists and, following
    links, is not a regular file or a directory, or it names an open descriptor."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return True
    return not stat.S_ISDIR(mode) and _names_descriptor(path)


def through_links(path: Path) -> Path:
    """The file a symlink at `path` points to (through every link), else `path`."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _names_descriptor(path: Path | str) -> bool:
    """Whether `path` or a link it goes through is /proc/PID/fd/N or /dev/fd/N: renaming
    over what that resolves to would leave the descriptor on a deleted file."""
    return _descriptor(path) is not None


def _descriptor(path: Path | str) -> tuple[int, bool] | None:
    """(N, whether it is this process's) for a `path` that is, or links to, /dev/fd/N or
    /proc/PID/fd/N (/dev/stdout is /proc/self/fd/1); None for any other path."""
    p = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        folder, name = os.path.split(p)
        if _FD_DIR.fullmatch(folder) and name.isdigit():
            own = folder in ("/dev/fd", "/proc/self/fd", f"/proc/{os.getpid()}/fd")
            return int(name), own
        if not os.path.islink(p):
            return None
        p = os.path.normpath(os.path.join(folder, os.readlink(p)))
    return None


@contextlib.contextmanager
def _copied_in(final: Path) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=_TMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as src, _open_target(final) as dst:
            shutil.copyfileobj(src, dst)
    except OSError as e:
        _rename_error(e, tmp, final)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _open_target(final: Path) -> BinaryIO:
    """`final` opened for writing. One of this process's descriptors (/dev/stdout) is
    written through a duplicate, at its offset, after what Python has buffered for it:
    output redirected to a file (`> out.json`) keeps what was printed before and after."""
    fd = _descriptor(final)
    if fd is None or not fd[1]:
        return open(final, "wb")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if stream.fileno() == fd[0]:
                stream.flush()
    return open(os.dup(fd[0]), "wb")


def _rename_error(e: OSError, tmp: Path, final: Path) -> None:
    """Make `e` name `final` where it named the temporary or nothing (a write's error):
    the temporary is gone by the time anyone reads the message."""
    if e.errno is None or e.filename2 is not None:
        return
    if e.filename is None or str(e.filename) == str(tmp):
        e.filename = str(final)


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
    a path under a file, a folder not ours, a device not ours); missing folders are fine:
    writes make them. A symlink is checked where its target is."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory", hint="give a file name")
    if in_place(path):
        if not os.access(path, os.W_OK):
            raise UserError(
                f"{flag} {path}: cannot write there (Permission denied)",
                hint="choose a place you can write",
            )
        return
    folder = through_links(path).parent
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
