"""RUN_DIR: every path of a training run in one place, and the one reader of its
metrics.jsonl (docs/formats.md "RUN_DIR").

    config.json                the resolved configuration, rewritten at every start
    metrics.jsonl              one JSON object per finished epoch
    checkpoints/last.pt        where training is: every epoch, --checkpoint-every N steps
    checkpoints/best.pt        the lowest validation top-1 error so far
    checkpoints/torchrun-job   which torchrun launch set the run up (its restarts continue)
    tensorboard/               event files, with --tensorboard
    manifest.json              written last: the run is finished

The trainer rewrites metrics.jsonl whole and atomically after each epoch, so a reader
normally sees whole lines; a file copied while written, or written by an older alexcli
that appended, may end in a cut line, which is left out and said (`Metrics.partial_line`).
A line that is not a JSON object anywhere else is a FormatError naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli.errors import FormatError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Metrics:
    """metrics.jsonl as read: one record per epoch, in epoch order."""

    records: list[dict[str, Any]]
    partial_line: bool = False  # the last line was cut off (a run still writing)


@dataclass(frozen=True)
class RunDir:
    """The files of one training run under `root`."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics_file(self) -> Path:
        return self.root / METRICS

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def job(self) -> Path:
        return self.checkpoints / "torchrun-job"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def holds_a_run(self) -> bool:
        """Anything training writes is here (a run begun, finished or not)."""
        return any(p.exists() for p in (self.checkpoints, self.config, self.metrics_file))

    def unfinished(self) -> bool:
        """Training began here (a configuration or last.pt) and never wrote the manifest."""
        begun = self.config.exists() or self.last.exists()
        return begun and not self.manifest.exists()

    def metrics(self) -> Metrics:
        """The epochs so far (none before the first has ended)."""
        if not self.metrics_file.exists():
            return Metrics([])
        return read_metrics(self.metrics_file)


def read_metrics(path: Path) -> Metrics:
    """A metrics.jsonl file: each line a JSON object with an integer `epoch`; a cut last
    line is left out (and said), any other bad line is a FormatError naming it. A later
    line for the same epoch replaces an earlier one."""
    lines = [(n, s) for n, s in enumerate(Path(path).read_text().splitlines(), 1) if s.strip()]
    by_epoch: dict[int, dict[str, Any]] = {}
    partial = False
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise TypeError("not a JSON object")
            epoch = int(record["epoch"])
        except (ValueError, TypeError, KeyError) as e:
            if i == len(lines) - 1:
                partial = True
                continue
            raise FormatError(
                f"{path}:{number}: not a metrics record ({e})",
                hint="metrics.jsonl is written by `alexcli train`; is this the right RUN_DIR?",
            ) from None
        by_epoch[epoch] = record
    return Metrics([by_epoch[k] for k in sorted(by_epoch)], partial)
