"""`neighbors`: Figure 4 of the paper (docs/paper.md "Qualitative results"), run on a DATA_DIR.

For validation images — chosen by index, or a few spread evenly through the split so
they span its classes — the training images whose fc7 vectors (the last hidden
layer) are nearest in Euclidean distance (core/nn/retrieval.py: a running top-k over the
training split in chunks, so memory does not grow with it), and each query's top-5
guesses. Writes a PNG grid and returns JSON-able results; keeps no manifest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from alexcli.config import EvalConfig
from alexcli.core.atomic import check_writable
from alexcli.core.machine import sleeping_openmp_threads
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import UserError
from alexcli.stages.classifier import Classifier, Guess, check_order
from alexcli.stages.datadir import DataDir, open_data_dir
from alexcli.stages.results import Result

if TYPE_CHECKING:
    from alexcli.core.data.shards import ShardSet
    from alexcli.core.figures.retrieval_grid import GridRow


@dataclass(frozen=True)
class Neighbour(Result):
    index: int  # in the training split
    path: str  # source path, as prepare recorded it
    name: str
    words: str
    distance: float  # Euclidean, in fc7 space


@dataclass(frozen=True)
class Retrieval(Result):
    index: int  # in the query split
    path: str
    name: str
    words: str
    top5: list[Guess]
    neighbours: list[Neighbour]


@dataclass(frozen=True)
class NeighborsReport(Result):
    out: Path
    checkpoint: Path
    split: str
    k: int
    searched: int  # training images compared against
    features: int  # fc7 width
    width: int
    height: int
    results: list[Retrieval]
    seconds: float


def run_neighbors(
    run: Path,
    data_dir: Path,
    out: Path,
    *,
    queries: int | None = None,
    indices: Sequence[int] = (),
    k: int = 6,
    cfg: EvalConfig = EvalConfig(),
    progress: Progress = SILENT,
) -> NeighborsReport:
    """Figure 4: for validation images (`indices`, else `queries` of them evenly spaced
    through the split), the `k` training images nearest in fc7 space; a PNG grid at `out`."""
    sleeping_openmp_threads()  # before torch loads: OpenMP reads it then

    from alexcli.core.figures.png import write_png
    from alexcli.core.figures.retrieval_grid import draw_grid
    from alexcli.core.nn.retrieval import nearest_in

    if out.suffix.lower() != ".png" or out.is_dir():
        raise UserError(f"--out {out}: expected a .png file name", hint="e.g. --out fig4.png")
    check_writable(out, "--out")
    check_order(run, data_dir, "neighbors")
    data = open_data_dir(data_dir)
    net = Classifier.load(run, cfg)
    net.check_data(data)
    val, train = data.shard_set(cfg.split), data.shard_set("train")
    chosen = choose_queries(len(val), queries, indices, cfg.split)
    if not 1 <= k <= len(train):
        raise UserError(f"--k {k}: the training split has {len(train)} images")
    start = time.perf_counter()
    images = np.stack([val.image(i) for i in chosen])
    probs = net.classify(images, cfg.views)
    feats = net.features(images)
    task = progress.task("fc7 of the training images", total=len(train), unit="images")
    search = nearest_in(
        net.model,
        net.loader(train, cfg),
        net.normalize,
        feats,
        crop=net.crop,
        k=k,
        amp=cfg.amp,
        threads=net.threads,
        task=task,
    )
    task.close()
    found, dist = search.result()
    results, rows = _retrievals(data, val, train, chosen, net.guesses(probs), found, dist)
    picture, layout = draw_grid(rows)
    write_png(out, picture)
    height, width = layout.shape
    return NeighborsReport(
        out=out,
        checkpoint=net.ckpt.source,
        split=cfg.split,
        k=k,
        searched=len(train),
        features=int(feats.shape[1]),
        width=width,
        height=height,
        results=results,
        seconds=time.perf_counter() - start,
    )


def _retrievals(
    data: DataDir,
    val: ShardSet,
    train: ShardSet,
    chosen: Sequence[int],
    guesses: Sequence[list[Guess]],
    found: np.ndarray,
    dist: np.ndarray,
) -> tuple[list[Retrieval], list[GridRow]]:
    """Each query's results (for JSON) and its row of the figure."""
    from alexcli.core.figures.retrieval_grid import GridRow

    classes, results, rows = data.classes, [], []
    for q, i in enumerate(chosen):
        label, near = val.label(i), [int(j) for j in found[q]]
        labels = [train.label(j) for j in near]
        neighbours = [
            Neighbour(
                index=j,
                path=_source(train, j),
                name=classes[c]["name"],
                words=classes[c].get("words", ""),
                distance=float(d),
            )
            for j, c, d in zip(near, labels, dist[q], strict=True)
        ]
        results.append(
            Retrieval(
                index=i,
                path=_source(val, i),
                name=classes[label]["name"],
                words=classes[label].get("words", ""),
                top5=guesses[q],
                neighbours=neighbours,
            )
        )
        rows.append(
            GridRow(
                query=val.image(i),
                label=f"label: {_words(classes[label])}",
                guesses=[
                    (_words(classes[g.index]), g.probability, g.index == label) for g in guesses[q]
                ],
                neighbours=[train.image(j) for j in near],
                same_class=[c == label for c in labels],
            )
        )
    return results, rows


def choose_queries(n: int, queries: int | None, indices: Sequence[int], split: str) -> list[int]:
    """The query images: `indices` as given (checked), else `queries` (default 5) spread
    evenly through the split, first and last included, so they span its classes."""
    if n == 0:
        raise UserError(f"the {split!r} split has no images to query")
    if indices:
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise UserError(
                f"--index {bad[0]}: the {split!r} split has {n} images", hint=f"use 0…{n - 1}"
            )
        return list(dict.fromkeys(int(i) for i in indices))
    count = min(queries or 5, n)
    return sorted(set(np.linspace(0, n - 1, count).round().astype(np.int64).tolist()))


def _source(shards: ShardSet, index: int) -> str:
    """The source path prepare recorded for image `index`."""
    return shards.source(index)


def _words(cls: dict[str, str]) -> str:
    return cls.get("words") or cls["name"]
