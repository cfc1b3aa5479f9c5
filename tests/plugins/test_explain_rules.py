"""Rules that reproduce the model: shallow trees recover planted rules and name price with the right direction;
held-out fidelity against the majority rule keeps labels that no feature explains from being quoted."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from lm_insights.explain.rules import fit_rules, path_conditions, rule_findings, rules_summary
from lm_insights.core.partition import Partition
from lm_insights.spec import Rules

CATEGORIES = ["Books", "Toys", "Garden", "Electronics"]


def planted(n: int = 400, seed: int = 7) -> pd.DataFrame:
    """Units are high exactly when category = Toys and price < 200; the label says the same in words."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"category": rng.choice(CATEGORIES, n), "price": rng.uniform(10, 500, n).round(2),
                          "weight": rng.uniform(0, 5, n)})
    high = (frame.category == "Toys") & (frame.price < 200)
    frame["units"] = np.where(high, 900, 100) + rng.normal(0, 10, n)
    frame["demand_label"] = np.where(high, "hot", "cold")
    return frame


def bounds(conditions: str, column: str) -> tuple[float | None, float | None]:
    """(lower, upper) bound a condition string puts on a numeric column."""
    low = re.search(rf"([\d.]+) < {column}\b|{column} > ([\d.]+)", conditions)
    high = re.search(rf"{column} <= ([\d.]+)", conditions)
    return (float(next(g for g in low.groups() if g)) if low else None,
            float(high.group(1)) if high else None)


@pytest.mark.parametrize("kind, outcome", [("metric", "units"), ("label", "demand_label")])
def test_tree_recovers_a_planted_rule(kind, outcome):
    features = {"category": False, "price": True, "weight": True}
    found = fit_rules(planted(), outcome, features, kind, Rules())
    assert found.faithful and found.fidelity >= 0.95
    if kind == "label":
        rule = next(r for r in found.rules if r.prediction == "hot")
        assert rule.share >= 0.95
    else:
        rule = max(found.rules, key=lambda r: float(r.prediction))
        assert float(rule.prediction) > 800
    assert "category = Toys" in rule.conditions and "weight" not in rule.conditions
    low, high = bounds(rule.conditions, "price")
    assert low is None and 180 <= high <= 220, rule.conditions
    assert rule.rows == pytest.approx(((planted().category == "Toys") & (planted().price < 200)).sum(), abs=3)


def test_article_example_rules_say_units_fall_as_price_rises():
    """A/B/C at 100/200/300 yuan sell 1000/800/600 units: the lowest price's rule has the highest units."""
    frame = pd.DataFrame({"product_name": ["A", "B", "C"] * 10, "price": [100.0, 200.0, 300.0] * 10,
                          "units": [1000, 800, 600] * 10})
    found = fit_rules(frame, "units", {"price": True}, "metric", Rules(min_leaf_rows=5))
    assert found.faithful and found.fidelity == pytest.approx(1.0)
    by_units = sorted(found.rules, key=lambda r: float(r.prediction))
    assert [float(r.prediction) for r in by_units] == [600.0, 800.0, 1000.0]
    assert bounds(by_units[-1].conditions, "price") == (None, 150.0)  # price <= 150 -> 1000
    assert bounds(by_units[0].conditions, "price") == (250.0, None)  # price > 250 -> 600
    assert by_units[-1].text("units") == "price <= 150 -> mean units 1000.0 over 10 rows"


def test_unfaithful_rules_are_stored_but_not_quoted():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"price": rng.uniform(0, 100, 200), "label": rng.choice(["x", "y"], 200)})
    found = fit_rules(frame, "label", {"price": True}, "label", Rules(max_depth=1), explains="noise")
    assert not found.faithful and found.rules and found.fidelity < 0.8
    [sentence] = rules_summary([found], 0.8)
    assert sentence.startswith("No shallow rules reproduce the noise label faithfully")
    assert f"held-out accuracy {found.fidelity:.0%} against" in sentence and "on 200 rows" in sentence
    assert "below the floor of 80%" in sentence and "->" not in sentence


def null_frame(seed: int, n: int = 200) -> pd.DataFrame:
    """Features as in ``planted`` and a label drawn independently of them, its majority label on 80% of rows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"category": rng.choice(CATEGORIES, n), "price": rng.uniform(10, 500, n).round(2),
                          "weight": rng.uniform(0, 5, n)})
    frame["label"] = np.where(rng.random(n) < 0.8, "cold", "hot")
    frame["units"] = rng.normal(100, 10, n)
    return frame


FEATURES = {"category": False, "price": True, "weight": True}


def test_labels_independent_of_the_features_are_rarely_quoted_and_a_planted_rule_still_is():
    """The review's case: fitted and scored on the same rows, a label set whose majority covers 80% was 'faithful'
    in 60-70% of trials (141 of 200 here with the old code). Held out and tested against the majority rule,
    at most 5% of null trials may quote rules; a planted rule (10% of rows, 10% of labels flipped, 400 rows) is
    quoted in 90%+ of seeds."""
    trials = 100
    quoted = sum(fit_rules(null_frame(seed), "label", FEATURES, "label", Rules()).faithful for seed in range(trials))
    metric_quoted = sum(fit_rules(null_frame(seed), "units", FEATURES, "metric", Rules()).faithful
                        for seed in range(trials // 4))
    print(f"\nnull trials quoting rules: labels {quoted}/{trials}, metric {metric_quoted}/{trials // 4}")
    assert quoted <= 0.05 * trials and metric_quoted <= 0.05 * trials // 4 + 1

    found = []
    for seed in range(20):
        frame = planted(n=400, seed=seed)
        noise = np.random.default_rng(1000 + seed).random(len(frame)) < 0.1
        frame["demand_label"] = np.where(noise, np.where(frame.demand_label == "hot", "cold", "hot"),
                                         frame.demand_label)
        rule_set = fit_rules(frame, "demand_label", FEATURES, "label", Rules())
        hot = [r for r in rule_set.rules if r.prediction == "hot"]
        found.append(rule_set.faithful and any("category = Toys" in r.conditions for r in hot))
    print(f"planted rule quoted in {sum(found)}/20 seeds")
    assert sum(found) >= 18


def test_a_rule_set_is_a_rule_finding_with_its_held_out_gain_interval_and_n():
    frame = planted()
    partition = Partition.day("2026-10-01")
    faithful = fit_rules(frame, "demand_label", FEATURES, "label", Rules(), explains="demand")
    noise = fit_rules(null_frame(3), "label", FEATURES, "label", Rules(), explains="noise")
    strong, weak = rule_findings([faithful, noise], partition)
    assert set(strong) == {"partition_start", "partition_end", "kind", "subject", "target", "effect",
                           "effect_measure", "ci_low", "ci_high", "p_value", "q_value", "n", "significant", "rank",
                           "sentence"}
    assert strong["kind"] == "rule" and strong["target"] == "demand" and strong["n"] == 400
    assert strong["significant"] and strong["p_value"] < 1e-6
    # the majority label covers about 88% of the planted rows; the tree gets nearly all of them held out
    assert strong["ci_low"] < strong["effect"] < strong["ci_high"] and strong["ci_low"] > 0.05
    assert strong["effect"] == pytest.approx(faithful.fidelity - faithful.held_out.baseline)
    assert "category = Toys" in strong["subject"] or "category = Toys" in strong["sentence"]
    assert not weak["significant"] and weak["ci_low"] <= 0 and weak["p_value"] > 0.05
    assert (strong["partition_start"], strong["partition_end"]) == (partition.start, partition.end)

    [metric] = rule_findings([fit_rules(frame, "units", FEATURES, "metric", Rules())], partition)
    assert metric["significant"] and metric["effect_measure"] == "held-out r2 against the mean"
    assert 0.5 < metric["ci_low"] < 0.95 < metric["effect"] <= 1 and metric["target"] == "units"
    assert "category = Toys" in metric["subject"], "the rule whose mean is furthest from the overall mean"


def test_conditions_merge_per_column():
    path = [("price", None, "right", 100.0), ("price", None, "left", 250.0), ("category", "Toys", "left", 0.5),
            ("category", "Books", "left", 0.5), ("region", "East", "right", 0.5)]
    assert path_conditions(path) == "100 < price <= 250 and category not in (Books, Toys) and region = East"
    assert path_conditions([]) == "all rows"
