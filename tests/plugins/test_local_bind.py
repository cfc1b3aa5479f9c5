"""`make up` (lm-insights up) is reachable from this machine only unless exposed on purpose.

The embedded PostgreSQL listens on a unix socket only; the Airflow API server (the UI) binds 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from lm_insights.runtime import local_env


def test_the_ui_binds_loopback_with_admins_and_asks_for_logins_when_exposed(pg_server, tmp_path, monkeypatch):
    monkeypatch.delenv("LM_INSIGHTS_UI_HOST", raising=False)
    env = local_env.airflow_environment(pg_server, tmp_path)
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"]) == ("127.0.0.1", "True")
    monkeypatch.setenv("LM_INSIGHTS_UI_HOST", "0.0.0.0")
    env = local_env.airflow_environment(pg_server, tmp_path)
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"]) == ("0.0.0.0", "False")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"


def test_the_embedded_postgres_listens_on_no_network_address(pg_server):
    with psycopg.connect(local_env.warehouse_conninfo(pg_server)) as conn:
        assert conn.execute("select current_setting('listen_addresses')").fetchone() == ("",)


def _outbound_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing), None without a network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_api_server_is_not_reachable_on_a_non_loopback_address(airflow_db):
    """A real `airflow api-server` with the environment `make up` uses."""
    address = _outbound_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "api-server", "--port", str(port)],
                              env=dict(os.environ, AIRFLOW__API__WORKERS="1"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not _accepts("127.0.0.1", port):
            assert server.poll() is None, server.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the API server did not start within 180 s"
            time.sleep(0.5)
        assert not _accepts(address, port)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
