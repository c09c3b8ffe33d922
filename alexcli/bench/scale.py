"""The scale rehearsal: the whole chain at ILSVRC-2012's own counts, on tiny images.

ILSVRC-2012 has 1,000 classes, 1,281,167 training images (732 to 1,300 a class) and
50,000 validation images; at the default shard size prepare makes 1,252 training shards.
Nothing alexcli holds may grow with those counts except what must (the index of the
images, a few bytes each), and every command must run under the usual `ulimit -n` of
1,024. This module writes a source of that shape — both as ILSVRC-2012 is downloaded
(its tars) and extracted — with tiny JPEGs, runs each command on it in a process limited
to 1,024 open files (soft and hard, so alexcli cannot raise it), and measures each: wall
time, images/s, the peak anonymous and file-backed resident memory and the most open
descriptors of any of its processes. `run_scale` does it at several fractions of the
counts, so that each stage's rate and memory at the full count can be read against its
own at 1/100 and 1/10 (docs/performance.md "At ImageNet's size").

The per-class training counts are not ImageNet's own list (it cannot be downloaded
here) but have its range, its total and its shape: most classes at 1,300, a tail down to
732. The pixels are random, coloured per class; the rehearsal measures throughput and
resources, not learning.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from alexcli.core.data.archives import write_archives
from alexcli.core.data.labels import write_kaggle
from alexcli.core.progress import SILENT, Progress
from alexcli.core.rundir import RunDir
from alexcli.errors import AlexcliError

CLASSES = 1000
TRAIN_IMAGES = 1_281_167
VAL_IMAGES = 50_000
LEAST, MOST = 732, 1300  # images of the smallest and largest training classes
OPEN_FILES = 1024  # the usual soft `ulimit -n`
POOL = 64  # distinct JPEGs a class draws its files from
# prepare's process holds every image's plan: its name (~85 bytes at ILSVRC-2012's) and
# ~100 bytes of columns (stages/prepare/source.py); a leak or an object per image is more
PLAN_BYTES = 300
STAMP = 1_335_830_400  # every file's mtime (whole seconds, as a tar keeps it): 2012-05-01


def train_counts(seed: int = 0) -> np.ndarray:
    """1,000 training counts between 732 and 1,300 summing to 1,281,167: every class at
    1,300 but for a seeded tail (one class at 732) that takes the 18,833 images short."""
    rng = np.random.default_rng(seed)
    counts = np.full(CLASSES, MOST, np.int64)
    tail = rng.permutation(CLASSES)
    counts[tail[0]] = LEAST
    short = MOST * CLASSES - TRAIN_IMAGES - (MOST - LEAST)
    for k in tail[1:]:  # each further class of the tail loses up to half the range
        take = min(short, int(rng.integers(1, (MOST - LEAST) // 2)))
        counts[k] -= take
        short -= take
        if not short:
            break
    assert counts.sum() == TRAIN_IMAGES and counts.min() == LEAST and counts.max() == MOST
    return counts


def scaled_counts(fraction: float, seed: int = 0) -> tuple[np.ndarray, int]:
    """(training counts per class, validation images) at `fraction` of ILSVRC-2012's,
    every class kept (at least one training image each)."""
    train = np.maximum(np.rint(train_counts(seed) * fraction).astype(np.int64), 1)
    return train, max(round(VAL_IMAGES * fraction), 1)


def wnid(k: int) -> str:
    return f"n{10_000_000 + k * 7919:08d}"


def _jpegs(k: int, side: int, seed: int, pool: int) -> list[bytes]:
    """`pool` small JPEGs of class k's colour, each of its own noise and shape."""
    rng = np.random.default_rng([seed, k])
    colour = rng.integers(30, 226, 3)
    out = []
    for _ in range(pool):
        h, w = side + int(rng.integers(0, side // 3)), side + int(rng.integers(0, side // 3))
        pixels = np.clip(colour + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_source(
    root: Path, fraction: float, *, side: int = 40, seed: int = 0, pool: int = POOL
) -> Path:
    """An ILSVRC-2012-shaped extracted tree at `fraction` of its counts under root/tree
    (train/<wnid>/<wnid>_<i>.JPEG, flat val/ with Kaggle's LOC_val_solution.csv and
    LOC_synset_mapping.txt) and the same packed as downloaded under root/archives.
    Returns root."""
    root = Path(root)
    tree = root / "tree"
    train, val = scaled_counts(fraction, seed)
    words = {wnid(k): f"class {k}" for k in range(CLASSES)}
    pools = [_jpegs(k, side, seed, pool) for k in range(CLASSES)]
    for k, n in enumerate(train.tolist()):
        folder = tree / "train" / wnid(k)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _write(folder / f"{wnid(k)}_{i + 1}.JPEG", pools[k][i % pool])
    (tree / "val").mkdir(parents=True, exist_ok=True)
    labelled = []
    for n in range(val):
        k, name = n % CLASSES, f"ILSVRC2012_val_{n + 1:08d}.JPEG"
        _write(tree / "val" / name, pools[k][(n // CLASSES) % pool])
        labelled.append((f"val/{name}", wnid(k)))
    write_kaggle(tree, labelled, words)
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        os.utime(tree / name, (STAMP, STAMP))
    write_archives(tree, root / "archives")
    return root


def _write(path: Path, data: bytes) -> None:
    """The file, stamped in whole seconds: the tree and its tars then list alike, and
    prepare gives both the same fingerprint and shards."""
    path.write_bytes(data)
    os.utime(path, (STAMP, STAMP))


# --------------------------------------------------------------------------- measuring


@dataclass
class Usage:
    """The most any one process of a command's tree held at once (bytes, descriptors)."""

    anon: int = 0  # RssAnon: the process's own memory
    file: int = 0  # RssFile: file pages mapped and resident (reclaimable)
    shmem: int = 0  # RssShmem: shared memory (the loader's ring)
    fds: int = 0
    processes: int = 0  # the most processes alive at once


def _status(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                found[key] = int(value.split()[0]) * 1024
    return found


def _tree(root: int) -> list[int]:
    """root and its descendants, from /proc's parent links."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                parents.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


@contextlib.contextmanager
def watching(pid: int, every: float = 0.25) -> Iterator[Usage]:
    """Sample `pid`'s process tree every `every` seconds until the block ends."""
    usage, stop = Usage(), threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            pids = _tree(pid)
            usage.processes = max(usage.processes, len(pids))
            for p in pids:
                s = _status(p)
                usage.anon = max(usage.anon, s.get("RssAnon", 0))
                usage.file = max(usage.file, s.get("RssFile", 0))
                usage.shmem = max(usage.shmem, s.get("RssShmem", 0))
                with contextlib.suppress(OSError):
                    usage.fds = max(usage.fds, len(os.listdir(f"/proc/{p}/fd")))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield usage
    finally:
        stop.set()
        thread.join()


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


@dataclass
class StageRun:
    """One command at one scale."""

    stage: str
    fraction: float
    images: int  # what its rate counts
    seconds: float
    usage: Usage
    ok: bool
    error: str = ""
    work_seconds: float | None = None  # the stage's own time, start-up left out
    rate_in_run: float | None = None  # train: images/s inside the epoch (metrics.jsonl)

    @property
    def rate(self) -> float:
        """Images/s of the work itself: the epoch's for train, else over the stage's own
        time where it reports one, else over the command's."""
        if self.rate_in_run:
            return self.rate_in_run
        took = self.work_seconds or self.seconds
        return self.images / took if took else 0.0


def run_command(
    stage: str, fraction: float, images: int, args: Sequence[object], timeout: float
) -> StageRun:
    """`alexcli ARGS --json` in a process limited to 1,024 open files, watched; the work's
    own time is the `seconds` its JSON reports (start-up left out), where it has one."""
    command = [sys.executable, "-m", "alexcli", *map(str, args), "--json"]
    start = time.perf_counter()
    with (
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_limited,
        ) as proc,
        watching(proc.pid) as usage,
    ):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err = f"timed out after {timeout:.0f} s\n{err}"
    took = time.perf_counter() - start
    lines = [ln for ln in err.splitlines() if ln.startswith(("error", "timed out"))]
    said = lines[0] if lines else ""
    run = StageRun(stage, fraction, images, took, usage, proc.returncode == 0, said)
    with contextlib.suppress(ValueError, TypeError, KeyError):
        run.work_seconds = float(json.loads(out)["seconds"])
    return run


# --------------------------------------------------------------------------- the chain


@dataclass
class Settings:
    """How the rehearsal runs the chain: tiny stored images, `small` at a small crop."""

    size: int = 64  # prepare --size
    crop: int = 63  # the small preset's conv1 needs at least 63
    jobs: int | None = None  # prepare's and stats' processes (default: all cores)
    workers: int | None = None  # train's and eval's loader processes (default: as train's)
    timeout: float = 4 * 3600  # per command
    keep: bool = False  # keep the source and DATA_DIR afterwards
    short: float = 20.0  # a stage done in fewer seconds is timed again ...
    tries: int = 3  # ... up to this many times in all, and its fastest run kept


def rehearse(
    work: Path, fraction: float, settings: Settings = Settings(), progress: Progress = SILENT
) -> list[StageRun]:
    """The chain at `fraction` of ILSVRC-2012's counts under `work`: the source written,
    then prepare (from the extracted tree, then from the archives, which must give the
    same shards), stats, train one epoch, eval with 10 views, neighbors, predict and
    export, each measured. The tree goes first, while the page cache still holds the
    files just written, at every fraction alike: read after 16 GB of shards had pushed
    them out, its 1.33 M small files time the disk's random reads instead (~5,000 a
    second on the machine of docs/performance.md, a plain read loop as fast); the
    archives are read in long runs either way."""
    work = Path(work)
    per_class, val_n = scaled_counts(fraction)
    train_n = int(per_class.sum())
    total = train_n + val_n
    src = work / "source"
    if not (src / "archives").is_dir():
        shutil.rmtree(src, ignore_errors=True)
        progress.log(f"writing the source: {total:,} images, tree and archives, in {src}")
        write_source(src, fraction)
    data, twin, run = work / "data", work / "data-from-tree", work / "run"
    jobs = ["--jobs", str(settings.jobs)] if settings.jobs else []
    workers = ["--workers", str(settings.workers)] if settings.workers is not None else []
    t = settings.timeout
    steps: list[tuple[str, int, list[object]]] = [
        (
            "prepare (tree)",
            total,
            ["prepare", src / "tree", twin, "--size", settings.size, *jobs, "--force"],
        ),
        (
            "prepare (archives)",
            total,
            ["prepare", src / "archives", data, "--size", settings.size, *jobs, "--force"],
        ),
        ("stats", train_n, ["stats", data, *jobs, "--force"]),
        (
            "train",
            train_n,
            [
                "train",
                data,
                run,
                "--preset",
                "small",
                "--crop",
                settings.crop,
                "--epochs",
                1,
                "--force",
                *workers,
            ],
        ),
        ("eval", val_n * 10, ["eval", run, data, "--views", 10, *workers, "--json"]),
        ("neighbors", train_n, ["neighbors", run, data, "--out", work / "neighbors.png", *workers]),
        ("predict", 32, ["predict", run, *sorted((src / "tree" / "val").iterdir())[:32]]),
        ("export", 1, ["export", run, work / "model.safetensors"]),
    ]

    def measure(stage: str, images: int, args: list[object]) -> StageRun:
        done = run_command(stage, fraction, images, args, t)
        if stage == "train" and done.ok:
            done.rate_in_run = _epoch_rate(run)
        if stage == "prepare (archives)" and done.ok and not _same_shards(data, twin):
            done.ok, done.error = False, "the archives' shards differ from the extracted tree's"
        return done

    results = []
    for stage, images, args in steps:
        progress.log(f"{fraction:g} of ILSVRC-2012: {stage}")
        done = fastest(
            functools.partial(measure, stage, images, args), settings.tries, settings.short
        )
        if stage == "prepare (archives)":
            shutil.rmtree(twin, ignore_errors=True)  # the archives' twin stays; half the disk
        results.append(done)
        if not done.ok:
            break
    if not settings.keep:
        for path in (src, data, twin, run):
            shutil.rmtree(path, ignore_errors=True)
    return results


def fastest(measure: Callable[[], StageRun], tries: int, short: float) -> StageRun:
    """`measure()` once, and again while its runs last fewer than `short` seconds, up to
    `tries` runs in all: the fastest is kept, with the peaks of memory and descriptors of
    every run. A stage of a few seconds is at the mercy of whatever else the machine does
    in those seconds; its best of three is its rate."""
    best = measure()
    peaks = best.usage
    for _ in range(tries - 1):
        if not best.ok or best.seconds >= short:
            break
        again = measure()
        if not again.ok:
            return again
        peaks = Usage(**{k: max(v, getattr(again.usage, k)) for k, v in asdict(peaks).items()})
        best = max(best, again, key=lambda r: r.rate)
    best.usage = peaks
    return best


def _epoch_rate(run: Path) -> float | None:
    with contextlib.suppress(OSError, AlexcliError, ValueError, KeyError, IndexError):
        return float(RunDir(run).metrics().records[-1]["images_per_s"])
    return None


def _same_shards(a: Path, b: Path) -> bool:
    """The two DATA_DIRs hold the same shards: the same paths and sha256 in their manifests."""

    def digests(root: Path) -> list[tuple[str, str]]:
        manifest = json.loads((root / "manifest.json").read_text())
        splits = manifest["splits"].values()
        return [(s["path"], s.get("sha256", "")) for split in splits for s in split["shards"]]

    return digests(a) == digests(b)


@dataclass
class ScaleReport:
    """Every stage at every fraction, and each stage's ratios against the smallest."""

    runs: list[StageRun] = field(default_factory=list)

    def rate(self, stage: str, fraction: float) -> float | None:
        found = [r for r in self.runs if r.stage == stage and r.fraction == fraction and r.ok]
        return found[0].rate if found else None

    @property
    def fractions(self) -> list[float]:
        return sorted({r.fraction for r in self.runs})

    @property
    def stages(self) -> list[str]:
        return list(dict.fromkeys(r.stage for r in self.runs))

    def run(self, stage: str, fraction: float) -> StageRun | None:
        found = [r for r in self.runs if r.stage == stage and r.fraction == fraction]
        return found[-1] if found else None

    def ratio(self, stage: str, smaller: float) -> float | None:
        """The stage's images/s at the largest fraction ÷ at `smaller` (target ≥ 0.8)."""
        big, small = self.rate(stage, max(self.fractions)), self.rate(stage, smaller)
        return big / small if big and small else None

    def growth(self, stage: str) -> float | None:
        """Peak anonymous memory of its largest process, largest fraction ÷ smallest
        (target < 2)."""
        big, small = self.run(stage, max(self.fractions)), self.run(stage, min(self.fractions))
        if big is None or small is None or not small.usage.anon:
            return None
        return big.usage.anon / small.usage.anon

    def bytes_per_image(self, stage: str) -> float | None:
        """The anonymous memory the stage's largest process gained per image added, from
        the smallest fraction to the largest."""
        big, small = self.run(stage, max(self.fractions)), self.run(stage, min(self.fractions))
        if big is None or small is None or big.images <= small.images:
            return None
        return (big.usage.anon - small.usage.anon) / (big.images - small.images)

    def memory_held(self, stage: str) -> bool:
        """Its memory grew less than 2×; or, for prepare, whose process must hold the
        plan of every image, by less than `PLAN_BYTES` an image."""
        if stage.startswith("prepare"):
            per_image = self.bytes_per_image(stage)
            return per_image is not None and per_image < PLAN_BYTES
        growth = self.growth(stage)
        return growth is not None and growth < 2

    def passed(self) -> bool:
        """Every stage ran at every fraction, each ratio ≥ 0.8 and its memory held."""
        if not self.runs or not all(r.ok for r in self.runs):
            return False
        ratios = [self.ratio(s, f) for s in self.stages for f in self.fractions[:-1]]
        return all(r is not None and r >= 0.8 for r in ratios) and all(
            self.memory_held(s) for s in self.stages
        )

    def to_json(self) -> dict[str, object]:
        return {
            "runs": [{**asdict(r), "rate": r.rate} for r in self.runs],
            "ratios": {
                s: {f"{f:g}": self.ratio(s, f) for f in self.fractions[:-1]} for s in self.stages
            },
            "anon_growth": {s: self.growth(s) for s in self.stages},
            "anon_bytes_per_image": {s: self.bytes_per_image(s) for s in self.stages},
            "memory_held": {s: self.memory_held(s) for s in self.stages},
            "passed": self.passed(),
        }


def run_scale(
    work: Path,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    settings: Settings = Settings(),
    progress: Progress = SILENT,
) -> ScaleReport:
    """`rehearse` at each fraction in turn (smallest first), each in its own folder."""
    report = ScaleReport()
    for fraction in sorted(fractions):
        where = Path(work) / f"x{fraction:g}"
        report.runs.extend(rehearse(where, fraction, settings, progress))
    return report
