"""Batches onto the training device (docs/paper.md "Data": the crops the network learns
from, moved where it runs).

On CUDA a batch's host→device copy on the compute stream would leave the GPU waiting
while it crosses PCIe (19 MB of uint8 crops at batch 128, crop 224); `prefetched` queues
the copy of the next batch on a side stream while the current step computes, and makes
the compute stream wait for that copy only when the batch is used. The loader pins its
batches on CUDA (page-locked memory: a `non_blocking` copy from pageable memory would be
synchronous). Elsewhere the batches pass through untouched: a CPU step reads them where
they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from alexcli.core.data.batches import Batch


def prefetched(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """`batches` on `device`, each one's copy issued before the one ahead of it is handed
    out (so it overlaps that batch's step); the batches themselves on a CPU."""
    if device.type != "cuda":
        yield from batches
        return
    side = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)
    ahead: tuple[Batch, torch.cuda.Event] | None = None
    for batch in batches:
        sent = _send(batch, device, side)
        if ahead is not None:
            yield _received(*ahead, compute)
        ahead = sent
    if ahead is not None:
        yield _received(*ahead, compute)


def _send(
    batch: Batch, device: torch.device, side: torch.cuda.Stream
) -> tuple[Batch, torch.cuda.Event]:
    """The copy of `batch` queued on the side stream, and the event that marks its end.
    The pinned source may be freed at once: PyTorch's pinned-memory allocator reuses a
    block only after the copies that read it have run."""
    with torch.cuda.stream(side):
        moved = Batch(*(t.to(device, non_blocking=True) for t in batch))
        done = torch.cuda.Event()
        done.record(side)
    return moved, done


def _received(batch: Batch, done: torch.cuda.Event, compute: torch.cuda.Stream) -> Batch:
    """`batch` for the compute stream: it waits for the copy (on the GPU, not the host),
    and the allocator learns the tensors are used there (their memory is the side
    stream's, and must not be reused before the step is done with them)."""
    compute.wait_event(done)
    for t in batch:
        t.record_stream(compute)
    return batch
