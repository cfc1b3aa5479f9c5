"""A run's partition (its data interval) and the names of the staging tables that carry it between tasks."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from psycopg import sql

from lm_insights.spec import PipelineSpec

STAGING_SCHEMA = "lm_staging"


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

    @property
    def tag(self) -> str:
        """Short, sortable name used in staging table names."""
        if self.start.time() == dt.time(0) and self.end - self.start == dt.timedelta(days=1):
            return self.start.strftime("%Y%m%d")
        return f"{self.start:%Y%m%dT%H%M}_{self.end:%Y%m%dT%H%M}"

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def staging_name(spec: PipelineSpec, partition: Partition, step: str) -> str:
    """``<pipeline>__<partition tag>[_<run hash>]__<step>``: one staging table per pipeline, partition, run and step.

    A tag that would make the name longer than PostgreSQL's 63 characters is replaced by its hash.
    """
    tag = partition.tag
    if partition.run_id:
        tag += "_" + hashlib.sha256(partition.run_id.encode()).hexdigest()[:6]
    name = f"{spec.name}__{tag}__{step}"
    if len(name) > 63:
        name = f"{spec.name}__{hashlib.sha256(tag.encode()).hexdigest()[:12]}__{step}"
    return name


def staging_table(spec: PipelineSpec, partition: Partition, step: str) -> sql.Identifier:
    """The staging table ``lm_staging."<pipeline>__<partition tag>__<step>"``."""
    return sql.Identifier(STAGING_SCHEMA, staging_name(spec, partition, step))
