"""The ablation study's two figures (docs/ablations.md), laid out on the figures' canvas
(core/figures/canvas.py: the primitives, PNG through PIL, hand-written SVG).

- `figure1`: the paper's Figure 1 on the user's data: training error against epochs
  for ReLU (solid) and tanh (dashed) units, one thin line per seed and their mean
  thick, with the threshold the claim's "epochs to reach it" reads.
- `effects`: every error measure's paired effect (variant − its reference, percentage
  points) as a dot with its 95 % interval, the paper's figure as a hollow mark where
  it gives one, a rule at zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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

RELU, TANH, GREY = "#1f4e9c", "#c0392b", "#777777"


def _frame(fig: Figure, a: Panel) -> None:
    corners = [(a.left, a.top), (a.right, a.top), (a.right, a.bottom), (a.left, a.bottom)]
    for p, q in zip(corners, corners[1:] + corners[:1], strict=True):
        fig.lines.append(Line(p, q, AXIS_COLOUR))


def figure1(
    relu: Sequence[Sequence[float]],
    tanh: Sequence[Sequence[float]],
    threshold: float,
    width: int = 760,
    height: int = 520,
) -> Figure:
    """Training error per epoch (from epoch 0 at chance) of each seed's relu and tanh run."""
    fig = Figure(width, height)
    runs = [*relu, *tanh]
    epochs = max((len(r) for r in runs), default=1) - 1
    values = [v for r in runs for v in r] + [threshold]
    ticks = nice_ticks(0.0, max(values))
    a = Panel(70, 50, width - 24, height - 48, (0.0, float(max(epochs, 1))), (0.0, ticks[-1]))
    for t in ticks:
        _, y = a.at(0, t)
        fig.lines.append(Line((a.left, y), (a.right, y), GRID_COLOUR))
        fig.texts.append(Text((a.left - 6, y), f"{t:g}", anchor="rm"))
    for t in nice_ticks(0, max(epochs, 1), count=8, integer=True):
        if t <= max(epochs, 1):
            x, _ = a.at(t, 0)
            fig.lines.append(Line((x, a.bottom), (x, a.bottom + 4), AXIS_COLOUR))
            fig.texts.append(Text((x, a.bottom + 7), f"{t:g}", anchor="ma"))
    _frame(fig, a)
    _, y = a.at(0, threshold)
    fig.lines.append(Line((a.left, y), (a.right, y), GREY, dashed=True))
    fig.texts.append(Text((a.right - 4, y - 3), f"threshold {threshold:g}", GREY, "rs"))
    for name, group, colour in (("relu", relu, RELU), ("tanh", tanh, TANH)):
        for r in group:
            fig.polylines.append(
                Polyline(f"{name}-seed", [a.at(i, v) for i, v in enumerate(r)], colour, width=1)
            )
        mean = _mean_curve(group)
        if mean:
            points = [a.at(i, v) for i, v in enumerate(mean)]
            fig.polylines.append(Polyline(name, points, colour, width=3))
    fig.texts += [
        Text((a.left, a.top - 8), "training error rate (Figure 1)", anchor="ls"),
        Text(((a.left + a.right) / 2, height - 8), "epoch", anchor="ms"),
        Text((a.right - 150, a.top - 28), "ReLU", RELU, "lm"),
        Text((a.right - 80, a.top - 28), "tanh", TANH, "lm"),
    ]
    return fig


def _mean_curve(runs: Sequence[Sequence[float]]) -> list[float]:
    """The mean over runs at each epoch all of them reached."""
    if not runs:
        return []
    n = min(len(r) for r in runs)
    return [sum(r[i] for r in runs) / len(runs) for i in range(n)]


@dataclass(frozen=True)
class Effect:
    label: str
    mean: float  # percentage points
    half_width: float | None  # the 95 % interval's half width; None below 2 seeds
    paper: float | None  # the paper's figure, percentage points


def effects(rows: Sequence[Effect], width: int = 900) -> Figure:
    """One row per effect: dot, interval, the paper's figure, a rule at zero."""
    height = 80 + 26 * max(len(rows), 1) + 40
    fig = Figure(width, height)
    spans = [abs(r.mean) + (r.half_width or 0.0) for r in rows] + [
        abs(r.paper) for r in rows if r.paper is not None
    ]
    reach = max([*spans, 0.5])
    ticks = nice_ticks(-reach, reach)
    a = Panel(330, 60, width - 24, height - 48, (ticks[0], ticks[-1]), (0.0, len(rows) + 0.5))
    for t in ticks:
        x, _ = a.at(t, 0)
        fig.lines.append(Line((x, a.top), (x, a.bottom), AXIS_COLOUR if t == 0 else GRID_COLOUR))
        fig.texts.append(Text((x, a.bottom + 7), f"{t:+g}" if t else "0", anchor="ma"))
    _frame(fig, a)
    for i, r in enumerate(rows):
        _, y = a.at(0, len(rows) - i)
        fig.texts.append(Text((a.left - 8, y), r.label, anchor="rm"))
        if r.half_width is not None:
            lo, hi = a.at(r.mean - r.half_width, 0)[0], a.at(r.mean + r.half_width, 0)[0]
            fig.lines.append(Line((lo, y), (hi, y), RELU, width=2))
            fig.lines += [Line((x, y - 5), (x, y + 5), RELU, width=2) for x in (lo, hi)]
        x, _ = a.at(r.mean, 0)
        fig.polylines.append(Polyline("effect", [(x - 0.5, y), (x + 0.5, y)], RELU, width=6))
        if r.paper is not None:
            px, _ = a.at(r.paper, 0)
            fig.lines.append(Line((px, y - 8), (px, y + 8), GREY, width=3))
    fig.texts += [
        Text(
            (a.left - 320, a.top - 26),
            "switching one choice off: variant minus its reference, "
            "percentage points; bars: 95 % interval over seeds; grey: the paper",
            anchor="ls",
        ),
        Text(((a.left + a.right) / 2, height - 8), "percentage points", anchor="ms"),
    ]
    return fig
