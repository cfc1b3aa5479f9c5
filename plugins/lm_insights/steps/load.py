"""Load: replace the partition's rows of every insight table in one transaction, and record runs.

A failure anywhere inside the transaction rolls everything back: the previous state of the partition stays.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import sql

from lm_insights.core.partition import STAGING_SCHEMA, Partition, staging_name, staging_stem, staging_table
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

# Insight table suffix -> staging step it is loaded from.
INSIGHT_TABLES = {"rows": "rows", "segments": "segments", "drivers": "drivers", "summaries": "summary",
                  "rejects": "rejects_loaded", "rules": "rules",
                  "clusters": "clusters", "explanations": "explanations"}
# One row per source row: a run replaces the rows whose own partition-column value lies in its interval. Every other
# insight table is an aggregate of a partition: a run replaces its interval's aggregates and drops those of every
# interval that overlaps it, since they describe rows that this run has just replaced.
ROW_TABLES = ("rows", "rejects")
# Every table a held partition may have rows in (``quality``: specs with trained heads).
HELD_TABLES = (*INSIGHT_TABLES, "quality")


class MissingStaging(RuntimeError):
    """A step before load did not leave its staging table."""


class IncompatibleColumnType(ValueError):
    """A source column's type changed to one the insight table's column cannot hold (do not retry)."""


def insight_tables(spec: PipelineSpec) -> dict[str, str]:
    """Insight table suffix -> staging step, with ``quality`` for a spec with trained heads."""
    return INSIGHT_TABLES | ({"quality": "quality"} if spec.lm.heads else {})


def insight_table(spec: PipelineSpec, suffix: str) -> sql.Identifier:
    return db.qualified(spec.sink.schema_, f"{spec.name}_{suffix}")


def quarantine_table(spec: PipelineSpec, suffix: str) -> sql.Identifier:
    """Where a partition held by a drift gate waits for release (lm_insights.guard.gates.release)."""
    return insight_table(spec, f"quarantine_{suffix}")


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


# ---------------------------------------------------------------------------------------------- column types

_INTEGER_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
_LENGTH = re.compile(r"^(character varying|character|bit varying)\((\d+)\)$")
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")


def holds(wide: str, narrow: str) -> bool:
    """Whether every value of type ``narrow`` fits a column of type ``wide`` unchanged (``format_type`` names)."""
    if wide == narrow:
        return True
    if wide.endswith("[]") and narrow.endswith("[]"):
        return holds(wide[:-2], narrow[:-2])
    text_like = ("text", "character varying")
    if wide in text_like:
        return narrow in text_like or bool(_LENGTH.match(narrow)) and not narrow.startswith("bit")
    wide_length, narrow_length = _LENGTH.match(wide), _LENGTH.match(narrow)
    if wide_length and narrow_length:
        same_kind = wide_length.group(1) == narrow_length.group(1) or (
            wide_length.group(1) == "character varying" and narrow_length.group(1) == "character")
        return same_kind and int(narrow_length.group(2)) <= int(wide_length.group(2))
    if narrow in _INTEGER_DIGITS:
        if wide in _INTEGER_DIGITS:
            return _INTEGER_DIGITS[narrow] <= _INTEGER_DIGITS[wide]
        if wide == "numeric":
            return True
        if wide == "double precision":
            return narrow != "bigint"  # a float8 holds integers exactly up to 2**53
        if match := _NUMERIC.match(wide):
            return int(match.group(1)) - int(match.group(2)) >= _INTEGER_DIGITS[narrow]
    if wide == "double precision" and narrow == "real":
        return True
    if wide == "numeric" and _NUMERIC.match(narrow):
        return True
    wide_numeric, narrow_numeric = _NUMERIC.match(wide), _NUMERIC.match(narrow)
    if wide_numeric and narrow_numeric:
        (wp, ws), (np_, ns) = map(int, wide_numeric.groups()), map(int, narrow_numeric.groups())
        return ns <= ws and np_ - ns <= wp - ws
    return False


def widen_columns(conn, table: sql.Identifier, existing: dict[str, str], staged: dict[str, str],
                  table_name: str) -> None:
    """Widen insight-table columns to a wider staged type (``varchar(20)`` -> ``varchar(50)``); refuse a change
    that would lose values, naming the column and how to migrate."""
    for column, new_type in staged.items():
        old_type = existing.get(column)
        if old_type is None or holds(old_type, new_type):
            continue
        if not holds(new_type, old_type):
            raise IncompatibleColumnType(
                f"{table_name}.{column} is {old_type}, but the source now gives {new_type}, which it cannot hold. "
                f"Migrate it once: alter table {table_name} alter column \"{column}\" type {new_type} "
                f"using \"{column}\"::{new_type}; (or rename the table to start it afresh), then rerun")
        log.info("%s: widening column %s from %s to %s", table_name, column, old_type, new_type)
        conn.execute(sql.SQL("alter table {} alter column {} type {}").format(
            table, sql.Identifier(column), sql.SQL(new_type)))


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


def replace_interval(spec: PipelineSpec, conn, suffix: str, table: sql.Identifier, partition: Partition,
                     keep: Sequence[Partition] = ()) -> int:
    """Delete what the run's interval replaces in one insight table; return how many rows went. ``keep``: intervals
    inside it whose rows and aggregates stay (a later run published them; see :func:`replaced_within`)."""
    interval = {"start": partition.start, "end": partition.end,
                "keep_start": [k.start for k in keep], "keep_end": [k.end for k in keep]}
    end = sql.SQL("coalesce(partition_end, partition_start + interval '1 day')")  # older tables lack partition_end
    if suffix in ROW_TABLES:  # the rows' own partition-column values, whichever run loaded them
        value = (sql.Identifier(spec.source.partition_column) if suffix == "rows" else
                 sql.SQL("(row ->> {})::timestamptz").format(sql.Literal(spec.source.partition_column)))
        where = sql.SQL("{v} >= %(start)s and {v} < %(end)s").format(v=value)
        kept = sql.SQL("{v} >= k.start and {v} < k.end").format(v=value)
    else:  # aggregates of this interval and of every interval overlapping it
        where = sql.SQL("partition_start < %(end)s and {end} > %(start)s").format(end=end)
        kept = sql.SQL("partition_start >= k.start and {end} <= k.end").format(end=end)
        if suffix == "quality":  # the heads' rows; the guard's check rows (head NULL) are its own to replace
            where += sql.SQL(" and head is not null")
    if keep:
        where += sql.SQL(" and not exists (select from unnest(%(keep_start)s::timestamptz[], "
                         "%(keep_end)s::timestamptz[]) as k (start, \"end\") where {})").format(kept)
    return conn.execute(sql.SQL("delete from {} where ").format(table) + where, interval).rowcount


def held_intervals(conn, spec: PipelineSpec, start, end, within: bool = False) -> list[Partition]:
    """The held partitions (in ``<pipeline>_quarantine_<table>``) that overlap ``[start, end)``, or with
    ``within``, that lie inside it."""
    where = sql.SQL("partition_start >= %(start)s and partition_end <= %(end)s" if within else
                    "partition_start < %(end)s and partition_end > %(start)s")
    found = set()
    for suffix in HELD_TABLES:
        if db.table_exists(conn, spec.sink.schema_, f"{spec.name}_quarantine_{suffix}"):
            found |= set(conn.execute(sql.SQL("select distinct partition_start, partition_end from {} where ").format(
                quarantine_table(spec, suffix)) + where, {"start": start, "end": end}))
    return [Partition(s, e) for s, e in sorted(found)]


def note_replaced(spec: PipelineSpec, conn, partition: Partition, held: bool) -> None:
    """Before a load of ``partition`` trims the quarantine: record, for every held partition it overlaps, the part
    it replaces, so that releasing that older hold leaves what this load puts there. A new hold of the very same
    interval replaces the old one whole: its records go."""
    holds = held_intervals(conn, spec, partition.start, partition.end)
    if not holds:
        return
    db.ensure_insight_schema(conn, spec.sink.schema_)
    replaced = db.qualified(spec.sink.schema_, "quarantine_replaced")
    if held:
        forget_replaced(spec, conn, partition)
    db.copy_rows(conn, replaced, ("pipeline", "held_start", "held_end", "replaced_start", "replaced_end", "run_id"), (
        (spec.name, hold.start, hold.end, max(hold.start, partition.start), min(hold.end, partition.end),
         partition.run_id) for hold in holds if not (held and hold == partition)))


def replaced_within(spec: PipelineSpec, conn, hold: Partition) -> list[Partition]:
    """The intervals of a held partition that later loads replaced (:func:`note_replaced`)."""
    if not db.table_exists(conn, spec.sink.schema_, "quarantine_replaced"):
        return []
    return [Partition(s, e) for s, e in conn.execute(sql.SQL(
        "select distinct replaced_start, replaced_end from {} where pipeline = %s and held_start = %s "
        "and held_end = %s order by 1, 2").format(db.qualified(spec.sink.schema_, "quarantine_replaced")),
        (spec.name, hold.start, hold.end))]


def forget_replaced(spec: PipelineSpec, conn, hold: Partition) -> None:
    """Drop the records of a held partition that is released or held anew."""
    if db.table_exists(conn, spec.sink.schema_, "quarantine_replaced"):
        conn.execute(sql.SQL("delete from {} where pipeline = %s and held_start = %s and held_end = %s").format(
            db.qualified(spec.sink.schema_, "quarantine_replaced")), (spec.name, hold.start, hold.end))


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
