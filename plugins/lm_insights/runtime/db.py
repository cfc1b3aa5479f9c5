"""PostgreSQL access shared by every step: connections, quoted names, COPY in and out.

Values always travel as bound parameters or through COPY; only identifiers are composed, and they are quoted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

log = logging.getLogger(__name__)
SQL_DIR = Path(__file__).resolve().parents[3] / "sql"


def connect(conninfo: str, **kwargs: Any) -> psycopg.Connection:
    """Open a connection (not autocommit): a ``with`` block commits on success and rolls back on error."""
    return psycopg.connect(conninfo, **kwargs)


def libpq_keywords() -> frozenset[str]:
    """Every connection parameter libpq understands (sslmode, sslrootcert, options, connect_timeout, ...)."""
    from psycopg import pq

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def sqlalchemy_url(conninfo: str) -> str:
    """The same database as a SQLAlchemy URL (psycopg2 driver), for Great Expectations.

    Every parameter besides host, port, user, password and database (sslmode, sslrootcert, sslcert, sslkey,
    options, application_name, connect_timeout, ...) goes into the query, which psycopg2 hands to libpq as is.
    """
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(conninfo)
    host = params.get("host")
    socket = bool(host and host.startswith("/"))
    query = {k: str(v) for k, v in params.items() if k not in ("host", "port", "user", "password", "dbname")}
    if socket:  # a unix socket directory cannot be the URL's host
        query |= {"host": host, **({"port": str(params["port"])} if params.get("port") else {})}
    return URL.create(
        "postgresql+psycopg2",
        username=params.get("user"),
        password=params.get("password") or None,
        host=None if socket else host,
        port=int(params["port"]) if params.get("port") and not socket else None,
        database=params.get("dbname"),
        query=query,
    ).render_as_string(hide_password=False)


def qualified(schema: str, name: str) -> sql.Composed:
    """``"schema"."name"``, both parts quoted."""
    return sql.Identifier(schema, name)


def columns_sql(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def run_sql_files(conn: psycopg.Connection, folder: str, **identifiers: str) -> None:
    """Run ``sql/<folder>/*.sql`` in name order; ``{name}`` placeholders become the quoted identifiers given."""
    quoted = {name: sql.Identifier(value) for name, value in identifiers.items()}
    for path in sorted((SQL_DIR / folder).glob("*.sql")):
        conn.execute(sql.SQL(path.read_text()).format(**quoted))


def lock_ddl(conn: psycopg.Connection) -> None:
    """Serialise DDL of concurrent runs (parallel backfill days) until the transaction ends."""
    conn.execute("select pg_advisory_xact_lock(hashtext('lm_insights ddl'))")


def ensure_schema(conn: psycopg.Connection, schema: str) -> None:
    """Create ``schema`` only when it is missing: ``create schema if not exists`` needs CREATE on the database
    even when the schema exists, and a least-privilege role has CREATE on its schemas only."""
    lock_ddl(conn)  # two runs creating the same schema at once: even "if not exists" fails for one of them
    if not conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone():
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))


def ensure_insight_schema(conn: psycopg.Connection, schema: str) -> None:
    """Create the insight schema, the result cache and the runs table if they are missing."""
    lock_ddl(conn)
    conn.execute("create extension if not exists vector")
    ensure_schema(conn, schema)
    run_sql_files(conn, "insights", schema=schema)


def copy_rows(conn: psycopg.Connection, table: sql.Composable, columns: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` into ``table(columns)``; return how many rows went in."""
    count = 0
    statement = sql.SQL("copy {} ({}) from stdin").format(table, columns_sql(columns))
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def stream_query(conn: psycopg.Connection, query: sql.Composable | str, params: Any = None,
                 chunk_size: int = 1000) -> Iterator[list[tuple]]:
    """Yield the result of ``query`` in lists of at most ``chunk_size`` rows through a server-side cursor."""
    with conn.cursor(name=f"stream_{time.monotonic_ns()}") as cursor:
        cursor.itersize = chunk_size
        cursor.execute(query, params)
        while chunk := cursor.fetchmany(chunk_size):
            yield chunk


def table_columns(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """``{column: type}`` of a table or view in declaration order (empty when it does not exist)."""
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod)
        from pg_attribute as a
        join pg_class as c on c.oid = a.attrelid
        join pg_namespace as n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (schema, table),
    ).fetchall()
    return dict(rows)


def table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return bool(table_columns(conn, schema, table))


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("select exists (select from pg_namespace where nspname = %s)", (schema,)).fetchone()[0]


class Progress:
    """Logs rows done / total, rows/s and ETA of long work at a steady interval."""

    def __init__(self, what: str, total: int | None, interval_s: float = 10.0, logger: logging.Logger = log):
        self.what, self.total, self.interval_s, self.log = what, total, interval_s, logger
        self.done = 0
        self.started = self.last = time.monotonic()

    def add(self, rows: int, **extra: Any) -> None:
        self.done += rows
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            self._report(now, extra)

    def finish(self, **extra: Any) -> float:
        """Log the final line; return the elapsed seconds."""
        now = time.monotonic()
        self._report(now, extra)
        return now - self.started

    def _report(self, now: float, extra: dict[str, Any]) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        total = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total and rate > 0 and self.done < self.total:
            eta = f", ETA {(self.total - self.done) / rate:.0f}s"
        details = "".join(f", {k} {v}" for k, v in extra.items())
        self.log.info("%s: %d%s rows, %.0f rows/s%s%s", self.what, self.done, total, rate, eta, details)
