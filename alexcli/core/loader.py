"""Feeding the network from the HDF5 shards: PAPER.md "Reducing overfitting" (random
crops and reflections of the 256×256 images, a fresh draw every time an image is used).

- `CropDataset` reads one image's crop from a `ShardSet` (h5py opened lazily in each
  worker process: handles do not survive fork) and returns uint8 only.
- `EpochSampler` decides, for a whole epoch at once and from (seed, epoch) alone, the
  order of the images and each one's crop, reflection and colour noise
  (`transforms.draw_augmentation`); it yields batches of `Sample`s, can start at any
  step of the epoch (resume), and under DDP hands rank r the r-th of every `world`
  images of each global batch: disjoint parts whose union is the one-process batch.
- `make_loader` wraps them in a DataLoader with persistent workers and pinned memory
  on CUDA; the float work happens on the device (`transforms.Normalizer`).

Random single-image reads, not contiguous runs: docs/training.md "Feeding" has the
numbers (on this machine random reads of one-image chunks are as fast as slices).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from alexcli.core.shards import ShardSet
from alexcli.core.transforms import center_offset, draw_augmentation


@dataclass(frozen=True)
class Sample:
    """One image of a batch and what to do with it: crop corner, reflection, colour noise."""

    index: int
    y: int
    x: int
    flip: bool
    alpha: tuple[float, float, float] = (0.0, 0.0, 0.0)


class Batch(NamedTuple):
    """A batch as the loader delivers it (CPU, pinned on CUDA); all tensors, first dim n."""

    images: torch.Tensor  # uint8 (n, crop, crop, 3), already reflected
    labels: torch.Tensor  # int64 (n,)
    ys: torch.Tensor  # int64 (n,)
    xs: torch.Tensor  # int64 (n,)
    flips: torch.Tensor  # bool (n,)
    alphas: torch.Tensor  # float32 (n, 3)

    @property
    def n(self) -> int:
        """Images in the batch."""
        return int(self.labels.shape[0])


class CropDataset(Dataset[Batch]):
    """uint8 crops of the images of one split; `__getitems__` builds a whole `Batch`."""

    def __init__(self, shards: ShardSet, crop: int) -> None:
        self.shards = shards
        self.crop = crop
        self._pid: int | None = None
        self._open: dict[int, tuple[h5py.Dataset, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.shards)

    def _shard(self, s: int) -> tuple[h5py.Dataset, np.ndarray]:
        """Shard s's image dataset and all its labels, opened once per process (looking
        `images` up in the file on every read costs ~4× the read itself)."""
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), {}
        if s not in self._open:
            f = self.shards.file(s)
            self._open[s] = (f["images"], np.asarray(f["labels"][:], dtype=np.int64))
        return self._open[s]

    def read(self, sample: Sample) -> tuple[np.ndarray, int]:
        """The crop of one image (read whole, then cut: one chunk either way) and its label."""
        s, i = self.shards.locate(sample.index)
        images, labels = self._shard(s)
        patch = images[i][sample.y : sample.y + self.crop, sample.x : sample.x + self.crop]
        if sample.flip:
            patch = patch[:, ::-1]
        return patch, int(labels[i])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pid"], state["_open"] = None, {}
        return state

    def __getitems__(self, samples: Sequence[Sample]) -> Batch:
        n, c = len(samples), self.crop
        images = np.empty((n, c, c, 3), dtype=np.uint8)
        labels = np.empty(n, dtype=np.int64)
        for k, sample in enumerate(samples):
            images[k], labels[k] = self.read(sample)
        return Batch(
            torch.from_numpy(images),
            torch.from_numpy(labels),
            torch.tensor([s.y for s in samples], dtype=torch.int64),
            torch.tensor([s.x for s in samples], dtype=torch.int64),
            torch.tensor([s.flip for s in samples], dtype=torch.bool),
            torch.tensor([s.alpha for s in samples], dtype=torch.float32).reshape(n, 3),
        )

    def __getitem__(self, sample: Sample) -> Batch:
        return self.__getitems__([sample])


class EpochSampler(Sampler[list[Sample]]):
    """Batches of `Sample`s for one epoch at a time; `set_epoch` before each pass.

    `batch_size` is the global batch (all ranks together). Training (`train=True`):
    a fresh permutation and fresh augmentation each epoch from `[seed, epoch]`, only
    whole batches (every rank takes the same number of steps). Evaluation: every
    image once in order, centre crops, the last batch partial, no padding, so
    counts summed over ranks cover each image exactly once.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        size: int,
        crop: int,
        train: bool = True,
        seed: int = 0,
        flip: bool = True,
        lighting_std: float = 0.1,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not a multiple of {world} processes")
        self.n, self.batch_size, self.size, self.crop = n, batch_size, size, crop
        self.train, self.seed, self.flip, self.lighting_std = train, seed, flip, lighting_std
        self.rank, self.world = rank, world
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        """Global batches in one pass (training drops the last partial batch)."""
        full, rest = divmod(self.n, self.batch_size)
        return full if self.train else full + (rest > 0)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Pass `epoch` next time, starting at global batch `start_step` (resume)."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start_step, 0)

    def __iter__(self) -> Iterator[list[Sample]]:
        order, ys, xs, flips, alphas = self._plan()
        for step in range(self.start_step, self.steps_per_epoch):
            lo = step * self.batch_size
            positions = range(lo + self.rank, min(lo + self.batch_size, self.n), self.world)
            batch = [
                Sample(
                    int(order[p]),
                    int(ys[p]),
                    int(xs[p]),
                    bool(flips[p]),
                    (float(alphas[p, 0]), float(alphas[p, 1]), float(alphas[p, 2])),
                )
                for p in positions
            ]
            if batch:
                yield batch

    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.train:
            c = center_offset(self.size, self.crop)
            full = np.full(self.n, c, dtype=np.int64)
            return np.arange(self.n), full, full, np.zeros(self.n, bool), np.zeros((self.n, 3))
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n)
        aug = draw_augmentation(
            rng, self.n, self.size, self.crop, flip=self.flip, lighting_std=self.lighting_std
        )
        return order, aug.ys, aug.xs, aug.flips, aug.alphas


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(processes_per_node: int = 1) -> int:
    """Loader processes: this process's share of the cores, minus one for it (at least 0)."""
    return max(cpu_cores() // max(processes_per_node, 1) - 1, 0)


def make_loader(
    dataset: CropDataset, sampler: EpochSampler, *, workers: int, pin_memory: bool
) -> DataLoader[Batch]:
    """A DataLoader over whole batches; workers persist across epochs."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_as_batch,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: `iter(loader)` draws a worker seed, and must not draw it
        # from torch's global RNG (dropout's), or a resumed run would diverge.
        generator=torch.Generator(),
    )


def _as_batch(batch: Any) -> Batch:
    """`CropDataset.__getitems__` already built the batch; nothing left to collate."""
    return batch
