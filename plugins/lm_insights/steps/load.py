"""Load: replace the partition's rows of every insight table in one transaction, and record runs.

A failure anywhere inside the transaction rolls everything back: the previous state of the partition stays.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from psycopg import sql

from lm_insights.core.insight_tables import (insight_table, insight_tables, note_replaced, quarantine_table,
                                             replace_interval, widen_columns)
from lm_insights.core.partition import (STAGING_SCHEMA, Partition, replace_staging_table, staging_name, staging_stem,
                                        staging_table)
from lm_insights.guard.gates import Verdict, record_verdict
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

class MissingStaging(RuntimeError):
    """A step before load did not leave its staging table."""


def stage_rejects(spec: PipelineSpec, conn, partition: Partition) -> None:
    """Staging ``rejects_loaded``: each rejected row as JSON with the failed expectations and the reason."""
    replace_staging_table(conn, spec, partition, "rejects_loaded", sql.SQL(
        "as select %(partition_start)s::timestamptz as partition_start, r._row_number, "
        "{key_text} as row_key, to_jsonb(e) - '_row_number' as row, r.failed_expectations, r.reason "
        "from {rejects} as r join {extracted} as e using (_row_number) order by r._row_number"
    ).format(
        key_text=sql.SQL(" || ', ' || ").join(
            sql.SQL("{} || '=' || coalesce(e.{}::text, 'NULL')").format(sql.Literal(k), sql.Identifier(k))
            for k in spec.source.key),
        rejects=staging_table(spec, partition, "rejects"),
        extracted=staging_table(spec, partition, "extracted"),
    ), {"partition_start": partition.start})


def ensure_like(conn, table: sql.Identifier, schema: str, name: str, source: sql.Identifier,
                source_name: str) -> None:
    """Create ``table`` shaped like the staging ``source`` plus ``partition_end``; add columns a changed spec
    brings and widen columns whose source type grew."""
    staged = db.table_columns(conn, STAGING_SCHEMA, source_name)
    if not db.table_exists(conn, schema, name):
        conn.execute(sql.SQL("create table {} (like {})").format(table, source))
        conn.execute(sql.SQL("create index on {} (partition_start)").format(table))
    existing = db.table_columns(conn, schema, name)
    widen_columns(conn, table, existing, staged, f"{schema}.{name}")
    for column, type_name in {**staged, "partition_end": "timestamp with time zone"}.items():
        if column not in existing:
            conn.execute(sql.SQL("alter table {} add column {} {}").format(
                table, sql.Identifier(column), sql.SQL(type_name)))


def load_partition(spec: PipelineSpec, conninfo: str, partition: Partition, held: bool = False) -> dict[str, int]:
    """Replace the partition in every insight table; return rows loaded per table.

    ``held``: into the ``<pipeline>_quarantine_<table>`` tables instead, the published ones untouched. A published
    load drops what the quarantine held of its interval (it is outdated now).
    """
    loaded = {}
    prefix = "quarantine_" if held else ""
    with db.connect(conninfo) as conn:  # one transaction: commit at the end or roll back on any error
        conn.execute("set local time zone 'UTC'")  # a date partition column compares as midnight UTC
        db.lock_ddl(conn)
        note_replaced(spec, conn, partition, held)
        stage_rejects(spec, conn, partition)
        for suffix, step in insight_tables(spec).items():
            table, source = insight_table(spec, prefix + suffix), staging_table(spec, partition, step)
            source_name = staging_name(spec, partition, step)
            if not db.table_exists(conn, STAGING_SCHEMA, source_name):
                raise MissingStaging(f"{spec.name} {partition}: staging table {STAGING_SCHEMA}.{source_name} is "
                                     "missing; rerun the earlier tasks of this partition")
            ensure_like(conn, table, spec.sink.schema_, f"{spec.name}_{prefix}{suffix}", source, source_name)
            if not held and db.table_exists(conn, spec.sink.schema_, f"{spec.name}_quarantine_{suffix}"):
                replace_interval(spec, conn, suffix, quarantine_table(spec, suffix), partition)
            if suffix == "rows":  # replace_interval finds the rows by their partition column
                conn.execute(sql.SQL("create index if not exists {} on {} ({})").format(
                    sql.Identifier(f"{spec.name}_{prefix}rows_by_partition"), table,
                    sql.Identifier(spec.source.partition_column)))
                conn.execute(sql.SQL("create index if not exists {} on {} (text_sha256)").format(  # search by meaning
                    sql.Identifier(f"{spec.name}_{prefix}rows_by_text_sha256"), table))
            replace_interval(spec, conn, suffix, table, partition)
            staged = [c for c in db.table_columns(conn, STAGING_SCHEMA, source_name)
                      if c not in ("partition_start", "partition_end")]
            cursor = conn.execute(sql.SQL(
                "insert into {} (partition_start, partition_end, {cols}) select %s, %s, {cols} from {}"
            ).format(table, source, cols=db.columns_sql(staged)), (partition.start, partition.end))
            loaded[suffix] = cursor.rowcount
    log.info("%s %s %s %s", spec.name, partition, "held in quarantine" if held else "loaded", loaded)
    return loaded


def load_guarded(spec: PipelineSpec, conninfo: str, partition: Partition, run_id: str,
                 verdict: Verdict) -> dict[str, int]:
    """Record the checks, then load (``load``/``warn``), hold (``quarantine``) or refuse (``fail``) the partition."""
    record_verdict(spec, conninfo, partition, run_id, verdict)
    return load_partition(spec, conninfo, partition, held=verdict.action == "quarantine")


def drop_staging(spec: PipelineSpec, conninfo: str, partition: Partition) -> None:
    """Remove the run's staging tables (every step's, by the run's stem) once the run is recorded."""
    from lm_insights.steps.staging import drop_stem

    with db.connect(conninfo) as conn:
        drop_stem(conn, staging_stem(spec, partition))


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
    quality: dict | None = None  # per trained head: its measured figures on this partition (learn.quality)


def record_run(conninfo: str, schema: str, record: RunRecord) -> None:
    """Insert or update the run's row in ``<schema>.runs``."""
    values = {k: v for k, v in vars(record).items() if k != "partition"}
    values |= {"partition_start": record.partition.start, "partition_end": record.partition.end,
               "timings": json.dumps(record.timings),
               "quality": json.dumps(record.quality) if record.quality is not None else None}
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
