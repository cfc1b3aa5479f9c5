"""Planted effects: over many seeded tables, the statistics layer publishes nothing on noise and finds what was
planted, strongest first.

Each table has 400 rows a day: region (5 values), channel (4), units (numeric) and the target amount. The layer
is called directly (no DAG): per-group aggregates are computed here with numpy, as the platform computes them in
SQL, and fed to the same candidate builders and the same Benjamini-Hochberg decision the insights step uses.

"0.3 SD" is the size of an effect on the whole table: a numeric driver whose slope moves the target by 0.3 of
its noise's standard deviation per standard deviation of the driver (r about 0.29), a categorical driver whose
value means have a standard deviation of 0.3 noise SDs (omega squared about 0.08: the same share of variance), or
a shift of all rows' mean by 0.3 SD from one day to the next.
"""

from __future__ import annotations

import numpy as np
import pytest

from lm_insights.core.statistics import Groups
from lm_insights.explain import findings as F

N = 400
SEEDS = range(200)
NULL_SEEDS = range(1000)  # the false-alarm rate is near 4.5%: 200 seeds would measure it to +-1.4 points
REGIONS = np.array(["central", "east", "north", "south", "west"])
CHANNELS = np.array(["online", "phone", "shop", "store"])
THRESHOLDS = F.Thresholds()
MIN_GROUP_ROWS = 10


def table(rng, region_effect=0.0, units_effect=0.0, shift=0.0, confounded=False, tiny_group=False) -> dict:
    """One day's rows; effects in noise standard deviations (noise SD 30 around 100: 0.3 SD is 9%)."""
    region = rng.choice(REGIONS, N)
    channel = rng.choice(CHANNELS, N)
    units = rng.normal(size=N)
    amount = rng.normal(size=N)
    if region_effect:  # value means spread with a standard deviation of region_effect
        offsets = dict(zip(REGIONS, region_effect * np.array([-2, -1, 0, 1, 2]) / np.sqrt(2)))
        amount = amount + np.array([offsets[r] for r in region])
    if units_effect:
        amount = amount + units_effect * units
    discount = rng.normal(size=N)
    if confounded:  # discount goes with units (r about 0.7) but does nothing to amount itself
        discount = 0.7 * units + np.sqrt(1 - 0.49) * rng.normal(size=N)
    if tiny_group:  # 4 rows of a region nobody else has, far above the rest
        region = region.astype(object)
        region[:4] = "islands"
        amount[:4] += 3.0
    return {"region": region, "channel": channel, "units": units, "discount": discount,
            "amount": 100 + 30 * (amount + shift)}


def groups_of(values, target) -> tuple[list[str], Groups]:
    names = sorted(set(values))
    parts = [target[values == v] for v in names]
    return names, Groups([len(p) for p in parts], [float(p.mean()) for p in parts],
                         [float(p.var(ddof=1)) if len(p) > 1 else 0.0 for p in parts])


def aggregate(data) -> tuple[int, float, float]:
    return len(data), float(data.mean()), float(data.var(ddof=1))


def partition_findings(today: dict, yesterday: dict | None = None) -> list[F.Finding]:
    """Every candidate of a partition, decided together (as lm_insights.steps.insights does from SQL)."""
    y = today["amount"]
    candidates = []
    numeric = {}
    for field in ("units", "discount"):
        r = float(np.corrcoef(today[field], y)[0, 1])
        numeric[field] = r
        candidates.append(F.numeric_driver(field, "amount", r, N))
    for field in ("region", "channel"):
        values, groups = groups_of(today[field], y)
        if driver := F.categorical_driver(field, "amount", values, groups, MIN_GROUP_ROWS):
            candidates.append(driver)
        candidates += F.segment_findings(field, "amount", values, groups, MIN_GROUP_ROWS)
    top, other = sorted(numeric, key=lambda f: -abs(numeric[f]))
    r_xz = float(np.corrcoef(today[top], today[other])[0, 1])
    if F.worth_controlling(F.numeric_driver(top, "amount", numeric[top], N),
                           F.numeric_driver(other, "amount", numeric[other], N), r_xz, N, THRESHOLDS.fdr):
        candidates.append(F.controlled_driver(top, other, "amount", numeric[top], r_xz, numeric[other], N))
        candidates.append(F.controlled_driver(other, top, "amount", numeric[other], r_xz, numeric[top], N))
    if yesterday is not None:
        before_y = yesterday["amount"]
        candidates.append(F.mean_change(F.ALL_ROWS, "amount", aggregate(y), aggregate(before_y), "day 1",
                                        MIN_GROUP_ROWS))
        for field in ("region", "channel"):
            values_now, groups_now = groups_of(today[field], y)
            values_before, groups_before = groups_of(yesterday[field], before_y)
            candidates += F.segment_changes(field, "amount", {v: i for i, v in enumerate(values_now)}, groups_now,
                                            {v: i for i, v in enumerate(values_before)}, groups_before, "day 1",
                                            MIN_GROUP_ROWS)
        r_before = float(np.corrcoef(yesterday[top], before_y)[0, 1])
        candidates.append(F.driver_change(top, "amount", numeric[top], N, r_before, N, "day 1"))
    return F.decide(candidates, THRESHOLDS)


def first(findings, kind=None) -> F.Finding | None:
    ranked = sorted((f for f in findings if f.rank is not None and kind in (None, f.kind)), key=lambda f: f.rank)
    return ranked[0] if ranked else None


def share(condition, seeds=SEEDS) -> float:
    return sum(condition(seed) for seed in seeds) / len(seeds)


def test_null_tables_publish_a_finding_in_at_most_5_percent_of_partitions():
    def published(seed):
        rng = np.random.default_rng(seed)
        yesterday, today = table(rng), table(rng)
        return any(f.significant for f in partition_findings(today, yesterday))

    assert share(published, NULL_SEEDS) <= 0.05


def test_a_categorical_effect_of_03_sd_is_found_and_ranked_first():
    def found(seed):
        top = first(partition_findings(table(np.random.default_rng(seed), region_effect=0.3)))
        return top is not None and top.subject == "region" and top.kind == "driver"

    assert share(found) >= 0.9


def test_a_numeric_effect_of_03_sd_is_found_and_ranked_first():
    def found(seed):
        top = first(partition_findings(table(np.random.default_rng(seed), units_effect=0.3)))
        return top is not None and top.subject == "units" and "rises" in top.claim

    assert share(found) >= 0.9


def test_a_shift_of_035_sd_between_two_days_is_found_and_ranked_first_among_changes():
    # Two days of 400 rows compare 400 against 400, and 26 candidates share the false-discovery control: a shift of
    # 0.3 SD was found in 86% of these seeds (measured), 0.35 SD is the size this layer finds 9 times in 10.
    def found(seed):
        rng = np.random.default_rng(seed)
        yesterday, today = table(rng), table(rng, shift=0.35)
        top = first(partition_findings(today, yesterday), "change")
        return top is not None and top.subject == F.ALL_ROWS and "higher than on day 1" in top.claim

    assert share(found) >= 0.9


def test_of_two_correlated_drivers_the_one_that_acts_holds_when_the_other_is_fixed():
    def found(seed):
        findings = {f.subject: f for f in partition_findings(
            table(np.random.default_rng(seed), units_effect=0.3, confounded=True))}
        if first(findings.values()).subject != "units":
            return False
        if "units | discount" not in findings:  # discount alone passed nothing: no pair to untangle, nothing said
            return not findings["discount"].significant
        return findings["units | discount"].significant and not findings["discount | units"].significant

    assert share(found) >= 0.9


def test_small_groups_are_not_tested_and_never_named():
    def clean(seed):
        findings = partition_findings(table(np.random.default_rng(seed), tiny_group=True))
        return not any("islands" in f.claim for f in findings)

    assert share(clean) == 1.0
    # the 4 rows would have been a "finding": far above the rest, with an ANOVA that includes them
    from lm_insights.core.statistics import one_way_anova

    planted = table(np.random.default_rng(0), tiny_group=True)
    values, groups = groups_of(planted["region"], planted["amount"])
    assert one_way_anova(groups).p_value < 0.05


@pytest.mark.parametrize("seed", range(3))
def test_a_finding_states_its_figures(seed):
    findings = partition_findings(table(np.random.default_rng(seed), region_effect=0.5))
    top = first(findings)
    assert top.claim.startswith("region explains ") and f"n = {N}" in top.claim
    assert top.estimate.ci_low <= top.estimate.effect <= top.estimate.ci_high
    insignificant = [f for f in findings if not f.significant]
    assert all(f.sentence.startswith(F.UNCERTAIN) for f in insignificant)


def test_the_issues_two_planted_effects_are_both_found_strongest_first():
    # amount 30% higher in one region (of 5), and falling with units at r about -0.5, as the issue's second table
    def found(seed):
        rng = np.random.default_rng(seed)
        rows = table(rng, units_effect=-0.6)
        rows["amount"] = np.where(rows["region"] == "north", rows["amount"] * 1.3, rows["amount"])
        ranked = sorted((f for f in partition_findings(rows) if f.rank), key=lambda f: f.rank)
        subjects = [f.subject for f in ranked]
        return subjects[:1] == ["units"] and "region = north" in subjects and "falls" in ranked[0].claim

    assert share(found) >= 0.9
