"""stats.py: the t quantile, the intervals, the minimum detectable effect and the verdict, against
SciPy (``t.ppf``, ``ttest_rel``, ``nct`` for the power) and hand computations."""

from __future__ import annotations

import math

import pytest

from alexnet.analysis import stats

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 19, 60])
@pytest.mark.parametrize("p", [0.8, 0.9, 0.975, 0.995, 0.2])
def test_t_quantile_is_scipys(p, df):
    assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-9)


def test_a_mean_interval_by_hand():
    # 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.7764451
    got = stats.mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert (got.mean, got.n) == (3.0, 5)
    assert got.low == pytest.approx(3 - half, rel=1e-9) and got.high == pytest.approx(3 + half, rel=1e-9)
    one = stats.mean_interval([0.7])
    assert (one.low, one.high, one.sd) == (0.7, 0.7, 0.0)


def test_the_paired_interval_is_ttest_rels():
    a = [24.1, 25.3, 23.8, 26.0, 24.9, 25.5]
    b = [25.0, 25.9, 24.9, 26.1, 26.2, 25.8]
    diff = stats.paired_difference(a, b)
    ref = scipy_stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert diff.low == pytest.approx(ci.low, rel=1e-9) and diff.high == pytest.approx(ci.high, rel=1e-9)
    # the interval excludes 0 exactly when the two-sided p-value is below 0.05
    assert (diff.high < 0 or diff.low > 0) == (ref.pvalue < 0.05)
    with pytest.raises(ValueError):
        stats.paired_difference([1.0], [1.0, 2.0])


def test_the_detectable_difference_has_the_power_it_claims():
    sd, n = 0.8, 6
    mde = stats.detectable(sd, n)
    # the power of the two-sided paired t test at a true difference of mde, from the noncentral t
    df, crit = n - 1, scipy_stats.t.ppf(0.975, n - 1)
    nc = mde / (sd / math.sqrt(n))
    power = scipy_stats.nct.sf(crit, df, nc) + scipy_stats.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.80, abs=0.02)  # the usual t approximation of the power equation
    assert stats.detectable(sd, 1) is None


def test_the_verdict_reads_the_interval():
    paper_says_lower = -1  # e.g. the paper's arm has the lower error: a negative difference
    lower = stats.paired_difference([1.0, 1.1, 0.9, 1.0], [2.0, 2.2, 1.9, 2.1])
    higher = stats.paired_difference([2.0, 2.2, 1.9, 2.1], [1.0, 1.1, 0.9, 1.0])
    mixed = stats.paired_difference([1.0, 2.0, 1.0, 2.0], [2.0, 1.0, 2.0, 1.0])
    assert stats.verdict(lower, paper_says_lower)[0] == stats.PAPERS_DIRECTION
    assert stats.verdict(higher, paper_says_lower)[0] == stats.OPPOSITE
    word, sentence = stats.verdict(mixed, paper_says_lower)
    assert word == stats.INCONCLUSIVE and f"±{stats.detectable(mixed.sd, 4):.2f}" in sentence
    assert stats.verdict(stats.paired_difference([1.0], [2.0]), -1)[0] == stats.INCONCLUSIVE
