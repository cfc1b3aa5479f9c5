"""End-to-end: real Airflow DAG runs (``dag.test``) of the demo pipelines on the embedded PostgreSQL."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from lm_insights.runtime import demo_warehouse
from lm_insights.cli import run_dag

DAY = dt.date(2026, 11, 2)
INSIGHT_SUFFIXES = ("rows", "segments", "drivers", "summaries", "rejects")


@pytest.fixture(scope="module")
def warehouse(airflow_db) -> str:
    """The `warehouse` connection's database, filled with three small demo days."""
    from lm_insights.airflow_dag import conninfo_for

    conninfo = conninfo_for("warehouse")
    demo_warehouse.create_schema(conninfo)
    demo_warehouse.generate(conninfo, start=dt.date(2026, 11, 1), days=3, sales_per_day=40, reviews_per_day=20)
    return conninfo


def partition_content(conninfo: str, pipeline: str, day: dt.date) -> dict[str, list[tuple]]:
    """Every insight table's rows of one partition, ordered, as comparable tuples."""
    content = {}
    with psycopg.connect(conninfo) as conn:
        for suffix in INSIGHT_SUFFIXES:
            rows = conn.execute(f'select * from insights."{pipeline}_{suffix}" where partition_start = %s',
                                (dt.datetime.combine(day, dt.time(0), dt.timezone.utc),)).fetchall()
            content[suffix] = sorted(rows, key=repr)
    return content


def latest_run(conninfo: str, pipeline: str) -> dict:
    with psycopg.connect(conninfo) as conn:
        cursor = conn.execute("select * from insights.runs where pipeline = %s order by recorded_at desc limit 1",
                              (pipeline,))
        return dict(zip([c.name for c in cursor.description], cursor.fetchone()))


def source_count(conninfo: str, view: str, column: str, day: dt.date) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(f"select count(*) from retail.{view} where {column} = %s", (day,)).fetchone()[0]


@pytest.mark.parametrize("pipeline, view, column", [
    ("product_sales", "product_sales", "sale_date"),
    ("customer_reviews", "customer_reviews", "review_date"),
])
def test_dag_run_loads_the_partition_and_loses_no_row(warehouse, pipeline, view, column):
    run = run_dag(pipeline, DAY)
    assert run.state == "success"
    assert (run.data_interval_start.date(), run.data_interval_end.date()) == (DAY, DAY + dt.timedelta(days=1))
    record = latest_run(warehouse, pipeline)
    content = partition_content(warehouse, pipeline, DAY)
    assert record["status"] == "success"
    assert record["extracted"] == source_count(warehouse, view, column, DAY) > 0
    assert record["rejected"] == len(content["rejects"]) > 0
    assert record["loaded"] == len(content["rows"])
    assert record["extracted"] == record["loaded"] + record["rejected"]
    assert record["computed"] > 0 and record["cached"] == 0
    assert len(content["summaries"]) == 1 and content["segments"]
    with psycopg.connect(warehouse) as conn:
        staging = conn.execute("select count(*) from pg_tables where schemaname = 'lm_staging' "
                               "and tablename like %s", (f"{pipeline}__20261102%",)).fetchone()[0]
    assert staging == 0, "staging tables of a successful run are dropped"


def test_rerun_of_a_partition_is_idempotent_and_encodes_nothing(warehouse):
    first = partition_content(warehouse, "product_sales", DAY)
    if not first["rows"]:
        assert run_dag("product_sales", DAY).state == "success"
        first = partition_content(warehouse, "product_sales", DAY)
    assert run_dag("product_sales", DAY).state == "success"
    assert partition_content(warehouse, "product_sales", DAY) == first
    record = latest_run(warehouse, "product_sales")
    assert record["computed"] == 0 and record["cached"] > 0


def test_rejected_rows_keep_the_row_and_the_reason(warehouse):
    run_dag("product_sales", DAY)
    with psycopg.connect(warehouse) as conn:
        rejects = conn.execute("select row_key, row, failed_expectations, reason from insights.product_sales_rejects "
                               "where partition_start = %s", (dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc),)
                               ).fetchall()
    reasons = " ".join(r[3] for r in rejects)
    assert "price" in reasons and "duplicate" in reasons.lower()
    negative = [r for r in rejects if r[1]["price"] is not None and float(r[1]["price"]) < 0]
    assert negative and all("expect_column_values_to_be_between" in " ".join(r[2]) for r in negative)
    assert all(r[0].startswith("sale_id=") for r in rejects)


def test_article_example_price_tiers_and_direction(warehouse):
    run_dag("product_sales", DAY)
    with psycopg.connect(warehouse) as conn:
        tiers = conn.execute(
            "select segment_value, row_count, mean, variance from insights.product_sales_segments "
            "where partition_start = %s and segment = 'tiers:price' and metric = 'units' order by segment_order",
            (dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc),)).fetchall()
        summary = conn.execute("select summary from insights.product_sales_summaries where partition_start = %s",
                               (dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc),)).fetchone()[0]
        article = conn.execute(
            "select product_name, price, units from insights.product_sales_rows where partition_start = %s "
            "and product_name in ('A', 'B', 'C') order by price",
            (dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc),)).fetchall()
    assert [(p, float(price), u) for p, price, u in article] == [("A", 100, 1000), ("B", 200, 800), ("C", 300, 600)]
    assert [t[0] for t in tiers] == ["[0, 150)", "[150, 250)", "[250, 100000)"]
    assert all(count > 0 and variance is not None for _, count, _, variance in tiers)
    means = [t[2] for t in tiers]
    assert means == sorted(means, reverse=True), "units fall with the price tier in the demo data"
    assert "units falls as price rises" in summary


def test_table_expectation_failure_fails_the_run_without_touching_loaded_data(warehouse):
    """A day with no rows breaks `row count >= 1`: the run fails, earlier partitions stay as they were."""
    before = partition_content(warehouse, "customer_reviews", DAY)
    empty_day = dt.date(2026, 12, 25)
    run = run_dag("customer_reviews", empty_day)
    assert run.state == "failed"
    record = latest_run(warehouse, "customer_reviews")
    assert record["status"] == "failed" and record["extracted"] == 0
    assert partition_content(warehouse, "customer_reviews", DAY) == before
