"""`alexcli prepare`'s checks before any work: the configuration, where DATA_DIR is,
whether SOURCE has anything to train on, whether the shards on disk are still the ones
the manifest lists (sizes; with --verify, sha256), and the free space. Each refusal is
one line naming what to change; each leaves DATA_DIR as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from alexcli.core.data import sources
from alexcli.core.data.packing import ShardPlan
from alexcli.core.fingerprint import differing_files
from alexcli.core.machine import cpu_cores
from alexcli.core.progress import Progress
from alexcli.errors import UserError
from alexcli.stages.runner import read_manifest

SPLITS = ("train", "val")
JPEG_SHARE = 0.5  # of raw, what the free-space check counts for a JPEG record


def check_outside(src: sources.Source, data_dir: Path) -> None:
    """DATA_DIR inside SOURCE's train/ or val/ would have its shards listed as images by
    the next run (never up to date); SOURCE itself would mix the two trees' train/ and val/."""
    target = data_dir.resolve()
    hint = "choose a DATA_DIR outside SOURCE's train/ and val/, e.g. beside SOURCE"
    if target in (src.root.resolve(), (src.root / src.base).resolve()):
        raise UserError(f"DATA_DIR {data_dir} is SOURCE itself", hint=hint)
    for split in SPLITS:
        folder = src.dir(split).resolve()
        if target == folder or folder in target.parents:
            raise UserError(f"DATA_DIR {data_dir} is inside SOURCE's {split}/", hint=hint)


def check_training_files(
    src: sources.Source, chosen: Sequence[str], plans: Sequence[ShardPlan], progress: Progress
) -> None:
    """No training file at all is an error; a chosen class without any, a warning (its
    label exists but can never be learned: an ImageNet tar file not extracted, mostly)."""
    have = {label for p in plans if p.split == "train" for label in p.labels}
    if not have:
        raise UserError(
            f"{src.dir('train')}: no training files in the {len(chosen)} chosen classes",
            hint="put the images in train/<class>/, or point SOURCE at a folder holding "
            "ILSVRC-2012's train tar",
        )
    empty = [c for i, c in enumerate(chosen) if i not in have]
    if empty:
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        progress.log(
            f"warning: {len(empty)} of the {len(chosen)} classes have no training files: "
            f"{', '.join(empty[:3])}{more}"
        )


def warn_classless_val(src: sources.Source, progress: Progress) -> None:
    """Validation labels of classes without a train/ folder are left out, but not silently."""
    orphans = src.classless_val_labels()
    if orphans:
        names = sorted(orphans)
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        progress.log(
            f"warning: {sum(orphans.values())} validation images are labelled with "
            f"{len(names)} classes that have no train/ folder ({', '.join(names[:3])}{more}); "
            "left out"
        )


def warn_damaged_archives(src: sources.Source, progress: Progress) -> None:
    """Inner tars the headers stopped in: their images before the damage are kept."""
    for problem in src.archives.problems if src.archives is not None else []:
        progress.log(f"warning: {problem['path']}: {problem['reason']} ({problem['detail']})")


def archive_stats(src: sources.Source) -> dict[str, list[int]]:
    """The archives' sizes and modification times, as the manifest records them."""
    if src.archives is None:
        return {}
    out = {}
    for name in src.archives.files:
        st = (src.root / name).stat()
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def archives_changed(data_dir: Path, src: sources.Source) -> bool:
    """Whether an archive the shards were read from changed size or time since: then the
    shards are not up to date, though the files listed in it may look the same."""
    old = read_manifest(data_dir / "manifest.json")
    if old is None or src.archives is None or "archives" not in old:
        return False
    return bool(old["archives"] != archive_stats(src))


def verify_shards(data_dir: Path, jobs: int | None, progress: Progress) -> bool:
    """Hash every shard the manifest lists against its sha256; remove the ones that
    differ (damaged: a rerun writes them again) and say whether there were any."""
    old = read_manifest(data_dir / "manifest.json")
    if old is None:
        return False
    try:
        expected = {
            data_dir / s["path"]: str(s["sha256"])
            for split in old["splits"].values()
            for s in split["shards"]
        }
    except (KeyError, TypeError, AttributeError):
        return True
    task = progress.task("verify", total=len(expected), unit="shard")
    bad = differing_files(expected, jobs or cpu_cores(), lambda _: task.advance(1))
    task.close()
    for path in bad:
        path.unlink(missing_ok=True)
    if bad:
        names = ", ".join(p.relative_to(data_dir).as_posix() for p in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        progress.log(
            f"prepare: {len(bad)} shard(s) differ from their sha256 ({names}{more}); "
            "writing them again"
        )
    else:
        progress.log(f"prepare: all {len(expected)} shards match their sha256")
    return bool(bad)


def listed_shards(data_dir: Path) -> Callable[[], bool]:
    """Before a redo: the shards the manifest lists, as they are now. The function it
    returns says, after a redo that failed, whether they are all still what the manifest
    says — untouched (same inode, size and time) or, if rewritten, the same bytes (its
    sha256; a shard written again from the same plan is) — so the manifest stands."""
    old = read_manifest(data_dir / "manifest.json") or {}
    try:
        splits = old["splits"].values()
        expected = {data_dir / s["path"]: str(s["sha256"]) for sp in splits for s in sp["shards"]}
        before = {path: _identity(path) for path in expected}
    except (OSError, KeyError, TypeError, AttributeError):
        return lambda: False

    def intact() -> bool:
        try:
            touched = {p: h for p, h in expected.items() if _identity(p) != before[p]}
        except OSError:
            return False
        return not differing_files(touched, cpu_cores())

    return intact


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def shards_changed(data_dir: Path) -> bool:
    """Whether the shards on disk add up to another size than the manifest recorded: one
    cut short (a full disk, an interrupted copy) or replaced is not "up to date"."""
    old = read_manifest(data_dir / "manifest.json")
    if old is None or "bytes" not in old:
        return False
    try:
        shards = [s["path"] for split in old["splits"].values() for s in split["shards"]]
        return sum((data_dir / p).stat().st_size for p in shards) != int(old["bytes"])
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return True


def check_space(data_dir: Path, images: int, size: int, encoding: str = "raw") -> None:
    """Refuse before any work when the shards cannot fit: raw pixels take size² × 3 bytes an
    image; JPEG records are counted at a generous `JPEG_SHARE` of that (photographs
    measured 0.10 at quality 90, 0.29 at quality 100: docs/prepare.md "Encoding")."""
    share = JPEG_SHARE if encoding == "jpeg" else 1.0
    need = int(images * size * size * 3 * share)
    existing = data_dir  # asked before anything is made: a refusal leaves no empty DATA_DIR
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:
        raise UserError(
            f"{data_dir}: the shards need ~{need / 1e9:.1f} GB, {free / 1e9:.1f} GB are free",
            hint="free some space, choose another DATA_DIR, or a smaller --size or subset",
        )
