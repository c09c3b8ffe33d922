"""The training set's mean image and RGB principal components, and the stats.h5 format.

docs/paper.md "Data": the only preprocessing is subtracting "the mean activity over the
training set from each pixel" – a size×size×3 mean image. docs/paper.md "Reducing
overfitting" (PCA colour augmentation): the eigenvectors pᵢ and eigenvalues λᵢ of the
3×3 covariance of the RGB pixel values over the training set, along which training
adds Σ pᵢ αᵢ λᵢ.

Both come from exact integer partial sums (`Sums`), one pass over the shards, any
number of shards per worker, combined with `+` in any order:

- `pixel_sum` int64 (size, size, 3): Σ over images of each position's value;
- `moment` int64 (3, 3): Σ over every pixel of y yᵀ with y = x − 128. Centring on
  128 keeps each product within int8·int8 (|y_c y_d| ≤ 2¹⁴), so the products run
  as an int8 matrix product (`torch._int_mm`) with int32 sums that cannot
  overflow (≤ 2¹⁶ rows a call), and the covariance is the same whatever the
  centre. ImageNet has 8.4e10 pixels: float32 running sums would keep
  none of their digits, int64 keeps them all (|moment| ≤ 1.4e15).

Units are 0–255 pixel values throughout; the covariance is the population one
(divided by the pixel count N, not N − 1). Eigenvalues are descending; column i
of `eigvec` is the eigenvector of `eigval[i]`, signed so that its component of
largest magnitude is positive (the first one then points to "brighter": all
three components positive), which makes the file deterministic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from alexcli.core.atomic import atomic_path
from alexcli.core.data.shards import open_shard, read_images
from alexcli.errors import FormatError, UserError, first_line

FORMAT = "alexcli-stats"
SCHEMA_VERSION = 1
CENTRE = 128  # uint8 x ↦ int8 x − 128: a bit flip (x ^ 0x80)
READ_BYTES = 3 << 20  # images per read: ~3 MiB, a block that stays in cache while summed
_PIXELS_PER_ROW = 16  # int8 GEMM rows of 16 pixels (48 values): the fastest shape measured
_ROWS_PER_CALL = 1 << 16  # int32 sums of ≤ 2¹⁶ products of ≤ 2¹⁴: no overflow
_PREPARE_FIX = (
    "run `alexcli prepare SOURCE DATA_DIR --verify` (it writes again the shards that differ)"
)


@dataclass(frozen=True, eq=False)
class Sums:
    """Exact partial sums over some training images; `a + b` covers both."""

    images: int
    pixel_sum: np.ndarray  # int64 (size, size, 3): Σ over images, per position and channel
    moment: np.ndarray  # int64 (3, 3): Σ over all pixels of (x − 128)(x − 128)ᵀ

    @classmethod
    def zeros(cls, size: int) -> Sums:
        return cls(0, np.zeros((size, size, 3), np.int64), np.zeros((3, 3), np.int64))

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.images + other.images,
            self.pixel_sum + other.pixel_sum,
            self.moment + other.moment,
        )


@dataclass(frozen=True, eq=False)
class Stats:
    """What stats.h5 holds (0–255 units), and what `train` subtracts and perturbs along."""

    mean: np.ndarray  # float32 (size, size, 3): the mean image
    rgb_mean: np.ndarray  # float64 (3,): mean R, G, B over all pixels
    rgb_cov: np.ndarray  # float64 (3, 3): population covariance of RGB pixel values
    eigval: np.ndarray  # float64 (3,), descending
    eigvec: np.ndarray  # float64 (3, 3): column i belongs to eigval[i]
    images: int
    data_fingerprint: str  # DATA_DIR/manifest.json's fingerprint when computed
    shards_digest: str = ""  # the training shards' names, counts and sha256 when computed

    @property
    def size(self) -> int:
        return int(self.mean.shape[0])

    @property
    def eigstd(self) -> np.ndarray:
        """√λ: the standard deviation of the pixel values along each component."""
        return np.sqrt(np.maximum(self.eigval, 0.0))


# --------------------------------------------------------------------------- sums


def centred_moment(pixels: np.ndarray) -> np.ndarray:
    """Σ (x − 128)(x − 128)ᵀ over uint8 pixels (n, 3), exactly, as int64 (3, 3)."""
    return _moment_of_centred(np.bitwise_xor(pixels, CENTRE).view(np.int8))


def _moment_of_centred(y: np.ndarray) -> np.ndarray:
    """Σ y yᵀ over int8 pixels y (n, 3), exactly, as int64 (3, 3).

    Rows of 16 pixels make an (n/16, 48) int8 matrix Y; the 3×3 blocks on the
    diagonal of YᵀY add up to the moment. The off-diagonal blocks are wasted work,
    yet the int8 GEMM doing 16× the products still beats every exact numpy
    formulation measured (docs/stats.md). The last n mod 16 pixels go through numpy.
    """
    import torch  # here, not at the top: reading stats.h5 should not need it

    k = _PIXELS_PER_ROW
    main = len(y) - len(y) % k
    tail = y[main:].astype(np.int64)
    out = tail.T @ tail
    rows = torch.from_numpy(np.ascontiguousarray(y[:main])).reshape(-1, 3 * k)
    gram = np.zeros((3 * k, 3 * k), np.int64)
    for start in range(0, rows.shape[0], _ROWS_PER_CALL):
        part = rows[start : start + _ROWS_PER_CALL]
        gram += torch._int_mm(part.t(), part).numpy()
    diag = np.arange(k)
    return out + gram.reshape(k, 3, k, 3)[diag, :, diag, :].sum(axis=0)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the int8 GEMMs single-threaded, then restore torch's setting.

    Each GEMM is a few hundred microseconds: a second OpenMP thread per call only
    spins and contends (slower on a busy machine: docs/stats.md); parallelism comes
    from summing several shards at once instead.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- shards


def read_block_size(size: int) -> int:
    """Images per read for size×size images: about READ_BYTES, 1 to 256."""
    return int(np.clip(READ_BYTES // (size * size * 3), 1, 256))


def shard_sums(
    path: Path, count: int | None = None, size: int | None = None, block: int | None = None
) -> Sums:
    """Sums over every image of one training shard, read `block` images at a time.

    A shard that is missing, foreign, of another split, truncated or corrupt, or
    whose image count or size differs from the manifest's (`count`, `size`), is a
    one-line FormatError naming it.
    """
    path = Path(path)
    try:
        with open_shard(path, expect_split="train") as f:
            n, side = int(f.attrs["count"]), int(f.attrs["size"])
            if (count is not None and n != count) or (size is not None and side != size):
                raise FormatError(
                    f"{path}: {n} images of {side} px, the manifest says {count} of {size} px",
                    hint=_PREPARE_FIX,
                )
            return _sum_images(
                lambda start, view: read_images(f, start, view, path),
                n,
                side,
                block or read_block_size(side),
            )
    except (OSError, KeyError) as e:  # h5py's errors for a chunk it cannot read
        raise FormatError(
            f"{path}: truncated or corrupt shard ({first_line(e)})", hint=_PREPARE_FIX
        ) from None


def _sum_images(read: Callable[[int, np.ndarray], object], n: int, size: int, block: int) -> Sums:
    """Sums over n images that `read(start, view)` puts into `view`, a block at a time
    (raw pixels copied, JPEG records decoded: core/data/shards.read_images)."""
    block = min(block, 256)
    buffer = np.empty((min(block, max(n, 1)), size, size, 3), np.uint8)
    block_sum = np.empty((size, size, 3), np.uint16)
    # Sums of up to 257 images fit uint16, where numpy adds several times faster
    # than in int64; they are widened into `pixel_sum` every 256 images.
    run_sum, run_images = np.zeros_like(block_sum), 0
    pixel_sum = np.zeros((size, size, 3), np.int64)
    moment = np.zeros((3, 3), np.int64)
    for start in range(0, n, block):
        view = buffer[: min(block, n - start)]
        read(start, view)
        view.sum(axis=0, dtype=np.uint16, out=block_sum)
        if run_images + len(view) > 256:
            pixel_sum += run_sum
            run_sum[...], run_images = 0, 0
        run_sum += block_sum
        run_images += len(view)
        np.bitwise_xor(view, CENTRE, out=view)  # x − 128 as int8, in place
        moment += _moment_of_centred(view.reshape(-1, 3).view(np.int8))
    pixel_sum += run_sum
    return Sums(n, pixel_sum, moment)


# --------------------------------------------------------------------------- statistics


def finish(sums: Sums, data_fingerprint: str, shards_digest: str = "") -> Stats:
    """The mean image, RGB mean, covariance and its eigen data from exact sums."""
    if sums.images <= 0:
        raise UserError("no training images to compute statistics from")
    size = sums.pixel_sum.shape[0]
    n = sums.images * size * size  # pixels
    channel_sum = [int(v) for v in sums.pixel_sum.sum(axis=(0, 1))]
    s = [v - CENTRE * n for v in channel_sum]  # Σ y, y = x − 128
    m = [[int(v) for v in row] for row in sums.moment]
    # cov = (N·Σyyᵀ − Σy Σyᵀ) / N², in Python integers (no rounding) then one division.
    cov = np.array([[(n * m[c][d] - s[c] * s[d]) / (n * n) for d in range(3)] for c in range(3)])
    eigval, eigvec = eigen(cov)
    return Stats(
        mean=(sums.pixel_sum / sums.images).astype(np.float32),
        rgb_mean=np.array([v / n for v in channel_sum]),
        rgb_cov=cov,
        eigval=eigval,
        eigvec=eigvec,
        images=sums.images,
        data_fingerprint=data_fingerprint,
        shards_digest=shards_digest,
    )


def eigen(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues descending; eigenvectors as columns, largest-magnitude component > 0."""
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1].copy(), vectors[:, ::-1].copy()
    lead = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]
    vectors *= np.where(lead < 0, -1.0, 1.0)
    return values, vectors


# --------------------------------------------------------------------------- stats.h5

_ARRAYS = {
    "mean": (np.float32, lambda s: (s, s, 3)),
    "rgb_mean": (np.float64, lambda s: (3,)),
    "rgb_cov": (np.float64, lambda s: (3, 3)),
    "eigval": (np.float64, lambda s: (3,)),
    "eigvec": (np.float64, lambda s: (3, 3)),
}


def write_stats(path: Path, stats: Stats) -> None:
    """Write stats.h5 atomically: the arrays, then the attributes that describe them."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, (dtype, _) in _ARRAYS.items():
            f.create_dataset(name, data=np.asarray(getattr(stats, name), dtype=dtype))
        f.attrs.update(
            format=FORMAT,
            schema_version=SCHEMA_VERSION,
            images=stats.images,
            size=stats.size,
            pixels=stats.images * stats.size * stats.size,
            data_fingerprint=stats.data_fingerprint,
            shards_digest=stats.shards_digest,
            units="0-255 pixel values, RGB",
            covariance="population (divided by the pixel count)",
            eigvec_layout="column i is the eigenvector of eigval[i]; largest |component| > 0",
        )


def read_stats(path: Path) -> Stats:
    """Read stats.h5 after checking it is ours, whole and of this schema version."""
    path = Path(path)
    fix = f"run `alexcli stats {path.parent} --force`"
    if not path.exists():
        raise UserError(f"{path} not found", hint=f"run `alexcli stats {path.parent}`")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise FormatError(f"{path}: not an alexcli stats file", hint=fix)
            version = int(f.attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise FormatError(
                    f"{path}: stats schema version {version}, this alexcli reads {SCHEMA_VERSION}",
                    hint=fix,
                )
            size = int(f.attrs["size"])
            arrays = {}
            for name, (dtype, shape) in _ARRAYS.items():
                if name not in f or f[name].shape != shape(size):
                    raise FormatError(f"{path}: {name!r} missing or not {shape(size)}", hint=fix)
                arrays[name] = np.asarray(f[name][()], dtype=dtype)
                if not np.isfinite(arrays[name]).all():
                    raise FormatError(f"{path}: {name!r} holds NaN or infinite values", hint=fix)
            return Stats(
                **arrays,
                images=int(f.attrs["images"]),
                data_fingerprint=str(f.attrs["data_fingerprint"]),
                shards_digest=str(f.attrs.get("shards_digest", "")),
            )
    except (OSError, KeyError, ValueError) as e:
        raise FormatError(f"{path}: unreadable stats file ({first_line(e)})", hint=fix) from None
