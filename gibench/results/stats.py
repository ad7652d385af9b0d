"""Intervals over seeds, intervals of differences, rank ranges and rank correlation.

Choices (the report and the site state them too):

* **Mean over seeds**: the 95 % Student-t interval ``mean ± t(0.975, n−1)·s/√n`` (s the sample standard deviation,
  ddof = 1). Seeds are few (3 in the shipped suites), so a bootstrap would have almost no resamples to draw from; the
  t-interval is exact for normal seed noise and what readers expect. One seed has no interval (never "± 0").
* **Difference of two rows** (Δ against ``erm``): *paired* by seed when both rows have the same seeds (at least two):
  a job's seed fixes its initial weights and data order for every regularizer alike, so the per-seed differences
  remove that shared noise (a t-interval on the differences, df = n − 1). Otherwise *Welch's* unequal-variance
  t-interval with the Welch–Satterthwaite degrees of freedom; no interval when either row has a single seed.
* **Rank ranges**: in a table of n variants a variant's best possible rank is 1 + the number of variants whose
  interval lies entirely on the better side of its own, its worst is n − the number whose interval lies entirely on
  the worse side. A variant without an interval (one seed) is compared as if its interval were unbounded: it is
  never "entirely" better or worse than another, so its range is honest (1..n) rather than falsely certain.
* **Agreement**: Spearman's ρ of two metrics' means across the variants that have both, each metric turned so that
  higher is better (ties get average ranks, as :meth:`pandas.Series.corr` ``method="spearman"`` does).

The t quantile is SciPy's (``scipy.stats.t.ppf``; it holds for the non-integer degrees of freedom of Welch's
interval).
"""

from __future__ import annotations

__all__ = [
    "CONFIDENCE", "Interval", "RankRange", "difference_interval", "mean_interval", "rank_ranges", "t_quantile",
]

import math
from collections.abc import Sequence
from dataclasses import dataclass

import scipy.stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval; ``low``/``high`` are NaN when there is none (one seed)."""

    estimate: float
    low: float = math.nan
    high: float = math.nan
    method: str = ""  # "t", "paired t", "Welch t" or "" (no interval)

    @property
    def exists(self) -> bool:
        return not math.isnan(self.low)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.exists and (self.low > 0 or self.high < 0)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom (0 < p < 1), non-integer df included."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return float(scipy.stats.t.ppf(p, df))


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
    return mean, var


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of ``values`` with its Student-t interval (none for fewer than two values; NaN mean for none)."""
    values = [float(v) for v in values]
    if not values:
        return Interval(math.nan)
    mean, var = _mean_var(values)
    if len(values) < 2:
        return Interval(mean)
    half = t_quantile(0.5 + confidence / 2, len(values) - 1) * math.sqrt(var / len(values))
    return Interval(mean, mean - half, mean + half, "t")


def difference_interval(a: dict[int, float], b: dict[int, float], confidence: float = CONFIDENCE) -> Interval:
    """mean(a) − mean(b) with its interval; ``a``, ``b`` map seed → value.

    Paired t on the per-seed differences when both have the same seeds (≥ 2), else Welch's t (both ≥ 2 values),
    else the difference alone.
    """
    if not a or not b:
        return Interval(math.nan)
    diff = _mean_var(list(a.values()))[0] - _mean_var(list(b.values()))[0]
    q = 0.5 + confidence / 2
    if set(a) == set(b) and len(a) >= 2:
        paired = mean_interval([a[s] - b[s] for s in sorted(a)], confidence)
        return Interval(diff, paired.low - paired.estimate + diff, paired.high - paired.estimate + diff, "paired t")
    if len(a) < 2 or len(b) < 2:
        return Interval(diff)
    (_, va), (_, vb) = _mean_var(list(a.values())), _mean_var(list(b.values()))
    sa, sb = va / len(a), vb / len(b)
    se = math.sqrt(sa + sb)
    if se == 0:
        return Interval(diff, diff, diff, "Welch t")
    df = (sa + sb) ** 2 / (sa ** 2 / (len(a) - 1) + sb ** 2 / (len(b) - 1))
    half = t_quantile(q, df) * se
    return Interval(diff, diff - half, diff + half, "Welch t")


@dataclass(frozen=True)
class RankRange:
    rank: int
    best: int
    worst: int


def rank_ranges(means: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                higher_is_better: bool) -> list[RankRange]:
    """Each entry's rank by mean (1 = best in the metric's direction; ties share the better rank) and the range of
    ranks its interval allows (see the module docstring). Lows/highs NaN = no interval (compared as unbounded)."""
    sign = 1.0 if higher_is_better else -1.0
    n = len(means)
    # turn every metric into "higher is better": an interval [low, high] becomes [sign·low, sign·high] sorted
    scored = [sign * m for m in means]
    lo = [min(sign * low, sign * high) if not math.isnan(low) else -math.inf for low, high in zip(lows, highs)]
    hi = [max(sign * low, sign * high) if not math.isnan(low) else math.inf for low, high in zip(lows, highs)]
    out = []
    for i in range(n):
        rank = 1 + sum(scored[j] > scored[i] for j in range(n))
        surely_better = sum(lo[j] > hi[i] for j in range(n) if j != i)
        surely_worse = sum(hi[j] < lo[i] for j in range(n) if j != i)
        out.append(RankRange(rank, 1 + surely_better, n - surely_worse))
    return out
