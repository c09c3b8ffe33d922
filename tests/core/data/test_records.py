"""core/data/records.py: a JPEG record gives back what PIL's own encoder and decoder make
of the image, and every way a record can be damaged is a BadRecord, never a crash."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from alexcli.core.data.records import BadRecord, crc32, decode_jpeg, encode_jpeg


def _photo(size=32, seed=0):
    """Smooth colour gradients with a little noise: JPEG's kind of picture."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    base = np.stack([np.outer(ramp, ramp), np.outer(1 - ramp, ramp), np.outer(ramp, 1 - ramp)], -1)
    return (base * 220 + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)


def _pil_round_trip(image, quality):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@pytest.mark.parametrize("quality", [75, 90, 95])
def test_a_record_decodes_to_what_pil_makes_of_the_image(quality):
    image = _photo()
    record = encode_jpeg(image, quality)
    got = decode_jpeg(record, 32, crc32(record))
    assert got.shape == (32, 32, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, _pil_round_trip(image, quality))
    assert np.abs(got.astype(int) - image).mean() < 8  # and near the image (noise σ 6)


def test_higher_quality_costs_bytes_and_gains_fidelity():
    image = _photo(64)
    sizes, errors = [], []
    for quality in (75, 90, 95):
        record = encode_jpeg(image, quality)
        sizes.append(len(record))
        errors.append(np.abs(decode_jpeg(record, 64, crc32(record)).astype(int) - image).mean())
    assert sizes == sorted(sizes) and errors == sorted(errors, reverse=True)


def _damaged(record):
    cut = len(record) // 2
    return {
        "truncated": record[:cut],
        "bytes flipped": record[:cut]
        + bytes(b ^ 0x5A for b in record[cut : cut + 8])
        + record[cut + 8 :],
        "zeroed": bytes(len(record)),
        "empty": b"",
    }


@pytest.mark.parametrize("damage", ["truncated", "bytes flipped", "zeroed", "empty"])
def test_a_damaged_record_is_caught_by_its_crc(damage):
    record = encode_jpeg(_photo(), 90)
    with pytest.raises(BadRecord, match="CRC-32 differs"):
        decode_jpeg(_damaged(record)[damage], 32, crc32(record))


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "empty"])
def test_a_record_that_is_not_a_whole_jpeg_is_refused_even_with_its_own_crc(damage):
    bad = _damaged(encode_jpeg(_photo(), 90))[damage]
    with pytest.raises(BadRecord, match="not a readable JPEG"):
        decode_jpeg(bad, 32, crc32(bad))


def test_a_record_of_another_size_or_mode_is_refused_before_decoding():
    other = encode_jpeg(_photo(48), 90)
    with pytest.raises(BadRecord, match="48×48 RGB JPEG, not 32×32"):
        decode_jpeg(other, 32, crc32(other))
    buffer = io.BytesIO()
    Image.fromarray(_photo()[..., 0]).save(buffer, format="JPEG")
    gray = buffer.getvalue()
    with pytest.raises(BadRecord, match="32×32 L JPEG"):
        decode_jpeg(gray, 32, crc32(gray))
