"""Intervals over seeds: a mean's and a paired difference's Student-t 95% interval, the smallest
difference a paired design can detect, and the verdict an experiment's table states.

Seeds are paired: seed k of every arm trains on the same images in the same order, so two arms are
compared through their per-seed differences (Student's paired t), which removes the part of the
spread the seeds share. The t quantile is computed here (the regularized incomplete beta function
by its continued fraction, then bisection) so the package needs no SciPy; the tests check it
against SciPy's ``t.ppf`` and ``ttest_rel``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

LEVEL = 0.95  # two-sided confidence of every interval
POWER = 0.80  # the power at which a design's minimum detectable effect is stated


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its two-sided Student-t interval (``low`` = ``high`` = mean for one seed)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float

    @property
    def half_width(self) -> float:
        return self.high - self.mean

    def to_dict(self) -> dict:
        return asdict(self)


def mean_interval(values: list[float], level: float = LEVEL) -> Interval:
    """The mean of ``values`` and its ``level`` Student-t interval; one value has none (width 0)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, mean, mean, 1, 0.0)
    sd = statistics.stdev(values)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def paired_difference(a: list[float], b: list[float], level: float = LEVEL) -> Interval:
    """The mean of the per-seed differences ``a[k] - b[k]`` and its paired-t interval."""
    if len(a) != len(b):
        raise ValueError(f"paired values need one per seed in each arm, got {len(a)} and {len(b)}")
    return mean_interval([x - y for x, y in zip(a, b)], level)


def detectable(sd: float, n: int, level: float = LEVEL, power: float = POWER) -> float | None:
    """The smallest true mean difference a paired t test on ``n`` seeds with per-seed differences
    of standard deviation ``sd`` finds at ``level`` with probability ``power``:
    (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n). None below two seeds."""
    if n < 2:
        return None
    return (t_quantile(0.5 + level / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


PAPERS_DIRECTION, OPPOSITE, INCONCLUSIVE = "the paper's direction", "the opposite direction", "inconclusive"


def verdict(diff: Interval, paper_sign: int) -> tuple[str, str]:
    """(verdict, its sentence) for a paired difference whose sign the paper predicts ``paper_sign``
    (+1: the difference should be positive, -1: negative): the interval excludes 0 on the paper's
    side, on the other side, or includes 0 (then the sentence gives what the design could detect)."""
    if diff.n >= 2 and (diff.low > 0 or diff.high < 0):
        side = 1 if diff.low > 0 else -1
        word = PAPERS_DIRECTION if side == paper_sign else OPPOSITE
        return word, f"{word}: {diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
    mde = detectable(diff.sd, diff.n)
    could = f"could detect ±{mde:.2f}" if mde is not None else "one seed: no interval"
    return INCONCLUSIVE, f"{INCONCLUSIVE}: {diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}], {could}"
