"""Learning curves (docs/paper.md "Learning"): training loss and validation top-1/top-5
error per epoch, with the learning-rate drops (÷10 when validation error stops
improving) marked where they happened.

Input: the records of metrics.jsonl, one per finished epoch, as `core/rundir.py` reads
them (a cut last line left out, the last record of an epoch kept); `epochs_of` takes the
values the figure draws. Nothing here reads a file.

Output without matplotlib (it requires plain `pillow`, which would replace
pillow-simd): `plot()` lays the figure out once as a few primitives (polylines,
lines, text) and two small back ends draw them — PIL `ImageDraw` for `.png`, and
hand-written SVG for `.svg`. `sparkline()` gives the terminal a one-line view.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from alexcli.core.atomic import write_text
from alexcli.core.figures import png

SERIES = ("train_loss", "val_top1_error", "val_top5_error")
LABELS = {"train_loss": "train loss", "val_top1_error": "val top-1", "val_top5_error": "val top-5"}
COLOURS = {"train_loss": "#1f4e9c", "val_top1_error": "#c0392b", "val_top5_error": "#e08e0b"}
DROP_COLOUR = "#555555"
AXIS_COLOUR = "#222222"
GRID_COLOUR = "#dddddd"
MARKERS_UP_TO = 40  # a dot on each epoch's value, for runs short enough to see them
SPARKS = "▁▂▃▄▅▆▇█"

Point = tuple[float, float]


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
    """The learning rate fell from `before` to `after` between `epoch - 1` and `epoch`."""

    epoch: int  # the first epoch trained at the new rate
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


@dataclass(frozen=True)
class Polyline:
    series: str
    points: list[tuple[float, float]]
    colour: str
    width: int = 2


@dataclass(frozen=True)
class Line:
    start: tuple[float, float]
    end: tuple[float, float]
    colour: str
    width: int = 1
    dashed: bool = False


@dataclass(frozen=True)
class Text:
    at: tuple[float, float]
    text: str
    colour: str = AXIS_COLOUR
    anchor: str = "la"  # PIL anchors: l/m/r × a(scender top)/m(iddle)/s(baseline)


@dataclass
class Figure:
    width: int
    height: int
    polylines: list[Polyline] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)


@dataclass(frozen=True)
class Panel:
    """A plot area in pixels, with the data ranges it maps."""

    left: float
    top: float
    right: float
    bottom: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def at(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        px = self.left + (x - x0) / (x1 - x0) * (self.right - self.left)
        py = self.bottom - (y - y0) / (y1 - y0) * (self.bottom - self.top)
        return round(px, 1), round(py, 1)


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


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi], about `count` of them."""
    if hi <= lo:
        lo, hi = lo - (abs(lo) or 1) / 2, hi + (abs(hi) or 1) / 2
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(k * step, 12) for k in range(first, last + 1)]


# --------------------------------------------------------------------------- back ends


def write_figure(fig: Figure, path: Path) -> None:
    """Write `fig` as PNG or SVG, chosen by `path`'s suffix, atomically."""
    suffix = Path(path).suffix.lower()
    if suffix == ".svg":
        write_text(path, to_svg(fig))
    elif suffix == ".png":
        png.write_png(path, np.asarray(to_image(fig)))
    else:
        raise ValueError(f"unsupported picture suffix {suffix!r}")


def to_image(fig: Figure, supersample: int = 2) -> Image.Image:
    """Draw `fig` with PIL at `supersample`× and box-filter it down: PIL draws no
    antialiased lines, and a 2× supersample is enough to smooth them."""
    k = supersample

    def at(p: Point) -> Point:
        return p[0] * k, p[1] * k

    image = Image.new("RGB", (fig.width * k, fig.height * k), "white")
    draw = ImageDraw.Draw(image)
    font = png.font(13 * k)
    for line in fig.lines:
        for a, b in _dashes(line) if line.dashed else [(line.start, line.end)]:
            draw.line([at(a), at(b)], fill=line.colour, width=line.width * k)
    for poly in fig.polylines:
        points = [at(p) for p in poly.points]
        draw.line(points, fill=poly.colour, width=poly.width * k, joint="curve")
        r = 2.5 * k
        for x, y in [at(p) for p in _markers(poly)]:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=poly.colour)
    for t in fig.texts:
        draw.text(at(t.at), t.text, fill=t.colour, font=font, anchor=t.anchor)
    return image.reduce(k) if k > 1 else image


def _markers(poly: Polyline) -> list[Point]:
    return poly.points if len(poly.points) <= MARKERS_UP_TO else []


def _dashes(line: Line, on: float = 6, off: float = 4) -> list[tuple[Point, Point]]:
    """`line` cut into `on`-pixel dashes `off` pixels apart (PIL draws no dashed lines)."""
    (x0, y0), (x1, y1) = line.start, line.end
    length = math.hypot(x1 - x0, y1 - y0) or 1.0

    def at(s: float) -> Point:
        return x0 + (x1 - x0) * s / length, y0 + (y1 - y0) * s / length

    starts = [k * (on + off) for k in range(math.ceil(length / (on + off)))]
    return [(at(s), at(min(s + on, length))) for s in starts]


_SVG_ANCHOR = {"l": "start", "m": "middle", "r": "end"}
_SVG_BASELINE = {"a": "hanging", "m": "central", "s": "alphabetic"}


def to_svg(fig: Figure) -> str:
    """`fig` as a standalone SVG document: one `<polyline>` per series."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{fig.width}" height="{fig.height}" '
        f'viewBox="0 0 {fig.width} {fig.height}" font-family="DejaVu Sans, sans-serif" '
        'font-size="13">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for ln in fig.lines:
        dash = ' stroke-dasharray="6 4"' if ln.dashed else ""
        out.append(
            f'<line x1="{ln.start[0]:g}" y1="{ln.start[1]:g}" x2="{ln.end[0]:g}" '
            f'y2="{ln.end[1]:g}" stroke="{ln.colour}" stroke-width="{ln.width}"{dash}/>'
        )
    for p in fig.polylines:
        points = " ".join(f"{x:g},{y:g}" for x, y in p.points)
        out.append(
            f'<polyline data-series="{p.series}" points="{points}" fill="none" '
            f'stroke="{p.colour}" stroke-width="{p.width}" stroke-linejoin="round"/>'
        )
        out += [
            f'<circle cx="{x:g}" cy="{y:g}" r="2.5" fill="{p.colour}"/>' for x, y in _markers(p)
        ]
    for t in fig.texts:
        out.append(
            f'<text x="{t.at[0]:g}" y="{t.at[1]:g}" fill="{t.colour}" '
            f'text-anchor="{_SVG_ANCHOR[t.anchor[0]]}" '
            f'dominant-baseline="{_SVG_BASELINE[t.anchor[1]]}">{escape(t.text)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
