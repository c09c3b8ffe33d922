"""Figure 4 of the paper (docs/paper.md "Qualitative results"), drawn from arrays.

One row per query image: the query, a panel with its true class and its top-5 guesses
(a bar per probability, red for the true class, as in the paper's figure), then its k
nearest training images (`core/nn/retrieval.py` finds them), nearest first, framed
green when they share the query's class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from alexcli.core.figures import png

PAD, GAP, FRAME = 8, 6, 2
PANEL, LINE, FONT = 240, 16, 12
_BAR, _TRUE_BAR, _SAME = (205, 222, 245), (240, 150, 150), (40, 160, 60)


@dataclass(frozen=True)
class GridRow:
    """One query's row: its image, true class, top-5 guesses and neighbours."""

    query: np.ndarray  # uint8 (S, S, 3)
    label: str
    guesses: Sequence[tuple[str, float, bool]]  # (class words, probability, is the true class)
    neighbours: Sequence[np.ndarray]  # uint8 (S, S, 3), nearest first
    same_class: Sequence[bool]  # each neighbour shares the query's class


@dataclass(frozen=True)
class RetrievalLayout:
    """Where everything goes: tiles of `tile` px, `k` neighbours a row, `rows` rows."""

    tile: int
    k: int
    rows: int

    @property
    def row_height(self) -> int:
        return max(self.tile, LINE * 6 + 4)  # the label and five guesses

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        width = 2 * PAD + self.tile + 2 * GAP + PANEL + self.k * (self.tile + GAP) - GAP
        return 2 * PAD + self.rows * (self.row_height + GAP) - GAP, width

    def query_origin(self, row: int) -> tuple[int, int]:
        """(y, x) of the top-left pixel of row `row`'s query."""
        return PAD + row * (self.row_height + GAP), PAD

    def neighbour_origin(self, row: int, j: int) -> tuple[int, int]:
        """(y, x) of the top-left pixel of row `row`'s `j`-th nearest neighbour."""
        y, _ = self.query_origin(row)
        return y, PAD + self.tile + 2 * GAP + PANEL + j * (self.tile + GAP)


def draw_grid(rows: Sequence[GridRow]) -> tuple[np.ndarray, RetrievalLayout]:
    """The figure as uint8 (H, W, 3) RGB, and its layout."""
    tile = rows[0].query.shape[0]
    layout = RetrievalLayout(tile, max(len(r.neighbours) for r in rows), len(rows))
    height, width = layout.shape
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = png.font(FONT)
    for r, row in enumerate(rows):
        y, x = layout.query_origin(r)
        canvas.paste(Image.fromarray(row.query), (x, y))
        _draw_panel(draw, font, row, x + tile + GAP, y)
        for j, (image, same) in enumerate(zip(row.neighbours, row.same_class, strict=True)):
            ny, nx = layout.neighbour_origin(r, j)
            if same:
                box = (nx - FRAME, ny - FRAME, nx + tile + FRAME - 1, ny + tile + FRAME - 1)
                draw.rectangle(box, outline=_SAME, width=FRAME)
            canvas.paste(Image.fromarray(image), (nx, ny))
    return np.asarray(canvas), layout


def _draw_panel(
    draw: ImageDraw.ImageDraw,
    font: png.Font,
    row: GridRow,
    x: int,
    y: int,
) -> None:
    """The true class on top, then the guesses with a bar as long as each probability."""
    draw.text((x, y), _fit(draw, font, row.label, PANEL), fill="black", font=font)
    for i, (words, p, true) in enumerate(row.guesses):
        top = y + LINE * (i + 1) + 4
        bar = round(PANEL * max(0.0, min(1.0, p)))
        if bar:
            draw.rectangle((x, top, x + bar - 1, top + LINE - 2), fill=_TRUE_BAR if true else _BAR)
        text = _fit(draw, font, f"{100 * p:4.1f}% {words}", PANEL - 2)
        draw.text((x + 2, top), text, fill=(40, 40, 40), font=font)


def _fit(
    draw: ImageDraw.ImageDraw,
    font: png.Font,
    text: str,
    width: int,
) -> str:
    """`text`, cut with an ellipsis to at most `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
