"""Deterministic failures end a task without retry; transient ones (connection lost, lock timeout) retry.

The errors are real ones, raised by the embedded PostgreSQL, and one real DAG run shows the spec check at plan time.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from lm_insights.airflow_dag import failing_fast, is_deterministic
from lm_insights.spec import DEFAULT_PIPELINES_DIR, PipelineSpec, SpecError, load_spec


def raised(conninfo: str, statement: str, setup: str | None = None) -> Exception:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if setup:
            conn.execute(setup)
        with pytest.raises(psycopg.Error) as error:
            conn.execute(statement)
    return error.value


def nul_byte(conninfo: str) -> Exception:
    with psycopg.connect(conninfo) as conn, pytest.raises(psycopg.DataError) as error:
        conn.execute("select %s::text", ("a\x00b",))
    assert error.value.sqlstate is None
    return error.value


def lock_timeout(conninfo: str) -> Exception:
    """A real `lock_not_available`: another session holds the table while this one waits 50 ms."""
    with psycopg.connect(conninfo, autocommit=True) as holder:
        holder.execute("create table if not exists locked (x int)")
        holder.execute("begin; lock table locked in access exclusive mode")
        try:
            return raised(conninfo, "select * from locked", setup="set lock_timeout = '50ms'")
        finally:
            holder.execute("rollback")


def connection_lost(conninfo: str) -> Exception:
    """A real lost connection: the server terminates the backend in the middle of a query."""
    with psycopg.connect(conninfo, autocommit=True) as victim, psycopg.connect(conninfo, autocommit=True) as killer:
        pid = victim.info.backend_pid
        timer = threading.Timer(0.3, lambda: killer.execute("select pg_terminate_backend(%s)", (pid,)))
        timer.start()
        with pytest.raises(psycopg.OperationalError) as error:
            victim.execute("select pg_sleep(5)")
        timer.join()
    return error.value


@pytest.fixture
def sales_spec() -> PipelineSpec:
    return load_spec(DEFAULT_PIPELINES_DIR / "product_sales.yaml")


def test_deterministic_errors_fail_without_retry(warehouse_conninfo, sales_spec):
    deterministic = [
        SpecError("product_sales.yaml: text.template: ..."),
        TypeError("unsupported operand"),
        KeyError("price"),
        raised(warehouse_conninfo, "select 1 / 0"),  # 22012 division by zero: bad data
        raised(warehouse_conninfo, "select no_such_column from pg_class"),  # 42703
        raised(warehouse_conninfo, "select 'x'::int"),  # 22P02
        nul_byte(warehouse_conninfo),  # refused by the driver itself, no SQLSTATE
    ]
    for error in deterministic:
        assert is_deterministic(error), error
        with pytest.raises(AirflowFailException, match=f"product_sales: {type(error).__name__}"):
            with failing_fast(sales_spec):
                raise error


def test_transient_errors_are_raised_as_they_are_so_the_task_retries(warehouse_conninfo, sales_spec):
    transient = [lock_timeout(warehouse_conninfo), connection_lost(warehouse_conninfo),
                 ConnectionResetError("reset by peer"), RuntimeError("worker lost")]
    assert isinstance(transient[0], psycopg.errors.LockNotAvailable)
    for error in transient:
        assert not is_deterministic(error), error
        with pytest.raises(type(error)):
            with failing_fast(sales_spec):
                raise error


def test_a_non_numeric_metric_fails_the_dag_run_at_plan_time_without_retry(airflow_db, warehouse_conninfo,
                                                                          monkeypatch):
    """A real run of product_sales (3 retries) against a warehouse whose `units` is text: plan_partition fails once,
    nothing is extracted and no model is loaded."""
    from airflow.utils.session import create_session
    from psycopg.conninfo import conninfo_to_dict

    from lm_insights.cli import run_dag

    with psycopg.connect(warehouse_conninfo, autocommit=True) as conn:
        conn.execute("create schema retail; create table retail.product_sales (sale_id int, sale_date date, "
                     "product_name text, category text, price numeric, units text, revenue numeric)")
    params = conninfo_to_dict(warehouse_conninfo)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({
        "conn_type": "postgres", "host": params["host"], "port": int(params["port"]), "schema": params["dbname"],
        "login": params["user"]}))
    run = run_dag("product_sales", dt.date(2027, 1, 15))
    assert run.state == "failed"
    with create_session() as session:
        tis = {ti.task_id: ti for ti in run.get_task_instances(session=session)}
        assert (tis["plan_partition"].state, tis["plan_partition"].try_number) == ("failed", 1)
        assert tis["extract"].state == "upstream_failed"
    with psycopg.connect(warehouse_conninfo) as conn:  # extract creates both schemas: it never ran
        schemas = conn.execute("select nspname from pg_namespace where nspname in ('insights', 'lm_staging')")
        assert schemas.fetchall() == []
