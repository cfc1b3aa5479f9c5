"""The life of staging tables: registered when a run creates its first one, dropped when the run ends (whatever
its end), and swept by the janitor when a run died before it could drop them.

Every staging table of one run shares a stem (``core.partition.staging_stem``); ``lm_staging.staging_runs`` holds
when each stem was first seen (PostgreSQL does not record when a table was created) and the DAG run that made it:
the janitor never drops the tables of a run that Airflow says is queued or running, however old.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable

from psycopg import sql

from lm_insights.core.partition import STAGING_SCHEMA, stem_of
from lm_insights.runtime import db

log = logging.getLogger(__name__)

REGISTRY = sql.Identifier(STAGING_SCHEMA, "staging_runs")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# The youngest tables the janitor may sweep: below it a slow step of a live run that Airflow cannot vouch for (a
# script run, a run registered before run ids were) could lose its tables.
MIN_AGE = dt.timedelta(hours=1)


def parse_age(text: str) -> dt.timedelta:
    """``30m``, ``12h``, ``1d``, ``2w`` as a timedelta; a ``ValueError`` that shows the format otherwise."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"age {text!r}: write a number and a unit s, m, h, d or w, e.g. 1d or 12h")
    return dt.timedelta(**{_AGE_UNITS[match.group(2)]: float(match.group(1))})


def ensure_registry(conn) -> None:
    """The staging schema and its registry of run stems (with the DAG run of each, where known)."""
    db.ensure_schema(conn, STAGING_SCHEMA)
    conn.execute(sql.SQL("create table if not exists {} (stem text primary key, "
                         "created_at timestamptz not null default now())").format(REGISTRY))
    conn.execute(sql.SQL("alter table {} add column if not exists dag_id text, "
                         "add column if not exists run_id text").format(REGISTRY))


def register_stem(conninfo: str, stem: str, dag_id: str, run_id: str | None) -> None:
    """Record that run ``run_id`` of DAG ``dag_id`` is about to create staging tables under ``stem`` (committed
    before it creates any)."""
    with db.connect(conninfo) as conn:
        ensure_registry(conn)
        conn.execute(sql.SQL("insert into {} (stem, dag_id, run_id) values (%s, %s, %s) on conflict (stem) do "
                             "update set created_at = now(), dag_id = excluded.dag_id, run_id = excluded.run_id"
                             ).format(REGISTRY), (stem, dag_id, run_id))


def staging_tables(conn) -> list[str]:
    """Names of every staging table (the registry excluded)."""
    rows = conn.execute("select tablename from pg_tables where schemaname = %s and tablename like '%%\\_\\_%%' "
                        "order by tablename", (STAGING_SCHEMA,)).fetchall()
    return [name for (name,) in rows]


def drop_stem(conn, stem: str) -> list[str]:
    """Drop every staging table of one run stem and its registry row; return the tables dropped."""
    dropped = [name for name in staging_tables(conn) if stem_of(name) == stem]
    for name in dropped:
        conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(STAGING_SCHEMA, name)))
    if db.table_exists(conn, STAGING_SCHEMA, "staging_runs"):
        conn.execute(sql.SQL("delete from {} where stem = %s").format(REGISTRY), (stem,))
    return dropped


def clean_staging(conninfo: str, older_than: dt.timedelta, is_running: Callable[[str, str], bool]) -> list[str]:
    """Drop the staging tables of runs that started more than ``older_than`` (at least :data:`MIN_AGE`) ago and
    that Airflow does not call queued or running (``is_running(dag_id, run_id)``); return their names.

    A table whose stem is not registered (left by a version without the registry) is registered now, so it goes
    one ``older_than`` later.
    """
    if older_than < MIN_AGE:
        raise ValueError(f"older_than {older_than}: staging tables younger than {MIN_AGE} may belong to a run that "
                         "is still working; give 1h or more")
    dropped: list[str] = []
    with db.connect(conninfo) as conn:
        if not db.schema_exists(conn, STAGING_SCHEMA):
            return dropped
        ensure_registry(conn)
        stems = sorted({stem_of(name) for name in staging_tables(conn)})
        conn.execute(sql.SQL("insert into {} (stem) select unnest(%s::text[]) on conflict do nothing")
                     .format(REGISTRY), (stems,))
        old = conn.execute(sql.SQL("select stem, dag_id, run_id from {} where created_at < now() - %s "
                                   "order by stem").format(REGISTRY), (older_than,)).fetchall()
        for stem, dag_id, run_id in old:
            if dag_id and run_id and is_running(dag_id, run_id):
                log.info("staging janitor: keeping %s, run %s of %s is still running", stem, run_id, dag_id)
                continue
            dropped += drop_stem(conn, stem)
    log.info("staging janitor: dropped %d tables older than %s: %s", len(dropped), older_than, dropped)
    return dropped
