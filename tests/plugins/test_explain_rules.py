"""Rules that reproduce the model: shallow trees recover planted rules and name price with the right direction."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from lm_insights.explain.rules import fit_rules, path_conditions, rules_summary
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
    assert f"{found.fidelity:.0%} on 200 rows" in sentence and "->" not in sentence


def test_conditions_merge_per_column():
    path = [("price", None, "right", 100.0), ("price", None, "left", 250.0), ("category", "Toys", "left", 0.5),
            ("category", "Books", "left", 0.5), ("region", "East", "right", 0.5)]
    assert path_conditions(path) == "100 < price <= 250 and category not in (Books, Toys) and region = East"
    assert path_conditions([]) == "all rows"
