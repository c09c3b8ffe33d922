"""The ablation study's statistics (workflows/ablate/verdicts.py) against hand-worked numbers,
scipy's own tests and simulations of what each is meant to guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from alexcli.workflows.ablate import verdicts as v


def test_the_paired_t_test_matches_hand_numbers_and_scipy():
    # n = 3, mean 1.0, sd 0.1: t = 1 / (0.1 / √3) = 17.32; t(0.975, 2) = 4.3027
    t = v.paired_t([0.9, 1.0, 1.1])
    assert t.mean == pytest.approx(1.0) and t.sd == pytest.approx(0.1)
    assert t.half_width == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    assert t.p == pytest.approx(stats.ttest_1samp([0.9, 1.0, 1.1], 0.0).pvalue)
    assert t.sign == 1
    rng = np.random.default_rng(0)
    d = rng.normal(0.2, 1.0, (50, 5))
    many = v.paired_t(d)  # vectorised over studies: each row as scipy tests it alone
    want = [stats.ttest_1samp(row, 0.0).pvalue for row in d]
    np.testing.assert_allclose(many.p, want, rtol=1e-10)
    assert np.isnan(v.paired_t([2.0]).p) and v.paired_t([]).n == 0


def test_differences_without_spread_are_read_by_the_sign_test():
    """Equal differences (quantised errors) give a t-test with se = 0 nothing to read:
    three equal differences are 2·0.5³ = 0.25, not p = 0."""
    assert v.paired_t([0.01, 0.01, 0.01]).p == pytest.approx(0.25)
    assert v.paired_t([0.0, 0.0]).p == 1.0
    # the float noise of errors computed two ways is no spread
    assert v.paired_t([7 / 300 - 4 / 300, 10 / 300 - 7 / 300, 3 / 300]).p == pytest.approx(0.25)


def test_the_sign_test_is_the_exact_binomial():
    assert v.sign_test([1, 1, 1]) == pytest.approx(0.25)
    assert v.sign_test([1] * 6) == pytest.approx(2 / 64)
    assert v.sign_test([1, 1, 1, 1, 1, -1]) == pytest.approx(2 * 7 / 64)  # 2·P(X ≤ 1)
    assert v.sign_test([1, 0, 0]) == 1.0  # a tie or an unknown sign is left out
    assert v.sign_test([0, 0]) == 1.0
    assert v.sign_test_floor(3) == 0.25 and v.sign_test_floor(6) == pytest.approx(2 / 64)
    assert float(v.sign_test_sign([1, -1, 1])) == 1.0


def test_censored_runs_tell_a_sign_only_where_their_bound_does():
    # variant censored at 10 epochs (at least 10) against 4: larger; against 12: unknown
    signs = v.bounded_signs(
        [10, 10, 3, 12, 10], [1, 1, 0, 0, 1], [4, 12, 10, 10, 10], [0, 0, 1, 1, 1]
    )
    assert signs.tolist() == [1.0, 0.0, -1.0, 0.0, 0.0]


def test_holm_adjusts_as_worked_by_hand():
    # sorted 0.01·3, 0.03·2, 0.04·1 → 0.03, 0.06, max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(v.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(v.holm([0.5, np.nan]), [1.0, 1.0])  # untested reads as 1
    codes = v.directions([0.01, 0.01, 0.2, 0.01], [1, -1, 1, 0], [1, 1, 1, 1])
    assert codes.tolist() == [1.0, -1.0, 0.0, 0.0]


def test_a_claim_of_several_measures_needs_them_all():
    p, sign = v.union_p([0.01, 0.03], [1, 1])
    assert p == 0.03 and sign == 1
    p, sign = v.union_p([0.01, 0.03], [1, -1])
    assert p == 1.0 and sign == 0


def test_fiellers_ratio_interval_covers_the_true_ratio_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    base = rng.normal(0.20, 0.02, (4000, 5))
    variant = 1.3 * base + rng.normal(0, 0.02, (4000, 5))  # paired, correlated
    hits = [
        (i := v.ratio_interval(a, b)).low <= 1.3 <= i.high
        for a, b in zip(variant, base, strict=True)
    ]
    assert 0.935 <= np.mean(hits) <= 0.965
    i = v.ratio_interval([0.3, 0.32, 0.28], [0.2, 0.21, 0.19])
    assert i.estimate == pytest.approx(1.5) and i.low < 1.5 < i.high
    noisy = v.ratio_interval([0.1, -0.1, 0.05], [0.01, -0.01, 0.02])  # reference ≈ 0
    assert not noisy.bounded


def test_the_size_verdict_reads_the_interval_against_the_papers_figure():
    assert v.size_verdict(v.Interval(0.05, 0.02, 0.08), 0.037) == v.CONSISTENT
    assert v.size_verdict(v.Interval(0.0, -0.02, 0.08), 0.037) == v.SIZE_UNRESOLVED  # and 0
    assert v.size_verdict(v.Interval(0.01, -0.02, 0.02), 0.037) == v.SMALLER
    assert v.size_verdict(v.Interval(0.5, 0.2, 0.8), 0.037) == v.LARGER
    assert v.size_verdict(v.UNBOUNDED, 0.037) == v.SIZE_UNRESOLVED
    # relu: the log of the ratio against log 6
    assert v.size_verdict(v.t_interval(np.log([1.3, 1.5, 1.4])), math.log(6)) == v.SMALLER


def test_the_detectable_effect_is_found_80_percent_of_the_time():
    rng = np.random.default_rng(2)
    for n, alpha in ((3, 0.05 / 9), (5, 0.05 / 9), (10, 0.05)):
        reach = v.detectable(1.0, n, alpha)
        assert reach is not None
        d = rng.normal(reach, 1.0, (20_000, n))
        power = np.mean(v.paired_t(d).p <= alpha)
        assert power == pytest.approx(0.8, abs=0.015), (n, power)
    assert v.detectable(0.0, 3, 0.05) is None and v.detectable(1.0, 1, 0.05) is None
