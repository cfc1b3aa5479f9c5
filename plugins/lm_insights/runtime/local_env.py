"""The embedded default deployment: one embedded PostgreSQL holds Airflow's metadata and the warehouse.

Everything lives under ``.local/`` in the project (ignored by git): ``pgdata/`` (the database cluster),
``airflow/`` (AIRFLOW_HOME, with the UI's admin password and the JWT secret, readable by their owner only). Airflow
is configured through environment variables only, so the same settings reach the CLI, ``airflow standalone`` and the
tests.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lm_insights.runtime import embedded_pg

PROJECT_DIR = embedded_pg.PROJECT_DIR
WAREHOUSE_DB = "warehouse"
AIRFLOW_DB = "airflow"
GPU_POOL_SLOTS = 1  # one local inference slot: the CPU has 2 cores and a shard uses both
# The Airflow UI/API listens here. Loopback by default; LM_INSIGHTS_UI_HOST=0.0.0.0 exposes it deliberately. Either
# way it issues tokens only to who logs in as admin with the password in AIRFLOW_HOME (docs/security.md).
UI_HOST = "127.0.0.1"
UI_PORT = 8080


def ui_host() -> str:
    return os.environ.get("LM_INSIGHTS_UI_HOST", UI_HOST)


def is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def default_airflow_home() -> Path:
    """AIRFLOW_HOME of the embedded default: ``.local/airflow``, or ``$LM_INSIGHTS_AIRFLOW_HOME``."""
    return Path(os.environ.get("LM_INSIGHTS_AIRFLOW_HOME", PROJECT_DIR / ".local" / "airflow"))


ADMIN_USER = "admin"


def local_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in ``path``, made (by ``make()``) and written readable by its owner only when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(make())
    return path.read_text()


def passwords_file(airflow_home: Path) -> Path:
    """SimpleAuthManager's password file of the local deployment: ``{"admin": "<generated>"}``."""
    path = Path(airflow_home) / "simple_auth_manager_passwords.json"
    local_secret(path, lambda: json.dumps({ADMIN_USER: secrets.token_urlsafe(24)}))
    return path


def airflow_environment(server, airflow_home: Path) -> dict[str, str]:
    """Environment variables that point Airflow at the embedded database, the project's DAGs and plugins, and at
    the admin password and JWT secret under ``airflow_home`` (made on first use)."""
    info = server.get_postmaster_info()
    warehouse = {"conn_type": "postgres", "host": str(info.socket_dir), "port": info.port,
                 "schema": WAREHOUSE_DB, "login": "postgres"}
    host = ui_host()
    return {
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(UI_PORT),
        # tasks reach the execution API over loopback whatever the UI host is
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{UI_PORT}/execution/",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins" / "airflow_ui"),  # the report tab on DAG runs
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",  # LocalExecutor forks this many workers; the default 32 only costs memory
        # a login even on loopback: any local process (another user's too) could otherwise take an admin token
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(airflow_home)),
        "AIRFLOW__API_AUTH__JWT_SECRET": local_secret(Path(airflow_home) / "jwt_secret", lambda: secrets.token_hex(32)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            f"postgresql+psycopg2://postgres@/{AIRFLOW_DB}?host={info.socket_dir}&port={info.port}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        "AIRFLOW_CONN_WAREHOUSE": json.dumps(warehouse),
        "GX_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "*",
    }


def prepare(pgdata: Path | None = None, airflow_home: Path | None = None, keep_running: bool = True):
    """Start the database, create both databases, migrate Airflow and create the GPU pool; return (server, env)."""
    say("starting the embedded PostgreSQL")
    server = embedded_pg.start(pgdata, keep_running=keep_running)
    embedded_pg.ensure_database(server, WAREHOUSE_DB)
    embedded_pg.ensure_database(server, AIRFLOW_DB)
    env = airflow_environment(server, airflow_home or default_airflow_home())
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    say("migrating the Airflow metadata database")
    airflow("db", "migrate")
    airflow("pools", "set", "lm_gpu", str(GPU_POOL_SLOTS), "lm_engine inference shards (size it to the GPUs)")
    return server, env


def airflow(*args: str) -> None:
    """Run an ``airflow`` CLI command with the prepared environment; fail with its output."""
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    done = subprocess.run(command, env=os.environ, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def warehouse_conninfo(server) -> str:
    return embedded_pg.conninfo(server, WAREHOUSE_DB)


def say(message: str) -> None:
    print(f"[lm-insights] {message}", flush=True)
