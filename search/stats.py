"""Seeds and noise: summaries of repeated measurements, a sweep's noise floor, differences beyond it.

Every architecture of a sweep is trained with one or more seeds (the base always with at least two),
and every seed measures its own latency. This module turns those repeats into what a report may
claim: a mean with its 95 % interval, the sweep's own noise floor (the seed standard deviation pooled
over every architecture that has more than one seed) and whether a difference between two
architectures is larger than that noise. Pure functions of plain numbers; no I/O.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "EXACT_METRICS",
    "Difference",
    "Summary",
    "difference",
    "interval_text",
    "mann_whitney_greater",
    "margin",
    "noise_floor",
    "pooled_std",
    "seeds_to_separate",
    "std_interval",
    "std_verdict",
    "summarize",
    "t975",
]

MIN_SEEDS = 5  # the least a seed std is judged against a target for (bench/noise.py's verdict)
PAIRED_MIN = 3  # seeds two architectures must share for a difference paired by seed

# Metrics that are computed, not measured: the same architecture always gives the same value.
EXACT_METRICS = frozenset({"gflops", "n_params"})

# Student's t, 97.5 % quantile (two-sided 95 %), for 1-30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t975(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (inf for df < 1)."""
    if df < 1:
        return math.inf
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.96 + 2.5 / df  # within 0.002 of the exact value above 30 degrees of freedom


# Chi-square, 2.5 % and 97.5 % quantiles, for 1-30 degrees of freedom.
_CHI2_025 = (0.000982, 0.0506, 0.2158, 0.4844, 0.8312, 1.2373, 1.6899, 2.1797, 2.7004, 3.2470,
             3.8157, 4.4038, 5.0088, 5.6287, 6.2621, 6.9077, 7.5642, 8.2307, 8.9065, 9.5908,
             10.2829, 10.9823, 11.6886, 12.4012, 13.1197, 13.8439, 14.5734, 15.3079, 16.0471, 16.7908)  # fmt: skip
_CHI2_975 = (5.024, 7.378, 9.348, 11.143, 12.833, 14.449, 16.013, 17.535, 19.023, 20.483,
             21.920, 23.337, 24.736, 26.119, 27.488, 28.845, 30.191, 31.526, 32.852, 34.170,
             35.479, 36.781, 38.076, 39.364, 40.646, 41.923, 43.195, 44.461, 45.722, 46.979)  # fmt: skip


def _chi2(df: int, upper: bool) -> float:
    table = _CHI2_975 if upper else _CHI2_025
    if df <= len(table):
        return table[df - 1]
    z = 1.959964 if upper else -1.959964  # Wilson-Hilferty: within 0.1 % of the exact value above 30
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def std_interval(std: float, n: int) -> tuple[float, float]:
    """The 95 % interval of the true standard deviation, given the std ``std`` of ``n`` normal values.

    A std from a few seeds is rough: from 5 values the interval runs from 0.6x to 2.9x the estimate,
    from 10 from 0.69x to 1.83x. (NaN, NaN) for fewer than two values.
    """
    if n < 2 or not math.isfinite(std):
        return math.nan, math.nan
    df = n - 1
    return std * math.sqrt(df / _chi2(df, upper=True)), std * math.sqrt(df / _chi2(df, upper=False))


def std_verdict(std: float, n: int, target: float) -> str:
    """Whether a seed std of ``n`` seeds meets ``target``: PASS, FAIL, or TOO FEW SEEDS under
    :data:`MIN_SEEDS` (from fewer the std is too rough to judge either way)."""
    if n < MIN_SEEDS:
        return f"TOO FEW SEEDS (< {MIN_SEEDS})"
    return "PASS" if std <= target else "FAIL"


@dataclass(frozen=True)
class Summary:
    """Repeated measurements of one quantity: their count, mean, standard deviation and 95 % interval.

    ``std`` and ``half`` (the interval's half-width: the interval is ``mean ± half``) are NaN for
    fewer than two values.
    """

    n: int
    mean: float
    std: float
    half: float


def summarize(values: Iterable[float]) -> Summary:
    """The :class:`Summary` of the finite ``values`` (NaN mean when there are none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return Summary(0, math.nan, math.nan, math.nan)
    if len(xs) == 1:
        return Summary(1, xs[0], math.nan, math.nan)
    std = statistics.stdev(xs)
    return Summary(len(xs), statistics.fmean(xs), std, t975(len(xs) - 1) * std / math.sqrt(len(xs)))


def pooled_std(groups: Iterable[tuple[int, float]]) -> tuple[float, int] | None:
    """The standard deviation pooled over groups of ``(n, std)``, and its degrees of freedom.

    Groups of fewer than two values (or a NaN std) carry no information about the spread and are
    skipped; None when no group has two values.
    """
    ss, df = 0.0, 0
    for n, std in groups:
        if n >= 2 and std is not None and math.isfinite(std):
            ss += (n - 1) * std * std
            df += n - 1
    return (math.sqrt(ss / df), df) if df else None


def noise_floor(rows: Iterable[Mapping], metrics: Iterable[str]) -> dict[str, tuple[float, int]]:
    """Each metric's seed-to-seed standard deviation and its degrees of freedom, pooled over ``rows``.

    ``rows`` are architectures with ``n_seeds`` and ``<metric>_std`` (see
    :func:`search.records.architecture_rows`). Exact metrics (GFLOPs, parameters) have no noise:
    ``(0.0, 0)``. A measured metric with no architecture of two or more seeds is left out: its noise
    is unknown.
    """
    rows = list(rows)
    floor: dict[str, tuple[float, int]] = {}
    for metric in metrics:
        if metric in EXACT_METRICS:
            floor[metric] = (0.0, 0)
            continue
        pooled = pooled_std((int(r.get("n_seeds") or 1), r.get(f"{metric}_std")) for r in rows)
        if pooled is not None:
            floor[metric] = pooled
    return floor


@dataclass(frozen=True)
class Difference:
    """``a - b`` as a mean with a 95 % interval (``mean ± half``) and whether it is beyond noise.

    ``paired``: the number of seeds both have, when the difference is the mean of per-seed
    differences (:data:`PAIRED_MIN` or more); 0 when it is the difference of the two means against the pooled
    noise floor. ``beyond``: the interval excludes zero. An unknown noise gives a NaN ``half`` and
    ``beyond`` False: no claim.
    """

    mean: float
    half: float
    paired: int
    beyond: bool

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def difference(a: Mapping[int, float], b: Mapping[int, float], noise: tuple[float, int] | None) -> Difference:
    """The difference ``a - b`` of two architectures' per-seed values of one metric.

    With :data:`PAIRED_MIN` or more seeds in common, the seeds pair up (the same seed sees the same
    data order, and the same initial weights where the architectures agree) and the interval is the t
    interval of the per-seed differences. With fewer, a paired interval has one degree of freedom
    (t = 12.7) and says little, so it is the difference of the means with the interval of the pooled
    noise floor ``noise = (std, df)``: ``t(df) * std * sqrt(1/n_a + 1/n_b)``.
    """
    common = sorted(set(a) & set(b))
    if len(common) >= PAIRED_MIN:
        d = summarize(a[s] - b[s] for s in common)
        return Difference(d.mean, d.half, d.n, abs(d.mean) > d.half)
    ma, mb = summarize(a.values()), summarize(b.values())
    mean = ma.mean - mb.mean
    if noise is None or not ma.n or not mb.n:
        return Difference(mean, math.nan, 0, False)
    std, df = noise
    half = (t975(df) if df else 0.0) * std * math.sqrt(1 / ma.n + 1 / mb.n)
    return Difference(mean, half, 0, abs(mean) > half)


def margin(noise: tuple[float, int] | None, n_a: int, n_b: int) -> float:
    """How far apart two means of ``n_a`` and ``n_b`` measurements must be to differ beyond noise.

    Zero for an exact metric (``noise == (0.0, 0)``) and for an unknown noise (None): then any
    difference counts, as it would without seeds.
    """
    if noise is None:
        return 0.0
    std, df = noise
    if not std:
        return 0.0
    return t975(df) * std * math.sqrt(1 / max(1, n_a) + 1 / max(1, n_b))


def interval_text(mean: float, half: float, seeds: Iterable[float] = ()) -> str:
    """A mean over seeds with its 95 % interval, as a reader should see it.

    ``0.3120 ± 0.0410``; on one degree of freedom (two seeds, where the interval is 12.7 standard
    deviations wide) with the seed values it comes from; an interval wider than the value itself is
    said, not printed; one seed (no interval): the value alone.
    """

    def fmt(v: float) -> str:
        return f"{v:.4g}"

    if not math.isfinite(mean):
        return ""
    values = [float(v) for v in seeds if v is not None and math.isfinite(float(v))]
    if not math.isfinite(half):
        return fmt(mean)
    of = f"seeds {', '.join(fmt(v) for v in values)}" if 1 < len(values) <= 2 else ""
    if half > abs(mean):
        return f"{fmt(mean)} (interval wider than the value{'; ' + of if of else ''})"
    return f"{fmt(mean)} ± {fmt(half)}" + (f" ({of})" if of else "")


def seeds_to_separate(diff: float, std: float, max_n: int = 100) -> int | None:
    """Seeds per architecture at which two means ``diff`` apart differ beyond a noise of ``std`` (each
    with that many seeds, the t interval on their pooled 2(n - 1) degrees of freedom); None past ``max_n``."""
    if not std or not math.isfinite(std):
        return 1
    for n in range(2, max_n + 1):
        if t975(2 * (n - 1)) * std * math.sqrt(2 / n) < abs(diff):
            return n
    return None


def _ranks(values: list[float]) -> tuple[list[float], list[int]]:
    """Each value's rank from 1 (ties share their mean rank), and the sizes of the groups of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks, ties, i = [0.0] * len(values), [], 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_greater(a: Iterable[float], b: Iterable[float]) -> float:
    """The one-sided p-value of the Mann-Whitney U test that ``a`` tends to be larger than ``b``.

    The normal approximation with a continuity correction and the variance corrected for ties (what
    scipy's ``mannwhitneyu(a, b, alternative="greater", method="asymptotic")`` computes); 1.0 when every
    value is tied. Meant for samples of ten or more, such as hypervolumes over repeated replays.
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        raise ValueError("the Mann-Whitney test needs values in both samples")
    ranks, ties = _ranks(a + b)
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - sum(t**3 - t for t in ties) / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))
