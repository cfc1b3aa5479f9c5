"""Staging tables (full copies of source rows) never outlive their run: dropped on every path, swept when left."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import psycopg
import pytest

from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_spec
from lm_insights.steps.extract import extract_partition
from lm_insights.core.partition import Partition, staging_name, staging_stem
from lm_insights.steps.staging import clean_staging, parse_age
from lm_insights.steps.validate import TableExpectationsFailed

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "product_sales.yaml")


def staging_tables(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [t for (t,) in conn.execute("select tablename from pg_tables where schemaname = 'lm_staging' "
                                           "and tablename <> 'staging_runs' order by 1").fetchall()]


@pytest.fixture
def warehouse(warehouse_conninfo) -> str:
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=dt.date(2026, 11, 1), days=2, sales_per_day=6,
                            reviews_per_day=2)
    return warehouse_conninfo


def test_a_failed_run_leaves_no_staging_table(warehouse):
    empty_day = Partition.day("2026-12-25")  # no rows: `row count >= 1` fails after extract and validate ran

    with pytest.raises(TableExpectationsFailed):
        run_partition(SPEC, warehouse, warehouse, empty_day, run_id="manual__failing")
    assert staging_tables(warehouse) == []


def nothing_runs(dag_id: str, run_id: str) -> bool:
    return False


def test_the_janitor_drops_only_staging_older_than_the_age(warehouse):
    old = dataclasses.replace(Partition.day("2026-11-01"), run_id="killed__old")
    fresh = dataclasses.replace(Partition.day("2026-11-02"), run_id="running__fresh")
    for partition in (old, fresh):
        extract_partition(SPEC, warehouse, warehouse, partition)
    with psycopg.connect(warehouse) as conn:  # the old run was killed two days ago, before record_run
        conn.execute("update lm_staging.staging_runs set created_at = now() - interval '2 days' where stem = %s",
                     (staging_stem(SPEC, old),))
        conn.execute("create table lm_staging.product_sales__20261001__extracted (x int)")  # from before the registry
    planted = staging_tables(warehouse)

    assert clean_staging(warehouse, parse_age("1d"), nothing_runs) == [staging_name(SPEC, old, "extracted")]
    assert staging_tables(warehouse) == [t for t in planted if t != staging_name(SPEC, old, "extracted")]

    with psycopg.connect(warehouse) as conn:  # an unregistered table is first seen now: it goes one age later
        conn.execute("update lm_staging.staging_runs set created_at = now() - interval '25 hours' "
                     "where stem = 'product_sales__20261001'")
    assert clean_staging(warehouse, parse_age("1d"), nothing_runs) == ["product_sales__20261001__extracted"]
    assert staging_tables(warehouse) == [staging_name(SPEC, fresh, "extracted")]


@pytest.mark.parametrize("text, age", [("1d", dt.timedelta(days=1)), ("12h", dt.timedelta(hours=12)),
                                       ("30m", dt.timedelta(minutes=30)), ("1.5w", dt.timedelta(weeks=1.5))])
def test_ages_read_as_a_number_and_a_unit(text, age):
    assert parse_age(text) == age


def test_a_bad_age_says_the_format():
    with pytest.raises(ValueError, match="a number and a unit s, m, h, d or w"):
        parse_age("yesterday")


def test_the_janitor_never_drops_the_tables_of_a_run_airflow_calls_running(warehouse):
    slow = dataclasses.replace(Partition.day("2026-11-01"), run_id="manual__slow_but_alive")
    extract_partition(SPEC, warehouse, warehouse, slow)
    with psycopg.connect(warehouse) as conn:  # it started two days ago and is still working
        conn.execute("update lm_staging.staging_runs set created_at = now() - interval '2 days'")
    asked = []

    def airflow_says(dag_id: str, run_id: str) -> bool:
        asked.append((dag_id, run_id))
        return True

    assert clean_staging(warehouse, parse_age("1d"), airflow_says) == []
    assert asked == [("product_sales", "manual__slow_but_alive")]
    assert staging_tables(warehouse) == [staging_name(SPEC, slow, "extracted")]
    assert clean_staging(warehouse, parse_age("1d"), nothing_runs) == [staging_name(SPEC, slow, "extracted")]


@pytest.mark.parametrize("age", ["0s", "30m", "59m"])
def test_the_janitor_refuses_an_age_below_an_hour(warehouse, age):
    extract_partition(SPEC, warehouse, warehouse, Partition.day("2026-11-01"))
    with pytest.raises(ValueError, match="give 1h or more"):
        clean_staging(warehouse, parse_age(age), nothing_runs)
    assert staging_tables(warehouse) == [staging_name(SPEC, Partition.day("2026-11-01"), "extracted")]
