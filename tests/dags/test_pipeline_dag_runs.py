"""End-to-end: real Airflow DAG runs (``dag.test``) of the demo pipelines on the embedded PostgreSQL."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from pathlib import Path

from lm_insights.runtime import demo_warehouse
from lm_insights.cli import run_dag
from lm_insights.spec import load_spec
from lm_insights.core.partition import Partition
from lm_insights.steps.textualize import occluded_texts, render
from tests.oracles import check_partition

DAY = dt.date(2026, 11, 2)
INSIGHT_SUFFIXES = ("rows", "segments", "drivers", "summaries", "rejects")
PIPELINES = Path(__file__).resolve().parents[2] / "dags" / "pipelines"


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


def lm_texts_of_rows(conninfo: str, pipeline: str, day: dt.date) -> set[str]:
    """Every text the model reads for a loaded partition: each row's text and, with attributions, its occlusions."""
    spec = load_spec(PIPELINES / f"{pipeline}.yaml")
    with psycopg.connect(conninfo) as conn:
        cursor = conn.execute(f'select * from insights."{pipeline}_rows" where partition_start = %s',
                              (dt.datetime.combine(day, dt.time(0), dt.timezone.utc),))
        rows = [dict(zip([c.name for c in cursor.description], r)) for r in cursor.fetchall()]
    assert all(row["text"] == render(spec, row) for row in rows), "the stored text is the template's"
    texts = {row["text"] for row in rows}
    if spec.lm.attributions:
        texts |= {text for row in rows for _, text in occluded_texts(spec, row)}
    return texts


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
    # explain and guard are tasks of their own (the Graph view shows them), timed in runs like every step
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["insights"] == states["explain"] == states["guard"] == states["load"] == "success"
    assert {"insights", "explain", "explain_words", "guard", "load"} <= set(record["timings"])
    assert record["extracted"] == source_count(warehouse, view, column, DAY) > 0
    assert record["rejected"] == len(content["rejects"]) > 0
    assert record["loaded"] == len(content["rows"])
    assert record["extracted"] == record["loaded"] + record["rejected"]
    # other tests (or days) may have cached some texts already: together they are every text read, once each
    assert record["computed"] + record["cached"] == len(lm_texts_of_rows(warehouse, pipeline, DAY)) > 0
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
    assert run_dag("product_sales", DAY).state == "success"
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
    assert run_dag("product_sales", DAY).state == "success"
    spec, partition = load_spec(PIPELINES / "product_sales.yaml"), Partition.day(DAY)
    tables = check_partition(warehouse, warehouse, spec, partition)  # every figure against the pandas oracle
    article = tables["rows"][tables["rows"]["product_name"].isin(["A", "B", "C"])].sort_values("price")
    assert [(p, float(price), u, text) for p, price, u, text in
            article[["product_name", "price", "units", "text"]].itertuples(index=False)] == [
        ("A", 100, 1000, "Product: A. Category: Electronics. Price: 100 yuan. Units sold: 1000."),
        ("B", 200, 800, "Product: B. Category: Electronics. Price: 200 yuan. Units sold: 800."),
        ("C", 300, 600, "Product: C. Category: Electronics. Price: 300 yuan. Units sold: 600."),
    ]
    segments = tables["segments"]
    tiers = segments[(segments["segment"] == "tiers:price") & (segments["metric"] == "units")] \
        .sort_values("segment_order")
    assert list(tiers["segment_value"]) == ["[0, 150)", "[150, 250)", "[250, 100000)"]
    assert list(tiers["mean"]) == sorted(tiers["mean"], reverse=True), "units fall with the price tier"
    price = tables["drivers"].set_index("field").loc["price"]
    assert price["direction"] == "units falls as price rises"
    assert "units falls as price rises" in tables["summaries"]["summary"].iloc[0]


def test_table_expectation_failure_fails_the_run_without_touching_loaded_data(warehouse):
    """A day with no rows breaks `row count >= 1`: the run fails, earlier partitions stay as they were."""
    assert run_dag("customer_reviews", DAY).state == "success"
    before = partition_content(warehouse, "customer_reviews", DAY)
    assert before["rows"] and before["segments"] and before["summaries"]
    empty_day = dt.date(2026, 12, 25)
    run = run_dag("customer_reviews", empty_day)
    assert run.state == "failed"
    record = latest_run(warehouse, "customer_reviews")
    assert record["status"] == "failed" and record["extracted"] == 0
    assert partition_content(warehouse, "customer_reviews", DAY) == before
