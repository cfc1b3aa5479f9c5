"""Preflight: the checks a spec can only pass against the live source table, run when a run plans its partition.

Everything else is checked when the spec loads (:mod:`lm_insights.spec`); what is left needs the column types:
metric, target and tier columns must be numeric, and the text template must render a value of each column's type.
A failure raises :class:`~lm_insights.spec.SpecError` before any row is extracted or any model is loaded.
"""

from __future__ import annotations

import datetime as dt
import decimal

from lm_insights.core.sql_expressions import NUMERIC_TYPES, is_numeric
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec, SpecError
from lm_insights.steps.extract import source_column_types
from lm_insights.steps.textualize import render


def sample_value(type_name: str) -> object:
    """A value of a PostgreSQL type as psycopg returns it, to render the template with."""
    base = type_name.split("(")[0]
    samples = {"smallint": 12, "integer": 1234, "bigint": 1234, "numeric": decimal.Decimal("1234.5"),
               "real": 1234.5, "double precision": 1234.5, "boolean": True, "date": dt.date(2026, 11, 1),
               "timestamp without time zone": dt.datetime(2026, 11, 1, 12, 30),
               "timestamp with time zone": dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.timezone.utc)}
    return samples.get(base, "text")


def numeric_columns(spec: PipelineSpec) -> list[tuple[str, str]]:
    """``(field path, column)`` of every column the insights compute with."""
    fields = [(f"insights.metrics[{i}]", c) for i, c in enumerate(spec.insights.metrics)]
    if spec.insights.target:
        fields.append(("insights.target", spec.insights.target))
    fields += [(f"insights.segments[{i}].by_tiers.column", s.by_tiers.column)
               for i, s in enumerate(spec.insights.segments) if s.by_tiers]
    return fields


def check_source(spec: PipelineSpec, source_conninfo: str) -> dict[str, str]:
    """Check the spec against the live source table; return ``{column: type}``."""
    with db.connect(source_conninfo) as conn:
        types = source_column_types(spec, conn)
    for field, column in numeric_columns(spec):
        if not is_numeric(types[column]):
            raise SpecError(
                f"{spec.origin}: {field}: column {column!r} of {spec.source.table} is {types[column]}, not a number "
                f"({', '.join(NUMERIC_TYPES)}); cast it in a view, e.g. select {column}::numeric as {column}")
    if spec.text.template:
        try:
            render(spec, {c: sample_value(t) for c, t in types.items()})
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            shown = ", ".join(f"{c} {t}" for c, t in types.items() if c in spec.text.template)
            raise SpecError(f"{spec.origin}: text.template: cannot render the columns' types ({shown}): {exc}; "
                            "a format spec must fit the column's type") from None
    return types
