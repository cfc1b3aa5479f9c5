"""Textualize: each valid row becomes one text through the spec's versioned template.

The default template is TabLLM's list serialisation ("The price is 100."). Values are cleaned the same way for
every template: HTML entities decoded, whitespace collapsed, numbers exact without trailing zeros or exponent,
NULL and NaN as "unknown".
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

from psycopg import sql

from lm_insights.core.partition import Partition, staging_table
from lm_insights.core.values import format_value, text_sha256
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec, TemplateError, parse_template

log = logging.getLogger(__name__)


def format_placeholder(value: object, format_spec: str) -> str:
    """``{price}`` writes the value with :func:`format_value`; ``{price:.2f}`` formats the raw value; NULL reads
    "unknown" either way."""
    if value is None or not format_spec:
        return format_value(value)
    return format(value, format_spec)


def render_template(template: str, row: dict[str, object], row_key: str = "") -> str:
    """``template`` filled from ``row`` (column -> value) by :func:`lm_insights.spec.parse_template`'s pieces:
    only whole values are read, never an attribute or an item of one."""
    parts = []
    for literal, column, format_spec in parse_template(template):
        if column is None:
            parts.append(literal)
            continue
        value = row.get(column)
        try:
            parts.append(format_placeholder(value, format_spec))
        except (ValueError, TypeError) as exc:
            raise TemplateError(f"text.template: {{{column}:{format_spec}}} cannot format {type(value).__name__} "
                                f"value {str(value)[:40]!r} of {row_key or 'a row'} ({exc}); change the format spec "
                                "or the column's type") from None
    return "".join(parts)


def column_phrase(column: str) -> str:
    return column.replace("_", " ")


def render(spec: PipelineSpec, row: dict[str, object]) -> str:
    """The text of one row (``row`` maps column names to values)."""
    if spec.text.template:
        key = ", ".join(f"{k}={row.get(k)}" for k in spec.source.key)
        return render_template(spec.text.template, {c: row.get(c) for c in spec.source.columns},
                               f"{spec.origin} row {key}")
    return " ".join(f"The {column_phrase(c)} is {format_value(row[c])}." for c in spec.text.columns)


def valid_rows_query(spec: PipelineSpec, partition: Partition, columns: list[str]) -> sql.Composed:
    """The partition's extracted rows that validation did not reject, by ``_row_number``."""
    return sql.SQL(
        "select e._row_number, {columns} from {extracted} as e "
        "where not exists (select from {rejects} as r where r._row_number = e._row_number) "
        "order by e._row_number"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier("e", c) for c in columns),
        extracted=staging_table(spec, partition, "extracted"),
        rejects=staging_table(spec, partition, "rejects"),
    )


def occluded_texts(spec: PipelineSpec, row: dict[str, object]) -> list[tuple[str, str]]:
    """``(field, text)`` for each text column: the row's text with that column's value missing."""
    return [(column, render(spec, row | {column: None})) for column in spec.text.columns]


def textualize_partition(spec: PipelineSpec, conninfo: str, partition: Partition) -> int:
    """Replace staging ``texts`` (``_row_number, text, text_sha256``) for the valid rows; return the row count.

    With ``lm.attributions`` it also fills staging ``occlusions`` (``_row_number, field, text, text_sha256``).
    """
    texts = staging_table(spec, partition, "texts")
    occlusions = staging_table(spec, partition, "occlusions")
    columns = spec.source.columns
    count = 0
    with db.connect(conninfo) as read, db.connect(conninfo) as write, db.connect(conninfo) as write_occluded:
        write.execute(sql.SQL("drop table if exists {}").format(texts))
        write.execute(sql.SQL(
            "create table {} (_row_number bigint primary key, text text not null, text_sha256 text not null)"
        ).format(texts))
        write_occluded.execute(sql.SQL("drop table if exists {}").format(occlusions))
        if spec.lm.attributions:
            write_occluded.execute(sql.SQL(
                "create table {} (_row_number bigint not null, field text not null, text text not null, "
                "text_sha256 text not null, primary key (_row_number, field))").format(occlusions))
        progress = db.Progress(f"{spec.name} textualize {partition}", None, logger=log)
        with (write.cursor().copy(sql.SQL("copy {} from stdin").format(texts)) as copy,
              write_occluded.cursor().copy(sql.SQL("copy {} from stdin").format(occlusions))
              if spec.lm.attributions else nullcontext() as copy_occluded):
            for chunk in db.stream_query(read, valid_rows_query(spec, partition, columns), None, spec.lm.chunk_size):
                for row_number, *values in chunk:
                    row = dict(zip(columns, values))
                    text = render(spec, row)
                    copy.write_row((row_number, text, text_sha256(text)))
                    if copy_occluded:
                        for field, occluded in occluded_texts(spec, row):
                            copy_occluded.write_row((row_number, field, occluded, text_sha256(occluded)))
                count += len(chunk)
                progress.add(len(chunk))
        write.execute(sql.SQL("create index on {} (text_sha256)").format(texts))
        progress.finish()
    with db.connect(conninfo, autocommit=True) as conn:  # fresh tables have no statistics: plan joins on real ones
        conn.execute(sql.SQL("analyze {}").format(texts))
        if spec.lm.attributions:
            conn.execute(sql.SQL("analyze {}").format(occlusions))
    return count
