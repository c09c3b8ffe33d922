"""Decode one source image into the paper's input: docs/paper.md "Data".

"Rescale the image so that the shorter side is of length 256, then crop out the
central 256×256 patch." Here: decode (pillow-simd, libjpeg-turbo), convert to RGB,
resize the shorter side to `size` with an antialiased filter (bilinear by
default, as torchvision; bicubic or Lanczos on request), keep the central
size×size square, return uint8 (size, size, 3).

Choices (docs/prepare.md gives the measurements):
- The resize and the crop are one `Image.resize(..., box=...)`: pillow evaluates
  the filter at the same positions as resize-then-crop (within 2 levels: rounding)
  without resampling the part the crop throws away.
- JPEGs are drafted (libjpeg's DCT scaling, 1/2, 1/4 or 1/8) only while the
  shorter side stays at least `DRAFT_FACTOR`×size, so the filter still does at
  least a 2× reduction: large photos decode faster, within a fraction of a level on
  average; ImageNet-sized ones (shorter side < 512) are untouched.
- EXIF orientation is applied (the image as a viewer shows it, as OpenCV's
  `imread` does); the few ImageNet files that carry a rotation come out upright.
- CMYK, grayscale, palette and 16-bit images become RGB; transparency is
  composited over white. CMYK uses PIL's plain conversion (no ICC profiles).
- Files are opened with `formats=` restricted to the formats in `FORMATS`; what
  cannot be read raises `Unreadable` with one of the `REASONS`, never anything else.
- What was done to a file beyond decoding an RGB image is reported as short kinds
  (`load_image_noted`: "cmyk", "png named .JPEG", "exif rotated"…), so the
  manifest can list ImageNet's awkward files; an RGB JPEG costs two comparisons.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from alexcli.errors import AlexcliError, first_line

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
MAX_PIXELS = 89_478_485  # PIL's default decompression-bomb limit (~9459² pixels)
DRAFT_FACTOR = 2
RESAMPLE = "bilinear"
_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_ORIENTATION = 0x0112

# Why a file is skipped; the manifest and the summary group by these.
EMPTY = "empty file"
NOT_IMAGE = "not an image"
TRUNCATED = "truncated image"
CORRUPT = "corrupt image"
BOMB = "decompression bomb"
UNREADABLE = "unreadable file"
REASONS = (EMPTY, NOT_IMAGE, TRUNCATED, CORRUPT, BOMB, UNREADABLE)

# What was done to a file that decoded but was not an upright RGB image of the format
# its name says; the manifest's `converted` and the summary group by these. A file
# named for another format gives "<format> named <suffix>", e.g. "png named .JPEG".
CMYK = "cmyk"
GRAYSCALE = "grayscale"
ONE_BIT = "1-bit"
PALETTE = "palette"
ALPHA = "alpha"
SIXTEEN_BIT = "16-bit"
WIDE = "32-bit"
EXIF_ROTATED = "exif rotated"
_MODE_KINDS: dict[str, tuple[str, ...]] = {
    "RGB": (),
    "RGBX": (),  # RGB with a padding byte: nothing to convert
    "CMYK": (CMYK,),
    "L": (GRAYSCALE,),
    "1": (ONE_BIT,),
    "LA": (GRAYSCALE, ALPHA),
    "La": (GRAYSCALE, ALPHA),
    "P": (PALETTE,),
    "PA": (PALETTE, ALPHA),
    "RGBA": (ALPHA,),
    "RGBa": (ALPHA,),
    "I;16": (SIXTEEN_BIT,),
    "I;16L": (SIXTEEN_BIT,),
    "I;16B": (SIXTEEN_BIT,),
    "I;16N": (SIXTEEN_BIT,),
    "I": (WIDE,),
    "F": (WIDE,),
}
# The format a file's suffix promises (lower case), for "png named .JPEG".
_SUFFIX_FORMATS = {
    **dict.fromkeys((".jpeg", ".jpg", ".jpe", ".jfif"), "JPEG"),
    ".png": "PNG",
    **dict.fromkeys((".bmp", ".dib"), "BMP"),
    ".gif": "GIF",
    **dict.fromkeys((".tif", ".tiff"), "TIFF"),
    ".webp": "WEBP",
    **dict.fromkeys((".ppm", ".pgm", ".pbm", ".pnm"), "PPM"),
}
_SAME_FORMAT = {"MPO": "JPEG"}  # a camera's multi-picture JPEG is still a JPEG


class Unreadable(Exception):
    """A source file that yields no image; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# A file, or a file's bytes (an image read out of an archive; its `name` says its suffix).
ImageSource = Path | str | bytes


def load_image(
    path: ImageSource,
    size: int,
    *,
    resample: str = RESAMPLE,
    draft: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """The central size×size RGB crop of `path` after its shorter side is scaled to
    `size` with the `resample` filter, as uint8 (size, size, 3). Raises `Unreadable`
    for a file without an image."""
    return load_image_noted(path, size, resample=resample, draft=draft, max_pixels=max_pixels)[0]


def load_image_noted(
    path: ImageSource,
    size: int,
    *,
    name: str | None = None,
    resample: str = RESAMPLE,
    draft: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """`load_image`, and what it did to the file on the way (empty for an upright RGB
    image of the format its name says): the kinds above, in the order done. `name` is
    the file's name when `path` is its bytes."""
    source = open_image(path, max_pixels)
    try:
        with warnings.catch_warnings():
            # A decoder's complaints (odd EXIF, odd chunks) are not for the terminal: a file
            # it cannot decode raises, and is skipped with a reason.
            warnings.simplefilter("ignore")
            extent = None  # the original image's extent in decoded pixels, when drafted
            if draft and source.format == "JPEG":
                drafted = source.draft("RGB", (DRAFT_FACTOR * size, DRAFT_FACTOR * size))
                extent = drafted[1][2:] if drafted else None
            source.load()
            img = source
            notes = _misnamed(name if name is not None else _name_of(path), source.format)
            if "exif" in img.info:  # turn upright first, and the extent with it
                if _orientation(img) != 1:
                    notes += (EXIF_ROTATED,)
                img, extent = upright(img), _upright_extent(img, extent)
            if img.mode != "RGB":
                notes += mode_conversions(img)
            out = to_small_rgb(img, size, resample, extent)
    except Unreadable:
        raise
    except Exception as e:  # a malformed file can trip any decoder; one bad file never stops a run
        raise _unreadable(e) from None
    finally:
        source.close()
    return np.asarray(out, dtype=np.uint8), notes


def picture_to_input(
    img: Image.Image | np.ndarray, size: int, resample: str = RESAMPLE
) -> np.ndarray:
    """A picture already in memory (a PIL image, or an (H, W, 3) / (H, W) uint8 array) as
    `load_image` makes a file: upright, RGB, shorter side to `size`, the central square."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
            raise ValueError(f"expected uint8 (H, W, 3) or (H, W), got {img.dtype} {img.shape}")
        img = Image.fromarray(img)
    out = to_small_rgb(upright(img), size, resample)
    return np.asarray(out, dtype=np.uint8)


def mode_conversions(img: Image.Image) -> tuple[str, ...]:
    """What `to_rgb` does to an image of this mode, as kinds ("cmyk", "palette", "alpha"…)."""
    kinds = _MODE_KINDS.get(img.mode, (img.mode.lower(),))
    if img.mode == "P" and "transparency" in img.info:
        kinds += (ALPHA,)
    return kinds


def _name_of(path: ImageSource) -> str:
    return "" if isinstance(path, bytes) else os.fspath(path)


def _misnamed(path: Path | str, fmt: str | None) -> tuple[str, ...]:
    """("png named .JPEG",) for a file whose suffix promises another format, else ()."""
    suffix = os.path.splitext(path)[1]
    expected = _SUFFIX_FORMATS.get(suffix.lower())
    actual = _SAME_FORMAT.get(fmt or "", fmt)
    if expected is None or expected == actual:
        return ()
    return (f"{(actual or 'unknown').lower()} named {suffix}",)


def open_image(path: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open (header only) an image of one of `FORMATS`, refusing more than `max_pixels`."""
    with warnings.catch_warnings(record=True) as said:
        # Our own limit below decides, and what PIL warns of becomes a file's reason
        # ("WEBP support not installed"): no warning reaches the terminal.
        warnings.simplefilter("always")
        try:
            opened = io.BytesIO(path) if isinstance(path, bytes) else path
            img = Image.open(opened, formats=FORMATS)
        except UnidentifiedImageError:
            reason, detail = _unidentified(path)
            notes = [  # PIL's own, not a DeprecationWarning of a plugin's first import
                str(w.message)
                for w in said
                if issubclass(w.category, UserWarning)
                and w.category is not Image.DecompressionBombWarning
            ]
            raise Unreadable(reason, first_line(Exception(notes[0])) if notes else detail) from None
        except Image.DecompressionBombError as e:
            raise Unreadable(BOMB, first_line(e)) from None
        except Exception as e:
            raise _unreadable(e) from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise Unreadable(BOMB, f"{w}×{h} pixels, over the limit of {max_pixels}")
    if w < 1 or h < 1:
        img.close()
        raise Unreadable(CORRUPT, f"{w}×{h} pixels")
    return img


def upright(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation applied (rare; cheap to check)."""
    if "exif" not in img.info or _orientation(img) == 1:
        return img
    return ImageOps.exif_transpose(img)


def _orientation(img: Image.Image) -> int:
    value = img.getexif().get(_ORIENTATION, 1)
    return value if value in range(1, 9) else 1


def _upright_extent(
    img: Image.Image, extent: tuple[float, float] | None
) -> tuple[float, float] | None:
    # Orientations 5–8 turn the image by 90°: width and height swap.
    if extent is None or _orientation(img) < 5:
        return extent
    return extent[1], extent[0]


_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_STRIP = 256  # rows converted at a time: a strip, never a whole large image, in numpy


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode: grayscale, CMYK, palette, 16-bit; alpha composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _WIDE_MODES:
        return eight_bit(img).convert("RGB")
    if _has_alpha(img):
        return _over_white(img)
    return img.convert("RGB")


def to_small_rgb(
    img: Image.Image,
    size: int,
    resample: str = RESAMPLE,
    extent: tuple[float, float] | None = None,
) -> Image.Image:
    """`resize_center_crop(to_rgb(img), …)`, the same pixels, with less memory: a gray
    image (16-bit, 1-bit too) is resized as one 8-bit channel and made RGB after (the
    filter gives three equal channels the same values), and only the small result is
    copied three times; transparency is composited strip by strip, never in float."""
    if img.mode in _WIDE_MODES:
        gray = eight_bit(img)
    elif img.mode in ("L", "1"):
        gray = img.convert("L") if img.mode == "1" else img
    else:
        return resize_center_crop(to_rgb(img), size, resample, extent)
    return resize_center_crop(gray, size, resample, extent).convert("RGB")


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer, or float) gray image as 8-bit "L", scaled rather than
    clipped as PIL's own conversion does: 16-bit by 255/65535, wider ones too when they go
    over 255, rounded. Converted strip by strip; NaN or infinite pixels are corrupt."""
    w, h = img.size
    strips = [(0, y, w, min(y + _STRIP, h)) for y in range(0, h, _STRIP)]
    out = np.empty((h, w), np.uint8)
    if img.mode.startswith("I;16"):
        for box in strips:
            a = np.asarray(img.crop(box), dtype=np.uint32)
            out[box[1] : box[3]] = (a * 255 + 32767) // 65535  # round(a × 255 / 65535)
        return Image.fromarray(out, "L")
    high = 0.0
    for box in strips:
        a = np.asarray(img.crop(box))
        if img.mode == "F" and not np.isfinite(a).all():
            raise Unreadable(CORRUPT, "not-a-number or infinite pixels")
        high = max(high, float(a.max(initial=0)))
    scale = 255.0 / 65535.0 if high > 255 else 1.0
    for box in strips:
        a = np.asarray(img.crop(box), dtype=np.float64)
        out[box[1] : box[3]] = np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )


def _over_white(img: Image.Image) -> Image.Image:
    """RGB: `img` composited over white, strip by strip (pixel by pixel the same as the
    whole at once): the full-size copies are the RGB result, never RGBA, white or float."""
    w, h = img.size
    out = Image.new("RGB", img.size)
    for y in range(0, h, _STRIP):
        part = img.crop((0, y, w, min(y + _STRIP, h))).convert("RGBA")
        white = Image.new("RGBA", part.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(white, part).convert("RGB"), (0, y))
    return out


def resize_center_crop(
    img: Image.Image,
    size: int,
    resample: str = RESAMPLE,
    extent: tuple[float, float] | None = None,
) -> Image.Image:
    """Shorter side to `size`, then the central size×size square, in one antialiased resize.

    The box is the crop's footprint in source pixels: with it pillow evaluates the
    same filter at the same positions as a full resize followed by the crop.
    `extent`: the width and height the image content spans (a drafted JPEG's is
    its original size ÷ the DCT scale, a fraction of a pixel short of its size).
    """
    w, h = extent or img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), _FILTERS[resample], box=box)


def decode_params() -> dict[str, Any]:
    """The fixed choices that decide the output pixels (they enter prepare's fingerprint;
    the filter and the size are configuration)."""
    return {
        "resize": "shorter side to size, central crop",
        "draft_factor": DRAFT_FACTOR,
        "exif_orientation": "applied",
        "alpha": "composited over white",
        "max_pixels": MAX_PIXELS,
        "formats": list(FORMATS),
    }


# --------------------------------------------------------------------------- helpers


def _unidentified(path: ImageSource) -> tuple[str, str]:
    try:
        if (len(path) if isinstance(path, bytes) else os.path.getsize(path)) == 0:
            return EMPTY, "0 bytes"
    except OSError as e:
        return UNREADABLE, e.strerror or str(e)
    return NOT_IMAGE, f"not one of {', '.join(FORMATS)}"


def _unreadable(e: Exception) -> Unreadable:
    """The reason for an exception PIL raised on a file. Running out of memory is the
    machine's fault, not the file's: never recorded as a skipped file, it ends the run."""
    if isinstance(e, MemoryError):
        raise AlexcliError(
            "out of memory while decoding an image",
            hint="lower --jobs (every process decodes its own image), then rerun",
        ) from None
    if isinstance(e, OSError) and e.errno is not None:  # permissions, I/O, a vanished path
        return Unreadable(UNREADABLE, e.strerror or first_line(e))
    if isinstance(e, OSError | EOFError):  # PIL's own: the data stop or make no sense
        reason = TRUNCATED if "truncated" in str(e).lower() else CORRUPT
        return Unreadable(reason, first_line(e))
    return Unreadable(CORRUPT, f"{type(e).__name__}: {first_line(e)}")
