"""Real DAG runs: a partition that a drift gate holds is loaded into the quarantine tables (the run's record_run is
skipped: no Asset event), and a run with the ``release_quarantined`` Param publishes it; so does the
``lm-insights release`` command, run as a user runs it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import psycopg
import pytest

from lm_insights.cli import run_dag
from lm_insights.guard import gates
from lm_insights.guard.gates import Verdict
from lm_insights import pipeline
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_specs
from lm_insights.core.partition import Partition

DAY = dt.date(2026, 11, 6)  # a day no other DAG test uses in the shared warehouse


@pytest.fixture(scope="module")
def warehouse(airflow_db) -> str:
    from lm_insights.airflow_dag import conninfo_for

    conninfo = conninfo_for("warehouse")
    demo_warehouse.create_schema(conninfo)
    demo_warehouse.generate(conninfo, start=DAY, days=1, sales_per_day=12, reviews_per_day=2)
    yield conninfo
    with psycopg.connect(conninfo) as conn:  # leave the shared warehouse as other modules expect it
        if exists(conn, "insights.product_sales_rows"):
            conn.execute("delete from insights.product_sales_rows where sale_date = %s", (DAY,))
            for suffix in ("segments", "drivers", "summaries"):
                conn.execute(f"delete from insights.product_sales_{suffix} where partition_start = %s",
                             (Partition.day(DAY).start,))
            conn.execute("delete from insights.product_sales_rejects where (row ->> 'sale_date')::date = %s", (DAY,))
        for suffix in ("rows", "segments", "drivers", "summaries", "rejects"):
            conn.execute(f"drop table if exists insights.product_sales_quarantine_{suffix}")


def exists(conn, table: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (table,)).fetchone()[0]


def unpublish_the_day(conninfo: str) -> None:
    """Each test starts with DAY not published (the other test of this module may have published it)."""
    with psycopg.connect(conninfo) as conn:
        if exists(conn, "insights.product_sales_rows"):
            conn.execute("delete from insights.product_sales_rows where sale_date = %s", (DAY,))


def day_rows(conninfo: str, table: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        if not exists(conn, f"insights.{table}"):
            return []
        return sorted(conn.execute(f"select sale_id, text, positioning_label from insights.{table} "
                                   "where sale_date = %s", (DAY,)).fetchall())


def test_a_dag_run_holds_a_quarantined_partition_and_the_release_param_publishes_it(warehouse, monkeypatch):
    # The verdict of a tripped quarantine gate (the gates themselves: tests/plugins/test_guard.py); dag.test runs
    # the tasks in this process, so the load task sees it.
    unpublish_the_day(warehouse)
    monkeypatch.setattr(gates, "guard_partition", lambda *args: Verdict("quarantine", []))
    held_run = run_dag("product_sales", DAY)
    assert held_run.state == "success"
    assert {ti.task_id: ti.state for ti in held_run.get_task_instances()}["record_run"] == "skipped"
    held = day_rows(warehouse, "product_sales_quarantine_rows")
    assert held and day_rows(warehouse, "product_sales_rows") == []
    monkeypatch.undo()

    conf = {"partition_start": DAY.isoformat(), "release_quarantined": True}
    assert run_dag("product_sales", DAY, conf).state == "success"
    assert day_rows(warehouse, "product_sales_rows") == held
    assert day_rows(warehouse, "product_sales_quarantine_rows") == []
    with psycopg.connect(warehouse) as conn:
        status = conn.execute("select status from insights.runs where run_id = %s", (held_run.run_id,)).fetchone()
    assert status == ("released",)

    assert run_dag("product_sales", DAY, conf).state == "failed", "nothing is held any more: fail, no retry"


def release_command(pg_server, *args: str) -> subprocess.CompletedProcess:
    """``python -m lm_insights.cli release ...`` on the session's database cluster and AIRFLOW_HOME."""
    env = os.environ | {"LM_INSIGHTS_PGDATA": str(pg_server.pgdata),
                        "LM_INSIGHTS_AIRFLOW_HOME": os.environ["AIRFLOW_HOME"]}
    return subprocess.run([sys.executable, "-m", "lm_insights.cli", "release", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_release_command_publishes_a_held_partition_and_says_when_nothing_is_held(warehouse, pg_server,
                                                                                      monkeypatch):
    from lm_insights.pipeline import run_partition

    spec = {s.name: s for s in load_specs()}["product_sales"]
    unpublish_the_day(warehouse)
    monkeypatch.setattr(pipeline, "guard_partition", lambda *args: Verdict("quarantine", []))
    record = run_partition(spec, warehouse, warehouse, Partition.day(DAY), run_id="held_for_the_cli")
    monkeypatch.undo()
    assert record.status == "quarantined"
    held, published = day_rows(warehouse, "product_sales_quarantine_rows"), day_rows(warehouse, "product_sales_rows")
    assert held and published == [], "the held rows wait in quarantine, nothing is published"

    done = release_command(pg_server, "product_sales", "--start", DAY.isoformat())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"product_sales {Partition.day(DAY)}: published from quarantine" in done.stdout
    assert day_rows(warehouse, "product_sales_rows") == held
    assert day_rows(warehouse, "product_sales_quarantine_rows") == []
    with psycopg.connect(warehouse) as conn:
        assert conn.execute("select status from insights.runs where run_id = 'held_for_the_cli'").fetchone() == (
            "released",)

    again = release_command(pg_server, "product_sales", "--start", DAY.isoformat())
    assert again.returncode == 1
    assert (f"lm-insights release: product_sales: no quarantined partition between {DAY} and {DAY}; see "
            "insights.runs where status = 'quarantined'") in again.stderr
