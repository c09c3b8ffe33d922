"""Augmentation and normalisation against direct numpy (docs/paper.md "Reducing overfitting")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexcli.core.data.transforms import (
    Normalizer,
    center_offset,
    crop_into,
    draw_augmentation,
    iter_views,
    lighting_shift,
    mean_crops,
    view_offsets,
)

S, C = 20, 14


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _eigen(rng):
    a = rng.normal(size=(3, 3))
    cov = a @ a.T * 300
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    return cov, val[order], vec[:, order]


def test_crops_cover_every_position_and_stay_inside(rng):
    aug = draw_augmentation(rng, 20_000, S, C, flip=True, lighting_std=0.1)
    for offs in (aug.ys, aug.xs):
        assert offs.min() == 0 and offs.max() == S - C  # both extremes drawn, none beyond
        counts = np.bincount(offs, minlength=S - C + 1)
        assert counts.min() > 0.8 * counts.mean()  # uniform
    assert 0.48 < aug.flips.mean() < 0.52
    assert aug.alphas.shape == (20_000, 3) and abs(aug.alphas.std() - 0.1) < 0.003


def test_no_flip_and_no_noise_when_disabled(rng):
    aug = draw_augmentation(rng, 100, S, C, flip=False, lighting_std=0.0)
    assert not aug.flips.any() and not aug.alphas.any()


def test_same_seed_same_draws():
    a = draw_augmentation(np.random.default_rng([3, 1]), 50, S, C)
    b = draw_augmentation(np.random.default_rng([3, 1]), 50, S, C)
    assert all(
        np.array_equal(x, y) for x, y in zip(vars(a).values(), vars(b).values(), strict=True)
    )


def test_mean_is_cut_at_each_crops_position_and_reflected_with_it(rng):
    mean = rng.normal(size=(S, S, 3)).astype(np.float32)
    ys, xs = np.array([0, 6, 3]), np.array([6, 0, 2])
    flips = np.array([False, True, True])
    got = mean_crops(
        torch.from_numpy(mean),
        torch.from_numpy(ys),
        torch.from_numpy(xs),
        torch.from_numpy(flips),
        C,
    ).numpy()
    for i in range(3):
        want = mean[ys[i] : ys[i] + C, xs[i] : xs[i] + C]
        np.testing.assert_array_equal(got[i], want[:, ::-1] if flips[i] else want)


def test_lighting_noise_has_the_eigen_statistics(rng):
    """Shift = Σ pᵢ αᵢ wᵢ: mean 0; covariance σ²·Cov(RGB) ("sqrt", cuda-convnet2) or
    σ²·V diag(λ²/255²) Vᵀ ("eigval", fb.resnet.torch on 0–1 pixels, back in 0–255)."""
    cov, val, vec = _eigen(rng)
    sigma = 0.1
    alphas = torch.from_numpy(rng.normal(0, sigma, (200_000, 3)).astype(np.float32))
    ev, evec = torch.tensor(val, dtype=torch.float32), torch.tensor(vec, dtype=torch.float32)
    for scale, want in (
        ("sqrt", sigma**2 * cov),
        ("eigval", sigma**2 * vec @ np.diag(val**2 / 255**2) @ vec.T),
    ):
        shift = lighting_shift(alphas, ev, evec, scale).double().numpy()
        assert np.abs(shift.mean(0)).max() < 0.02 * np.sqrt(np.diag(want)).max()
        np.testing.assert_allclose(
            np.cov(shift, rowvar=False), want, atol=0.02 * np.abs(want).max()
        )


def test_normalizer_equals_the_numpy_pipeline(rng):
    _, val, vec = _eigen(rng)
    mean = rng.uniform(0, 255, (S, S, 3)).astype(np.float32)
    images = rng.integers(0, 256, (4, S, S, 3), dtype=np.uint8)
    aug = draw_augmentation(rng, 4, S, C)
    crops = np.stack([_crop(images[i], aug.ys[i], aug.xs[i], C, aug.flips[i]) for i in range(4)])
    norm = Normalizer.create(mean, val, vec, torch.device("cpu"), input_scale=0.5)
    got = norm(
        torch.from_numpy(crops),
        torch.from_numpy(aug.ys),
        torch.from_numpy(aug.xs),
        torch.from_numpy(aug.flips),
        torch.from_numpy(aug.alphas),
    ).numpy()
    assert got.shape == (4, 3, C, C) and got.dtype == np.float32
    for i in range(4):
        sl = (slice(aug.ys[i], aug.ys[i] + C), slice(aug.xs[i], aug.xs[i] + C))
        x = images[i][sl].astype(np.float64) - mean[sl]
        if aug.flips[i]:
            x = x[:, ::-1]
        x = x + vec @ (aug.alphas[i] * np.sqrt(val))  # the same shift on every pixel
        np.testing.assert_allclose(got[i], 0.5 * x.transpose(2, 0, 1), rtol=1e-4, atol=1e-3)


def test_channels_last_output_is_the_same_numbers(rng):
    mean = rng.uniform(0, 255, (S, S, 3)).astype(np.float32)
    norm = Normalizer.create(mean, np.ones(3), np.eye(3), torch.device("cpu"))
    crops = torch.from_numpy(rng.integers(0, 256, (2, C, C, 3), dtype=np.uint8))
    zeros, no = torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.bool)
    a = norm(crops, zeros, zeros, no)
    b = norm(crops, zeros, zeros, no, channels_last=True)
    assert b.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a, b)


def test_test_views_are_centre_corners_and_their_reflections(rng):
    far, c = S - C, center_offset(S, C)
    views = view_offsets(S, C, 10)
    assert views[:5] == [
        (c, c, False),
        (0, 0, False),
        (0, far, False),
        (far, 0, False),
        (far, far, False),
    ]
    assert [(y, x) for y, x, _ in views[5:]] == [(y, x) for y, x, _ in views[:5]]
    assert all(f for *_, f in views[5:])
    assert view_offsets(S, C, 1) == [(c, c, False)]
    with pytest.raises(ValueError):
        view_offsets(S, C, 5)


def test_views_match_numpy(rng):
    mean = rng.uniform(0, 255, (S, S, 3)).astype(np.float32)
    images = rng.integers(0, 256, (3, S, S, 3), dtype=np.uint8)
    norm = Normalizer.create(mean, np.ones(3), np.eye(3), torch.device("cpu"))
    got = torch.stack(list(iter_views(norm, torch.from_numpy(images), C, 10))).numpy()
    assert got.shape == (10, 3, 3, C, C)
    for v, (y, x, flip) in enumerate(view_offsets(S, C, 10)):
        want = images[:, y : y + C, x : x + C].astype(np.float32) - mean[y : y + C, x : x + C]
        if flip:
            want = want[:, :, ::-1]
        np.testing.assert_allclose(got[v], want.transpose(0, 3, 1, 2), atol=1e-4)


def test_crop_into_writes_the_reflected_patch_like_numpy(rng):
    img = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    out = torch.empty((C, C, 3), dtype=torch.uint8)
    for y, x, flip in ((0, 6, True), (3, 1, False), (6, 0, True)):
        crop_into(out, torch.from_numpy(img), y, x, flip)
        np.testing.assert_array_equal(out.numpy(), _crop(img, y, x, C, flip))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("scale", [1.0, 0.017])
@pytest.mark.parametrize("noise", [True, False])
def test_cpu_normalizer_gives_the_batch_wide_numbers_bit_for_bit(rng, channels_last, scale, noise):
    """The CPU path works image by image; the numbers are those of the plain batch-wide
    formula ((x − mean crops) + shift) · scale, to the last bit."""
    _, val, vec = _eigen(rng)
    mean = rng.uniform(0, 255, (S, S, 3)).astype(np.float32)
    norm = Normalizer.create(mean, val, vec, torch.device("cpu"), input_scale=scale)
    aug = draw_augmentation(rng, 9, S, C)
    crops = torch.from_numpy(rng.integers(0, 256, (9, C, C, 3), dtype=np.uint8))
    ys, xs, flips = (torch.from_numpy(a) for a in (aug.ys, aug.xs, aug.flips))
    alphas = torch.from_numpy(aug.alphas) if noise else None
    got = norm(crops, ys, xs, flips, alphas, channels_last=channels_last)
    want = crops.float() - mean_crops(norm.mean, ys, xs, flips, C)
    if noise:
        want = want + lighting_shift(alphas, norm.eigval, norm.eigvec, "sqrt")[:, None, None]
    want = (want * scale if scale != 1.0 else want).permute(0, 3, 1, 2)
    assert torch.equal(got, want)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert got.is_contiguous(memory_format=layout)


def _crop(image: np.ndarray, y: int, x: int, crop: int, flip: bool) -> np.ndarray:
    """The reference patch: numpy's slice, reflected left-right when `flip`."""
    patch = image[y : y + crop, x : x + crop]
    return np.ascontiguousarray(patch[:, ::-1] if flip else patch)
