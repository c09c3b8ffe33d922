"""The generic stage runner: fingerprint first, skip when up to date, manifest last.

Every stage goes through `run_stage`:
1. compute the fingerprint of what its outputs depend on (before any work);
2. if the manifest on disk has that fingerprint and its outputs exist: "up to date";
3. otherwise remove the old manifest (so a run killed half-way is never taken for
   a whole one), let the stage write its outputs atomically, and write the
   manifest last, atomically.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli import __version__
from alexcli.core.atomic import write_json
from alexcli.core.fingerprint import stage_fingerprint
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import FormatError, UserError


@dataclass(frozen=True)
class StageResult:
    stage: str
    fingerprint: str
    up_to_date: bool
    manifest: dict[str, Any]
    manifest_path: Path


def run_stage(
    *,
    stage: str,
    version: int,
    params: Mapping[str, Any],
    manifest_path: Path,
    build: Callable[[], Mapping[str, Any]],
    upstream: Mapping[str, str] | None = None,
    listing: str | None = None,
    config: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Progress = SILENT,
) -> StageResult:
    """Run `build` unless its outputs are up to date; return the stage's manifest.

    `params` are what change the results (they enter the fingerprint); `config` is
    the whole resolved configuration to record (defaults to `params`). `build`
    writes the outputs and returns the manifest body; its `outputs` key lists the
    files it wrote, relative to the manifest's directory.
    """
    fp = stage_fingerprint(stage, version, params, upstream, listing)
    old = read_manifest(manifest_path)
    if (
        not force
        and old is not None
        and old.get("fingerprint") == fp
        and _outputs_exist(manifest_path.parent, old)
    ):
        progress.log(f"{stage}: up to date ({manifest_path})")
        return StageResult(stage, fp, True, old, manifest_path)
    manifest_path.unlink(missing_ok=True)
    body = dict(build())
    manifest = {
        "stage": stage,
        "version": version,
        "alexcli_version": __version__,
        "fingerprint": fp,
        "upstream": dict(upstream or {}),
        "config": dict(config if config is not None else params),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **body,
    }
    write_json(manifest_path, manifest)
    return StageResult(stage, fp, False, manifest, manifest_path)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A manifest, or None when it is missing or unreadable (then: not up to date)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def require_manifest(path: Path, stage: str, fix: str) -> dict[str, Any]:
    """The manifest of an upstream stage, or a one-line error naming the command `fix`."""
    if not path.exists():
        raise UserError(f"{path} not found: `{stage}` has not run here", hint=f"run `{fix}`")
    data = read_manifest(path)
    if data is None or data.get("stage") != stage:
        raise FormatError(f"{path} is not a `{stage}` manifest", hint=f"run `{fix} --force`")
    return data


def _outputs_exist(root: Path, manifest: Mapping[str, Any]) -> bool:
    outputs = manifest.get("outputs", [])
    return isinstance(outputs, list) and all((root / str(o)).exists() for o in outputs)
