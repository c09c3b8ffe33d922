"""Decoding one image into the paper's input: shorter side, central crop, RGB."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from alexcli.core.data import decode
from alexcli.core.data.synthetic import png_header, synthetic_image

FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def reference(img: Image.Image, size: int, resample: str = "bilinear") -> np.ndarray:
    """The paper's recipe written out plainly: scale the whole image so its shorter side
    is `size` (rounding the other), then cut the central size×size square."""
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = size, round(h * size / w)
    else:
        nw, nh = round(w * size / h), size
    big = img.resize((nw, nh), FILTERS[resample])
    x, y = (nw - size) // 2, (nh - size) // 2
    return np.asarray(big.crop((x, y, x + size, y + size)))


def close_to(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to rounding: pillow's one-step box resize and the two-step reference
    round a few intermediate values differently (at most 2 levels, ~0.1 % of pixels)."""
    assert a.shape == b.shape and a.dtype == np.uint8
    d = np.abs(a.astype(int) - b.astype(int))
    assert d.max() <= 2 and d.mean() < 0.01, (d.max(), d.mean())


def save(tmp_path, img: Image.Image, fmt: str, name: str | None = None, **kw) -> str:
    path = tmp_path / (name or f"img.{fmt.lower()}")
    img.save(path, fmt, **kw)
    return str(path)


def photo(seed: int = 0, size_range=(300, 500)) -> Image.Image:
    return synthetic_image(np.random.default_rng(seed), seed % 8, size_range)


@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize(("w", "h", "size"), [(470, 380, 256), (300, 500, 128), (97, 61, 64)])
def test_shorter_side_then_central_crop(tmp_path, resample, w, h, size):
    img = photo(w).resize((w, h))
    path = save(tmp_path, img, "PNG")  # lossless: the file holds exactly `img`
    out = decode.load_image(path, size, resample=resample)
    close_to(out, reference(img, size, resample))


def test_the_crop_is_central(tmp_path):
    # Left third red, middle green, right third blue: a 3:1 image keeps only green.
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, :100, 0] = arr[:, 100:200, 1] = arr[:, 200:, 2] = 255
    out = decode.load_image(save(tmp_path, Image.fromarray(arr), "PNG"), 50)
    assert out.shape == (50, 50, 3)
    assert (out[:, 2:-2, 1] == 255).all() and out[:, 2:-2, [0, 2]].max() == 0


def test_jpeg_matches_the_reference(tmp_path):
    path = save(tmp_path, photo(3), "JPEG", quality=90)
    with Image.open(path) as img:
        close_to(decode.load_image(path, 256), reference(img, 256))


def test_large_jpegs_are_drafted_within_a_level(tmp_path):
    """DCT scaling keeps at least 2× the output size: close to decoding it all."""
    path = save(tmp_path, photo(5, (1100, 1400)), "JPEG", quality=90)
    with Image.open(path) as img:
        assert img.draft("RGB", (512, 512)) is not None and img.size[0] < 1100  # it drafts
    drafted = decode.load_image(path, 256).astype(int)
    full = decode.load_image(path, 256, draft=False).astype(int)
    d = np.abs(drafted - full)
    assert d.mean() < 0.5 and np.percentile(d, 99) <= 3


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "1", "YCbCr"])
def test_modes_become_rgb(tmp_path, mode):
    img = photo(1).convert(mode)
    fmt = "JPEG" if mode in ("CMYK", "L", "YCbCr") else "PNG"
    path = save(tmp_path, img, fmt, name=f"x.{fmt}")
    with Image.open(path) as src:
        ref = reference(src.convert("RGB"), 96)
    out = decode.load_image(path, 96, draft=False)
    close_to(out, ref)
    if mode in ("L", "1"):
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_png_named_jpeg(tmp_path):
    img = photo(2)
    path = save(tmp_path, img, "PNG", name="n02105855_2933.JPEG")
    close_to(decode.load_image(path, 128), reference(img, 128))


def test_transparency_is_composited_over_white(tmp_path):
    arr = np.zeros((80, 80, 4), np.uint8)
    arr[..., 0] = 200  # red everywhere, but only the bottom half is opaque
    arr[40:, :, 3] = 255
    out = decode.load_image(save(tmp_path, Image.fromarray(arr, "RGBA"), "PNG"), 80)
    assert (out[:30] == 255).all()  # transparent → white, not black or red
    assert (out[50:] == (200, 0, 0)).all()


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    arr = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    path = save(tmp_path, Image.fromarray(arr), "PNG")
    out = decode.load_image(path, 64)
    np.testing.assert_allclose(out[0, :, 0], arr[0] / 257, atol=1.5)


@pytest.mark.parametrize(("orientation", "turn"), [(6, Image.Transpose.ROTATE_270), (3, None)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    """The image as a viewer shows it: orientation 6 means "rotate 90° clockwise"."""
    stored = photo(4).resize((400, 300))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path, stored, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as img:
        decoded = img.convert("RGB")
    shown = decoded.transpose(turn) if turn else decoded.transpose(Image.Transpose.ROTATE_180)
    close_to(decode.load_image(path, 128), reference(shown, 128))


def _write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    photo(6).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.JPEG", lambda: b"", decode.EMPTY),
        ("notes.txt", lambda: b"wnid list, see synsets\n", decode.NOT_IMAGE),
        ("page.JPEG", lambda: b"<html><body>404</body></html>", decode.NOT_IMAGE),
        ("half.JPEG", lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2], decode.TRUNCATED),
        ("head.JPEG", lambda: _jpeg_bytes()[:400], decode.TRUNCATED),
        ("bomb.JPEG", lambda: png_header(30_000, 30_000), decode.BOMB),
        ("bomb2.png", lambda: png_header(10_000, 9_000), decode.BOMB),
    ],
)
def test_unreadable_files_raise_a_reason(tmp_path, name, make, reason):
    path = _write(tmp_path, name, make())
    with pytest.raises(decode.Unreadable) as e:
        decode.load_image(path, 64)
    assert e.value.reason == reason


def test_formats_outside_the_list_are_not_images(tmp_path):
    path = save(tmp_path, photo(0).resize((64, 64)), "PCX", name="x.JPEG")
    with pytest.raises(decode.Unreadable) as e:
        decode.load_image(path, 32)
    assert e.value.reason == decode.NOT_IMAGE


def test_pixel_limit_and_missing_files(tmp_path):
    path = save(tmp_path, photo(0).resize((100, 100)), "PNG")
    with pytest.raises(decode.Unreadable) as e:
        decode.load_image(path, 32, max_pixels=99 * 100)
    assert e.value.reason == decode.BOMB
    with pytest.raises(decode.Unreadable) as e:
        decode.load_image(tmp_path / "gone.JPEG", 32)
    assert e.value.reason == decode.UNREADABLE


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize(
    ("mode", "fmt", "name", "kw", "what"),
    [
        ("RGB", "JPEG", "a.JPEG", {}, ()),
        ("RGB", "PNG", "a.png", {}, ()),
        ("RGB", "JPEG", "a.jpg", {"exif": _exif(1)}, ()),  # EXIF, but already upright
        ("RGB", "PNG", "a.dat", {}, ()),  # a suffix that promises nothing
        ("CMYK", "JPEG", "a.JPEG", {}, ("cmyk",)),
        ("L", "JPEG", "a.JPEG", {}, ("grayscale",)),
        ("1", "PNG", "a.png", {}, ("1-bit",)),
        ("LA", "PNG", "a.png", {}, ("grayscale", "alpha")),
        ("P", "PNG", "a.png", {}, ("palette",)),
        ("P", "PNG", "a.png", {"transparency": 0}, ("palette", "alpha")),
        ("RGBA", "PNG", "a.png", {}, ("alpha",)),
        ("I;16", "PNG", "a.png", {}, ("16-bit",)),
        ("RGB", "PNG", "n02105855_2933.JPEG", {}, ("png named .JPEG",)),
        ("P", "PNG", "a.jpg", {}, ("png named .jpg", "palette")),
        ("RGB", "JPEG", "a.png", {}, ("jpeg named .png",)),
        ("RGB", "GIF", "a.JPEG", {}, ("gif named .JPEG", "palette")),  # GIF stores a palette
        ("RGB", "JPEG", "a.JPEG", {"exif": _exif(6)}, ("exif rotated",)),
        (
            "L",
            "JPEG",
            "a.png",
            {"exif": _exif(8)},
            ("jpeg named .png", "exif rotated", "grayscale"),
        ),
    ],
)
def test_conversions_are_noted(tmp_path, mode, fmt, name, kw, what):
    """What a user reads in the manifest's `converted`: each thing done to make the file
    an upright RGB image, nothing for a plain RGB file of the format its name says."""
    img = photo(7, (60, 90))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    path = save(tmp_path, img, fmt, name=name, **kw)
    out, notes = decode.load_image_noted(path, 32)
    assert notes == what
    np.testing.assert_array_equal(out, decode.load_image(path, 32))  # the same pixels


# --------------------------------------------------------------------------- hostile files


def test_not_a_number_pixels_are_a_corrupt_image_and_warn_nothing(tmp_path):
    arr = np.full((40, 40), 0.5, np.float32)
    arr[3, 5], arr[7, 9] = np.nan, np.inf
    path = save(tmp_path, Image.fromarray(arr, "F"), "TIFF", name="nan.tif")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")  # numpy's "invalid value encountered in cast"
        with pytest.raises(decode.Unreadable) as e:
            decode.load_image(path, 32)
    assert e.value.reason == decode.CORRUPT and not said


def test_what_pil_warns_of_becomes_the_reason_not_terminal_noise(tmp_path, monkeypatch):
    """A WebP file where pillow lacks WebP: pillow warns "WEBP support not installed"."""
    from PIL import WebPImagePlugin

    monkeypatch.setattr(WebPImagePlugin, "SUPPORTED", False)
    path = _write(tmp_path, "x.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(decode.Unreadable) as e:
            decode.load_image(path, 32)
    assert e.value.reason == decode.NOT_IMAGE and "WEBP support" in e.value.detail
    assert not said


@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("mode", ["L", "1", "I;16", "I", "LA", "RGBA", "P"])
def test_the_frugal_conversions_give_the_same_pixels(tmp_path, resample, mode):
    """Gray resized as one channel, 16-bit scaled and alpha composited in strips: exactly
    what converting the whole image to RGB first gives."""
    img = photo(9, (300, 700))
    rng = np.random.default_rng(1)
    if mode in ("I;16", "I"):
        wide = np.asarray(img.convert("L")).astype(np.int32) * 257
        wide += rng.integers(0, 3000, wide.shape, dtype=np.int32)  # over 65535 too
        if mode == "I;16":
            img = Image.fromarray(wide.clip(0, 65535).astype(np.uint16))
        else:
            img = Image.fromarray(wide - 1000)  # "I", below 0 too
    elif mode in ("LA", "RGBA"):
        arr = np.asarray(img.convert(mode)).copy()
        arr[..., -1] = rng.integers(0, 256, arr.shape[:2])
        img = Image.fromarray(arr, mode)
    else:
        img = img.convert(mode)
    fmt = "TIFF" if mode == "I" else "PNG"
    path = save(tmp_path, img, fmt, name=f"x.{fmt.lower()}")
    with Image.open(path) as src:
        if mode in ("I;16", "I"):
            wide = np.asarray(src, dtype=np.float64)
            gray = np.clip(wide * 255 / 65535 + 0.5, 0, 255).astype(np.uint8)
            full = Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
        elif mode in ("LA", "RGBA"):
            rgba = src.convert("RGBA")
            white = Image.new("RGBA", rgba.size, "white")
            full = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            full = src.convert("RGB")
        want = np.asarray(decode.resize_center_crop(full, 64, resample))
    np.testing.assert_array_equal(decode.load_image(path, 64, resample=resample), want)


_PEAK = """
import resource, sys, zlib, struct
from alexcli.core.data import decode

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

w, depth, colour = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
row = b"\\0" * (w * {0: 1, 2: 3, 6: 4}[colour] * depth // 8 + 1)
z = zlib.compressobj(9)
idat = b"".join(z.compress(row) for _ in range(w)) + z.flush()
head = struct.pack(">IIBBBBB", w, w, depth, colour, 0, 0, 0)
png = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", head) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
del png, idat
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decode.load_image(sys.argv[1], 256)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize(
    ("what", "depth", "colour", "limit_mb"),
    [("16-bit gray", 16, 0, 120), ("RGBA", 8, 6, 200)],  # 4,000² pixels
)
def test_a_large_image_decodes_without_full_size_float_copies(
    tmp_path, what, depth, colour, limit_mb
):
    """The decoded image itself is the floor (16-bit: 32 MB; RGBA: 64 MB, pillow keeps 4
    bytes a pixel); measured 60 and 138 MB more than before decoding. Before, 16-bit went
    through float64 (400 MB) and RGBA through full-size RGBA copies (306 MB)."""
    args = [sys.executable, "-c", _PEAK, str(tmp_path / "big.png"), "4000", str(depth)]
    r = subprocess.run([*args, str(colour)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) < limit_mb, (what, int(r.stdout))


@pytest.mark.parametrize("where", ["open", "load"])
def test_running_out_of_memory_is_not_a_corrupt_file(tmp_path, monkeypatch, where):
    """A MemoryError is the machine's, not the file's: recorded as "corrupt image", a good
    image would have been left out of the DATA_DIR for good (prepare caches its skips)."""
    from alexcli.errors import AlexcliError

    path = tmp_path / "fine.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    assert decode.load_image(path, 16).shape == (16, 16, 3)

    def exhausted(*args, **kwargs):
        raise MemoryError

    if where == "open":
        monkeypatch.setattr(decode.Image, "open", exhausted)
    else:
        monkeypatch.setattr(Image.Image, "load", exhausted)
    with pytest.raises(AlexcliError, match="out of memory") as e:
        decode.load_image(path, 16)
    assert not isinstance(e.value, decode.Unreadable) and "--jobs" in (e.value.hint or "")
