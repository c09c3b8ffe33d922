"""How `alexcli ablate` reads paired differences: the tests, the study-wide control, the
size intervals and the power (docs/ablations.md "Verdicts").

Every function works over the leading axes of numpy arrays, seeds on the last: the
report calls them on one study, the null simulation (tests/workflows/ablate/test_claims.py)
on tens of thousands at once, so the rate it measures is the rate of this very code.

- `paired_t`: mean, spread, 95 % interval and two-sided p-value of paired differences
  (Student t, n − 1 degrees of freedom). Differences without spread (errors on a small
  set are quantised, so equal differences happen) give the t-test nothing to read: their
  p-value is the exact sign test's, 2·0.5ⁿ.
- `sign_test`: the exact two-sided binomial test on the signs of the pairs; it is what
  decides a measure with a censored run, whose value is only a bound (`bounded_signs`).
- `union_p`: a claim that needs several measures at once (depth: every middle layer)
  holds when each does: the intersection–union test, whose p-value is the largest.
- `holm`: Holm–Bonferroni adjusted p-values across the study's claims, so that the chance
  of any false direction verdict in a study stays at or below `ALPHA` whatever the
  correlation between claims (they share a baseline).
- `ratio_interval` (Fieller's interval for a ratio of paired means) and `t_interval`:
  the size in the units the paper's figure is compared in; `size_verdict` reads them.
  The claims read them at 1 − α/m, Bonferroni's level, so that all of a study's size
  intervals cover their true values together 95 % of the time and a size verdict is
  held to the same study-wide standard as a direction verdict.
- `detectable`: the smallest effect the study's test finds with 80 % power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

ALPHA = 0.05  # the study-wide chance of any false direction verdict (Holm)
LEVEL = 0.95  # the coverage of each interval
POWER = 0.8  # the power `detectable` asks for
TOLERANCE = 1e-12  # a difference this small is zero (float noise of equal errors)

Size = Literal["consistent", "smaller", "larger", "not resolved"]
CONSISTENT: Size = "consistent"
SMALLER: Size = "smaller"
LARGER: Size = "larger"
SIZE_UNRESOLVED: Size = "not resolved"


@dataclass(frozen=True)
class PairedT:
    """The paired t-test of differences over the last axis (arrays over the others)."""

    n: int
    mean: Array
    sd: Array  # sample standard deviation (n − 1); NaN below 2 seeds
    se: Array
    half_width: Array  # t(0.975, n − 1)·se: the 95 % interval's half width
    p: Array  # two-sided; NaN below 2 seeds
    sign: Array  # of the mean: +1, −1, or 0 within TOLERANCE


def paired_t(differences: ArrayLike) -> PairedT:
    """The two-sided paired t-test of `differences` (…, n), with the exact sign test
    standing in where they have no spread."""
    from scipy.stats import t  # scipy: already needed for the devkit's .mat files

    d = np.asarray(differences, dtype=float)
    n = d.shape[-1]
    shape = d.shape[:-1]
    nan = np.full(shape, math.nan)
    if n == 0:
        return PairedT(0, nan, nan, nan, nan, nan, np.zeros(shape))
    mean = d.mean(-1)
    sign = _sign(mean)
    if n < 2:
        return PairedT(n, mean, nan, nan, nan, nan, sign)
    sd = d.std(-1, ddof=1)
    se = sd / math.sqrt(n)
    half = float(t.ppf(0.5 + LEVEL / 2, n - 1)) * se
    flat = sd <= TOLERANCE
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.abs(mean) / np.where(flat, 1.0, se)
    p = np.where(flat, sign_test(_sign(d)), 2 * t.sf(stat, n - 1))
    return PairedT(n, mean, sd, se, half, p, sign)


def _sign(x: ArrayLike) -> Array:
    a = np.asarray(x, dtype=float)
    return np.where(np.abs(a) <= TOLERANCE, 0.0, np.sign(a))


def sign_test(signs: ArrayLike) -> Array:
    """The exact two-sided sign test of pairs whose signs (…, n) are +1, −1 or 0 (a tie,
    or a sign the data cannot tell: left out, as the test does with ties)."""
    from scipy.stats import binom

    s = np.asarray(signs, dtype=float)
    up = (s > 0).sum(-1)
    known = (s != 0).sum(-1)
    p = 2 * binom.cdf(np.minimum(up, known - up), known, 0.5)
    return np.asarray(np.minimum(p, 1.0), dtype=float)


def sign_test_sign(signs: ArrayLike) -> Array:
    """The side the sign test leans to: +1 when more pairs are positive, −1, or 0."""
    s = np.asarray(signs, dtype=float)
    return np.sign((s > 0).sum(-1) - (s < 0).sum(-1)).astype(float)


def bounded_signs(
    variant: ArrayLike,
    variant_censored: ArrayLike,
    reference: ArrayLike,
    reference_censored: ArrayLike,
) -> Array:
    """The sign of variant − reference per pair where a censored value is only a lower
    bound (a run that never reached the threshold): a censored variant against an exact
    reference is known to be larger when its bound already is; a censored reference
    against an exact variant, smaller; two censored runs say nothing (0)."""
    v, r = np.asarray(variant, dtype=float), np.asarray(reference, dtype=float)
    cv, cr = np.asarray(variant_censored, bool), np.asarray(reference_censored, bool)
    d = _sign(v - r)
    return np.where(
        cv & cr, 0.0, np.where(cv, np.maximum(d, 0.0), np.where(cr, np.minimum(d, 0.0), d))
    )


def union_p(p: ArrayLike, sign: ArrayLike) -> tuple[Array, Array]:
    """A claim that holds only if each of its measures (…, k) does: p is the largest of
    theirs when all lean the same way (the intersection–union test, valid at level α
    without correction), else 1; the sign is their common one, else 0."""
    pp = np.where(np.isnan(np.asarray(p, dtype=float)), 1.0, np.asarray(p, dtype=float))
    s = np.asarray(sign, dtype=float)
    same = (s == s[..., :1]).all(-1) & (s[..., 0] != 0)
    return np.where(same, pp.max(-1), 1.0), np.where(same, s[..., 0], 0.0)


def holm(p: ArrayLike) -> Array:
    """Holm–Bonferroni adjusted p-values over the last axis (NaN: untested, read as 1).
    A claim whose adjusted p is at most α is resolved, and the chance that any claim of
    the family is resolved falsely stays at most α."""
    a = np.asarray(p, dtype=float)
    a = np.where(np.isnan(a), 1.0, a)
    m = a.shape[-1]
    if m == 0:
        return a
    order = np.argsort(a, axis=-1, kind="stable")
    ranked = np.take_along_axis(a, order, -1) * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, -1)
    return out


def directions(adjusted: ArrayLike, sign: ArrayLike, expected: ArrayLike) -> Array:
    """+1 (the paper's direction), −1 (the other) or 0 (not resolved) per claim, from
    Holm-adjusted p-values at `ALPHA`."""
    a, s = np.asarray(adjusted, dtype=float), np.asarray(sign, dtype=float)
    resolved = (a <= ALPHA) & (s != 0)
    return np.where(resolved, np.where(s == np.asarray(expected), 1.0, -1.0), 0.0)


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Interval:
    """An estimate and its interval; the ends are ±inf where the data do not bound it."""

    estimate: float
    low: float
    high: float

    @property
    def bounded(self) -> bool:
        return all(map(math.isfinite, (self.estimate, self.low, self.high)))


UNBOUNDED = Interval(math.nan, -math.inf, math.inf)


def t_interval(values: ArrayLike, level: float = LEVEL) -> Interval:
    """The mean of `values` and its two-sided Student t interval at `level`."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    test = paired_t(x)
    if test.n < 2 or test.sd <= TOLERANCE:
        return UNBOUNDED if test.n < 1 else Interval(float(test.mean), -math.inf, math.inf)
    m = float(test.mean)
    h = float(t.ppf(0.5 + level / 2, test.n - 1)) * float(test.se)
    return Interval(m, m - h, m + h)


def ratio_interval(variant: ArrayLike, reference: ArrayLike, level: float = LEVEL) -> Interval:
    """The ratio of the means of paired `variant` and `reference` values and its interval
    at `level` by Fieller's theorem: every ρ for which variant − ρ·reference has a mean
    within the t interval of zero. Unbounded when the reference's mean is itself not
    told apart from zero (then no ratio is excluded)."""
    from scipy.stats import t

    v, r = np.asarray(variant, dtype=float), np.asarray(reference, dtype=float)
    n = len(v)
    if n < 2 or float(r.mean()) == 0:
        return UNBOUNDED
    mv, mr = float(v.mean()), float(r.mean())
    cov = np.cov(np.stack([v, r]), ddof=1) / n  # of the means
    if cov[0, 0] <= TOLERANCE**2 and cov[1, 1] <= TOLERANCE**2:
        return Interval(mv / mr, -math.inf, math.inf)  # no spread: nothing to bound it by
    q = float(t.ppf(0.5 + level / 2, n - 1)) ** 2
    # (mv − ρ·mr)² ≤ q·(s_vv − 2ρ·s_vr + ρ²·s_rr): a·ρ² + b·ρ + c ≤ 0
    a = mr**2 - q * cov[1, 1]
    b = -2 * (mv * mr - q * cov[0, 1])
    c = mv**2 - q * cov[0, 0]
    disc = b * b - 4 * a * c
    if a <= 0 or disc < 0:
        return Interval(mv / mr, -math.inf, math.inf)
    root = math.sqrt(disc)
    return Interval(mv / mr, (-b - root) / (2 * a), (-b + root) / (2 * a))


def size_verdict(interval: Interval, paper: float) -> Size:
    """Where the paper's figure lies against the measured interval (same units, signed so
    that the paper's direction is positive): inside it and the interval clear of zero,
    "consistent"; the whole interval below it, "smaller"; above, "larger"; otherwise
    (unbounded, or the interval holds both the paper's figure and zero) "not resolved"."""
    if not interval.bounded:
        return SIZE_UNRESOLVED
    if interval.high < paper:
        return SMALLER
    if interval.low > paper:
        return LARGER
    if interval.low <= 0 <= interval.high:
        return SIZE_UNRESOLVED
    return CONSISTENT


# --------------------------------------------------------------------------- power


def detectable(sd: float, n: int, alpha: float, power: float = POWER) -> float | None:
    """The smallest true mean difference that a two-sided paired t-test at `alpha` over
    `n` seeds finds with probability `power`, when the differences spread by `sd`
    (noncentral t). None below 2 seeds or without spread."""
    from scipy.optimize import brentq
    from scipy.stats import nct, t

    if n < 2 or not math.isfinite(sd) or sd <= TOLERANCE:
        return None
    df = n - 1
    crit = float(t.ppf(1 - alpha / 2, df))

    def short(ncp: float) -> float:
        # the far tail (the wrong sign) is below α/2 and falls with ncp; scipy's nct
        # gives NaN for it at large ncp, where it is nil
        wrong = float(np.nan_to_num(nct.cdf(-crit, df, ncp)))
        return float(nct.sf(crit, df, ncp)) + wrong - power

    high = crit + 10.0
    while short(high) < 0:
        high *= 2
    ncp = float(brentq(short, 0.0, high, xtol=1e-6))
    return ncp * sd / math.sqrt(n)


def sign_test_floor(n: int) -> float:
    """The smallest p-value the two-sided sign test can give over `n` pairs: 2·0.5ⁿ."""
    return min(1.0, 2 * 0.5**n)
