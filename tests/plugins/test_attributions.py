"""Occlusion attributions: for each row and label set, the text column whose value the label rests on most."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg

from lm_insights.runtime import demo_warehouse
from lm_insights.core.partition import Partition
from lm_insights.pipeline import run_partition
from lm_insights.spec import load_spec
from lm_insights.steps.textualize import render

SPEC_FILE = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "product_sales.yaml"
DAY = Partition.day("2026-11-01")


def test_top_field_is_the_column_whose_occlusion_lowers_the_label_score_most(warehouse_conninfo):
    from lm_engine import load_engine

    spec = load_spec(SPEC_FILE)
    assert spec.lm.attributions
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=DAY.start.date(), days=1, sales_per_day=12, reviews_per_day=2)
    record = run_partition(spec, warehouse_conninfo, warehouse_conninfo, DAY)
    with psycopg.connect(warehouse_conninfo) as conn:
        cursor = conn.execute("select * from insights.product_sales_rows order by _row_number")
        rows = [dict(zip([c.name for c in cursor.description], r)) for r in cursor.fetchall()]
        summary = conn.execute("select summary from insights.product_sales_summaries").fetchone()[0]
    assert len(rows) == record.loaded > 0
    assert {r["positioning_top_field"] for r in rows} <= set(spec.text.columns)
    assert "The positioning label rests mostly on" in summary

    engine = load_engine(spec.lm.model)
    labels = spec.lm.label_sets["positioning"].labels
    prototypes = engine.prototypes(labels)
    row = rows[0]
    full = engine.encode([row["text"]]).vectors[0]
    best = list(labels)[int(np.argmax(prototypes @ full))]
    effects = {}
    for column in spec.text.columns:
        occluded = render(spec, {**row, column: None})
        vector = engine.encode([occluded]).vectors[0]
        effects[column] = float(prototypes[list(labels).index(best)] @ (full - vector))
    expected = max(sorted(effects), key=effects.get)
    assert row["positioning_top_field"] == expected
    assert abs(row["positioning_top_effect"] - effects[expected]) < 1e-5
