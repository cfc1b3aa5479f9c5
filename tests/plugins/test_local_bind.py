"""`make up` (lm-insights up) is reachable from this machine only unless exposed on purpose.

The embedded PostgreSQL listens on a unix socket only; the Airflow API server (the UI) binds 127.0.0.1.
"""

from __future__ import annotations

import json
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


def test_the_ui_binds_loopback_and_always_asks_for_the_admin_password_kept_under_airflow_home(
        pg_server, tmp_path, monkeypatch):
    monkeypatch.delenv("LM_INSIGHTS_UI_HOST", raising=False)
    env = local_env.airflow_environment(pg_server, tmp_path)
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"]) == ("127.0.0.1", "False")
    passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    assert passwords.parent == tmp_path and passwords.stat().st_mode & 0o777 == 0o600
    [(user, password)] = json.loads(passwords.read_text()).items()
    assert user == "admin" and len(password) >= 24
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o777 == 0o600
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == (tmp_path / "jwt_secret").read_text()
    monkeypatch.setenv("LM_INSIGHTS_UI_HOST", "0.0.0.0")
    exposed = local_env.airflow_environment(pg_server, tmp_path)
    assert (exposed["AIRFLOW__API__HOST"], exposed["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"]) == ("0.0.0.0",
                                                                                                        "False")
    assert exposed["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"], "made once, then kept"
    assert json.loads(passwords.read_text()) == {user: password}
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"


def test_the_local_api_server_gives_a_token_only_for_the_password_in_airflow_home(pg_server, tmp_path, monkeypatch):
    """The api-server of `make up`, in-process: no token without a login, one for the admin's stored password."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    monkeypatch.delenv("LM_INSIGHTS_UI_HOST", raising=False)
    env = local_env.airflow_environment(pg_server, tmp_path)
    for name in ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
                 "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"):
        monkeypatch.setenv(name, env[name])
    [(user, password)] = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text()).items()
    client = TestClient(create_app("all"))
    assert client.get("/auth/token").status_code != 200, "no token without credentials (the all-admins mode)"
    assert client.post("/auth/token", json={"username": user, "password": "admin"}).status_code == 401
    token = client.post("/auth/token", json={"username": user, "password": password})
    assert token.status_code == 201 and token.json()["access_token"]


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
