"""What `train` reads from DATA_DIR: its manifest and current stats, and their identity
(the upstream fingerprints a run records, and a resumed run must still see)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alexcli.core.data.stats import Stats
from alexcli.core.fingerprint import file_digest
from alexcli.stages.datadir import STATS_FILE, DataDir, check_stats_current, open_data_dir


@dataclass(frozen=True)
class Inputs:
    """DATA_DIR as training reads it: the manifest, current stats, and their identity."""

    data: DataDir
    stats: Stats
    stats_fingerprint: str  # sha256 of stats.h5: what the run was normalised with

    @property
    def upstream(self) -> dict[str, str]:
        return {"prepare": self.data.fingerprint, "stats": self.stats_fingerprint}

    @property
    def upstream_key(self) -> str:
        return f"{self.data.fingerprint}/{self.stats_fingerprint}"


def open_inputs(data_dir: Path) -> Inputs:
    """DATA_DIR's manifest and its current stats (stale stats.h5 refused, naming the fix)."""
    data = open_data_dir(data_dir)
    stats = check_stats_current(data.root)
    return Inputs(data, stats, file_digest(data.root / STATS_FILE)[:16])
