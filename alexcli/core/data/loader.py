"""Feeding the network from the HDF5 shards: docs/paper.md "Reducing overfitting" (random
crops and reflections of the 256×256 images, a fresh draw every time an image is used).

- `EpochSampler` decides, for a whole epoch at once and from (seed, epoch) alone, the
  order of the images and each one's crop, reflection and colour noise
  (`transforms.draw_augmentation`); it yields one `BatchPlan` (a few numpy arrays) per
  batch, can start at any step of the epoch (resume), and under DDP hands rank r the
  r-th of every `world` images of each global batch: disjoint parts whose union is the
  one-process batch.
- `CropDataset.fill` carries out a plan: each image's crop, reflected where planned,
  cut straight from the shard file's pages (`ShardImages`) into one uint8 array.
- `make_loader` runs the plans in worker processes (persistent, a DataLoader over whole
  batches) and hands out `Batch`es; the float work happens on the training device
  (`transforms.Normalizer`).

Why it is fast (docs/training.md "Data feeding" has the numbers): a worker's call is a
whole batch, read into one preallocated array in shared memory and sent as one tensor
(its small fields travel as numpy); the arrays are a ring reused batch after batch
(`core/data/batchring.py`: allocating and sending a fresh shared array per batch cost more
than reading the images); the images are memory-mapped, so a crop is one copy from the
page cache; and a reflection is torch's flip, not numpy's 3-byte reversed copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from alexcli.core.data.batchring import RingBuffers
from alexcli.core.data.shards import ShardImages, ShardSet
from alexcli.core.data.transforms import center_offset, crop_into, draw_augmentation
from alexcli.core.machine import cpu_cores


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
        return Sample(int(self.index[k]), int(self.y[k]), int(self.x[k]), bool(self.flip[k]),
                      (float(a[0]), float(a[1]), float(a[2])))  # fmt: skip

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
        return cls(images, torch.from_numpy(labels), torch.from_numpy(plan.y),
                   torch.from_numpy(plan.x), torch.from_numpy(plan.flip),
                   torch.from_numpy(plan.alpha))  # fmt: skip

    def pin_memory(self) -> Batch:
        """Every tensor in page-locked memory (CUDA): copies to the GPU that overlap."""
        return Batch(*(t.pin_memory() for t in self))


class CropDataset(Dataset[Batch]):
    """uint8 crops of the images of one split, a whole batch per call."""

    def __init__(self, shards: ShardSet, crop: int) -> None:
        self.shards = shards
        self.crop = crop
        self._pid: int | None = None
        self._open: dict[int, ShardImages] = {}

    def __len__(self) -> int:
        return len(self.shards)

    def _shard(self, s: int) -> ShardImages:
        """Shard s, opened (and mapped) once per process: handles do not survive fork."""
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), {}
        if s not in self._open:
            self._open[s] = ShardImages(self.shards.file(s))
        return self._open[s]

    def fill(self, plan: BatchPlan, out: torch.Tensor) -> np.ndarray:
        """Write the plan's crops (reflected where planned) into `out` (n, crop, crop, 3)
        uint8; return their labels."""
        offsets = self.shards.offsets
        shard_of = np.searchsorted(offsets, plan.index, side="right") - 1
        if len(plan) and (plan.index.min() < 0 or plan.index.max() >= len(self)):
            raise IndexError(f"image index outside 0..{len(self) - 1}")
        labels = np.empty(len(plan), dtype=np.int64)
        for k, (s, index, y, x, flip) in enumerate(
            zip(shard_of.tolist(), plan.index.tolist(), plan.y.tolist(), plan.x.tolist(),
                plan.flip.tolist(), strict=True)
        ):  # fmt: skip
            shard = self._shard(s)
            i = index - int(offsets[s])
            crop_into(out[k], shard.image(i), y, x, flip)
            labels[k] = shard.labels[i]
        return labels

    def __getitems__(self, plan: BatchPlan | Sequence[Sample]) -> Batch:
        """The plan's batch, in a fresh array (the in-process path; workers use a ring)."""
        plan = plan if isinstance(plan, BatchPlan) else BatchPlan.of(plan)
        images = torch.empty((len(plan), self.crop, self.crop, 3), dtype=torch.uint8)
        return Batch.of(images, self.fill(plan, images), plan)

    def __getitem__(self, sample: Sample) -> Batch:
        return self.__getitems__([sample])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pid"], state["_open"] = None, {}
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
        lighting_std: float = 0.1,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        # The stage refuses a batch that does not split (stages/train.check_trainable).
        assert batch_size % world == 0, f"batch {batch_size} over {world} processes"
        self.n, self.batch_size, self.size, self.crop = n, batch_size, size, crop
        self.train, self.seed, self.flip, self.lighting_std = train, seed, flip, lighting_std
        self.rank, self.world = rank, world
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
        return order, aug.ys, aug.xs, aug.flips, aug.alphas


def default_workers(processes_per_node: int = 1) -> int:
    """Loader processes: this process's share of the cores, minus one for it (at least 0)."""
    return max(cpu_cores() // max(processes_per_node, 1) - 1, 0)


PREFETCH = 4  # batches each worker works ahead


@dataclass(frozen=True, eq=False)
class _Shipment:
    """A batch as a worker makes it: the images in a slot of the ring, or a fresh shared
    array when every slot is held; the rest numpy (pickled inline: no shared memory).
    Not a tuple: torch versions before ~2.12 pin a named tuple field by field before
    asking for an object's own `pin_memory`, which would leave the labels unpinned."""

    images: torch.Tensor  # uint8 (n, crop, crop, 3)
    labels: np.ndarray
    plan: BatchPlan
    ring: str = ""  # the ring's key
    slot: tuple[int, int] | None = None  # (worker, slot); None: `images` is its own array

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """A slot travels as its number; the receiving process looks the memory up."""
        if self.slot is None:
            return _Shipment, (self.images, self.labels, self.plan)
        return _arrive, (self.ring, self.slot, self.labels, self.plan)

    def batch(self) -> Batch:
        return Batch.of(self.images, self.labels, self.plan)

    def pin_memory(self) -> Batch:
        """The DataLoader's pin thread (CUDA): the batch in page-locked copies; dropping
        this shipment hands its slot back."""
        return self.batch().pin_memory()


def _arrive(ring: str, slot: tuple[int, int], labels: np.ndarray, plan: BatchPlan) -> _Shipment:
    """Unpickling a shipment in the training process: the slot's images, tracked."""
    return _Shipment(RingBuffers.find(ring).receive(slot, len(labels)), labels, plan)


class _RingDataset(Dataset[_Shipment]):
    """What the workers run: `CropDataset.fill` into the worker's slots of the ring."""

    def __init__(self, dataset: CropDataset, ring: RingBuffers) -> None:
        self.dataset, self.ring = dataset, ring

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, plan: BatchPlan) -> _Shipment:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        images, slot = self.ring.acquire(worker, len(plan))
        return _Shipment(images, self.dataset.fill(plan, images), plan, self.ring.key, slot)

    def __getitem__(self, index: int) -> _Shipment:
        raise TypeError("the loader reads whole batches (`__getitems__`)")


class BatchLoader:
    """`Batch`es of `sampler`'s plans, read by `workers` processes (or in this one).

    With workers, a batch's images live in a slot of a shared ring (`core/data/batchring.py`)
    until the batch is dropped; keeping a batch is allowed (its slot stays taken)."""

    def __init__(
        self, dataset: CropDataset, sampler: EpochSampler, *, workers: int, pin_memory: bool
    ) -> None:
        self.dataset, self.sampler, self.pin_memory = dataset, sampler, pin_memory
        self._loader: DataLoader[_Shipment | Batch] | None = None
        if workers > 0:
            # Slots per worker: its prefetched batches, the one in use, the one before
            # (still referenced while the next is fetched), one spare.
            shape = (sampler.rank_batch, dataset.crop, dataset.crop, 3)
            self.ring = RingBuffers(workers, PREFETCH + 3, shape)
            self._loader = DataLoader(
                _RingDataset(dataset, self.ring),
                # DataLoader hands whatever the batch sampler yields to `__getitems__`;
                # its annotation says list.
                batch_sampler=sampler,  # type: ignore[arg-type]
                num_workers=workers,
                collate_fn=_as_is,
                pin_memory=pin_memory,
                persistent_workers=True,
                prefetch_factor=PREFETCH,
                # Its own generator: `iter(loader)` draws a worker seed, and must not draw
                # it from torch's global RNG (dropout's), or a resumed run would diverge.
                generator=torch.Generator(),
            )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        if self._loader is None:
            for plan in self.sampler:
                batch = self.dataset.__getitems__(plan)
                yield batch.pin_memory() if self.pin_memory else batch
            return
        for item in self._loader:  # Batch: already pinned by the pin thread
            yield item if isinstance(item, Batch) else item.batch()


def make_loader(
    dataset: CropDataset, sampler: EpochSampler, *, workers: int, pin_memory: bool
) -> BatchLoader:
    """Whole batches of `dataset` in `sampler`'s order; workers persist across epochs."""
    return BatchLoader(dataset, sampler, workers=workers, pin_memory=pin_memory)


def _as_is(shipment: Any) -> Any:
    """The worker already built the batch (a `_Shipment`); nothing left to collate."""
    return shipment
