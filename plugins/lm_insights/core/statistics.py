"""The statistical layer every published claim passes: effect size, 95% confidence interval, test p-value and n,
then Benjamini-Hochberg over everything tested in a partition.

Bottom module: numpy, scipy and statsmodels only, no room of the platform. Inputs are aggregates (a correlation and
its n; per-group counts, means and sample variances; counts of a contingency table), so callers compute them in SQL
and memory does not grow with the partition.

Every estimate also carries ``variance_share``, the share of the target's variance the claim explains: r squared
for a numeric driver, omega squared for a categorical one (eta squared corrected for the groups' number, so eight
clusters over forty rows are not "explaining" 18% by chance), eta squared of the two-group split for a segment
against the rest or a day against the previous one, phi squared (chi-square / n) for a label mix. It is the one
scale findings are ranked on; ``effect`` is the figure a reader is told (a relative difference, a proportion
difference ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    effect: float  # the published figure, on effect_measure's scale
    effect_measure: str  # "r squared", "omega squared", "relative difference of means", ...
    ci_low: float  # 95% confidence interval of effect
    ci_high: float
    p_value: float  # of the test that fits (named in test)
    n: int  # rows the estimate rests on
    variance_share: float  # share of the target's variance explained: the common scale findings are ranked on
    test: str  # "pearson t", "one-way anova F", "welch t", "chi-square", "fisher exact", "fisher z"


def _z(confidence: float = CONFIDENCE) -> float:
    from scipy import stats

    return float(stats.norm.ppf(0.5 + confidence / 2))


def correlation_interval(r: float, n: int) -> tuple[float, float]:
    """95% interval of a Pearson r by Fisher's z transform (needs n > 3)."""
    if n <= 3:
        return -1.0, 1.0
    z, half = math.atanh(max(min(r, 1 - 1e-15), -1 + 1e-15)), _z() / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def _squared_interval(low: float, high: float) -> tuple[float, float]:
    """The interval of r squared from that of r (0 when r's interval holds 0)."""
    if low <= 0 <= high:
        return 0.0, max(low * low, high * high)
    return tuple(sorted((low * low, high * high)))


def correlation(r: float, n: int) -> Estimate:
    """A numeric driver: r squared with its interval; p of Pearson's t test (n - 2 degrees of freedom)."""
    from scipy import stats

    if n < 3:
        raise ValueError(f"a correlation needs at least 3 rows, got {n}")
    r = max(min(r, 1.0), -1.0)
    if abs(r) == 1.0:
        p = 0.0
    else:
        t = r * math.sqrt((n - 2) / (1 - r * r))
        p = float(2 * stats.t.sf(abs(t), n - 2))
    low, high = _squared_interval(*correlation_interval(r, n))
    return Estimate(r * r, "r squared", low, high, p, n, r * r, "pearson t")


def partial_correlation(r_xy: float, r_xz: float, r_yz: float, n: int) -> tuple[float, Estimate]:
    """The correlation of x and y with z held fixed (both regressed on z): partial r and its estimate (partial r
    squared, t test on n - 3 degrees of freedom, Fisher interval with one more degree used)."""
    from scipy import stats

    denominator = math.sqrt(max((1 - r_xz * r_xz) * (1 - r_yz * r_yz), 0.0))
    if denominator == 0 or n < 5:
        raise ValueError("x or y is a straight-line function of z (or fewer than 5 rows): no partial correlation")
    partial = max(min((r_xy - r_xz * r_yz) / denominator, 1.0), -1.0)
    df = n - 3
    p = 0.0 if abs(partial) == 1 else float(2 * stats.t.sf(abs(partial) * math.sqrt(df / (1 - partial ** 2)), df))
    low, high = _squared_interval(*correlation_interval(partial, n - 1))
    return partial, Estimate(partial ** 2, "partial r squared", low, high, p, n, partial ** 2, "partial t")


@dataclass(frozen=True)
class Groups:
    """Per-group aggregates of one metric: rows, mean and sample variance (NaN or 0 for a single row)."""
    counts: Sequence[int]
    means: Sequence[float]
    variances: Sequence[float]

    @property
    def n(self) -> int:
        return int(sum(self.counts))

    def grand_mean(self) -> float:
        return sum(c * m for c, m in zip(self.counts, self.means)) / self.n

    def sums_of_squares(self) -> tuple[float, float]:
        """Between-group and within-group sums of squares."""
        grand = self.grand_mean()
        between = sum(c * (m - grand) ** 2 for c, m in zip(self.counts, self.means))
        within = sum((c - 1) * v for c, v in zip(self.counts, self.variances) if c > 1)
        return between, within


def _noncentrality_interval(f: float, df1: int, df2: int) -> tuple[float, float]:
    """95% interval of the noncentrality of an F statistic, by inverting the noncentral F's cdf (Steiger 2004)."""
    from scipy import optimize, stats

    def bound(tail: float) -> float:
        def gap(lam: float) -> float:
            return float(stats.ncf.cdf(f, df1, df2, lam)) - tail
        if gap(0.0) < 0:  # even no effect makes an F this large unlikely in this tail
            return 0.0
        high = max(10.0, 4 * f * df1)
        while gap(high) > 0:
            high *= 2
        return float(optimize.brentq(gap, 0.0, high, xtol=1e-10))

    alpha = 1 - CONFIDENCE
    return bound(1 - alpha / 2), bound(alpha / 2)


def one_way_anova(groups: Groups) -> Estimate:
    """A categorical driver: omega squared (the share of variance its values explain, corrected for chance), the
    interval of the population share by noncentral F, p of the one-way ANOVA's F test."""
    from scipy import stats

    k, n = len(groups.counts), groups.n
    if k < 2 or n <= k:
        raise ValueError(f"an ANOVA needs 2 or more groups and more rows than groups, got {k} groups of {n} rows")
    between, within = groups.sums_of_squares()
    df1, df2 = k - 1, n - k
    total = between + within
    if within == 0:
        share = 1.0 if between > 0 else 0.0
        return Estimate(share, "omega squared", share, share, 0.0 if between > 0 else 1.0, n, share,
                        "one-way anova F")
    mean_within = within / df2
    f = (between / df1) / mean_within
    p = float(stats.f.sf(f, df1, df2))
    omega = (between - df1 * mean_within) / (total + mean_within)
    omega = max(omega, 0.0)  # below zero: the groups differ less than chance makes them
    low, high = _noncentrality_interval(f, df1, df2)
    return Estimate(omega, "omega squared", low / (low + n), high / (high + n), p, n, omega, "one-way anova F")


def two_group_share(n1: int, m1: float, v1: float, n2: int, m2: float, v2: float) -> float:
    """Eta squared of splitting the rows into the two groups: between sum of squares over total."""
    n = n1 + n2
    between = n1 * n2 / n * (m1 - m2) ** 2
    within = (n1 - 1) * (v1 if n1 > 1 else 0.0) + (n2 - 1) * (v2 if n2 > 1 else 0.0)
    return between / (between + within) if between + within > 0 else 0.0


def welch_difference(n1: int, m1: float, v1: float, n2: int, m2: float, v2: float) -> Estimate:
    """Mean of group 1 against group 2: the relative difference m1 / m2 - 1 with a delta-method interval on
    Welch's degrees of freedom, p of Welch's t test (unequal variances). Where m2 is 0 the relative difference is
    undefined: the difference of means is given instead."""
    from scipy import stats

    if n1 < 2 or n2 < 2:
        raise ValueError(f"a Welch test needs 2 or more rows in each group, got {n1} and {n2}")
    s1, s2 = v1 / n1, v2 / n2
    share = two_group_share(n1, m1, v1, n2, m2, v2)
    if s1 + s2 == 0:
        p = 0.0 if m1 != m2 else 1.0
        df = float(n1 + n2 - 2)
    else:
        t = (m1 - m2) / math.sqrt(s1 + s2)
        df = (s1 + s2) ** 2 / ((s1 * s1 / (n1 - 1) if s1 else 0) + (s2 * s2 / (n2 - 1) if s2 else 0))
        p = float(2 * stats.t.sf(abs(t), df))
    quantile = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))
    if m2 == 0:
        half = quantile * math.sqrt(s1 + s2)
        diff = m1 - m2
        return Estimate(diff, "difference of means", diff - half, diff + half, p, n1 + n2, share, "welch t")
    ratio = m1 / m2
    half = quantile * math.sqrt(s1 + ratio * ratio * s2) / abs(m2)
    return Estimate(ratio - 1, "relative difference of means", ratio - 1 - half, ratio - 1 + half, p, n1 + n2,
                    share, "welch t")


def rest_of(groups: Groups, index: int) -> tuple[int, float, float]:
    """Count, mean and sample variance of all rows but group ``index``'s, pooled from the groups' aggregates."""
    counts, means, variances = groups.counts, groups.means, groups.variances
    n, grand = groups.n, groups.grand_mean()
    between, within = groups.sums_of_squares()
    n1, m1 = counts[index], means[index]
    v1 = variances[index] if n1 > 1 else 0.0
    n2 = n - n1
    if n2 < 1:
        raise ValueError("the group holds every row: there is no rest to compare it with")
    m2 = (n * grand - n1 * m1) / n2
    # total SS = within group 1 + within the rest + n1 (m1 - grand)^2 + n2 (m2 - grand)^2
    within_rest = between + within - (n1 - 1) * v1 - n1 * (m1 - grand) ** 2 - n2 * (m2 - grand) ** 2
    return n2, m2, max(within_rest, 0.0) / max(n2 - 1, 1)


def group_against_rest(groups: Groups, index: int) -> Estimate:
    """Group ``index`` against all other rows together (Welch, relative difference)."""
    n1 = groups.counts[index]
    v1 = groups.variances[index] if n1 > 1 else 0.0
    return welch_difference(n1, groups.means[index], v1, *rest_of(groups, index))


def difference_in_changes(group_now: tuple[int, float, float], group_before: tuple[int, float, float],
                          rest_now: tuple[int, float, float], rest_before: tuple[int, float, float]) -> Estimate:
    """How much more a group's mean moved than the other rows' mean (each as now / before - 1): the difference of
    the two relative changes with a delta-method interval and its Wald t test on Welch-Satterthwaite degrees of
    freedom; the share is the partial eta squared of the group x day interaction."""
    from scipy import stats

    parts = (group_now, group_before, rest_now, rest_before)
    if min(n for n, _, _ in parts) < 2:
        raise ValueError("comparing changes needs 2 or more rows in each group on each day")
    if group_before[1] == 0 or rest_before[1] == 0:
        raise ValueError("a relative change needs a mean other than 0 before")
    (na, ma, va), (nb, mb, vb), (nc, mc, vc), (nd, md, vd) = parts
    ratio_group, ratio_rest = ma / mb, mc / md
    terms = [va / na / mb ** 2, ratio_group ** 2 * vb / nb / mb ** 2,
             vc / nc / md ** 2, ratio_rest ** 2 * vd / nd / md ** 2]
    diff = ratio_group - ratio_rest
    se = math.sqrt(sum(terms))
    df = sum(terms) ** 2 / sum(t * t / (n - 1) for t, (n, _, _) in zip(terms, parts) if t) if se else nc + nd - 2.0
    p = float(2 * stats.t.sf(abs(diff) / se, df)) if se else (0.0 if diff else 1.0)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    contrast = (ma - mb) - (mc - md)
    interaction = contrast ** 2 / sum(1 / n for n, _, _ in parts)
    error = sum((n - 1) * v for n, _, v in parts)
    share = interaction / (interaction + error) if interaction + error else 0.0
    return Estimate(diff, "difference of relative changes", diff - half, diff + half, p,
                    sum(n for n, _, _ in parts), share, "welch t")


def contingency(table: Sequence[Sequence[int]]) -> tuple[float, str, float]:
    """Independence of a table of counts (rows x columns): p of the chi-square test, or of Fisher's exact test for
    a 2 x 2 table with an expected count under 5; and phi squared (chi-square / n), the share on the common scale."""
    import numpy as np
    from scipy import stats

    counts = np.asarray(table, dtype="float64")
    counts = counts[counts.sum(axis=1) > 0][:, counts.sum(axis=0) > 0]
    if counts.shape[0] < 2 or counts.shape[1] < 2:
        return 1.0, "chi-square", 0.0
    result = stats.chi2_contingency(counts, correction=False)
    share = float(result.statistic) / counts.sum() / (min(counts.shape) - 1)  # Cramer's V squared
    if counts.shape == (2, 2) and result.expected_freq.min() < 5:
        return float(stats.fisher_exact(counts).pvalue), "fisher exact", share
    return float(result.pvalue), "chi-square", share


def proportion_difference(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """k1 / n1 - k2 / n2 with Newcombe's hybrid Wilson score interval (method 10)."""
    from statsmodels.stats.proportion import proportion_confint

    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = proportion_confint(k1, n1, alpha=1 - CONFIDENCE, method="wilson")
    l2, u2 = proportion_confint(k2, n2, alpha=1 - CONFIDENCE, method="wilson")
    diff = p1 - p2
    return diff, diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def correlation_change(r_now: float, n_now: int, r_before: float, n_before: int) -> Estimate:
    """r now against r before (independent samples): the difference with Zou's (2007) interval, p of the Fisher z
    test; the share is the change of r squared."""
    from scipy import stats

    if n_now <= 3 or n_before <= 3:
        raise ValueError("comparing correlations needs more than 3 rows on each day")
    z = (math.atanh(max(min(r_now, 1 - 1e-15), -1 + 1e-15)) - math.atanh(max(min(r_before, 1 - 1e-15), -1 + 1e-15))) \
        / math.sqrt(1 / (n_now - 3) + 1 / (n_before - 3))
    p = float(2 * stats.norm.sf(abs(z)))
    l1, u1 = correlation_interval(r_now, n_now)
    l2, u2 = correlation_interval(r_before, n_before)
    diff = r_now - r_before
    low = diff - math.sqrt((r_now - l1) ** 2 + (u2 - r_before) ** 2)
    high = diff + math.sqrt((u1 - r_now) ** 2 + (r_before - l2) ** 2)
    return Estimate(diff, "difference of r", low, high, p, n_now + n_before, abs(r_now ** 2 - r_before ** 2),
                    "fisher z")


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Adjusted p-values (q) controlling the false discovery rate over all ``p_values`` (Benjamini-Hochberg)."""
    if not len(p_values):
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(q) for q in multipletests(list(p_values), method="fdr_bh")[1]]
