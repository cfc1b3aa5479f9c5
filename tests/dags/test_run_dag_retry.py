"""``lm_insights.cli.run_dag``: a deadlock in Airflow's metadata database is transient (the aborted attempt is
ended and the run is started once more); any other database error, or a second deadlock, is raised."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg2.errors import DeadlockDetected, UndefinedTable
from sqlalchemy.exc import OperationalError, ProgrammingError

from lm_insights import cli
from lm_insights.runtime import demo_warehouse


class FakeDag:
    """``test()`` raises the given errors in turn, then returns "the run"."""

    def __init__(self, errors):
        self.errors, self.calls = list(errors), []

    def test(self, logical_date, run_conf):
        self.calls.append((logical_date, run_conf))
        if self.errors:
            raise self.errors.pop(0)
        return "the run"


@pytest.fixture
def dag(monkeypatch):
    holder = {}

    class FakeBag:
        import_errors: dict = {}

        def __init__(self, dag_folder):
            pass

        def get_dag(self, dag_id):
            return holder["dag"]

    monkeypatch.setattr("airflow.dag_processing.dagbag.DagBag", FakeBag)
    return holder


def deadlock() -> OperationalError:
    return OperationalError("UPDATE dag_run ...", {}, DeadlockDetected("deadlock detected"))


def test_a_deadlock_runs_the_dag_once_more(dag, monkeypatch):
    ended = []
    monkeypatch.setattr(cli, "drop_staging_of_aborted_runs", lambda *args: ended.append(args))
    dag["dag"] = FakeDag([deadlock()])
    assert cli.run_dag("product_sales", dt.date(2026, 11, 1), {"shards": 2}) == "the run"
    expected = (dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc), {"shards": 2})
    assert dag["dag"].calls == [expected, expected]
    assert ended == [("product_sales", expected[0], {"shards": 2})], "the aborted attempt is ended before the retry"


def test_a_second_deadlock_and_other_errors_are_raised(dag, monkeypatch):
    monkeypatch.setattr(cli, "drop_staging_of_aborted_runs", lambda *args: [])
    dag["dag"] = FakeDag([deadlock(), deadlock()])
    with pytest.raises(OperationalError):
        cli.run_dag("product_sales", dt.date(2026, 11, 1))
    assert len(dag["dag"].calls) == 2
    dag["dag"] = FakeDag([ProgrammingError("select ...", {}, UndefinedTable("no such table"))])
    with pytest.raises(ProgrammingError):
        cli.run_dag("product_sales", dt.date(2026, 11, 1))
    assert len(dag["dag"].calls) == 1


def staging_tables(conninfo: str, pipeline: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [name for (name,) in conn.execute(
            "select tablename from pg_tables where schemaname = 'lm_staging' and tablename like %s",
            (f"{pipeline}\\_\\_%",)).fetchall()]


def test_a_real_run_aborted_by_a_deadlock_is_ended_and_leaves_no_staging_table(airflow_db, monkeypatch):
    """dag.test's loop raises a deadlock once the first attempt has staged rows; run_dag drops that attempt's
    staging tables and runs the DAG again to success, in place of the aborted run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from lm_insights.airflow_dag import conninfo_for

    warehouse = conninfo_for("warehouse")
    day = dt.date(2026, 11, 1)
    demo_warehouse.create_schema(warehouse)
    demo_warehouse.generate(warehouse, start=day, days=1, sales_per_day=12, reviews_per_day=2)
    assert staging_tables(warehouse, "product_sales") == []
    update_state, aborted = DagRun.update_state, []

    def update_state_with_one_deadlock(self, *args, **kwargs):
        if not aborted and staging_tables(warehouse, "product_sales"):
            aborted.append((self.run_id, staging_tables(warehouse, "product_sales")))
            raise deadlock()
        return update_state(self, *args, **kwargs)

    monkeypatch.setattr(DagRun, "update_state", update_state_with_one_deadlock)
    run = cli.run_dag("product_sales", day)
    assert aborted and aborted[0][1], "the first attempt had staged rows when the deadlock came"
    assert run.state == "success" and run.run_id != aborted[0][0]
    assert staging_tables(warehouse, "product_sales") == [], "neither attempt leaves a staging table"
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "product_sales",
                                            DagRun.logical_date == run.logical_date).all()
        assert [r.run_id for r in runs] == [run.run_id], "the retry's run replaced the aborted one"
