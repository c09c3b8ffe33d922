"""Figure 4's retrieval: PAPER.md "Qualitative results".

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

`draw_grid` lays the figure out: one row per query — the query, a panel with its
true class and its top-5 guesses (a bar per probability, red for the true class, as
in the paper's figure), then its k neighbours, nearest first, framed green when they
share the query's class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from alexcli.core.atomic import atomic_path
from alexcli.core.data.loader import Batch
from alexcli.core.data.transforms import Normalizer
from alexcli.core.nn.evaluate import centre_features
from alexcli.core.nn.loops import Amp
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
    task: Task = SILENT.task(""),
) -> RunningNearest:
    """The `k` images of `batches` (whole uint8 images, in index order) whose centre-patch
    fc7 vectors are nearest each row of `queries` (Q, fc7 width)."""
    model.eval()
    search = RunningNearest(queries, k)
    for batch in batches:
        search.add(centre_features(model, batch.images, normalize, crop, amp))
        task.advance(batch.n)
    return search


# --------------------------------------------------------------------------- the figure

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
class GridLayout:
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


def draw_grid(rows: Sequence[GridRow]) -> tuple[np.ndarray, GridLayout]:
    """The figure as uint8 (H, W, 3) RGB, and its layout."""
    tile = rows[0].query.shape[0]
    layout = GridLayout(tile, max(len(r.neighbours) for r in rows), len(rows))
    height, width = layout.shape
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(FONT)
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
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
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
    draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str,
    width: int,
) -> str:  # fmt: skip
    """`text`, cut with an ellipsis to at most `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font when FreeType is built in
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
