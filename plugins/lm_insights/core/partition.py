"""A run's partition (its data interval) and the names of the staging tables that carry it between tasks."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

STAGING_SCHEMA = "lm_staging"
MAX_STEP_LENGTH = 16  # the longest step name a staging table may end in ("rejects_loaded" is 14)
# Lowercase only: Great Expectations (SQLAlchemy) folds an unquoted name to lower case, so a name with an upper-case
# letter would be a different table to it than to our quoted SQL.
_STAGING_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class Partition:
    """Rows whose partition column lies in ``[start, end)``."""

    start: dt.datetime
    end: dt.datetime
    # The run working on it: two runs of one partition at once (a manual trigger during a backfill) then get
    # staging tables of their own; the load's transaction decides which one's result the partition keeps.
    run_id: str | None = None

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty partition: end {self.end} is not after start {self.start}")

    @classmethod
    def day(cls, day: dt.date | str) -> Partition:
        """The partition of one calendar day (UTC)."""
        day = dt.date.fromisoformat(day) if isinstance(day, str) else day
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        return cls(start, start + dt.timedelta(days=1))

    @classmethod
    def days(cls, first: dt.date | str, last: dt.date | str) -> Partition:
        """The days ``first`` .. ``last`` (inclusive, UTC) as one partition."""
        return cls(cls.day(first).start, cls.day(last).end)

    @property
    def is_one_day(self) -> bool:
        return self.start.time() == dt.time(0) and self.end - self.start == dt.timedelta(days=1)

    @property
    def tag(self) -> str:
        """Short, sortable, lowercase name used in staging table names."""
        if self.is_one_day:
            return self.start.strftime("%Y%m%d")
        return f"{self.start:%Y%m%dt%H%M}_{self.end:%Y%m%dt%H%M}"

    def describe(self) -> str:
        """For people: ``2026-11-01``, ``2026-11-01 to 2026-11-03`` (whole days, inclusive), else the interval."""
        whole_days = self.start.time() == dt.time(0) == self.end.time() and self.start.tzinfo == dt.timezone.utc
        if self.is_one_day:
            return self.start.date().isoformat()
        if whole_days:
            return f"{self.start.date().isoformat()} to {(self.end - dt.timedelta(days=1)).date().isoformat()}"
        return str(self)

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def staging_stem(spec: PipelineSpec, partition: Partition) -> str:
    """``<pipeline>__<partition tag>[_<run hash>]``: the prefix every staging table of one run shares.

    A tag that would make a staging name longer than PostgreSQL's 63 characters is replaced by its hash; the choice
    is made for the longest step name, so all tables of a run keep one stem (the janitor groups them by it).
    """
    tag = partition.tag
    if partition.run_id:
        tag += "_" + hashlib.sha256(partition.run_id.encode()).hexdigest()[:6]
    if len(spec.name) + 2 + len(tag) + 2 + MAX_STEP_LENGTH > 63:
        tag = hashlib.sha256(tag.encode()).hexdigest()[:12]
    return f"{spec.name}__{tag}"


def staging_name(spec: PipelineSpec, partition: Partition, step: str) -> str:
    """``<stem>__<step>``: one staging table per pipeline, partition, run and step; lowercase, unquoted-safe."""
    if len(step) > MAX_STEP_LENGTH or "__" in step:
        raise ValueError(f"staging step {step!r}: at most {MAX_STEP_LENGTH} characters, no '__'")
    name = f"{staging_stem(spec, partition)}__{step}"
    if not _STAGING_NAME.match(name):  # spec names are lowercase identifiers; this guards the tag and step
        raise ValueError(f"staging table name {name!r} is not lowercase letters, digits and '_'")
    return name


def stem_of(staging_table_name: str) -> str:
    """The run stem of a staging table name (everything before its last ``__``)."""
    return staging_table_name.rsplit("__", 1)[0]


def staging_table(spec: PipelineSpec, partition: Partition, step: str) -> sql.Identifier:
    """The staging table ``lm_staging.<pipeline>__<partition tag>__<step>``, quoted."""
    return sql.Identifier(STAGING_SCHEMA, staging_name(spec, partition, step))


def replace_staging_table(conn, spec: PipelineSpec, partition: Partition, step: str, definition: sql.Composable,
                          params: dict | None = None, columns: Sequence[str] = (),
                          rows: Iterable[Sequence[Any]] = ()) -> sql.Identifier:
    """Drop the partition's staging table ``step``, create it anew and copy ``rows`` into its ``columns``.

    :param definition: what follows ``create table <name>``: a column list (``(a integer, b text)``) or a query
        (``as select ...``, with ``params`` bound).
    :returns: the table, quoted.
    """
    table = staging_table(spec, partition, step)
    conn.execute(sql.SQL("drop table if exists {}").format(table))
    conn.execute(sql.SQL("create table {} ").format(table) + definition, params)
    if columns:
        db.copy_rows(conn, table, columns, rows)
    return table
