"""The generic stage runner: fingerprint first, skip when up to date, manifest last.

Every stage goes through `run_stage`, or through its three steps when it has to decide
before it builds (`train`, whose ranks agree on the decision first):
1. compute the fingerprint of what its outputs depend on (before any work);
2. `up_to_date`: the manifest on disk has that fingerprint and its outputs exist;
3. otherwise mark the manifest unfinished (`begin_redo`: a `manifest.json.unfinished`
   beside it, so a run killed half-way is never taken for a whole one), let the stage
   write its outputs atomically, and `write_manifest` last, atomically, then drop the
   mark. The old manifest stays on disk meanwhile: a redo that fails (a full disk)
   without having changed the outputs it lists (the stage's `intact` says) drops the
   mark, and the directory is again what it was. While the mark is there,
   `read_manifest` reads no manifest, as if it had been deleted.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli.core.atomic import write_json, write_text
from alexcli.core.fingerprint import stage_fingerprint
from alexcli.core.progress import SILENT, Progress
from alexcli.core.rundir import RunDir
from alexcli.errors import FormatError, UserError
from alexcli.version import __version__


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
    intact: Callable[[], bool] | None = None,
) -> StageResult:
    """Run `build` unless its outputs are up to date; return the stage's manifest.

    `params` are what change the results (they enter the fingerprint); `config` is
    the whole resolved configuration to record (defaults to `params`). `build`
    writes the outputs and returns the manifest body; its `outputs` key lists the
    files it wrote, relative to the manifest's directory. `intact`, asked when `build`
    fails with an error: whether the outputs the old manifest lists are still as it
    says (then it stands again; without `intact` it stays unfinished).
    """
    fp = stage_fingerprint(stage, version, params, upstream, listing)
    old = None if force else up_to_date(manifest_path, fp)
    if old is not None:
        progress.log(f"{stage}: up to date ({manifest_path})")
        return StageResult(stage, fp, True, old, manifest_path)
    redoing = begin_redo(manifest_path)
    try:
        body = build()
    except Exception:  # an error, not a kill or Ctrl-C: the old manifest may still hold
        if redoing and intact is not None and intact():
            end_redo(manifest_path)
        raise
    manifest = write_manifest(
        manifest_path,
        stage=stage,
        version=version,
        fingerprint=fp,
        upstream=upstream,
        config=config if config is not None else params,
        body=body,
    )
    end_redo(manifest_path)
    return StageResult(stage, fp, False, manifest, manifest_path)


def up_to_date(manifest_path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest on disk when it has this fingerprint and all its outputs exist (the
    stage's work is done), else None."""
    old = read_manifest(manifest_path)
    if old is None or old.get("fingerprint") != fingerprint:
        return None
    return old if _outputs_exist(manifest_path.parent, old) else None


def invalidate(manifest_path: Path) -> None:
    """Remove the manifest before a stage changes its outputs, so that a run killed half
    way is never taken for a whole one."""
    manifest_path.unlink(missing_ok=True)


def unfinished_mark(manifest_path: Path) -> Path:
    """The file whose presence says a redo of the stage began and has not finished."""
    return manifest_path.with_name(manifest_path.name + ".unfinished")


def begin_redo(manifest_path: Path) -> bool:
    """Before a stage changes its outputs: mark its manifest unfinished (kept on disk, read
    as none) and say whether there was one to keep."""
    if not manifest_path.is_file():
        return False
    write_text(unfinished_mark(manifest_path), "a redo of this stage began here\n")
    return True


def end_redo(manifest_path: Path) -> None:
    """The manifest on disk is true again (a new one, or the old one still): unmark it."""
    unfinished_mark(manifest_path).unlink(missing_ok=True)


def write_manifest(
    manifest_path: Path,
    *,
    stage: str,
    version: int,
    fingerprint: str,
    upstream: Mapping[str, str] | None,
    config: Mapping[str, Any],
    body: Mapping[str, Any],
) -> dict[str, Any]:
    """Write a stage's manifest, atomically, after its outputs; return it."""
    manifest = {
        "stage": stage,
        "version": version,
        "alexcli_version": __version__,
        "fingerprint": fingerprint,
        "upstream": dict(upstream or {}),
        "config": dict(config),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **body,
    }
    write_json(manifest_path, manifest)
    return manifest


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A manifest, or None when it is missing, unreadable or marked unfinished (then: not
    up to date)."""
    if unfinished_mark(path).exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (
        FileNotFoundError,
        NotADirectoryError,
        json.JSONDecodeError,
        UnicodeDecodeError,
        RecursionError,
    ):
        return None
    return data if isinstance(data, dict) else None


def require_manifest(path: Path, stage: str, fix: str) -> dict[str, Any]:
    """The manifest of an upstream stage, or a one-line error naming the command `fix`.
    A directory another stage owns is named as such, never handed a `--force`."""
    other = owner(path.parent)
    if other is not None and other != stage:
        raise UserError(
            f"{path.parent} is {OWNED[other]}, not the output of `{stage}`",
            hint="check the arguments (their order too): `alexcli COMMAND --help`",
        )
    if unfinished_mark(path).exists():
        raise UserError(
            f"{path.parent}: a `{stage}` run began here and did not finish",
            hint=f"run `{fix}` again",
        )
    if not path.exists():
        raise UserError(f"{path} not found: `{stage}` has not run here", hint=f"run `{fix}`")
    data = read_manifest(path)
    if data is None or data.get("stage") != stage:
        raise FormatError(f"{path} is not a `{stage}` manifest", hint=f"run `{fix} --force`")
    return data


# What each stage's own directory is called, for the errors that name one.
OWNED = {
    "prepare": "a DATA_DIR (`alexcli prepare` wrote it)",
    "train": "a RUN_DIR (`alexcli train` wrote it)",
}


def owner(directory: Path) -> str | None:
    """The stage whose directory this is — "prepare" (a DATA_DIR) or "train" (a RUN_DIR) —
    by its manifest, else by the files only that stage writes; None for anything else."""
    manifest = read_manifest(directory / "manifest.json")
    stage = manifest.get("stage") if manifest else None
    if stage in OWNED:
        return str(stage)
    if stage is not None:
        return None
    if RunDir(directory).holds_a_run():
        return "train"
    if any((directory / f).exists() for f in ("stats.h5", "stats.json")) or any(
        (directory / split).is_dir() and any((directory / split).glob("*.h5"))
        for split in ("train", "val")
    ):
        return "prepare"
    return None


def _outputs_exist(root: Path, manifest: Mapping[str, Any]) -> bool:
    outputs = manifest.get("outputs", [])
    return isinstance(outputs, list) and all((root / str(o)).exists() for o in outputs)
