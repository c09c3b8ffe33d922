"""What `prepare` writes and returns, whichever way the images came (a SOURCE tree,
stages/prepare/source.py, or another DATA_DIR, stages/prepare/reencode.py): the stage's
name and version, the result, how the shards store their images, and the tidying of
shards a plan no longer has."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli.config import PrepareConfig
from alexcli.core.data.records import SUBSAMPLING
from alexcli.stages.prepare.checks import SPLITS
from alexcli.stages.results import Result

STAGE = "prepare"
VERSION = 1
_SHARD_NAME = re.compile(r"\d{5}\.h5")


@dataclass(frozen=True)
class PrepareResult(Result):
    """The outcome a user sees: counts, what was skipped and why, what was converted,
    speed, size."""

    data_dir: Path
    fingerprint: str
    up_to_date: bool
    layout: str
    encoding: str  # how the shards store their images: raw or jpeg
    quality: int | None  # of the JPEG records; None for raw
    classes: int
    images: dict[str, int]
    skipped: dict[str, int]  # reason → files
    converted: dict[str, int]  # kind ("cmyk", "png named .JPEG"…) → files, most first
    shards_written: int
    shards_reused: int
    seconds: float
    images_per_s: float  # images decoded this run ÷ seconds
    bytes: int

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["seconds"], data["images_per_s"] = round(self.seconds, 3), round(self.images_per_s, 1)
        return data


def stored_as(config: PrepareConfig) -> dict[str, Any]:
    """How the shards store their images, as the fingerprints and the manifest record it:
    nothing for raw pixels (so a DATA_DIR made before encodings existed stays up to
    date), else the encoding, its quality and chroma subsampling."""
    if config.encoding == "raw":
        return {}
    return {"encoding": config.encoding, "quality": config.quality, "subsampling": SUBSAMPLING}


def remove_unplanned(data_dir: Path, paths: Sequence[str]) -> None:
    """Shard files of DATA_DIR that are not in the plan (a larger plan's, before)."""
    planned = set(paths)
    for split in SPLITS:
        folder = data_dir / split
        if folder.is_dir():
            for f in folder.iterdir():
                rel = f"{split}/{f.name}"
                if _SHARD_NAME.fullmatch(f.name) and rel not in planned:
                    f.unlink()


def prepare_result(
    data_dir: Path,
    manifest: dict[str, Any],
    fp: str,
    up_to_date: bool,
    counts: dict[str, Any],
    seconds: float,
) -> PrepareResult:
    return PrepareResult(
        data_dir=data_dir,
        fingerprint=fp,
        up_to_date=up_to_date,
        layout=str(manifest.get("layout", "")),
        encoding=str(manifest.get("encoding", "raw")),
        quality=manifest.get("quality"),
        classes=len(manifest["classes"]),
        images={s: int(v["images"]) for s, v in manifest["splits"].items()},
        skipped=dict(Counter(str(s["reason"]) for s in manifest.get("skipped", []))),
        converted=dict(
            Counter(str(k) for c in manifest.get("converted", []) for k in c["what"]).most_common()
        ),
        shards_written=int(counts.get("written", 0)),
        shards_reused=int(counts.get("reused", 0)),
        seconds=seconds,
        images_per_s=counts.get("decoded", 0) / seconds if seconds > 0 else 0.0,
        bytes=int(manifest.get("bytes", 0)),
    )
