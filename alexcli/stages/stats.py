"""`alexcli stats DATA_DIR`: the training split's mean image and RGB PCA → stats.h5.

Reads every training shard once (validation shards are never opened), several
shards at once (joblib threads, `--jobs`; each returns exact partial sums that add
up in any order), and writes, each atomically:

    DATA_DIR/stats.h5         the arrays and what they came from (core/data/stats.py)
    DATA_DIR/stats_mean.png   the mean image, to look at
    DATA_DIR/stats.json       the stage manifest, last (stages/runner.py)

The fingerprint covers the prepare fingerprint and the training shards' names,
counts and sha256, so new shards make a rerun recompute, and unchanged ones say
"up to date". `check_stats_current` is what `train` and `eval` call: it refuses
stats computed from other shards, naming the command that fixes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli.config import StatsConfig, fingerprint_view, to_dict
from alexcli.core import pool
from alexcli.core.data.stats import (
    Stats,
    Sums,
    finish,
    one_torch_thread,
    read_stats,
    shard_sums,
    write_stats,
)
from alexcli.core.figures.png import to_uint8, write_png
from alexcli.core.machine import cpu_cores
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import FormatError, UserError
from alexcli.stages.datadir import (
    STATS_FILE,
    DataDir,
    open_data_dir,
    shards_digest,
)
from alexcli.stages.results import Result, jsonable
from alexcli.stages.runner import run_stage

STAGE = "stats"
VERSION = 1
MEAN_PNG = "stats_mean.png"
MANIFEST = "stats.json"
SPLIT = "train"  # the paper's statistics are over the training set only


@dataclass(frozen=True, eq=False)
class StatsResult(Result):
    stats: Stats
    stats_path: Path
    mean_png: Path
    manifest_path: Path
    up_to_date: bool
    seconds: float  # computing the sums; 0 when up to date

    @property
    def images_per_s(self) -> float:
        return self.stats.images / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return jsonable(
            {
                "images": s.images,
                "size": s.size,
                "units": "0-255",
                "rgb_mean": s.rgb_mean,
                "rgb_cov": s.rgb_cov,
                "eigval": s.eigval,
                "eigstd": s.eigstd,
                "eigvec": s.eigvec,
                "data_fingerprint": s.data_fingerprint,
                "stats": self.stats_path,
                "mean_png": self.mean_png,
                "manifest": self.manifest_path,
                "up_to_date": self.up_to_date,
                "seconds": round(self.seconds, 3),
                "images_per_s": round(self.images_per_s, 1),
            }
        )


def run_stats(
    data_dir: Path,
    config: StatsConfig = StatsConfig(),
    *,
    force: bool = False,
    progress: Progress = SILENT,
) -> StatsResult:
    """Compute DATA_DIR/stats.h5 unless it is up to date; return what it holds."""
    data = open_data_dir(data_dir)
    paths, counts = train_shards(data)
    stats_path, png_path = data.root / STATS_FILE, data.root / MEAN_PNG
    digest = shards_digest(data)
    seconds = 0.0
    damaged = not force and stats_path.exists() and not _readable(stats_path)
    if damaged:
        progress.log(f"stats: {stats_path} is damaged; computing it again")

    def build() -> dict[str, object]:
        nonlocal seconds
        start = time.perf_counter()
        sums = sum_shards(paths, counts, size=data.size, jobs=config.jobs, progress=progress)
        seconds = time.perf_counter() - start
        stats = finish(sums, data.fingerprint, digest)
        write_stats(stats_path, stats)
        write_png(png_path, to_uint8(stats.mean))
        return {
            "outputs": [STATS_FILE, MEAN_PNG],
            "images": stats.images,
            "data_fingerprint": data.fingerprint,
            "seconds": round(seconds, 3),
        }

    result = run_stage(
        stage=STAGE,
        version=VERSION,
        params=fingerprint_view(config),
        manifest_path=data.root / MANIFEST,
        build=build,
        upstream={"prepare": data.fingerprint},
        listing=digest,
        config=to_dict(config),
        force=force or damaged,
        progress=progress,
    )
    return StatsResult(
        read_stats(stats_path),
        stats_path,
        png_path,
        result.manifest_path,
        result.up_to_date,
        seconds,
    )


def sum_shards(
    paths: Sequence[Path],
    counts: Sequence[int],
    *,
    size: int,
    jobs: int | None = None,
    progress: Progress = SILENT,
) -> Sums:
    """Exact sums over all `paths` (size×size shards), one shard a task, `jobs` threads
    (None: one per core)."""
    jobs = max(1, min(jobs or cpu_cores(), len(paths)))
    task = progress.task("stats", total=sum(counts), unit="images")
    total = Sums.zeros(size)
    with one_torch_thread():
        try:
            for part in _map_shards(paths, counts, size, jobs):
                total = total + part
                task.advance(part.images)
        finally:
            task.close()
    return total


def _map_shards(
    paths: Sequence[Path], counts: Sequence[int], size: int, jobs: int
) -> Iterable[Sums]:
    # Threads, not processes: one thread's numpy sums and torch GEMMs run while
    # another reads (h5py serialises HDF5 calls under one lock, but lets go of the
    # GIL inside them), and a thread costs no start-up, torch import or pickling
    # (docs/stats.md has the measurements).
    tasks = ((p, c, size) for p, c in zip(paths, counts, strict=True))
    return pool.threads(shard_sums, tasks, jobs)


def train_shards(data: DataDir) -> tuple[list[Path], list[int]]:
    entries = data.shards(SPLIT)
    if not entries or sum(s.images for s in entries) == 0:
        raise UserError(
            f"{data.root}: no training images",
            hint=f"prepare could read none: see `skipped` in {data.root / 'manifest.json'}",
        )
    return [data.root / s.path for s in entries], [s.images for s in entries]


def _readable(path: Path) -> bool:
    try:
        read_stats(path)
    except FormatError:
        return False
    return True
