"""The figures' drawing surface (docs/visualize.md): a figure laid out once as a few
primitives (polylines, lines, text) in pixel coordinates, a panel that maps data to
pixels, round tick values, and two small back ends that draw them — PIL `ImageDraw`
for `.png`, hand-written SVG for `.svg`. The learning curves (`curves.py`) and the
ablation study's figures (`claims.py`) are laid out on it.

No matplotlib: it requires plain `pillow`, which would replace pillow-simd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from alexcli.core.atomic import write_text
from alexcli.core.figures import png

AXIS_COLOUR = "#222222"
GRID_COLOUR = "#dddddd"
MARKERS_UP_TO = 40  # a dot on each point, for series short enough to see them

Point = tuple[float, float]


# --------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class Polyline:
    """A named series' points, joined; a dot on each when there are few."""

    series: str
    points: list[tuple[float, float]]
    colour: str
    width: int = 2


@dataclass(frozen=True)
class Line:
    """A straight segment: frames, grid lines, ticks, rules (dashed or not)."""

    start: tuple[float, float]
    end: tuple[float, float]
    colour: str
    width: int = 1
    dashed: bool = False


@dataclass(frozen=True)
class Text:
    """A label placed at a point by its anchor."""

    at: tuple[float, float]
    text: str
    colour: str = AXIS_COLOUR
    anchor: str = "la"  # PIL anchors: l/m/r × a(scender top)/m(iddle)/s(baseline)


@dataclass
class Figure:
    """A picture's size in pixels and what is drawn on it, in drawing order by kind."""

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
