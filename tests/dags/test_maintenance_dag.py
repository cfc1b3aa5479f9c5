"""The lm_insights_maintenance DAG sweeps staging tables that killed runs left behind, and only those."""

from __future__ import annotations

import dataclasses
import datetime as dt

import psycopg

from lm_insights.cli import run_dag
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_specs
from lm_insights.steps.extract import extract_partition
from lm_insights.core.partition import Partition, staging_name, staging_stem
from lm_insights.steps.staging import clean_staging


def test_a_real_run_drops_old_staging_and_keeps_fresh(airflow_db):
    from lm_insights.airflow_dag import conninfo_for

    warehouse = conninfo_for("warehouse")
    demo_warehouse.create_schema(warehouse)
    demo_warehouse.generate(warehouse, start=dt.date(2026, 11, 1), days=2, sales_per_day=4, reviews_per_day=2)
    spec = next(s for s in load_specs() if s.name == "product_sales")
    killed = dataclasses.replace(Partition.day("2026-11-01"), run_id="scheduled__killed_before_record_run")
    running = dataclasses.replace(Partition.day("2026-11-02"), run_id="manual__still_running")
    for partition in (killed, running):
        extract_partition(spec, warehouse, warehouse, partition)
    with psycopg.connect(warehouse) as conn:
        conn.execute("update lm_staging.staging_runs set created_at = now() - interval '3 days' where stem = %s",
                     (staging_stem(spec, killed),))

    try:
        run = run_dag("lm_insights_maintenance", dt.date(2026, 11, 28), {"older_than": "2d"})

        assert run.state == "success"
        with psycopg.connect(warehouse) as conn:
            left = {t for (t,) in conn.execute("select tablename from pg_tables where schemaname = 'lm_staging'")}
        assert staging_name(spec, running, "extracted") in left
        assert staging_name(spec, killed, "extracted") not in left
    finally:  # the warehouse database is shared with the other DAG tests
        clean_staging(warehouse, dt.timedelta(0))
