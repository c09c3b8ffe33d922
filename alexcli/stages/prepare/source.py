"""`alexcli prepare SOURCE DATA_DIR`: an image tree or ILSVRC-2012's archives → 256×256
RGB HDF5 shards + manifest.json.

List SOURCE (core/data/sources.py), choose the classes and the files, plan the shards
(the training split in a seeded shuffled order, so sequential reads are already
mixed; validation sorted by path), then write the shards in parallel: each joblib
worker writes whole shards (core/data/packing.py: decode, resize, ShardWriter) and
returns only metadata (count, sha256, skipped files, converted files).

Resume: each shard records the fingerprint of its plan. A rerun after a kill
keeps a shard that is under its final name (so whole: the writer is atomic) with
a matching plan and writes the rest, ending with exactly a clean run's shards.
`--force` rewrites all.
"""

from __future__ import annotations

import math
import os
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexcli.config import PrepareConfig, fingerprint_view, to_dict
from alexcli.core import pool
from alexcli.core.atomic import remove_stale_temps
from alexcli.core.data import decode, sources, subsets
from alexcli.core.data.packing import Located, ShardDone, ShardPlan, pack_shard
from alexcli.core.fingerprint import fingerprint
from alexcli.core.machine import cpu_cores
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import UserError
from alexcli.stages.prepare import checks
from alexcli.stages.prepare.checks import SPLITS
from alexcli.stages.prepare.output import (
    STAGE,
    VERSION,
    PrepareResult,
    prepare_result,
    remove_unplanned,
    stored_as,
)
from alexcli.stages.runner import owner, run_stage

MIN_SHARDS = 16  # a small split is still cut into this many shards, so every worker has work…
MIN_SHARD_IMAGES = 32  # …unless they would hold fewer images than this


# --------------------------------------------------------------------------- the stage


def prepare_source(
    source: Path,
    data_dir: Path,
    config: PrepareConfig,
    *,
    force: bool = False,
    verify: bool = False,
    progress: Progress = SILENT,
) -> PrepareResult:
    """Build DATA_DIR from the image tree or archives SOURCE, or say it is up to date;
    `verify` checks every shard's bytes against the manifest's sha256 first and writes
    again the ones that differ."""
    start = time.perf_counter()
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"{data_dir}: exists and is not a directory")
    if data_dir.is_dir() and owner(data_dir) == "train":
        raise UserError(
            f"{data_dir} is a RUN_DIR (`alexcli train` wrote it): not writing shards into it",
            hint="DATA_DIR is a directory of its own: `alexcli prepare SOURCE DATA_DIR`",
        )
    src = sources.find_source(Path(source))
    checks.check_outside(src, data_dir)
    chosen = subsets.choose_classes(
        src.classes, count=config.classes, wnids=config.wnids, seed=config.seed
    )
    if config.wnids and config.classes is not None:
        progress.log(f"--wnids names {len(chosen)} classes; --classes is ignored")
    plans, unlabelled, digest = plan_shards(src, chosen, config)
    checks.check_training_files(src, chosen, plans, progress)
    checks.warn_classless_val(src, progress)
    checks.warn_damaged_archives(src, progress)
    progress.log(f"{src.layout}: {len(src.classes)} classes, {len(chosen)} chosen")
    damaged = (
        checks.verify_shards(data_dir, config.jobs, progress) if verify and not force else False
    )
    moved = not force and checks.archives_changed(data_dir, src)
    changed = not force and (damaged or moved or checks.shards_changed(data_dir))
    if moved:
        progress.log("prepare: an archive changed (size or time) since the shards were made")
    elif changed:
        progress.log("prepare: shards differ in size from the manifest's; checking each one")
    decoding = decode.decode_params()
    params = {**fingerprint_view(config), "decode": decoding}
    del params["encoding"], params["quality"]  # a raw DATA_DIR keeps its fingerprint
    params |= stored_as(config)
    counts: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        images = sum(len(p) for p in plans)
        checks.check_space(data_dir, images, config.size, config.encoding)
        done = write_shards(src.root, data_dir, plans, config, reuse=not force, progress=progress)
        counts["written"] = sum(not d.reused for d in done)
        counts["reused"] = sum(d.reused for d in done)
        counts["decoded"] = sum(d.images for d in done if not d.reused)
        return _manifest_body(src, chosen, config, plans, done, unlabelled, decoding)

    stage = run_stage(
        stage=STAGE,
        version=VERSION,
        params=params,
        manifest_path=data_dir / "manifest.json",
        build=build,
        listing=digest,
        config=to_dict(config),
        force=force or changed,  # `changed` rebuilds, keeping every shard still whole
        progress=progress,
        # A redo that fails (a full disk) keeps the manifest if its shards are as it says.
        intact=None if changed else checks.listed_shards(data_dir),
    )
    seconds = time.perf_counter() - start
    return prepare_result(
        data_dir, stage.manifest, stage.fingerprint, stage.up_to_date, counts, seconds
    )


# --------------------------------------------------------------------------- planning


def plan_shards(
    src: sources.Source, chosen: Sequence[str], config: PrepareConfig
) -> tuple[list[ShardPlan], list[sources.SourceFile], str]:
    """Every shard to write, the unlabelled files, and the listing's fingerprint.

    The plan depends only on the listing and the result-changing configuration,
    never on --jobs, so a rerun plans the same shards. The listing is read a class at a
    time into columns (`_Listing`): a split's files are never all objects at once.
    """
    label = {c: i for i, c in enumerate(chosen)}
    caps = {"train": config.train_per_class, "val": config.val_per_class}
    digest = sources.ListingDigest().add(src.label_files)
    plans: list[ShardPlan] = []
    unlabelled: list[sources.SourceFile] = []
    decoding = decode.decode_params()
    for split in SPLITS:
        kept = _Listing()
        for cls, files in sources.iter_split(src, split, chosen):
            digest.add(files)
            if cls is None:
                unlabelled += files
            else:
                cap = caps[split]
                kept.add(
                    subsets.cap_per_class(files, cap, config.seed, f"{split}/{cls}"), label[cls]
                )
        if split == "train":
            order = np.random.default_rng([config.seed, 2]).permutation(len(kept.names))
        else:
            order = np.array(sorted(range(len(kept.names)), key=kept.names.__getitem__))
        for k, chunk in enumerate(_chunks(len(order), config.shard_size)):
            rows = [int(i) for i in order[chunk]]
            fp = fingerprint(
                {
                    "version": VERSION,
                    "split": split,
                    "size": config.size,
                    "resample": config.resample,
                    "decode": decoding,
                    "items": [kept.item(i) for i in rows],
                    **stored_as(config),
                }
            )
            path = f"{split}/{k:05d}.h5"
            plans.append(
                ShardPlan(
                    split,
                    path,
                    tuple(kept.names[i] for i in rows),
                    tuple(kept.labels[i] for i in rows),
                    fp,
                    kept.located(rows),
                    config.encoding,
                    config.quality,
                )
            )
    return plans, unlabelled, digest.hexdigest()


class _Listing:
    """A split's chosen files as columns: the names (the listing's own strings), labels
    (shared small ints), and sizes, modification times and locations in arrays; about a
    hundred bytes a file where a `SourceFile` and its tuples took three hundred."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.labels: list[int] = []
        self.sizes, self.mtimes, self.offsets = array("q"), array("q"), array("q")
        self.files: list[str | None] = []

    def add(self, files: Sequence[sources.SourceFile], label: int) -> None:
        for f in files:
            self.names.append(f.path)
            self.labels.append(label)
            self.sizes.append(f.size)
            self.mtimes.append(f.mtime_ns)
            self.files.append(None if f.at is None else f.at[0])
            self.offsets.append(0 if f.at is None else f.at[1])

    def item(self, i: int) -> tuple[str, int, int, int]:
        """What a shard's fingerprint names of file i."""
        return (self.names[i], self.labels[i], self.sizes[i], self.mtimes[i])

    def located(self, rows: Sequence[int]) -> Located | None:
        """Where the bytes of these files are, if any is inside another file."""
        if all(self.files[i] is None for i in rows):
            return None
        return Located(
            tuple(self.files[i] for i in rows),
            array("q", (self.offsets[i] for i in rows)),
            array("q", (self.sizes[i] for i in rows)),
        )


def shard_count(n: int, shard_size: int) -> int:
    """Shards for n images: at most `shard_size` each, but at least `MIN_SHARDS` of at
    least `MIN_SHARD_IMAGES` when there are enough images, so small splits still
    spread over the workers."""
    if n == 0:
        return 0
    return max(math.ceil(n / shard_size), min(MIN_SHARDS, n // MIN_SHARD_IMAGES), 1)


def _chunks(n: int, shard_size: int) -> list[np.ndarray]:
    return list(np.array_split(np.arange(n), shard_count(n, shard_size))) if n else []


# --------------------------------------------------------------------------- writing


def write_shards(
    source: Path,
    data_dir: Path,
    plans: Sequence[ShardPlan],
    config: PrepareConfig,
    *,
    reuse: bool = True,
    progress: Progress = SILENT,
) -> list[ShardDone]:
    """Write (or reuse) every planned shard over `config.jobs` processes; remove shards
    and temporaries that are not in the plan."""
    for split in SPLITS:
        remove_stale_temps(data_dir / split)
    remove_unplanned(data_dir, [p.path for p in plans])
    jobs = min(config.jobs or cpu_cores(), max(len(plans), 1))
    task = progress.task("prepare", total=sum(len(p) for p in plans), unit="images")
    sizes = {p.path: len(p) for p in plans}
    done: list[ShardDone] = []
    args = [(str(source), str(data_dir), p, config.size, config.resample, reuse) for p in plans]
    try:
        for result in _run(jobs, args):
            done.append(result)
            task.advance(sizes[result.path], shards=f"{len(done)}/{len(plans)}")
    except BaseException:
        # The pool has stopped its workers; what they were writing is only temporaries
        # (finished shards stay, and a rerun keeps them): leave none behind.
        for split in SPLITS:
            remove_stale_temps(data_dir / split)
        raise
    finally:
        task.close()
    reused = sum(d.reused for d in done)
    if reused:
        progress.log(f"reused {reused} finished shard(s) of an earlier run")
    order = {p.path: i for i, p in enumerate(plans)}
    return sorted(done, key=lambda d: order[d.path])


def _run(
    jobs: int, args: Sequence[tuple[str, str, ShardPlan, int, str, bool]]
) -> Iterator[ShardDone]:
    if jobs <= 1 or len(args) <= 1:
        yield from (pack_shard(*a) for a in args)
        return
    yield from pool.processes(pack_shard, [(*a, os.getpid()) for a in args], jobs)


# --------------------------------------------------------------------------- manifest


def _manifest_body(
    src: sources.Source,
    chosen: Sequence[str],
    config: PrepareConfig,
    plans: Sequence[ShardPlan],
    done: Sequence[ShardDone],
    unlabelled: Sequence[sources.SourceFile],
    decoding: dict[str, Any],
) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in SPLITS:
        shards = [
            {"path": d.path, "images": d.images, "sha256": d.sha256}
            for d in done
            if d.path.startswith(f"{split}/")
        ]
        splits[split] = {"images": sum(s["images"] for s in shards), "shards": shards}
    skipped = [s for d in done for s in d.skipped]
    skipped += [{"path": f.path, "reason": sources.NO_LABEL, "detail": ""} for f in unlabelled]
    skipped += src.archives.problems if src.archives is not None else []
    skipped += src.problems  # folder links out of their class, not followed
    how = "wnids" if config.wnids else "classes" if config.classes is not None else "all"
    return {
        "source": str(src.root.resolve()),
        "layout": src.layout,
        "val_labels": src.val_form,
        "classes": [{"name": c, "words": src.words[c]} for c in chosen],
        "selection": {"how": how, "available": len(src.classes), "seed": config.seed},
        "size": config.size,
        "encoding": config.encoding,
        **({"quality": config.quality} if config.encoding == "jpeg" else {}),
        "preprocess": {**decoding, "resample": config.resample},
        "splits": splits,
        "skipped": skipped,
        "converted": [c for d in done for c in d.converted],
        "bytes": sum(d.bytes for d in done),
        "outputs": [p.path for p in plans],
        **({"archives": checks.archive_stats(src)} if src.archives is not None else {}),
    }
