"""What a batch is, and how an epoch's batches are planned and cut: docs/paper.md
"Reducing overfitting" (random crops and reflections of the 256×256 images, a fresh draw
every time an image is used).

- `EpochSampler` decides, for a whole epoch at once and from (seed, epoch) alone, the
  order of the images and each one's crop, reflection and colour noise
  (`transforms.draw_augmentation`); it yields one `BatchPlan` (a few numpy arrays) per
  batch, can start at any step of the epoch (resume), and under DDP hands rank r the
  r-th of every `world` images of each global batch: disjoint parts whose union is the
  one-process batch.
- `CropDataset.fill` carries out a plan: each image's crop, reflected where planned,
  cut from the rows read from its shard (`ImageReader`: raw rows, or a JPEG record
  decoded) into one uint8 array.
- `Batch` is what the training step receives (core/data/loader.py delivers them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from alexcli.core.data.shards import ImageReader, ShardSet
from alexcli.core.data.transforms import center_offset, crop_into, draw_augmentation


@dataclass(frozen=True)
class Sample:
    """One image of a batch and what to do with it: crop corner, reflection, colour noise."""

    index: int
    y: int
    x: int
    flip: bool
    alpha: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True, eq=False)
class BatchPlan:
    """What one loader call makes: per image its index, crop corner, reflection and
    colour noise, as arrays (cheap to send to a worker). Iterates as `Sample`s."""

    index: np.ndarray  # int64 (n,)
    y: np.ndarray  # int64 (n,)
    x: np.ndarray  # int64 (n,)
    flip: np.ndarray  # bool (n,)
    alpha: np.ndarray  # float32 (n, 3)

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> BatchPlan:
        n = len(samples)
        return cls(
            np.array([s.index for s in samples], dtype=np.int64),
            np.array([s.y for s in samples], dtype=np.int64),
            np.array([s.x for s in samples], dtype=np.int64),
            np.array([s.flip for s in samples], dtype=bool),
            np.array([s.alpha for s in samples], dtype=np.float32).reshape(n, 3),
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> Sample:
        a = self.alpha[k]
        return Sample(
            int(self.index[k]),
            int(self.y[k]),
            int(self.x[k]),
            bool(self.flip[k]),
            (float(a[0]), float(a[1]), float(a[2])),
        )

    def __iter__(self) -> Iterator[Sample]:
        return (self[k] for k in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BatchPlan):
            return NotImplemented
        pairs = zip(self._fields(), other._fields(), strict=True)
        return all(np.array_equal(a, b) for a, b in pairs)

    def _fields(self) -> tuple[np.ndarray, ...]:
        return self.index, self.y, self.x, self.flip, self.alpha


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

    @classmethod
    def of(cls, images: torch.Tensor, labels: np.ndarray, plan: BatchPlan) -> Batch:
        return cls(
            images,
            torch.from_numpy(labels),
            torch.from_numpy(plan.y),
            torch.from_numpy(plan.x),
            torch.from_numpy(plan.flip),
            torch.from_numpy(plan.alpha),
        )

    def pin_memory(self) -> Batch:
        """Every tensor in page-locked memory (CUDA): copies to the GPU that overlap."""
        return Batch(*(t.pin_memory() for t in self))


class CropDataset(Dataset[Batch]):
    """uint8 crops of the images of one split, a whole batch per call.

    The split's index (each image's label and place) is read when the dataset is made, in
    the process that will fork the loader's workers, so they share it; each process reads
    the crops through its own `ImageReader`."""

    def __init__(self, shards: ShardSet, crop: int) -> None:
        self.shards = shards
        self.crop = crop
        self.index = shards.index()
        self._pid: int | None = None
        self._reader: ImageReader | None = None

    def __len__(self) -> int:
        return len(self.shards)

    def fill(self, plan: BatchPlan, out: torch.Tensor) -> np.ndarray:
        """Write the plan's crops (reflected where planned) into `out` (n, crop, crop, 3)
        uint8; return their labels."""
        if len(plan) and (plan.index.min() < 0 or plan.index.max() >= len(self)):
            raise IndexError(f"image index outside 0..{len(self) - 1}")
        if self._pid != os.getpid() or self._reader is None:
            self._pid, self._reader = os.getpid(), ImageReader(self.shards)
        images = self._reader.rows(plan.index, plan.y, self.crop)
        cuts = zip(images, plan.x.tolist(), plan.flip.tolist(), strict=True)
        for k, (rows, x, flip) in enumerate(cuts):
            crop_into(out[k], rows, 0, x, flip)
        return self.index.labels[plan.index].astype(np.int64)

    def __getitems__(self, plan: BatchPlan | Sequence[Sample]) -> Batch:
        """The plan's batch, in a fresh array (the in-process path; workers use a ring)."""
        plan = plan if isinstance(plan, BatchPlan) else BatchPlan.of(plan)
        images = torch.empty((len(plan), self.crop, self.crop, 3), dtype=torch.uint8)
        return Batch.of(images, self.fill(plan, images), plan)

    def __getitem__(self, sample: Sample) -> Batch:
        return self.__getitems__([sample])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pid"], state["_reader"] = None, None
        return state


class EpochSampler(Sampler[BatchPlan]):
    """Batch plans for one epoch at a time; `set_epoch` before each pass.

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
        random_crop: bool = True,
        lighting_std: float = 0.1,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        # The stage refuses a batch that does not split (stages/train/checks.check_trainable).
        assert batch_size % world == 0, f"batch {batch_size} over {world} processes"
        self.n, self.batch_size, self.size, self.crop = n, batch_size, size, crop
        self.train, self.seed, self.flip, self.lighting_std = train, seed, flip, lighting_std
        self.random_crop, self.rank, self.world = random_crop, rank, world
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        """Global batches in one pass (training drops the last partial batch)."""
        full, rest = divmod(self.n, self.batch_size)
        return full if self.train else full + (rest > 0)

    @property
    def rank_batch(self) -> int:
        """The most images one rank's batch holds."""
        return self.batch_size // self.world

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Pass `epoch` next time, starting at global batch `start_step` (resume)."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start_step, 0)

    def __iter__(self) -> Iterator[BatchPlan]:
        order, ys, xs, flips, alphas = self._plan()
        for step in range(self.start_step, self.steps_per_epoch):
            lo = step * self.batch_size
            mine = slice(lo + self.rank, min(lo + self.batch_size, self.n), self.world)
            if mine.start < mine.stop:
                yield BatchPlan(order[mine], ys[mine], xs[mine], flips[mine], alphas[mine])

    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.train:
            c = center_offset(self.size, self.crop)
            full = np.full(self.n, c, dtype=np.int64)
            none = np.zeros((self.n, 3), np.float32)
            return np.arange(self.n, dtype=np.int64), full, full, np.zeros(self.n, bool), none
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n).astype(np.int64)
        aug = draw_augmentation(
            rng, self.n, self.size, self.crop, flip=self.flip, lighting_std=self.lighting_std
        )
        if not self.random_crop:  # drawn all the same: the other draws do not move
            c = center_offset(self.size, self.crop)
            return (
                order,
                np.full(self.n, c, np.int64),
                np.full(self.n, c, np.int64),
                aug.flips,
                aug.alphas,
            )
        return order, aug.ys, aug.xs, aug.flips, aug.alphas
