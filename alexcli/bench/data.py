"""prepare, stats and the training loader, each timed beside the plain alternative a user
would write instead, on the same files and cores, in the same run:

- prepare: a plain process pool that only decodes the same files (`decode_throughput`);
- stats: a plain sequential h5py read of the same shards (`plain_read`);
- the loader: whole images read at random positions by as many processes, nothing done
  to them (`raw_read_rate`), the ceiling of a loader that reads the same way and then
  crops, reflects and normalises; for JPEG records, read the same way and decoded by a
  plain `Image.open(...).load()`, the ceiling of a loader that decodes them.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from alexcli.bench.limits import Rate, synchronize
from alexcli.config import PrepareConfig
from alexcli.core.data import sources, subsets
from alexcli.core.data.batches import CropDataset, EpochSampler
from alexcli.core.data.loader import make_loader
from alexcli.core.data.shards import OPEN_FILES, ShardSet
from alexcli.core.data.stats import read_block_size
from alexcli.core.data.transforms import Normalizer
from alexcli.core.machine import cpu_cores, keep_freed_memory
from alexcli.stages.datadir import open_data_dir
from alexcli.stages.prepare import run_prepare
from alexcli.stages.prepare.source import plan_shards
from alexcli.stages.stats import sum_shards, train_shards

# --------------------------------------------------------------------------- prepare


def decode_only(path: Path | str | bytes) -> int:
    """Decode a file (or a file's bytes, read out of an archive) fully and nothing else
    (the bench baseline); returns its pixel count."""
    with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:
        img.load()
        return img.size[0] * img.size[1]


def _decode_chunk(paths: Sequence[str | bytes]) -> int:
    n = 0
    for p in paths:
        try:
            decode_only(p)
            n += 1
        except Exception:  # the baseline only counts what decodes
            pass
    return n


def decode_throughput(paths: Sequence[Path | str | bytes], jobs: int = 2, chunk: int = 64) -> float:
    """Images/s of a plain `jobs`-process decode-only loop over `paths` (fork, no resize,
    no writing): the ceiling `prepare` is measured against. A file inside an archive is
    given as its bytes."""
    import multiprocessing as mp

    names = [p if isinstance(p, bytes) else os.fspath(p) for p in paths]
    chunks = [names[i : i + chunk] for i in range(0, len(names), chunk)]
    start = time.perf_counter()
    with mp.get_context("fork").Pool(jobs) as pool:
        done = sum(pool.imap_unordered(_decode_chunk, chunks))
    return done / (time.perf_counter() - start)


def prepare_vs_decode(
    source: Path, data_dir: Path, config: PrepareConfig = PrepareConfig(), *, jobs: int = 2
) -> dict[str, float]:
    """prepare's throughput against a plain `jobs`-process decode-only loop over the same
    files, measured in the same run (the loop before and after prepare, averaged, so
    drift on a shared machine hits both). For `alexcli bench`.

    prepare runs twice, both whole commands with --force: the first starts joblib's
    worker processes (fresh interpreters importing numpy, h5py and PIL: a start-up a
    few hundred images cannot hide but a real dataset's minutes do), the second, timed
    as the throughput, finds them running, as every shard after the first few does in a
    real run. Both figures are returned."""
    config = replace(config, jobs=jobs)
    src = sources.find_source(Path(source))
    chosen = subsets.choose_classes(
        src.classes, count=config.classes, wnids=config.wnids, seed=config.seed
    )
    plans, _, _ = plan_shards(src, chosen, config)
    # A plan's own sources: the file, or its bytes when it is inside ILSVRC-2012's
    # archives (or under a name that is not UTF-8), read once here, before either loop.
    root = str(src.root)
    paths = [p.source(root, k) for p in plans for k in range(len(p))]
    before = decode_throughput(paths, jobs)
    cold = run_prepare(source, data_dir, config, force=True)
    warm = run_prepare(source, data_dir, config, force=True)
    after = decode_throughput(paths, jobs)
    plain = (before + after) / 2
    return {
        "images": float(len(paths)),
        "prepare_images_per_s": warm.images_per_s,
        "prepare_first_run_images_per_s": cold.images_per_s,
        "decode_only_images_per_s": plain,
        "ratio": warm.images_per_s / plain if plain else 0.0,
    }


def archives_vs_tree(
    tree: Path, archive_dir: Path, data_dir: Path, config: PrepareConfig, *, jobs: int = 2
) -> dict[str, float]:
    """prepare reading the images out of ILSVRC-2012's archives against prepare reading
    the extracted tree, the same images, alternated twice (each a whole command with
    --force, its workers started by the run before), the best of each."""
    config = replace(config, jobs=jobs)
    run_prepare(tree, data_dir, config, force=True)  # starts the workers
    rates: dict[str, float] = {"tree": 0.0, "archives": 0.0}
    for _ in range(2):
        for name, source in (("tree", tree), ("archives", archive_dir)):
            got = run_prepare(source, data_dir, config, force=True)
            rates[name] = max(rates[name], got.images_per_s)
    return {
        "tree_images_per_s": rates["tree"],
        "archives_images_per_s": rates["archives"],
        "ratio": rates["archives"] / rates["tree"] if rates["tree"] else 0.0,
    }


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class StatsBenchmark:
    """Throughput of `stats` beside a plain h5py read of the same shards, same run."""

    images: int
    jobs: int
    read_images_per_s: float  # one process, sequential h5py slices, nothing computed
    stats_images_per_s: float  # sum_shards with `jobs` workers (the pool already started)

    @property
    def ratio(self) -> float:
        return self.stats_images_per_s / self.read_images_per_s


def stats_vs_read(data_dir: Path, jobs: int | None = None, repeats: int = 2) -> StatsBenchmark:
    """Time `sum_shards` against `plain_read` on DATA_DIR's training shards, best of `repeats`.

    The shards are read once first so that both start from the page cache; the
    first stats pass (worker start-up included) is discarded by taking the best.
    """
    data = open_data_dir(data_dir)
    paths, counts = train_shards(data)
    jobs = max(1, min(jobs or cpu_cores(), len(paths)))
    block = read_block_size(data.size)
    plain_read(paths, block)
    read_s = stats_s = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        plain_read(paths, block)
        read_s = min(read_s, time.perf_counter() - start)
        start = time.perf_counter()
        sum_shards(paths, counts, size=data.size, jobs=jobs)
        stats_s = min(stats_s, time.perf_counter() - start)
    n = sum(counts)
    return StatsBenchmark(n, jobs, n / read_s, n / stats_s)


def plain_read(paths: Sequence[Path], block: int) -> int:
    """Read every image of `paths` in `block`-image h5py slices, one process (JPEG records
    decoded by plain PIL); return the count."""
    n = 0
    for path in paths:
        with h5py.File(path, "r") as f:
            if "images" in f:
                images = f["images"]
                for start in range(0, images.shape[0], block):
                    n += len(images[start : start + block])
                continue
            offsets, records = f["offsets"][:], f["jpeg"]
            for start in range(0, len(offsets) - 1, block):
                stop = min(start + block, len(offsets) - 1)
                data = records[offsets[start] : offsets[stop]].tobytes()
                for a, b in zip(offsets[start:stop], offsets[start + 1 : stop + 1], strict=True):
                    _plain_decode(data[a - offsets[start] : b - offsets[start]])
                n += stop - start
    return n


def _plain_decode(record: bytes) -> None:
    """What a user's own loader does with a JPEG record: PIL opens it and decodes it."""
    with Image.open(io.BytesIO(record)) as img:
        img.load()


def _read_one(f: h5py.File, i: int) -> None:
    """Image i of an open shard as a plain reader would take it: a raw image through h5py,
    a JPEG record through h5py and PIL."""
    if "images" in f:
        f["images"][i]
        return
    a, b = f["offsets"][i : i + 2]
    _plain_decode(f["jpeg"][a:b].tobytes())


# --------------------------------------------------------------------------- loader


def _read_for(paths: Sequence[Path], counts: Sequence[int], seconds: float, seed: int) -> Rate:
    """One process: whole images at random positions through h5py, for `seconds`; the last
    `OPEN_FILES` shards kept open, as the loader keeps them."""
    handles: OrderedDict[int, h5py.File] = OrderedDict()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng(seed)
    done, start = 0, time.perf_counter()
    try:
        while True:
            for index in rng.integers(0, offsets[-1], 64):
                s = int(np.searchsorted(offsets, index, side="right") - 1)
                if s not in handles:
                    if len(handles) >= OPEN_FILES:
                        handles.popitem(last=False)[1].close()
                    handles[s] = h5py.File(paths[s], "r")
                handles.move_to_end(s)
                _read_one(handles[s], int(index - offsets[s]))
            done += 64
            took = time.perf_counter() - start
            if took >= seconds:
                return Rate(done, took)
    finally:
        for f in handles.values():
            f.close()


def raw_read_rate(shards: ShardSet, processes: int = 1, seconds: float = 2.0) -> Rate:
    """Images/s of `processes` processes reading whole images at random, nothing else (a
    JPEG record read and decoded): the loader's ceiling (it reads the same way, then
    crops, reflects and normalises)."""
    args = [(shards.paths, shards.counts, seconds, seed) for seed in range(processes)]
    if processes == 1:
        return _read_for(*args[0])
    with mp.get_context("fork").Pool(processes) as pool:
        rates = pool.starmap(_read_for, args)
    return Rate(sum(r.images for r in rates), max(r.seconds for r in rates))


def loader_rate(
    shards: ShardSet,
    normalize: Normalizer,
    *,
    size: int,
    batch_size: int,
    crop: int,
    workers: int,
    channels_last: bool = True,
    seconds: float = 2.0,
) -> Rate:
    """Training batches as `alexcli train` makes them: random crops, reflections and
    colour noise read by `workers` processes from `size`-px shards, then normalised on
    `normalize`'s device. The first batch (worker start-up) is not timed."""
    sampler = EpochSampler(len(shards), batch_size, size=size, crop=crop, seed=0)
    device = normalize.mean.device
    loader = make_loader(
        CropDataset(shards, crop),
        sampler,
        workers=workers,
        pin_memory=device.type == "cuda",
        capped=False,
    )
    with keep_freed_memory(device.type == "cpu"):  # as `train` runs it
        done, start, epoch = 0, 0.0, 0
        while True:
            sampler.set_epoch(epoch)
            for batch in loader:
                x = normalize(
                    batch.images,
                    batch.ys,
                    batch.xs,
                    batch.flips,
                    batch.alphas,
                    channels_last=channels_last,
                )
                synchronize(device)
                if not start:  # the clock starts once the first batch is through
                    start = time.perf_counter()
                    continue
                done += int(x.shape[0])
                took = time.perf_counter() - start
                if took >= seconds and done >= 2 * batch_size:
                    return Rate(done, took)
            epoch += 1


def fill_rate(
    shards: ShardSet,
    *,
    size: int,
    crop: int,
    batch_size: int,
    seconds: float = 2.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Rate:
    """Images/s of one loader worker's work, in this process: `CropDataset.fill` of
    training batch plans (read or decode, crop, reflect) into one array, batch after batch,
    on one thread as a worker runs (DataLoader sets each worker's torch to one thread).
    `clock=time.process_time` counts this process's CPU time instead of the wall's: the
    rate of a worker with a core to itself, whatever else the machine runs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fill_for(shards, size, crop, batch_size, seconds, clock)
    finally:
        torch.set_num_threads(threads)


def _fill_for(
    shards: ShardSet,
    size: int,
    crop: int,
    batch_size: int,
    seconds: float,
    clock: Callable[[], float],
) -> Rate:
    import torch

    dataset = CropDataset(shards, crop)
    batch_size = min(batch_size, len(shards))
    sampler = EpochSampler(len(shards), batch_size, size=size, crop=crop, seed=0)
    out = torch.empty((batch_size, crop, crop, 3), dtype=torch.uint8)
    done, start, epoch = 0, 0.0, 0
    while True:
        sampler.set_epoch(epoch)
        for plan in sampler:
            dataset.fill(plan, out[: len(plan)])
            if not start:  # the first batch opens the files and makes the scratch array
                start = clock()
                continue
            done += len(plan)
            took = clock() - start
            if took >= seconds and done >= 2 * batch_size:
                return Rate(done, took)
        epoch += 1
