"""Load: replace the partition's rows of every insight table in one transaction, and record runs.

A failure anywhere inside the transaction rolls everything back: the previous state of the partition stays.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from psycopg import sql

from lm_insights.runtime import db
from lm_insights.steps.partition import STAGING_SCHEMA, Partition, staging_name, staging_table
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

# Insight table suffix -> staging step it is loaded from.
INSIGHT_TABLES = {"rows": "rows", "segments": "segments", "drivers": "drivers", "summaries": "summary",
                  "rejects": "rejects_loaded"}
STAGING_STEPS = ("extracted", "pending", "rejects", "texts", "occlusions", "attributions", "rows", "segments",
                 "drivers", "summary", "rejects_loaded")


class MissingStaging(RuntimeError):
    """A step before load did not leave its staging table."""


def insight_table(spec: PipelineSpec, suffix: str) -> sql.Identifier:
    return db.qualified(spec.sink.schema_, f"{spec.name}_{suffix}")


def stage_rejects(spec: PipelineSpec, conn, partition: Partition) -> None:
    """Staging ``rejects_loaded``: each rejected row as JSON with the failed expectations and the reason."""
    target = staging_table(spec, partition, "rejects_loaded")
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    conn.execute(sql.SQL(
        "create table {target} as select %(partition_start)s::timestamptz as partition_start, r._row_number, "
        "{key_text} as row_key, to_jsonb(e) - '_row_number' as row, r.failed_expectations, r.reason "
        "from {rejects} as r join {extracted} as e using (_row_number) order by r._row_number"
    ).format(
        target=target,
        key_text=sql.SQL(" || ', ' || ").join(
            sql.SQL("{} || '=' || coalesce(e.{}::text, 'NULL')").format(sql.Literal(k), sql.Identifier(k))
            for k in spec.source.key),
        rejects=staging_table(spec, partition, "rejects"),
        extracted=staging_table(spec, partition, "extracted"),
    ), {"partition_start": partition.start})


def ensure_like(conn, table: sql.Identifier, schema: str, name: str, source: sql.Identifier,
                source_name: str) -> None:
    """Create ``table`` shaped like the staging ``source``; add columns a changed spec brings."""
    if not db.table_exists(conn, schema, name):
        conn.execute(sql.SQL("create table {} (like {})").format(table, source))
        conn.execute(sql.SQL("create index on {} (partition_start)").format(table))
        return
    existing = db.table_columns(conn, schema, name)
    for column, type_name in db.table_columns(conn, STAGING_SCHEMA, source_name).items():
        if column not in existing:
            conn.execute(sql.SQL("alter table {} add column {} {}").format(
                table, sql.Identifier(column), sql.SQL(type_name)))


def load_partition(spec: PipelineSpec, conninfo: str, partition: Partition) -> dict[str, int]:
    """Replace the partition in every insight table; return rows loaded per table."""
    loaded = {}
    with db.connect(conninfo) as conn:  # one transaction: commit at the end or roll back on any error
        db.lock_ddl(conn)
        stage_rejects(spec, conn, partition)
        for suffix, step in INSIGHT_TABLES.items():
            table, source = insight_table(spec, suffix), staging_table(spec, partition, step)
            source_name = staging_name(spec, partition, step)
            if not db.table_exists(conn, STAGING_SCHEMA, source_name):
                raise MissingStaging(f"{spec.name} {partition}: staging table {STAGING_SCHEMA}.{source_name} is "
                                     "missing; rerun the earlier tasks of this partition")
            ensure_like(conn, table, spec.sink.schema_, f"{spec.name}_{suffix}", source, source_name)
            conn.execute(sql.SQL("delete from {} where partition_start = %s").format(table), (partition.start,))
            columns = db.columns_sql(list(db.table_columns(conn, STAGING_SCHEMA, source_name)))
            cursor = conn.execute(sql.SQL("insert into {} ({cols}) select {cols} from {}").format(
                table, source, cols=columns))
            loaded[suffix] = cursor.rowcount
    log.info("%s %s loaded %s", spec.name, partition, loaded)
    return loaded


def drop_staging(spec: PipelineSpec, conninfo: str, partition: Partition) -> None:
    """Remove the partition's staging tables once the run is recorded."""
    with db.connect(conninfo) as conn:
        for step in STAGING_STEPS:
            conn.execute(sql.SQL("drop table if exists {}").format(staging_table(spec, partition, step)))


@dataclass
class RunRecord:
    run_id: str
    pipeline: str
    partition: Partition
    status: str
    extracted: int | None = None
    rejected: int | None = None
    cached: int | None = None
    computed: int | None = None
    loaded: int | None = None
    model_key: str | None = None
    template_version: str | None = None
    head_version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    message: str | None = None


def record_run(conninfo: str, schema: str, record: RunRecord) -> None:
    """Insert or update the run's row in ``<schema>.runs``."""
    values = {k: v for k, v in vars(record).items() if k != "partition"}
    values |= {"partition_start": record.partition.start, "partition_end": record.partition.end,
               "timings": json.dumps(record.timings)}
    columns = list(values)
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, schema)
        conn.execute(sql.SQL(
            "insert into {runs} ({cols}) values ({vals}) on conflict (pipeline, run_id) do update set ({cols}) = ({excluded}), "
            "recorded_at = now()"
        ).format(
            runs=db.qualified(schema, "runs"), cols=db.columns_sql(columns),
            vals=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
            excluded=sql.SQL(", ").join(sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in columns),
        ), values)
