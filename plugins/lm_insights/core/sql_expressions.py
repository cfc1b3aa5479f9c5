"""SQL expressions every room shares: which column types are numbers, a value without NaN/Infinity, tiers."""

from __future__ import annotations

from psycopg import sql

from lm_insights.core.values import format_number
from lm_insights.spec import Segment, Tiers

NUMERIC_TYPES = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
UNKNOWN_SEGMENT = "unknown"


def is_numeric(type_name: str) -> bool:
    return type_name.split("(")[0] in NUMERIC_TYPES


def finite(column: sql.Composable) -> sql.Composable:
    """The column's value, or NULL where it is NaN or +-Infinity: statistics skip it as they skip a NULL."""
    return sql.SQL("(case when {c}::float8 in ('NaN', 'Infinity', '-Infinity') then null else {c} end)").format(
        c=column)


def tier_expression(tiers: Tiers) -> tuple[sql.Composable, sql.Composable]:
    """A CASE naming each row's tier ``[low, high)`` and one giving the tier's order."""
    column = finite(sql.Identifier(tiers.column))
    names, orders = [], []
    for i, (low, high) in enumerate(zip(tiers.edges, tiers.edges[1:])):
        condition = sql.SQL("when {c} >= {low} and {c} < {high} then ").format(
            c=column, low=sql.Literal(low), high=sql.Literal(high))
        names.append(condition + sql.Literal(f"[{format_number(low)}, {format_number(high)})"))
        orders.append(condition + sql.Literal(i))
    outside = f"outside [{format_number(tiers.edges[0])}, {format_number(tiers.edges[-1])})"
    name = sql.SQL("case when {c} is null then {unknown} {whens} else {outside} end").format(
        c=column, unknown=sql.Literal(UNKNOWN_SEGMENT), whens=sql.SQL(" ").join(names), outside=sql.Literal(outside))
    order = sql.SQL("case {whens} else {last} end").format(whens=sql.SQL(" ").join(orders),
                                                          last=sql.Literal(len(orders)))
    return name, order


def segment_expressions(segment: Segment) -> tuple[sql.Composable, sql.Composable]:
    """A spec segment's value and order expressions over a table of rows (staging or loaded ``rows``)."""
    if segment.by_tiers:
        return tier_expression(segment.by_tiers)
    if segment.by_column:
        return (sql.SQL("coalesce({}::text, {})").format(sql.Identifier(segment.by_column),
                                                        sql.Literal(UNKNOWN_SEGMENT)), sql.SQL("0"))
    return (sql.SQL("coalesce({}, {})").format(sql.Identifier(f"{segment.by_label}_label"),
                                               sql.Literal(UNKNOWN_SEGMENT)), sql.SQL("0"))
