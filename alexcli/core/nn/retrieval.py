"""Figure 4's retrieval: docs/paper.md "Qualitative results".

"If two images produce feature activation vectors with a small Euclidean separation,
we can say that the higher levels of the neural network consider them to be similar."
For each query image, the training images whose last hidden layer (fc7 after its
ReLU, 4096-d in the paper's net) is nearest in Euclidean distance.

Memory stays bounded on a 1.28 M-image training set: the training features are
computed a batch (chunk) at a time and folded into a running top-k per query
(`RunningNearest`), so what is kept is Q×k distances and indices plus one chunk, never
the 1.28 M × 4096 floats (21 GB in float32) of the whole set. Distances are summed
directly, Σ (qᵢ − xᵢ)², in float64 (`torch.cdist` without its ‖q‖² − 2q·x + ‖x‖²
matrix-product shortcut, whose rounding depends on where a vector sits in its chunk):
identical images get identical distances, ties go to the lower training index, and
the answer does not depend on the chunk size. The cost, Q·n·4096 multiply-adds, is
negligible beside the forward passes.

The figure itself is drawn by `core/figures/retrieval_grid.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from alexcli.core.data.batches import Batch
from alexcli.core.data.transforms import Normalizer
from alexcli.core.nn.inference import ThreadTuner, inference
from alexcli.core.nn.loops import Amp, centre_features
from alexcli.core.nn.model import AlexNet
from alexcli.core.progress import SILENT, Task


class RunningNearest:
    """The `k` database vectors nearest each query among those `add`ed so far.

    Feed the database in chunks, in index order; memory is Q×k plus one chunk.
    """

    def __init__(self, queries: Tensor, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.queries = queries.to(torch.float64)
        self.k = k
        q, device = self.queries.shape[0], self.queries.device
        self._dist = torch.empty((q, 0), dtype=torch.float64, device=device)
        self._index = torch.empty((q, 0), dtype=torch.int64, device=device)
        self.seen = 0

    def add(self, vectors: Tensor) -> None:
        """Fold in the next `len(vectors)` database vectors (indices `seen`, `seen`+1, …)."""
        v = vectors.to(self.queries.device, torch.float64)
        m = v.shape[0]
        d = torch.cdist(self.queries, v, compute_mode="donot_use_mm_for_euclid_dist")
        index = torch.arange(self.seen, self.seen + m, device=v.device).expand_as(d)
        dist = torch.cat([self._dist, d], 1)
        index = torch.cat([self._index, index], 1)
        # Stable: among equal distances the earlier (lower) index stays first.
        order = torch.sort(dist, dim=1, stable=True).indices[:, : self.k]
        self._dist, self._index = dist.gather(1, order), index.gather(1, order)
        self.seen += m

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 (Q, k), Euclidean distances float64 (Q, k)), nearest first."""
        return self._index.cpu().numpy(), self._dist.cpu().numpy()


def nearest_in(
    model: AlexNet,
    batches: Iterable[Batch],
    normalize: Normalizer,
    queries: Tensor,
    *,
    crop: int,
    k: int,
    amp: Amp = "off",
    threads: ThreadTuner | None = None,
    task: Task = SILENT.task(""),
) -> RunningNearest:
    """The `k` images of `batches` (whole uint8 images, in index order) whose centre-patch
    fc7 vectors are nearest each row of `queries` (Q, fc7 width). `threads`: the compute
    threads of each pass (`inference.ThreadTuner`)."""
    model.eval()
    search = RunningNearest(queries, k)
    with inference(normalize.mean.device), threads or contextlib.nullcontext():
        for batch in batches:
            search.add(centre_features(model, batch.images, normalize, crop, amp, threads=threads))
            task.advance(batch.n)
    return search
