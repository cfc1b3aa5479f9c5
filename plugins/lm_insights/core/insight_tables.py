"""The insight tables of a pipeline: their names, the quarantine that holds a partition, what a run's interval
replaces in each, and how a column widens when its source type grows. Shared by the load and the guard's release."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from psycopg import sql

from lm_insights.core.partition import Partition
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

# Insight table suffix -> staging step it is loaded from.
INSIGHT_TABLES = {"rows": "rows", "segments": "segments", "drivers": "drivers", "summaries": "summary",
                  "rejects": "rejects_loaded", "rules": "rules",
                  "clusters": "clusters", "explanations": "explanations", "findings": "findings"}
# One row per source row: a run replaces the rows whose own partition-column value lies in its interval. Every other
# insight table is an aggregate of a partition: a run replaces its interval's aggregates and drops those of every
# interval that overlaps it, since they describe rows that this run has just replaced.
ROW_TABLES = ("rows", "rejects")
# Every table a held partition may have rows in (``quality``: specs with trained heads).
HELD_TABLES = (*INSIGHT_TABLES, "quality")


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
