"""Extract: copy exactly one partition of the source table into the staging table ``extracted``, streamed."""

from __future__ import annotations

import logging

from psycopg import sql

from lm_insights.runtime import db
from lm_insights.steps.partition import STAGING_SCHEMA, Partition, staging_table
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source table does not match the spec; the message names the pipeline and the field."""


def source_column_types(spec: PipelineSpec, source_conn) -> dict[str, str]:
    """Types of the spec's source columns; raise :class:`SourceError` for a missing table or column."""
    found = db.table_columns(source_conn, spec.source.schema_name, spec.source.table_name)
    if not found:
        raise SourceError(f"{spec.origin}: source.table {spec.source.table!r} does not exist in the source database")
    missing = [c for c in spec.source.columns if c not in found]
    if missing:
        raise SourceError(
            f"{spec.origin}: source.columns {missing} do not exist in {spec.source.table}; "
            f"it has {list(found)}"
        )
    return {c: found[c] for c in spec.source.columns}


def partition_query(spec: PipelineSpec) -> sql.Composed:
    """Rows of ``[start, end)`` in a stable order, so ``_row_number`` is the same on every rerun."""
    columns = spec.source.columns
    order = [*spec.source.key, *(c for c in columns if c not in spec.source.key)]
    return sql.SQL(
        "select {columns} from {table} where {part} >= %(start)s and {part} < %(end)s order by {order}"
    ).format(
        columns=db.columns_sql(columns),
        table=db.qualified(spec.source.schema_name, spec.source.table_name),
        part=sql.Identifier(spec.source.partition_column),
        order=db.columns_sql(order),
    )


def extract_partition(spec: PipelineSpec, source_conninfo: str, sink_conninfo: str, partition: Partition) -> int:
    """Replace staging ``extracted`` with the partition's rows; return how many were extracted."""
    target = staging_table(spec, partition, "extracted")
    with db.connect(sink_conninfo) as sink:
        db.ensure_insight_schema(sink, spec.sink.schema_)
        db.ensure_schema(sink, STAGING_SCHEMA)
    with db.connect(source_conninfo) as source, db.connect(sink_conninfo) as sink:
        source.execute("set time zone 'UTC'")
        types = source_column_types(spec, source)
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
