"""Learning curves (docs/paper.md "Learning"): training loss and validation top-1/top-5
error per epoch, with the learning-rate drops (÷10 when validation error stops
improving) marked where they happened.

Input: the records of metrics.jsonl, one per finished epoch, as `core/rundir.py` reads
them (a cut last line left out, the last record of an epoch kept); `epochs_of` takes the
values the figure draws. Nothing here reads a file.

Output: `plot()` lays the figure out on the figures' canvas (`canvas.py`: polylines,
lines, text), whose `write_figure` draws it as PNG or SVG. `sparkline()` gives the
terminal a one-line view.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alexcli.core.figures.canvas import (
    AXIS_COLOUR,
    GRID_COLOUR,
    Figure,
    Line,
    Panel,
    Polyline,
    Text,
    nice_ticks,
)

SERIES = ("train_loss", "val_top1_error", "val_top5_error")
LABELS = {"train_loss": "train loss", "val_top1_error": "val top-1", "val_top5_error": "val top-5"}
COLOURS = {"train_loss": "#1f4e9c", "val_top1_error": "#c0392b", "val_top5_error": "#e08e0b"}
DROP_COLOUR = "#555555"
SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Epoch:
    """One line of metrics.jsonl; a value the line lacks (or has as null) is None."""

    epoch: int
    train_loss: float | None = None
    val_top1_error: float | None = None
    val_top5_error: float | None = None
    lr: float | None = None
    images_per_s: float | None = None


@dataclass(frozen=True)
class LrDrop:
    """The learning rate fell from `before` to `after` after epoch `epoch - 1` ended, at
    `epoch`'s start or inside it (a drop at a fraction of the run's steps)."""

    epoch: int  # the first epoch that ended at the new rate
    before: float
    after: float


def epochs_of(records: Sequence[Mapping[str, Any]]) -> list[Epoch]:
    """The drawn values of metrics.jsonl's records, in the records' order."""
    return [_epoch(r) for r in records]


def _epoch(record: Mapping[str, Any]) -> Epoch:
    values: dict[str, float | None] = {}
    for key in (*SERIES, "lr", "images_per_s"):
        value = None if record.get(key) is None else float(record[key])
        # json reads NaN / Infinity (a diverged run): no point to draw, as if missing
        values[key] = value if value is not None and math.isfinite(value) else None
    return Epoch(epoch=int(record["epoch"]), **values)


def lr_drops(epochs: Sequence[Epoch]) -> list[LrDrop]:
    """Where the learning rate decreased from one epoch to the next.

    Increases (a warm-up) are not drops and are not marked.
    """
    known = [(e.epoch, e.lr) for e in epochs if e.lr is not None]
    return [
        LrDrop(epoch, before, after)
        for (_, before), (epoch, after) in itertools.pairwise(known)
        if after < before * (1 - 1e-6)
    ]


def sparkline(values: Sequence[float | None], width: int = 60) -> str:
    """A one-line bar chart of `values` (min → ▁, max → █), binned to at most `width`
    characters by averaging; a missing value is a space."""
    bins = _bin(values, width)
    known = [v for v in bins if v is not None]
    if not known:
        return " " * len(bins)
    lo, hi = min(known), max(known)
    top = len(SPARKS) - 1
    return "".join(
        " " if v is None else SPARKS[round((v - lo) / (hi - lo) * top) if hi > lo else 0]
        for v in bins
    )


def _bin(values: Sequence[float | None], width: int) -> list[float | None]:
    n = len(values)
    if n <= width:
        return list(values)
    out: list[float | None] = []
    for b in range(width):
        chunk = [v for v in values[b * n // width : (b + 1) * n // width] if v is not None]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out


def summary_rows(epochs: Sequence[Epoch], limit: int = 20) -> list[int]:
    """Indices of the epochs worth a table row when there are more than `limit`:
    the first, the last, the best val top-1, each lr drop and the epoch before it,
    the rest spread evenly. All of them when they fit."""
    n = len(epochs)
    if n <= limit:
        return list(range(n))
    keep = {0, n - 1}
    errors = [(e.val_top1_error, i) for i, e in enumerate(epochs) if e.val_top1_error is not None]
    if errors:
        keep.add(min(errors)[1])
    drop_epochs = {d.epoch for d in lr_drops(epochs)}
    for i, e in enumerate(epochs):
        if e.epoch in drop_epochs:
            keep |= {i - 1, i}
    spare = max(0, limit - len(keep))
    keep |= {round(k * (n - 1) / (spare + 1)) for k in range(1, spare + 1)}
    return sorted(keep)


# --------------------------------------------------------------------------- the figure


def plot(epochs: Sequence[Epoch], width: int = 900, height: int = 620) -> Figure:
    """Lay the curves out: train loss above, val top-1/top-5 error below, a shared
    epoch axis, a dashed vertical rule at each lr drop (at the boundary between the
    last epoch at the old rate and the first at the new one), a legend on top."""
    if not epochs:
        raise ValueError("no epochs to plot")
    fig = Figure(width, height)
    xs = [float(e.epoch) for e in epochs]
    x_range = (min(xs), max(xs)) if len(set(xs)) > 1 else (xs[0] - 1, xs[0] + 1)
    left, right, top, bottom, between = 70, width - 24, 56, height - 48, 44
    middle = top + (bottom - top - between) / 2
    panels = [
        (("train_loss",), "train loss", top, middle),
        (("val_top1_error", "val_top5_error"), "val error", middle + between, bottom),
    ]
    for series, title, y0, y1 in panels:
        values = [v for s in series for e in epochs if (v := getattr(e, s)) is not None]
        ticks = nice_ticks(min(values), max(values)) if values else [0.0, 1.0]
        panel = Panel(left, y0, right, y1, x_range, (ticks[0], ticks[-1]))
        _axes(fig, panel, ticks, title, last=y1 == bottom)
        for s in series:
            points = [panel.at(e.epoch, v) for e in epochs if (v := getattr(e, s)) is not None]
            if points:
                fig.polylines.append(Polyline(s, points, COLOURS[s]))
        for drop in lr_drops(epochs):
            x, _ = panel.at(drop.epoch - 1, 0)
            fig.lines.append(Line((x, y0), (x, y1), DROP_COLOUR, dashed=True))
            if y0 == top:
                fig.texts.append(Text((x + 4, y0 + 2), f"lr {drop.after:g}", DROP_COLOUR))
    drawn = [s for s in SERIES if any(p.series == s for p in fig.polylines)]
    _legend(fig, drawn, left, drops=bool(lr_drops(epochs)))
    return fig


def _axes(fig: Figure, panel: Panel, ticks: list[float], title: str, last: bool) -> None:
    """Frame, horizontal grid lines with y labels, epoch ticks, the panel's title."""
    p = panel
    for t in ticks:
        _, y = p.at(p.x_range[0], t)
        fig.lines.append(Line((p.left, y), (p.right, y), GRID_COLOUR))
        fig.texts.append(Text((p.left - 6, y), f"{t:g}", anchor="rm"))
    x_ticks = nice_ticks(*p.x_range, count=8, integer=True)
    for t in (t for t in x_ticks if p.x_range[0] <= t <= p.x_range[1]):
        x, _ = p.at(t, p.y_range[0])
        fig.lines.append(Line((x, p.bottom), (x, p.bottom + 4), AXIS_COLOUR))
        if last:
            fig.texts.append(Text((x, p.bottom + 7), f"{t:g}", anchor="ma"))
    corners = [(p.left, p.top), (p.right, p.top), (p.right, p.bottom), (p.left, p.bottom)]
    for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
        fig.lines.append(Line(a, b, AXIS_COLOUR))
    fig.texts.append(Text((p.left, p.top - 4), title, anchor="ls"))
    if last:
        fig.texts.append(Text(((p.left + p.right) / 2, fig.height - 8), "epoch", anchor="ms"))


def _legend(fig: Figure, series: list[str], left: float, drops: bool) -> None:
    x, y = left, 16.0
    for s in series:
        fig.lines.append(Line((x, y), (x + 22, y), COLOURS[s], width=3))
        fig.texts.append(Text((x + 28, y), LABELS[s], anchor="lm"))
        x += 28 + 8 * len(LABELS[s]) + 24
    if not drops:
        return
    fig.lines.append(Line((x, y), (x + 22, y), DROP_COLOUR, dashed=True))
    fig.texts.append(Text((x + 28, y), "lr drop", anchor="lm"))
