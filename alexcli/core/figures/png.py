"""The one PNG writer and the one font of every picture alexcli draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from alexcli.core.atomic import atomic_path

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float pixel values in 0–255 units, rounded and clipped to uint8 (the mean image)."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def font(size: int) -> Font:
    """PIL's default font at `size` px: scalable where FreeType is built in, else its
    fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()
