"""The statistical layer from aggregates equals scipy's tests run on the raw rows, and its intervals cover."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lm_insights.core import statistics as S


def groups_of(parts) -> S.Groups:
    return S.Groups([len(p) for p in parts], [float(np.mean(p)) for p in parts],
                    [float(np.var(p, ddof=1)) for p in parts])


@pytest.mark.parametrize("seed", range(5))
def test_tests_from_aggregates_equal_scipy_on_rows(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=120)
    y = 0.3 * x + rng.normal(size=120)
    r, p = stats.pearsonr(x, y)
    estimate = S.correlation(float(r), 120)
    assert math.isclose(estimate.p_value, p, rel_tol=1e-9) and math.isclose(estimate.effect, r * r)
    low, high = stats.pearsonr(x, y).confidence_interval(0.95)
    squared = (0.0, max(low ** 2, high ** 2)) if low <= 0 <= high else sorted((low ** 2, high ** 2))
    assert math.isclose(estimate.ci_low, squared[0], rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(estimate.ci_high, squared[1], rel_tol=1e-9)

    parts = [rng.normal(loc, 2, size) for loc, size in ((0, 30), (0.5, 45), (1, 25))]
    anova = S.one_way_anova(groups_of(parts))
    assert math.isclose(anova.p_value, stats.f_oneway(*parts).pvalue, rel_tol=1e-9)
    assert anova.ci_low <= anova.effect <= anova.ci_high

    rest = np.concatenate(parts[1:])
    against = S.group_against_rest(groups_of(parts), 0)
    assert math.isclose(against.p_value, stats.ttest_ind(parts[0], rest, equal_var=False).pvalue, rel_tol=1e-7)
    assert math.isclose(against.effect, parts[0].mean() / rest.mean() - 1, rel_tol=1e-9)

    p_values = rng.uniform(size=20) ** 3
    assert np.allclose(S.benjamini_hochberg(p_values), stats.false_discovery_control(p_values), rtol=1e-12)


def test_small_two_by_two_tables_use_fisher():
    p, test, _ = S.contingency([[3, 1], [0, 6]])
    assert test == "fisher exact" and math.isclose(p, stats.fisher_exact([[3, 1], [0, 6]]).pvalue)
    p, test, share = S.contingency([[60, 40], [30, 70]])
    assert test == "chi-square" and math.isclose(share, stats.chi2_contingency([[60, 40], [30, 70]],
                                                                              correction=False).statistic / 200)


def test_intervals_cover_the_true_value_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = {"relative": 0, "omega": 0, "changes": 0}
    trials = 400
    for _ in range(trials):
        parts = [rng.normal(100 + shift, 20, 60) for shift in (10, 0, 0, 0)]
        covered["relative"] += S.group_against_rest(groups_of(parts), 0).ci_low <= 0.1 <= \
            S.group_against_rest(groups_of(parts), 0).ci_high
        # population share of variance of means (10, 0, 0, 0) with SD 20: 18.75 / (18.75 + 400)
        anova = S.one_way_anova(groups_of(parts))
        covered["omega"] += anova.ci_low <= 18.75 / 418.75 <= anova.ci_high
        before = [rng.normal(100, 20, 60) for _ in range(4)]
        change = S.difference_in_changes(*(tuple(v) for v in (
            (60, parts[0].mean(), parts[0].var(ddof=1)), (60, before[0].mean(), before[0].var(ddof=1)),
            S.rest_of(groups_of(parts), 0), S.rest_of(groups_of(before), 0))))
        covered["changes"] += change.ci_low <= 0.1 <= change.ci_high
    for name, count in covered.items():
        assert 0.92 <= count / trials <= 0.98, (name, count / trials)


def test_partial_correlation_holds_the_other_fixed():
    rng = np.random.default_rng(3)
    x = rng.normal(size=500)
    z = 0.7 * x + 0.7 * rng.normal(size=500)
    y = x + rng.normal(size=500)
    c = np.corrcoef([x, y, z])
    partial_x, estimate_x = S.partial_correlation(c[0, 1], c[0, 2], c[1, 2], 500)
    residual_x = x - np.polyval(np.polyfit(z, x, 1), z)
    residual_y = y - np.polyval(np.polyfit(z, y, 1), z)
    assert math.isclose(partial_x, np.corrcoef(residual_x, residual_y)[0, 1], rel_tol=1e-9)
    partial_z, estimate_z = S.partial_correlation(c[2, 1], c[2, 0], c[0, 1], 500)
    assert estimate_x.p_value < 1e-6 < estimate_z.p_value
