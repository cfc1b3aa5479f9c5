"""The lm_insights_maintenance DAG sweeps staging tables that killed runs left behind, and only those: never the
tables of a run that Airflow's metadata database calls running, however old."""

from __future__ import annotations

import dataclasses
import datetime as dt

import psycopg

from lm_insights.cli import dag_run_is_live, run_dag
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_specs
from lm_insights.steps.extract import extract_partition
from lm_insights.core.partition import Partition, staging_name, staging_stem
from lm_insights.steps.staging import drop_stem


def start_dag_run(dag_id: str, run_id: str) -> None:
    """A DAG run in state running in Airflow's metadata database (a long backfill day, say)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        session.add(DagRun(dag_id=dag_id, run_id=run_id, run_type="manual", state=DagRunState.RUNNING,
                           run_after=dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)))


def finish_dag_run(dag_id: str, run_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))


def test_a_real_run_drops_old_staging_and_keeps_fresh_and_running(airflow_db):
    from lm_insights.airflow_dag import conninfo_for

    warehouse = conninfo_for("warehouse")
    demo_warehouse.create_schema(warehouse)
    demo_warehouse.generate(warehouse, start=dt.date(2026, 11, 1), days=2, sales_per_day=4, reviews_per_day=2)
    spec = next(s for s in load_specs() if s.name == "product_sales")
    killed = dataclasses.replace(Partition.day("2026-11-01"), run_id="scheduled__killed_before_record_run")
    running = dataclasses.replace(Partition.day("2026-11-02"), run_id="manual__still_running")
    fresh = dataclasses.replace(Partition.day("2026-11-02"), run_id="manual__fresh")
    for partition in (killed, running, fresh):
        extract_partition(spec, warehouse, warehouse, partition)
    with psycopg.connect(warehouse) as conn:  # both started three days ago; Airflow says one is still running
        conn.execute("update lm_staging.staging_runs set created_at = now() - interval '3 days' where stem = any(%s)",
                     ([staging_stem(spec, killed), staging_stem(spec, running)],))
    start_dag_run("product_sales", running.run_id)

    try:  # `lm-insights clean-staging` asks the metadata database directly
        assert dag_run_is_live("product_sales", running.run_id)
        assert not dag_run_is_live("product_sales", killed.run_id)
        run = run_dag("lm_insights_maintenance", dt.date(2026, 11, 28), {"older_than": "2d"})

        assert run.state == "success"
        with psycopg.connect(warehouse) as conn:
            left = {t for (t,) in conn.execute("select tablename from pg_tables where schemaname = 'lm_staging'")}
        assert staging_name(spec, running, "extracted") in left
        assert staging_name(spec, fresh, "extracted") in left
        assert staging_name(spec, killed, "extracted") not in left
    finally:  # the warehouse database is shared with the other DAG tests
        finish_dag_run("product_sales", running.run_id)
        with psycopg.connect(warehouse) as conn:
            for partition in (killed, running, fresh):
                drop_stem(conn, staging_stem(spec, partition))
