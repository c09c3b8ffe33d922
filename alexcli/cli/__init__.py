"""The command line: parse, call one library function, render.

`main()` is the single error boundary: an `AlexcliError` becomes one line (and a
hint) with its exit code, a usage error exit 2, anything else exit 1 — with the
traceback only under `--debug` (or ALEXCLI_DEBUG=1).

Command modules import their stage inside the command body, so `alexcli --help`
never imports torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from typer.main import get_command

# Imported for their @app.command registrations, in the order `--help` lists them.
# isort: off
from alexcli.cli import prepare, stats, train, eval, predict, neighbors, export, viz, summary
from alexcli.cli import import_weights, demo, run, ablate
from alexcli.cli import bench

# isort: on
from alexcli.cli._app import app
from alexcli.cli._console import error, reset_logging
from alexcli.core.machine import raise_open_file_limit
from alexcli.core.signals import handling
from alexcli.errors import AlexcliError, Stopped, Terminated, first_line, resource_error

__all__ = ["app", "main"]
_COMMANDS = (
    prepare,
    stats,
    train,
    eval,
    predict,
    neighbors,
    export,
    import_weights,
    viz,
    summary,
    demo,
    run,
    ablate,
    bench,
)


_ROOT_FLAG = re.compile(r"--debug|--verbose|--quiet|-[vq]+")  # -v, -vv, -q, -qv…
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def main(argv: Sequence[str] | None = None, application: typer.Typer = app) -> int:
    """Run `application` (alexcli) with `argv` (default: sys.argv[1:]); return the exit code."""
    args = eval.legacy_json_args(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args or os.environ.get("ALEXCLI_DEBUG", "") not in ("", "0")
    # alexcli's own options, wherever they are typed (after the command too)
    own = [a for a in args if _ROOT_FLAG.fullmatch(a)]
    if own:
        args = [*own, *(a for a in args if not _ROOT_FLAG.fullmatch(a))]
    command = get_command(application)
    raise_open_file_limit()
    try:
        return _run(command, args, debug, ending=argv is None)
    finally:
        reset_logging()  # in-process callers (tests, scripts) get their logging back


def _run(command: Any, args: list[str], debug: bool, ending: bool = False) -> int:
    """The command, its errors as one line and an exit code. `ending`: the process ends
    after this call (the `alexcli` program, not a Python caller)."""
    try:
        with _sigterm_stops(ending):
            result = command.main(args=args, prog_name="alexcli", standalone_mode=False)
        if result == INTERRUPTED:  # Ctrl-C: click returns 130 here rather than raising
            _interrupted()
        return result if isinstance(result, int) else 0
    except AlexcliError as e:
        if debug:
            raise
        return _said(e)
    except typer.TyperException as e:  # usage errors: bad flag, missing argument
        if debug:
            raise
        message = _one_line(e)
        if message:  # empty when Typer has already printed the help (no arguments)
            error(message, "see `alexcli COMMAND --help`")
        return int(getattr(e, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
        return INTERRUPTED
    except Terminated:
        if debug:
            raise
        return _said(Stopped("stopped by SIGTERM", hint="rerun the command: finished work is kept"))
    except typer.Exit as e:
        return int(e.exit_code)
    except OSError as e:  # the system refused: a full disk, permissions, a vanished path
        if debug:
            raise
        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):  # say what to change
            ran_out = resource_error(e, str(e.filename2 or e.filename or "alexcli"))
            return _said(ran_out) if ran_out is not None else 1
        where = f" ({e.filename})" if e.filename else ""
        if e.filename and e.filename2:  # a rename: the file it was to become says more
            where = f" ({e.filename2}, written as {e.filename})"
        error(f"{e.strerror or e}{where}", _os_hint(e.errno))
        return 1
    except Exception as e:
        if debug:
            raise
        error(
            f"unexpected {type(e).__name__}: {first_line(e)}",
            "rerun with --debug for the traceback",
        )
        return 1


@contextlib.contextmanager
def _sigterm_stops(ending: bool = False) -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler) ends a command as Ctrl-C does: the stage's pools
    wind down, whole files stay, one line, exit 143. `train` saves last.pt first (its
    own handler, core/nn/trainer.py, holds the signal while it trains).

    `ending` (the process ends after the command): SIGTERM and SIGINT are ignored from
    the command's end on. The work is done and said; torch's teardown takes half a
    second, and Python puts back the default handlers (death, no word) before it."""

    def stop(signum: int, frame: object) -> None:
        raise Terminated

    try:
        with handling(signal.SIGTERM, stop, then=signal.SIG_IGN if ending else None):
            yield
    finally:
        if ending:  # the `alexcli` program, whose main thread this is
            with contextlib.suppress(ValueError):  # (ValueError: not the main thread)
                signal.signal(signal.SIGINT, signal.SIG_IGN)


def _said(e: AlexcliError) -> int:
    """`e` in its one line (a job's stop by rank 0 alone: every rank of a cancelled job
    has it); its exit code."""
    if not (isinstance(e, Stopped) and os.environ.get("RANK", "0") != "0"):
        error(e.message, e.hint)
    return e.exit_code


def _os_hint(code: int | None) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free some space (or write elsewhere), then rerun"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "write where you may (or change the permissions), then rerun"
    return "fix the path, then rerun"


def _interrupted() -> None:
    error("interrupted", "rerun the command: finished work is kept (train: add --resume)")


def _one_line(e: Exception) -> str:
    fmt = getattr(e, "format_message", None)
    text = fmt() if callable(fmt) else str(e)
    return " ".join(text.split()).replace("Value error, ", "")  # Typer's choice check
