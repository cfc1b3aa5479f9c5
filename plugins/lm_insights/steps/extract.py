"""Extract: copy exactly one partition of the source table into the staging table ``extracted``, streamed."""

from __future__ import annotations

import logging
import re

from psycopg import sql

from lm_insights.core.partition import Partition, staging_stem, staging_table
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec
from lm_insights.steps.staging import register_stem

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source table does not match the spec; the message names the pipeline and the field."""


# Built-in types a staging table takes as they are (format_type names without modifiers). Values travel as their
# text form, which each type's input function reads back exactly.
SUPPORTED_TYPES = frozenset({
    "smallint", "integer", "bigint", "numeric", "real", "double precision",
    "text", "character varying", "character", "name", "boolean", "uuid", "json", "jsonb",
    "date", "time without time zone", "time with time zone", "timestamp without time zone",
    "timestamp with time zone", "interval",
})


def _base_type(format_name: str) -> str:
    """``character varying(20)`` -> ``character varying``; ``timestamp(3) with time zone`` -> the same without (3)."""
    return re.sub(r"\(\d+(,\d+)?\)", "", format_name).strip()


def source_column_types(spec: PipelineSpec, source_conn) -> dict[str, str]:
    """The staging type of each spec source column, checked before any work.

    Supported built-in types (and arrays of them) stay as they are; enums (and arrays of them) become text, since
    the sink may be another database that lacks the type; a domain takes its base type. Raise
    :class:`SourceError` for a missing table or column or any other type, naming the column and the type.
    """
    found = source_types(source_conn, spec.source.schema_name, spec.source.table_name)
    if not found:
        raise SourceError(f"{spec.origin}: source.table {spec.source.table!r} does not exist in the source database")
    missing = [c for c in spec.source.columns if c not in found]
    if missing:
        raise SourceError(
            f"{spec.origin}: source.columns {missing} do not exist in {spec.source.table}; "
            f"it has {list(found)}"
        )
    types, refused = {}, []
    for column in spec.source.columns:
        shown, staged = found[column]
        if staged is None:
            refused.append(f"{column} ({shown})")
        else:
            types[column] = staged
    if refused:
        raise SourceError(
            f"{spec.origin}: source.columns of {spec.source.table} have types lm-insights does not extract: "
            f"{', '.join(refused)}. Supported: numbers, text, boolean, uuid, json, jsonb, dates and times, "
            "intervals, enums and arrays of these. Cast the column in a view (e.g. my_column::text) and point "
            "source.table at the view")
    return types


def source_types(conn, schema: str, table: str) -> dict[str, tuple[str, str | None]]:
    """``{column: (type as the source names it, staging type or None when unsupported)}`` in column order."""
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod),
               coalesce(format_type(nullif(t.typbasetype, 0), t.typtypmod), format_type(a.atttypid, a.atttypmod)),
               t.typtype = 'e' or (elem.typtype = 'e'), t.typcategory = 'A' or elem.oid is not null
        from pg_attribute as a
        join pg_class as c on c.oid = a.attrelid
        join pg_namespace as n on n.oid = c.relnamespace
        join pg_type as t on t.oid = a.atttypid
        left join pg_type as elem on elem.oid = t.typelem and t.typcategory = 'A'
        where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (schema, table),
    ).fetchall()
    result = {}
    for column, shown, resolved, is_enum, is_array in rows:
        if is_enum:
            staged = "text[]" if is_array else "text"
        elif _base_type(resolved.removesuffix("[]")) in SUPPORTED_TYPES:
            staged = resolved
        else:
            staged = None
        result[column] = (shown, staged)
    return result


def partition_query(spec: PipelineSpec) -> sql.Composed:
    """Rows of ``[start, end)`` ordered by the key, so ``_row_number`` is the same on every rerun.

    Rows that share a key (validation rejects them) are ordered by the row's text, which every type has (json has
    no ordering of its own).

    Every value is selected as text: COPY reads it back through the staging column's input function, so json,
    arrays and numbers arrive exactly, and no Python type stands between the two databases.
    """
    return sql.SQL(
        "select {columns} from {table} as t where {part} >= %(start)s and {part} < %(end)s order by {order}, row(t.*)::text"
    ).format(
        columns=sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in spec.source.columns),
        table=db.qualified(spec.source.schema_name, spec.source.table_name),
        part=sql.Identifier(spec.source.partition_column),
        order=sql.SQL(", ").join(sql.Identifier("t", k) for k in spec.source.key),
    )


def extract_partition(spec: PipelineSpec, source_conninfo: str, sink_conninfo: str, partition: Partition) -> int:
    """Replace staging ``extracted`` with the partition's rows; return how many were extracted."""
    target = staging_table(spec, partition, "extracted")
    with db.connect(source_conninfo) as source:  # refuse an unsupported column before anything is created
        types = source_column_types(spec, source)
    with db.connect(sink_conninfo) as sink:
        db.ensure_insight_schema(sink, spec.sink.schema_)
    register_stem(sink_conninfo, staging_stem(spec, partition), spec.name, partition.run_id)
    with db.connect(source_conninfo) as source, db.connect(sink_conninfo) as sink:
        # The text forms of dates, times and floats depend on these settings: make them the same on both sides.
        for conn in (source, sink):
            conn.execute("set time zone 'UTC'")
            conn.execute("set datestyle = 'ISO, YMD'")
            conn.execute("set intervalstyle = 'postgres'")
        source.execute("set extra_float_digits = 1")  # shortest text that reads back to the same float
        total = source.execute(
            sql.SQL("select count(*) from {} where {} >= %(start)s and {} < %(end)s").format(
                db.qualified(spec.source.schema_name, spec.source.table_name),
                sql.Identifier(spec.source.partition_column), sql.Identifier(spec.source.partition_column)),
            {"start": partition.start, "end": partition.end},
        ).fetchone()[0]
        sink.execute(sql.SQL("drop table if exists {}").format(target))
        column_defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in types.items()
        )
        sink.execute(sql.SQL("create table {} (_row_number bigint primary key, {})").format(target, column_defs))
        progress = db.Progress(f"{spec.name} extract {partition}", total, logger=log)
        row_number = 0
        with sink.cursor().copy(
            sql.SQL("copy {} (_row_number, {}) from stdin").format(target, db.columns_sql(spec.source.columns))
        ) as copy:
            params = {"start": partition.start, "end": partition.end}
            for chunk in db.stream_query(source, partition_query(spec), params, spec.lm.chunk_size):
                for row in chunk:
                    row_number += 1
                    copy.write_row((row_number, *row))
                progress.add(len(chunk))
        progress.finish()
    with db.connect(sink_conninfo, autocommit=True) as sink:  # statistics for the joins of the later steps
        sink.execute(sql.SQL("analyze {}").format(target))
    return row_number
