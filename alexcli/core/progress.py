"""How long work reports progress without printing: a small protocol.

Core and stage code call `progress.task(...)` and `task.advance(...)`; the CLI
passes an implementation that draws rich progress bars, tests pass nothing and
get `SILENT`.

Status lines (`progress.log`) go to the standard `logging` module, logger "alexcli":
"warning: …" lines at WARNING, the rest at INFO. The package adds only a NullHandler,
as a library should; the CLI installs its own handler (rich, stderr, `-v`/`-q`), and
a Python caller sees the lines with `logging.basicConfig(level=logging.INFO)` or
silences them with `logging.getLogger("alexcli").setLevel(logging.ERROR)`.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("alexcli")
log.addHandler(logging.NullHandler())


def emit(message: str) -> None:
    """A status line to the "alexcli" logger: WARNING when it says "warning:"."""
    if message.startswith("warning:"):
        log.warning(message)
    else:
        log.info(message)


class Task(Protocol):
    def advance(self, n: float = 1, **fields: Any) -> None:
        """Count `n` more units done; `fields` (loss=…, lr=…) are shown beside the bar."""

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        """Start a bar. `total` None: an open-ended count."""

    def log(self, message: str) -> None:
        """A status line worth seeing even without a terminal ("up to date", "skipped 3")."""


class _SilentTask:
    def advance(self, n: float = 1, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class Silent:
    """No bars; status lines to `logging` only. The default below the CLI."""

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        return _SilentTask()

    def log(self, message: str) -> None:
        emit(message)


class Quiet(Silent):
    """No bars, no lines: a torchrun rank other than 0, which leaves the telling to 0."""

    def log(self, message: str) -> None:
        pass


class Recorder(Silent):
    """Keeps the log lines; handy in tests and for stage results."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


SILENT = Silent()
QUIET = Quiet()
