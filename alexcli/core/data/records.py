"""How one image is stored in a shard: its raw pixels, or a JPEG record.

docs/paper.md "Data": the images are the paper's 256×256 RGB crops either way; a JPEG
record is what the paper's own cuda-convnet kept in its batches (JPEG strings decoded
by CPU threads) and what FFCV offers beside raw pixels. Raw records cost nothing to
read and 196,608 bytes an image (252 GB for ILSVRC-2012); a JPEG record at quality 90
is about a tenth of that and costs a decode on every read (docs/prepare.md "Encoding").

A JPEG record is encoded by pillow(-simd)'s libjpeg-turbo with 4:2:0 chroma subsampling
(PIL's default, as ILSVRC-2012's own files mostly are) and stored with its CRC-32:
JPEG's entropy-coded data has no check of its own, so a flipped byte would decode to
wrong pixels without a word; with the CRC it is a one-line error naming the image.
"""

from __future__ import annotations

import io
import zlib
from typing import Literal

import numpy as np

from alexcli.errors import first_line

Encoding = Literal["raw", "jpeg"]
ENCODINGS: tuple[Encoding, ...] = ("raw", "jpeg")
SUBSAMPLING = "4:2:0"
_SUBSAMPLING_CODE = 2  # PIL's code for 4:2:0


class BadRecord(ValueError):
    """A stored record that does not give back its image; the message says why."""


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """An RGB uint8 (S, S, 3) image as a baseline JPEG at `quality` (1–100)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image, "RGB").save(
        out, format="JPEG", quality=quality, subsampling=_SUBSAMPLING_CODE
    )
    return out.getvalue()


def crc32(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def decode_jpeg(data: bytes, size: int, crc: int) -> np.ndarray:
    """The (size, size, 3) uint8 image of a JPEG record whose CRC-32 is `crc`.

    BadRecord when the bytes are not the ones stored (their CRC), or are not a
    size×size RGB JPEG, or the decoder refuses them: checked from the header before
    anything is decoded, so a record claiming another size allocates nothing. One
    thread: libjpeg-turbo decodes in the calling thread, which lets go of the GIL."""
    from PIL import Image

    if crc32(data) != crc:
        raise BadRecord(f"its {len(data):,} bytes are not the ones stored (CRC-32 differs)")
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as img:
            if img.size != (size, size) or img.mode != "RGB":
                w, h = img.size
                raise BadRecord(f"a {w}×{h} {img.mode} JPEG, not {size}×{size} RGB")
            img.load()
            return np.asarray(img)
    except (BadRecord, MemoryError):
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error…
        raise BadRecord(f"not a readable JPEG ({first_line(e)})") from None
