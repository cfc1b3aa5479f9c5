"""``lm_insights.cli.run_dag``: a deadlock in Airflow's metadata database is transient (the run is started once
more); any other database error, or a second deadlock, is raised."""

from __future__ import annotations

import datetime as dt

import pytest
from psycopg2.errors import DeadlockDetected, UndefinedTable
from sqlalchemy.exc import OperationalError, ProgrammingError

from lm_insights import cli


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


def test_a_deadlock_runs_the_dag_once_more(dag):
    dag["dag"] = FakeDag([deadlock()])
    assert cli.run_dag("product_sales", dt.date(2026, 11, 1), {"shards": 2}) == "the run"
    expected = (dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc), {"shards": 2})
    assert dag["dag"].calls == [expected, expected]


def test_a_second_deadlock_and_other_errors_are_raised(dag):
    dag["dag"] = FakeDag([deadlock(), deadlock()])
    with pytest.raises(OperationalError):
        cli.run_dag("product_sales", dt.date(2026, 11, 1))
    assert len(dag["dag"].calls) == 2
    dag["dag"] = FakeDag([ProgrammingError("select ...", {}, UndefinedTable("no such table"))])
    with pytest.raises(ProgrammingError):
        cli.run_dag("product_sales", dt.date(2026, 11, 1))
    assert len(dag["dag"].calls) == 1
