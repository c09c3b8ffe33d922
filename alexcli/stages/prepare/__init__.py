"""`alexcli prepare SOURCE DATA_DIR`: images → 256×256 HDF5 shards + manifest.json.

SOURCE is an image tree or ILSVRC-2012's archives (`source.py`), or a DATA_DIR prepared
before, whose images are written again in another encoding without its SOURCE
(`reencode.py`). `checks.py` holds what prepare checks of its inputs and its outputs;
`output.py` what both ways write and return.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from alexcli.config import PrepareConfig
from alexcli.core.data import subsets
from alexcli.core.progress import SILENT, Progress
from alexcli.stages.prepare.output import PrepareResult
from alexcli.stages.prepare.reencode import is_data_dir, run_reencode
from alexcli.stages.prepare.source import prepare_source

__all__ = ["PrepareResult", "run_prepare"]


def run_prepare(
    source: Path,
    data_dir: Path,
    config: PrepareConfig = PrepareConfig(),
    *,
    wnids_file: Path | None = None,
    force: bool = False,
    verify: bool = False,
    progress: Progress = SILENT,
) -> PrepareResult:
    """Build DATA_DIR from SOURCE, or say it is up to date. `wnids_file` (one class per
    line) sets `config.wnids`; `verify` checks every shard's bytes against the manifest's
    sha256 first and writes again the ones that differ."""
    if wnids_file is not None:
        config = replace(config, wnids=subsets.read_wnids(wnids_file))
    if is_data_dir(Path(source)):  # a conversion: the shards, not SOURCE, are read
        return run_reencode(
            Path(source), Path(data_dir), config, force=force, verify=verify, progress=progress
        )
    return prepare_source(
        Path(source), Path(data_dir), config, force=force, verify=verify, progress=progress
    )
