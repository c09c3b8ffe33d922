"""Figure 3 of the paper (docs/paper.md "Qualitative results"): conv1's kernels as a picture.

The 96 first-layer 11×11×3 kernels, tower 1's 48 (the paper's GPU 1) above tower
2's 48, each kernel drawn as a small RGB image so its colour shows, enlarged by an
integer nearest-neighbour factor, with thin gaps between kernels and a wider band,
with a grey rule in it, between the towers. The paper observes that tower 1's
kernels come out largely colour-agnostic and tower 2's largely colour-specific;
`colour_fraction` puts a number on that.

Normalisation (what maps weights to 0–255):
- "kernel" (the default): each kernel on its own, `(w - min) / (max - min)` over
  all three channels together, so every kernel uses the full range and its colour
  balance is kept (R = G = B weights come out grey). Weak kernels are as visible as
  strong ones.
- "global": one min/max over all kernels, as cuda-convnet's `shownet.py
  --show-filters` does (`filters -= filters.min(); filters /= filters.max()`);
  brightness contrast then shows how strong each kernel is, and weak ones are grey.
A constant kernel (e.g. all zeros) has no range and is drawn mid-grey (128).

Pure numpy: the stage writes the picture (`figures.png.write_png`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Normalize = Literal["kernel", "global"]

COLUMNS = 16  # kernels per row, as cuda-convnet's shownet (FILTERS_PER_ROW); 48 → 3 rows
TILE_TARGET = 44  # enlarged tile side in pixels the default scale aims at (11 × 4)
BACKGROUND = 255  # white gaps, as the paper's figure
RULE = 128  # the grey rule between the towers


@dataclass(frozen=True)
class KernelLayout:
    """Where each kernel's tile sits in the grid image (all sizes in pixels).

    Kernel i belongs to tower `i // per_tower`; within its tower it sits at row
    `j // columns`, column `j % columns` (j = i mod per_tower). Each tower is a block
    of `rows` rows with a `gap` border; blocks are stacked top to bottom with a
    `separation` band between them.
    """

    kernels: int
    towers: int
    kernel_size: int
    scale: int
    columns: int
    gap: int
    separation: int

    @property
    def per_tower(self) -> int:
        return self.kernels // self.towers

    @property
    def rows(self) -> int:
        """Rows of tiles in each tower's block."""
        return math.ceil(self.per_tower / self.columns)

    @property
    def tile(self) -> int:
        return self.kernel_size * self.scale

    @property
    def block_height(self) -> int:
        return self.gap + self.rows * (self.tile + self.gap)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the whole image."""
        height = self.towers * self.block_height + (self.towers - 1) * self.separation
        return height, self.gap + self.columns * (self.tile + self.gap)

    def origin(self, index: int) -> tuple[int, int]:
        """(y, x) of the top-left pixel of kernel `index`'s tile."""
        tower, j = divmod(index, self.per_tower)
        row, col = divmod(j, self.columns)
        y = tower * (self.block_height + self.separation) + self.gap + row * (self.tile + self.gap)
        return y, self.gap + col * (self.tile + self.gap)


def grid_layout(
    kernels: int,
    kernel_size: int,
    towers: int = 2,
    *,
    columns: int | None = None,
    scale: int | None = None,
    gap: int = 2,
) -> KernelLayout:
    """The layout for `kernels` kernels of `kernel_size`² pixels split into `towers`.

    Defaults: 16 kernels per row (fewer if a tower has fewer), and the integer scale
    that brings a tile closest to ~44 px (4× for 11×11, 6× for 7×7).
    """
    if towers < 1 or kernels % towers:
        raise ValueError(f"{kernels} kernels do not split into {towers} towers")
    per_tower = kernels // towers
    columns = min(columns or COLUMNS, per_tower)  # more columns than kernels: blank width
    scale = scale or max(1, round(TILE_TARGET / kernel_size))
    if columns < 1 or scale < 1 or gap < 0:
        raise ValueError("columns and scale must be >= 1, gap >= 0")
    separation = 4 * gap + 4  # clearly wider than a gap, room for a 2-px rule
    return KernelLayout(kernels, towers, kernel_size, scale, columns, gap, separation)


def normalize_kernels(weights: np.ndarray, mode: Normalize = "kernel") -> np.ndarray:
    """conv1 weights (C, 3, k, k) → uint8 tiles (C, k, k, 3), RGB, 0–255 (module docstring)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected conv1 weights (C, 3, k, k), got shape {w.shape}")
    axes = (1, 2, 3) if mode == "kernel" else (0, 1, 2, 3)
    lo = w.min(axis=axes, keepdims=True)
    span = w.max(axis=axes, keepdims=True) - lo
    flat = span <= 0
    scaled = (w - lo) / np.where(flat, 1.0, span)
    scaled = np.where(flat, 128 / 255, scaled)
    pixels = np.rint(scaled * 255).astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1)  # (C, k, k, 3): channels last, as images are


def kernel_grid(
    weights: np.ndarray,
    towers: int = 2,
    *,
    normalize: Normalize = "kernel",
    columns: int | None = None,
    scale: int | None = None,
    gap: int = 2,
) -> tuple[np.ndarray, KernelLayout]:
    """The Figure-3 image (H, W, 3) uint8 of conv1 `weights` (C, 3, k, k), tower 1 first."""
    tiles = normalize_kernels(weights, normalize)
    layout = grid_layout(len(tiles), tiles.shape[1], towers, columns=columns, scale=scale, gap=gap)
    image = np.full((*layout.shape, 3), BACKGROUND, dtype=np.uint8)
    for t in range(1, towers):  # a 2-px grey rule in the middle of each separation band
        middle = t * (layout.block_height + layout.separation) - layout.separation // 2
        image[middle - 1 : middle + 1, :] = RULE
    big = tiles.repeat(layout.scale, axis=1).repeat(layout.scale, axis=2)  # nearest neighbour
    for i, tile in enumerate(big):
        y, x = layout.origin(i)
        image[y : y + layout.tile, x : x + layout.tile] = tile
    return image, layout


def colour_fraction(weights: np.ndarray) -> np.ndarray:
    """Per kernel, the share of its energy that is colour rather than grey, in [0, 1].

    Each pixel's (R, G, B) weight vector splits into its grey part (the channel mean,
    along R = G = B) and the rest; the fraction is Σ rest² / Σ w² over the kernel.
    0: a colour-agnostic kernel (same weights in R, G and B); 1: pure opponent colour
    (e.g. R = −G, B = 0); independent random weights (the init) give ≈ 2/3.
    Scale-free, so it does not depend on the display normalisation.
    """
    w = np.asarray(weights, dtype=np.float64)
    grey = w.mean(axis=1, keepdims=True)
    total = (w**2).sum(axis=(1, 2, 3))
    colour = ((w - grey) ** 2).sum(axis=(1, 2, 3))
    return np.divide(colour, total, out=np.zeros_like(total), where=total > 0)
