"""A real Airflow deployment for the session: CeleryExecutor, Redis, scheduler, dag-processor, api-server and a
``cpu`` and a ``gpu`` Celery worker, all on loopback against the session's embedded PostgreSQL.

The services and their logs live under the session's temporary directory; they are stopped at the end of the
session, also when a test or the start fails (the failure message carries the tail of every service log).
"""

from __future__ import annotations

import datetime as dt
import os

import pytest

from lm_insights.runtime import demo_warehouse
from lm_insights.runtime.services import AirflowStack

# The same rows per day as tests/dags/test_pipeline_dag_runs.py (each day has its own seeded generator), so the
# two fixtures agree on 2026-11-01..03 whatever runs first; days 04..06 are what the backfill test processes,
# away from the logical dates the dag.test() runs of tests/dags leave in the metadata database.
WAREHOUSE = dict(start=dt.date(2026, 11, 1), days=6, sales_per_day=40, reviews_per_day=20)


@pytest.fixture(scope="session")
def warehouse(airflow_db) -> str:
    """conninfo of the `warehouse` connection's database, filled with the demo days."""
    from lm_insights.airflow_dag import conninfo_for

    conninfo = conninfo_for("warehouse")
    demo_warehouse.create_schema(conninfo)
    demo_warehouse.generate(conninfo, **WAREHOUSE)
    return conninfo


@pytest.fixture(scope="session")
def airflow_stack(airflow_db, warehouse, tmp_path_factory) -> AirflowStack:
    """The running stack; ``product_sales`` and ``insights_report`` are unpaused, ``customer_reviews`` paused."""
    stack = AirflowStack(dict(os.environ), tmp_path_factory.mktemp("airflow_services"))
    stack.start(dag_ids=["product_sales", "customer_reviews", "insights_report"],
                unpaused=["product_sales", "insights_report"])
    try:
        yield stack
    finally:
        stack.stop()
        leftovers = [s.name for s in stack.services if s.running()]
        assert not leftovers, f"services still running after stop: {leftovers}"


@pytest.fixture
def api(airflow_stack, request):
    """The stack; on a test failure the tails of the service logs are printed."""
    yield airflow_stack
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(airflow_stack.tails(60))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
