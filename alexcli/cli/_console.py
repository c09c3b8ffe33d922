"""The one place that talks to the terminal: consoles, progress bars, JSON output."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgressBar

from alexcli.core.progress import emit, log

out = Console()  # results: tables, JSON
err = Console(stderr=True)  # progress, status lines, errors


def error(message: str, hint: str | None = None) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    if hint:
        err.print(f"[dim]hint:[/] {escape(hint)}", soft_wrap=True, highlight=False)


def print_json(data: Any) -> None:
    """Results as JSON on stdout (plain, so it pipes into jq)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


class _Task:
    def __init__(self, bar: RichProgressBar | None, task_id: TaskID | None) -> None:
        self._bar, self._id = bar, task_id

    def advance(self, n: float = 1, **fields: Any) -> None:
        if self._bar is not None and self._id is not None:
            info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            self._bar.update(self._id, advance=n, info=info) if fields else self._bar.advance(
                self._id, n
            )

    def close(self) -> None:
        if self._bar is not None and self._id is not None:
            self._bar.stop_task(self._id)


class RichProgress:
    """`core.progress.Progress` drawn with rich; bars only on a terminal, never under --json."""

    def __init__(self, quiet: bool = False) -> None:
        # no bars under --json, nor under -q (warnings, errors and results only)
        self.show_bars = err.is_terminal and not quiet and log.getEffectiveLevel() <= logging.INFO
        self._bar: RichProgressBar | None = None

    def task(self, description: str, total: float | None = None, unit: str = "") -> _Task:
        if not self.show_bars:
            return _Task(None, None)
        if self._bar is None:
            self._bar = RichProgressBar(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=err,
            )
            self._bar.start()
        return _Task(self._bar, self._bar.add_task(description, total=total, unit=unit, info=""))

    def log(self, message: str) -> None:
        emit(message)  # through logging: `-q` hides it, a Python caller's handlers see it

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextlib.contextmanager
def reporting(quiet: bool = False) -> Iterator[RichProgress]:
    """A progress reporter for one command; bars are cleaned up however it ends."""
    progress = RichProgress(quiet=quiet)
    try:
        yield progress
    finally:
        progress.stop()


class _ConsoleHandler(logging.Handler):
    """The "alexcli" logger's lines on stderr, as they are (they carry their own
    "warning:"), above any progress bar (rich keeps the bars below printed lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err.print(escape(record.getMessage()), soft_wrap=True, highlight=False)
        except Exception:  # a closed stream: never let a status line fail a command
            self.handleError(record)


_HANDLER = _ConsoleHandler()


def reset_logging() -> None:
    """Undo `configure_logging`: a Python caller of `main()` gets its logging back."""
    log.removeHandler(_HANDLER)
    log.propagate = True
    log.setLevel(logging.NOTSET)


def configure_logging(verbosity: int = 0) -> None:
    """The CLI's logging: -1 (`-q`) warnings only, 0 status lines, 1+ (`-v`) debug too."""
    if _HANDLER not in log.handlers:
        log.addHandler(_HANDLER)
    log.propagate = False  # the CLI owns the process: no second copy through the root
    log.setLevel(
        logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
