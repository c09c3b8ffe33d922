"""The error hierarchy. Library code raises these; the CLI's one boundary
(`alexcli.cli.main`) turns them into one line, a hint, and an exit code.

Exit codes: 2 for bad input the user can fix (a path, a flag, a file that is not
ours), 1 for everything else.
"""

from __future__ import annotations

import errno
import re


class AlexcliError(Exception):
    """Base of every error alexcli reports. `hint` says what fixes it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserError(AlexcliError):
    """Bad input: a missing path, a bad flag value, an unknown layout."""

    exit_code = 2


class ConfigError(UserError):
    """A recipe, preset or `--set` override that does not fit the configuration."""


class FormatError(UserError):
    """A file that is not ours, of another version, truncated or corrupt."""


class StaleInputError(UserError):
    """An upstream output changed since this one was built from it."""


class DeviceError(UserError):
    """A device that was asked for but is not there."""


class ResourceError(AlexcliError):
    """The system refused a resource: open files, memory, disk space. Nothing is wrong with
    the data; the hint says what to change."""


# errno → what ran out, and what to change.
_RESOURCES = {
    errno.EMFILE: (
        "too many open files (`ulimit -n` is {nofile})",
        "raise the limit (`ulimit -n 4096`) or use fewer --workers (--jobs), then rerun",
    ),
    errno.ENFILE: (
        "the system's table of open files is full",
        "close other programs' files (or raise fs.file-max), then rerun",
    ),
    errno.ENOMEM: (
        "out of memory",
        "use fewer --workers (--jobs) or a smaller --batch-size, then rerun",
    ),
    errno.ENOSPC: (
        "no space left on the device",
        "free some space (or write elsewhere), then rerun",
    ),
}


def resource_error(e: BaseException, where: str) -> ResourceError | None:
    """`e` as a ResourceError naming `where`, when what it reports is a resource that ran
    out (its errno, or one quoted in a library's message as "errno = N"); else None. Such
    an error never calls for rewriting data."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None:
        found = re.search(r"errno = (\d+)|\[Errno (\d+)\]", str(e))
        code = int(found.group(1) or found.group(2)) if found else None
    if code not in _RESOURCES:
        if isinstance(e, MemoryError):
            code = errno.ENOMEM
        else:
            return None
    what, hint = _RESOURCES[code]
    return ResourceError(f"{where}: {what.format(nofile=_nofile())}", hint=hint)


def _nofile() -> str:
    try:
        import resource

        return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, OSError, ValueError):
        return "unknown"


class TrainingDiverged(AlexcliError):
    """The loss became NaN or infinite."""


class TrainingFlat(AlexcliError):
    """`--stop-if-flat`: an epoch learned nothing (loss at ln C, validation at chance)."""


class PeerLost(AlexcliError):
    """Under torchrun, a collective failed or timed out waiting for another rank."""


class Stopped(AlexcliError):
    """SIGTERM (a scheduler's preemption, `kill`): stopped after saving where it was."""

    exit_code = 143  # 128 + SIGTERM, as if the signal had ended the process


class Terminated(BaseException):
    """SIGTERM outside training, raised where the main thread is. Not an `Exception`, as
    KeyboardInterrupt is not: no `except Exception` on the way (a decoder's, a
    library's) may take it for a failure of the work it interrupted."""


def first_line(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name when it has none), cut to
    `limit` characters: what a one-line error quotes of a library's reason."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:limit]
