"""`alexcli prepare DATA_DIR NEW_DATA_DIR --encoding jpeg|raw`: a prepared DATA_DIR's
images in another encoding, without reading its SOURCE again (docs/prepare.md
"Encoding").

Re-reading ILSVRC-2012's 1.28 M full-size JPEGs costs hours of decoding and resizing,
and the SOURCE may be gone or on slow storage; the 256×256 images are already in the
shards. So when `prepare`'s SOURCE is itself a prepared DATA_DIR, each of its shards is
read back (raw pixels copied, JPEG records decoded) and written again in NEW_DATA_DIR
in the encoding asked, with the same images in the same order, labels, paths and
manifest (classes, skipped and converted files), one worker process a shard. The new
DATA_DIR's fingerprint is made of the old one's and the encoding, so `stats` and `train`
treat it as the new data it is; a rerun keeps its finished shards (each records the
source shard's sha256 and the encoding it was written in).

From JPEG records the result is the decoded images: to raw, exactly what every reader
of the old DATA_DIR saw; to JPEG again, a second loss (a warning says so).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexcli.config import PrepareConfig, to_dict
from alexcli.core import pool
from alexcli.core.atomic import remove_stale_temps
from alexcli.core.data.packing import ReencodePlan, ShardDone, reencode_shard
from alexcli.core.fingerprint import fingerprint
from alexcli.core.machine import cpu_cores
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import UserError
from alexcli.stages.datadir import DataDir, open_data_dir
from alexcli.stages.prepare import checks
from alexcli.stages.prepare import output as prep
from alexcli.stages.runner import owner, run_stage

# Kept from the old manifest: what the images are and where they came from.
_KEPT = (
    "source",
    "layout",
    "val_labels",
    "classes",
    "selection",
    "size",
    "preprocess",
    "skipped",
    "converted",
    "archives",
)
# prepare's options that choose or change images: a conversion keeps the images as they are.
_SELECTING = (
    "classes",
    "wnids",
    "train_per_class",
    "val_per_class",
    "seed",
    "resample",
    "shard_size",
)


def is_data_dir(source: Path) -> bool:
    """Whether `source` is a prepared DATA_DIR (its manifest says prepare wrote it)."""
    return (Path(source) / "manifest.json").is_file() and owner(Path(source)) == "prepare"


def run_reencode(
    source: Path,
    data_dir: Path,
    config: PrepareConfig = PrepareConfig(),
    *,
    force: bool = False,
    verify: bool = False,
    progress: Progress = SILENT,
) -> prep.PrepareResult:
    """Write DATA_DIR `source`'s images into `data_dir` as `config.encoding` says;
    `verify`: first check the shards already there against their sha256 (as prepare's)."""
    start = time.perf_counter()
    old = open_data_dir(source)
    data_dir = Path(data_dir)
    _check(old, data_dir, config, progress)
    damaged = checks.verify_shards(data_dir, config.jobs, progress) if verify else False
    plans = [
        ReencodePlan(
            split,
            s.path,
            str(old.root / s.path),
            s.images,
            fingerprint({"from": s.sha256, **_stored(config)}),
            config.encoding,
            config.quality,
        )
        for split in old.splits()
        for s in old.shards(split)
    ]
    counts: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        images = sum(p.images for p in plans)
        checks.check_space(data_dir, images, old.size, config.encoding)
        done = _write(data_dir, plans, config.jobs, reuse=not force, progress=progress)
        counts["written"] = sum(not d.reused for d in done)
        counts["reused"] = sum(d.reused for d in done)
        counts["decoded"] = sum(d.images for d in done if not d.reused)
        return _manifest_body(old, config, done)

    stage = run_stage(
        stage=prep.STAGE,
        version=prep.VERSION,
        params={"reencoded_from": old.fingerprint, **_stored(config)},
        manifest_path=data_dir / "manifest.json",
        build=build,
        upstream={"prepare": old.fingerprint},
        config=to_dict(config),
        force=force or damaged or checks.shards_changed(data_dir),
        progress=progress,
    )
    seconds = time.perf_counter() - start
    return prep.prepare_result(
        data_dir, stage.manifest, stage.fingerprint, stage.up_to_date, counts, seconds
    )


def _stored(config: PrepareConfig) -> dict[str, Any]:
    return prep.stored_as(config) or {"encoding": "raw"}


def _check(old: DataDir, data_dir: Path, config: PrepareConfig, progress: Progress) -> None:
    """Refuse what a conversion cannot do, in one line; warn of a second JPEG loss."""
    if data_dir.resolve() == old.root.resolve():
        raise UserError(
            f"{data_dir}: SOURCE is this DATA_DIR; a conversion writes another one",
            hint=f"`alexcli prepare {old.root} NEW_DATA_DIR --encoding {config.encoding}`, "
            "then remove the old one",
        )
    if data_dir.is_dir() and owner(data_dir) == "train":
        raise UserError(
            f"{data_dir} is a RUN_DIR (`alexcli train` wrote it): not writing shards into it"
        )
    defaults = PrepareConfig()
    changed = [f for f in _SELECTING if getattr(config, f) != getattr(defaults, f)]
    if config.size not in (defaults.size, old.size):
        changed.insert(0, "size")
    if changed:
        flag = "--" + changed[0].replace("_", "-")
        raise UserError(
            f"{flag}: SOURCE {old.root} is a prepared DATA_DIR, whose images are converted "
            "as they are",
            hint=f"give {flag} with the image tree it was prepared from",
        )
    if (old.encoding, old.quality) == (config.encoding, _quality(config)):
        what = f"JPEG records at quality {old.quality}" if old.quality else "raw images"
        raise UserError(
            f"{old.root} holds {what} already: nothing to convert",
            hint="choose another --encoding or --quality",
        )
    if old.encoding == "jpeg" and config.encoding == "jpeg":
        progress.log(
            f"warning: {old.root} holds JPEG records: encoding their decoded images again "
            "loses detail a second time (`prepare SOURCE` encodes the originals)"
        )


def _quality(config: PrepareConfig) -> int | None:
    return config.quality if config.encoding == "jpeg" else None


def _write(
    data_dir: Path,
    plans: Sequence[ReencodePlan],
    jobs: int | None,
    *,
    reuse: bool,
    progress: Progress,
) -> list[ShardDone]:
    for split in checks.SPLITS:
        remove_stale_temps(data_dir / split)
    prep.remove_unplanned(data_dir, [p.path for p in plans])
    jobs = min(jobs or cpu_cores(), max(len(plans), 1))
    task = progress.task("convert", total=sum(p.images for p in plans), unit="images")
    sizes = {p.path: p.images for p in plans}
    done: list[ShardDone] = []
    args = [(str(data_dir), p, reuse, os.getpid() if jobs > 1 else None) for p in plans]
    try:
        for result in pool.processes(reencode_shard, args, jobs):
            done.append(result)
            task.advance(sizes[result.path], shards=f"{len(done)}/{len(plans)}")
    except BaseException:
        for split in checks.SPLITS:
            remove_stale_temps(data_dir / split)
        raise
    finally:
        task.close()
    order = {p.path: i for i, p in enumerate(plans)}
    return sorted(done, key=lambda d: order[d.path])


def _manifest_body(
    old: DataDir, config: PrepareConfig, done: Sequence[ShardDone]
) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in old.splits():
        shards = [
            {"path": d.path, "images": d.images, "sha256": d.sha256}
            for d in done
            if d.path.startswith(f"{split}/")
        ]
        splits[split] = {"images": sum(s["images"] for s in shards), "shards": shards}
    return {
        **{k: old.manifest[k] for k in _KEPT if k in old.manifest},
        "encoding": config.encoding,
        **({"quality": config.quality} if config.encoding == "jpeg" else {}),
        "reencoded_from": {
            "data_dir": str(old.root.resolve()),
            "fingerprint": old.fingerprint,
            "encoding": old.encoding,
            **({"quality": old.quality} if old.quality else {}),
        },
        "splits": splits,
        "bytes": sum(d.bytes for d in done),
        "outputs": [d.path for d in done],
    }
