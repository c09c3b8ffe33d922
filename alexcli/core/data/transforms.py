"""Data augmentation and input normalisation: docs/paper.md "Reducing overfitting" and "Data".

The paper trains on random crops (224 of 256) and their horizontal reflections, with
the training set's mean image subtracted from each pixel and PCA colour noise added:
to every pixel of an image, Σᵢ pᵢ αᵢ λᵢ with (pᵢ, λᵢ) the eigenvectors and eigenvalues
of the RGB covariance and αᵢ ~ N(0, 0.1) drawn once per image each time it is used.
Validation uses the centre crop; the paper's test the 4 corners + centre, reflected.

The work is split where it is cheapest (docs/training.md "Data feeding"):
- per image, on the CPU loader workers: only the uint8 crop and flip (`crop_into`);
- per batch, on the training device: float conversion, the mean image *at each
  crop's position* (and reflected with it), the colour shift, the input scale
  (`Normalizer`, which eval's 10-view test reuses with `view_offsets`); on a CPU
  image by image, every pass while the image is in the cache.
All random decisions come from `draw_augmentation`, a function of one seeded numpy
generator, so a batch's augmentation depends on the seed, epoch and position only
(never on worker count or process count), which makes resume and DDP exact.

Units of λ (the paper leaves them open; `lighting_scale`):
- "sqrt" (cuda-convnet2, the authors' own code): shift = Σ pᵢ αᵢ √λᵢ with λ the
  eigenvalues of the 0–255 RGB covariance: the noise has covariance σ²·Cov(RGB).
- "eigval" (fb.resnet.torch): shift = Σ pᵢ αᵢ λᵢ with λ on a 0–1 pixel scale, then
  back to 0–255 units: 255·Σ pᵢ αᵢ (λᵢ/255²). About half as strong on ImageNet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

LightingScale = Literal["sqrt", "eigval"]


@dataclass(frozen=True)
class Augmentation:
    """Per-image random decisions for `n` images: crop corner, reflection, colour noise."""

    ys: np.ndarray  # int64 (n,), top row of the crop
    xs: np.ndarray  # int64 (n,), left column of the crop
    flips: np.ndarray  # bool (n,), reflect left-right
    alphas: np.ndarray  # float32 (n, 3), αᵢ of the PCA colour noise


def draw_augmentation(
    rng: np.random.Generator,
    n: int,
    size: int,
    crop: int,
    *,
    flip: bool = True,
    lighting_std: float = 0.1,
) -> Augmentation:
    """Draw crop corners uniformly over every position, reflections with p=½, αᵢ ~ N(0, σ)."""
    if crop > size:
        raise ValueError(f"crop {crop} larger than the image {size}")
    ys = rng.integers(0, size - crop + 1, n, dtype=np.int64)
    xs = rng.integers(0, size - crop + 1, n, dtype=np.int64)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    alphas = (rng.standard_normal((n, 3)) * lighting_std).astype(np.float32)
    return Augmentation(ys, xs, flips, alphas)


def center_offset(size: int, crop: int) -> int:
    """Top-left corner (row = column) of the centre crop."""
    return (size - crop) // 2


def view_offsets(size: int, crop: int, views: int) -> list[tuple[int, int, bool]]:
    """(y, x, flip) of the test views: 1 = the centre crop; 10 = the paper's test,
    centre and four corners, then the same five reflected."""
    c, far = center_offset(size, crop), size - crop
    if views == 1:
        return [(c, c, False)]
    if views == 10:
        five = [(c, c), (0, 0), (0, far), (far, 0), (far, far)]
        return [(y, x, False) for y, x in five] + [(y, x, True) for y, x in five]
    raise ValueError(f"views must be 1 or 10, got {views}")


def crop_into(out: torch.Tensor, image: torch.Tensor, y: int, x: int, flip: bool) -> None:
    """Write the (crop, crop, 3) patch of `image` (S, S, 3) at (y, x), reflected left-right
    when `flip`, into `out`: what a loader worker does per image. The reflection is
    torch's flip, not numpy's reversed copy, whose 3-byte inner loop is many times slower
    (docs/performance.md)."""
    c = out.shape[0]
    patch = image[y : y + c, x : x + c]
    out.copy_(patch.flip(1) if flip else patch)


def _mean_slices(
    mean: torch.Tensor,
    ys: torch.Tensor,
    xs: torch.Tensor,
    flips: torch.Tensor,
    crop: int,
    mean_flipped: torch.Tensor | None,
) -> Iterator[torch.Tensor]:
    """Each crop's (crop, crop, 3) view of the mean image, reflected with it: no copies."""
    flipped = mean.flip(1) if mean_flipped is None else mean_flipped
    size = mean.shape[1]
    for y, x, f in zip(ys.tolist(), xs.tolist(), flips.tolist(), strict=True):
        # mean[:, x:x+c] reflected is the reflected mean's columns S-c-x … S-x.
        src, x0 = (flipped, size - crop - x) if f else (mean, x)
        yield src[y : y + crop, x0 : x0 + crop]


def mean_crops(
    mean: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, flips: torch.Tensor, crop: int
) -> torch.Tensor:
    """The mean image (S, S, 3) cut at each crop's position and reflected with it:
    (n, crop, crop, 3), on `mean`'s device, as one indexed gather (the CUDA path: one
    kernel for the batch; the CPU path walks `_mean_slices` image by image instead)."""
    ar = torch.arange(crop, device=mean.device)
    rows = ys.to(mean.device, non_blocking=True)[:, None] + ar  # (n, crop)
    flip = flips.to(mean.device, non_blocking=True)[:, None]
    cols = xs.to(mean.device, non_blocking=True)[:, None] + torch.where(flip, crop - 1 - ar, ar)
    return mean[rows[:, :, None], cols[:, None, :]]


def lighting_shift(
    alphas: torch.Tensor, eigval: torch.Tensor, eigvec: torch.Tensor, scale: LightingScale
) -> torch.Tensor:
    """The PCA colour shift (n, 3) in 0–255 units: Σᵢ pᵢ αᵢ wᵢ, `eigval` in 0–255² units."""
    if scale == "sqrt":
        weights = eigval.clamp(min=0).sqrt()
    elif scale == "eigval":
        weights = eigval / 255.0  # 255 · (λ / 255²): λ on the 0–1 scale, back to 0–255
    else:
        raise ValueError(f"lighting scale must be 'sqrt' or 'eigval', got {scale!r}")
    return (alphas * weights) @ eigvec.T


@dataclass(frozen=True)
class Normalizer:
    """uint8 crops (n, c, c, 3) → float (n, 3, c, c), batch-wise on the device:
    minus the mean image at each crop's position, plus the colour shift, times
    `input_scale`. Built once per run from stats; train, eval and predict share it."""

    mean: torch.Tensor  # (S, S, 3) float32, 0–255
    eigval: torch.Tensor  # (3,), 0–255² units, descending
    eigvec: torch.Tensor  # (3, 3), column i ↔ eigval[i]
    lighting_scale: LightingScale = "sqrt"
    input_scale: float = 1.0
    mean_flipped: torch.Tensor | None = None  # the mean reflected, kept for the CPU path

    @classmethod
    def create(
        cls,
        mean: np.ndarray,
        eigval: np.ndarray,
        eigvec: np.ndarray,
        device: torch.device,
        *,
        lighting_scale: LightingScale = "sqrt",
        input_scale: float = 1.0,
    ) -> Normalizer:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

        m = t(mean)
        return cls(
            m, t(eigval), t(eigvec), lighting_scale, float(input_scale), m.flip(1).contiguous()
        )

    @property
    def size(self) -> int:
        return int(self.mean.shape[0])

    def __call__(
        self,
        images: torch.Tensor,
        ys: torch.Tensor,
        xs: torch.Tensor,
        flips: torch.Tensor,
        alphas: torch.Tensor | None = None,
        *,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """`images` are uint8 crops already reflected; (ys, xs, flips) say where each came from.

        The same arithmetic in the same order everywhere, ((x − mean) + shift) · scale, so
        the CPU and CUDA paths give the same numbers bit for bit as a plain batch-wide
        computation; only how the passes are arranged differs (`_per_image`)."""
        shift = None
        if alphas is not None:
            shift = lighting_shift(
                alphas.to(self.mean.device, non_blocking=True),
                self.eigval,
                self.eigvec,
                self.lighting_scale,
            )
        if self.mean.device.type == "cpu":
            x = self._per_image(images, ys, xs, flips, shift)
        else:
            x = self._whole_batch(images, ys, xs, flips, shift)
        x = x.permute(0, 3, 1, 2)  # NHWC storage seen as NCHW: already channels-last
        return x if channels_last else x.contiguous()

    def _per_image(
        self,
        images: torch.Tensor,
        ys: torch.Tensor,
        xs: torch.Tensor,
        flips: torch.Tensor,
        shift: torch.Tensor | None,
    ) -> torch.Tensor:
        """The CPU path: all of an image's passes (float conversion, mean at its position,
        colour shift, scale) while it sits in the cache (a 224 crop is 602 KB of float32),
        then the next image's. The batch-wide passes each went through memory; here only
        the first write of each image does (docs/training.md "Data feeding")."""
        n, c = images.shape[0], images.shape[1]
        out = torch.empty((n, c, c, 3), dtype=torch.float32)
        # Each image's shift repeated along a row: an add over rows of c·3 floats runs
        # vectorised; a broadcast of the 3-wide shift runs far slower.
        rows = None if shift is None else shift.repeat(1, c)
        scale = self.input_scale
        means = _mean_slices(self.mean, ys, xs, flips, c, self.mean_flipped)
        for i, mean in enumerate(means):
            o = out[i]
            o.copy_(images[i])
            o.sub_(mean)
            if rows is not None:
                o.view(c, c * 3).add_(rows[i])
            if scale != 1.0:
                o.mul_(scale)
        return out

    def _whole_batch(
        self,
        images: torch.Tensor,
        ys: torch.Tensor,
        xs: torch.Tensor,
        flips: torch.Tensor,
        shift: torch.Tensor | None,
    ) -> torch.Tensor:
        """The CUDA path: each pass one kernel over the batch (a loop over images would
        launch four kernels per image)."""
        x = images.to(self.mean.device, non_blocking=True).float()
        x = x - mean_crops(self.mean, ys, xs, flips, images.shape[1])
        if shift is not None:
            x = x + shift[:, None, None, :]
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return x


def iter_views(
    normalizer: Normalizer,
    images: torch.Tensor,
    crop: int,
    views: int,
    *,
    channels_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Whole (n, S, S, 3) uint8 images → the normalised test inputs, one view at a time,
    each (n, 3, crop, crop), in `view_offsets` order: the centre crop (views=1) or the
    paper's 10 views, the mean subtracted at each view's place. One view at a time, so a
    10-view test holds one view's floats, not ten (10 × 128 × 3 × 224² float32 is 770 MB).
    `channels_last`: as the Normalizer makes them, without a copy to NCHW."""
    n = images.shape[0]
    for y, x, flip in view_offsets(normalizer.size, crop, views):
        patch = images[:, y : y + crop, x : x + crop]
        if flip:
            patch = patch.flip(2)
        ys = torch.full((n,), y, dtype=torch.int64)
        xs = torch.full((n,), x, dtype=torch.int64)
        flips = torch.full((n,), flip, dtype=torch.bool)
        yield normalizer(patch, ys, xs, flips, channels_last=channels_last)
