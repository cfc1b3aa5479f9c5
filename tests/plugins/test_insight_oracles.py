"""Every published figure against the oracles of tests/oracles.py (pandas/numpy from the source rows).

The demo partitions of both shipped pipelines, and planted edge cases: a row exactly on each tier edge and one row
per tier, NULL tier values and metrics, a value beyond the last edge, all-equal values (no driver can be measured,
variance 0), a single category, rejects and rows of the neighbouring days.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_spec
from lm_insights.core.partition import Partition
from tests.oracles import check_partition

PIPELINES = Path(__file__).resolve().parents[2] / "dags" / "pipelines"
DAY = Partition.day("2026-11-02")


@pytest.mark.parametrize("pipeline", ["product_sales", "customer_reviews"])
def test_demo_partition_figures_match_the_oracle(warehouse_conninfo, pipeline):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=dt.date(2026, 11, 1), days=3, sales_per_day=40,
                            reviews_per_day=20)
    spec = load_spec(PIPELINES / f"{pipeline}.yaml")
    record = run_partition(spec, warehouse_conninfo, warehouse_conninfo, DAY)
    assert record.status == "success"
    tables = check_partition(warehouse_conninfo, warehouse_conninfo, spec, DAY)
    assert len(tables["rejects"]) == record.rejected > 0 and len(tables["rows"]) == record.loaded > 0
    published = set(tables["drivers"]["field"])
    if pipeline == "product_sales":  # the article's relation: units fall as the price rises
        assert "price" in published
        price = tables["drivers"].set_index("field").loc["price"]
        assert price["direction"] == "units falls as price rises"
        first = tables["findings"].sort_values("rank").iloc[0]  # the summary leads with it (check_summary)
        assert (first["kind"], first["subject"], first["rank"]) == ("driver", "price", 1), tables["findings"]
        assert "revenue" not in published, "revenue = price x units is an outcome of units, not a driver"
    else:  # what the model read from the text is tested per label, each against the other rows, not as a driver
        assert not {f for f in published if f.endswith(("_label", "cluster", "cluster_name"))}, published


# (sale_id, sale_date, product_name, category, price, units, revenue); the spec's tiers are [0, 150) [150, 250)
# [250, 100000). Every row is category 'Toys'.
EDGE_ROWS = [
    # the day before and after: never part of 2026-11-02 or 2026-11-03
    (1, "2026-11-01", "Before", 120, 999, 1),
    (2, "2026-11-04", "After", 120, 999, 1),
    # 2026-11-02: each tier edge exactly, one row in [0, 150) and [250, 100000), NULLs, beyond the edges, rejects
    (10, "2026-11-02", "Zero", 0, 50, 0),
    (11, "2026-11-02", "Edge 150", 150, 40, 6000),
    (12, "2026-11-02", "Just below 250", 249.99, 30, None),
    (13, "2026-11-02", "Edge 250", 250, 20, 5000),
    (14, "2026-11-02", "No price", None, 35, None),
    (15, "2026-11-02", "Too dear", 100000, 1, 100000),
    (16, "2026-11-02", "No units", 200, None, None),
    (17, "2026-11-02", "Negative", -5, 10, -50),
    (18, "2026-11-02", "Twice", 160, 12, 1920),
    (18, "2026-11-02", "Twice", 160, 12, 1920),
    # 2026-11-03: all-equal values: units and prices never vary, so no driver can be measured
    *[(30 + i, "2026-11-03", f"Same {i}", 180, 7, 1260) for i in range(6)],
]


@pytest.fixture
def edge_spec():
    """product_sales on a planted table; NULL prices pass (they become the `unknown` tier)."""
    spec = load_spec(PIPELINES / "product_sales.yaml")
    rows = [{"expect_column_values_to_be_unique": {"column": "sale_id"}},
            {"expect_column_values_to_be_between": {"column": "price", "min_value": 0, "max_value": None}}]
    return spec.model_copy(update={
        "source": spec.source.model_copy(update={"table": "edge.sales"}),
        "expectations": spec.expectations.model_copy(update={"rows": rows}),
    })


@pytest.fixture
def edge_source(warehouse_conninfo) -> str:
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("create schema edge")
        conn.execute("create table edge.sales (sale_id bigint, sale_date date, product_name text, category text, "
                     "price numeric, units int, revenue numeric)")
        for sale_id, day, name, price, units, revenue in EDGE_ROWS:
            conn.execute("insert into edge.sales values (%s, %s, %s, 'Toys', %s, %s, %s)",
                         (sale_id, day, name, price, units, revenue))
    return warehouse_conninfo


def test_edge_case_figures_match_the_oracle(edge_spec, edge_source):
    record = run_partition(edge_spec, edge_source, edge_source, DAY)
    assert record.status == "success" and (record.extracted, record.rejected, record.loaded) == (10, 3, 7)
    tables = check_partition(edge_source, edge_source, edge_spec, DAY)
    tiers = tables["segments"][(tables["segments"]["segment"] == "tiers:price")
                               & (tables["segments"]["metric"] == "units")]
    counts = dict(zip(tiers["segment_value"], tiers["row_count"]))
    assert counts == {"[0, 150)": 1, "[150, 250)": 2, "[250, 100000)": 1, "unknown": 1,
                      "outside [0, 100000)": 1}, counts
    assert tiers.set_index("segment_value").loc["[0, 150)", "variance"] is None, "one row: no sample variance"
    assert "category" not in set(tables["drivers"]["field"]), "a single category explains nothing"


def test_all_equal_values_publish_no_driver_and_zero_variance(edge_spec, edge_source):
    day = Partition.day("2026-11-03")
    record = run_partition(edge_spec, edge_source, edge_source, day)
    assert record.status == "success" and (record.extracted, record.rejected, record.loaded) == (6, 0, 6)
    tables = check_partition(edge_source, edge_source, edge_spec, day, required_drivers=[])
    assert tables["drivers"].empty
    tiers = tables["segments"][tables["segments"]["segment"] == "tiers:price"]
    assert set(tiers["variance"]) == {0.0} and set(tiers["row_count"]) == {6}
    assert tables["findings"].empty
    assert "Nothing stands out: nothing had enough rows to be tested" in tables["summaries"]["summary"].iloc[0]
