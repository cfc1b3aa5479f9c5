"""Validate step: run a spec's Great Expectations suites on a partition's ``extracted`` staging table.

Row-level expectations (``expectations.rows``) never fail the run: every row they flag goes to the staging
``rejects`` table (``_row_number``, ``failed_expectations``, ``reason``), one row per rejected row. Table-level
expectations (``expectations.table``) run on the rows that survive the row-level checks; if one fails the step
raises :class:`TableExpectationsFailed` (the Airflow layer fails the run without retry).

Everything runs inside PostgreSQL through a GE SQL datasource, so memory grows with the number of *failing*
rows, never with the partition size. How failing rows are found: GE's ``COMPLETE`` result format with
``unexpected_index_column_names=["_row_number"]`` returns ``unexpected_index_list``, but on SQL GE caps that list
at ``partial_unexpected_count`` (default 20) even with ``COMPLETE``; so we set ``partial_unexpected_count`` to the
partition's row count and check that the list is as long as ``unexpected_count``. GE returns no index list for
``expect_compound_columns_to_be_unique`` on SQL (and its ``unexpected_index_query`` is not valid SQL there), so
that one expectation's failing rows are computed by our own query with GE's semantics (rows whose values are all
null are ignored).

Reruns are idempotent and atomic: the new rejects are written to a ``pending`` staging table, table-level checks
run on extracted rows not in it, and only when they pass is it swapped in as ``rejects`` in one transaction. When
they fail, the pending table is dropped and the previous ``rejects`` table is left as it was.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from lm_insights.core.partition import STAGING_SCHEMA, Partition, staging_name, staging_table
from lm_insights.core.gx import gx_context, import_gx, raise_on_exception, run_suite
from lm_insights.guard import toxicity
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

REJECTS_COLUMNS = ("_row_number", "failed_expectations", "reason")
# Rejects under construction; as short as "extracted", so its staging name fits whenever the extracted one does.
PENDING_STEP = "pending"


class TableExpectationsFailed(ValueError):
    """A table-level expectation failed: the partition's data is unusable as a whole (do not retry)."""


@dataclass
class ValidationSummary:
    checked: int  # rows in the extracted table
    rejected: int  # rows written to the rejects table
    row_failures: dict[str, int] = field(default_factory=dict)  # expectation label -> rows it flagged
    table_results: list[tuple[str, bool, Any]] = field(default_factory=list)  # (label, success, observed value)


def _expectation_classes() -> dict[str, type]:
    """``{snake_name: class}`` of every expectation GE ships."""
    gx = import_gx()
    from great_expectations.expectations.expectation import Expectation

    classes = {}
    for class_name, obj in vars(gx.expectations).items():
        if isinstance(obj, type) and issubclass(obj, Expectation) and class_name.startswith("Expect"):
            classes[re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()] = obj
    # CamelCase -> snake misses acronyms (KL divergence); the class's own declared name wins when it has one.
    for snake, cls in list(classes.items()):
        declared = getattr(cls, "expectation_type", None)
        if isinstance(declared, str) and declared != snake:
            classes[declared] = classes.pop(snake)
    return classes


def _label(name: str, kwargs: dict[str, Any]) -> str:
    """``expect_column_values_to_not_be_null(price)``: the name stored in ``failed_expectations``."""
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    columns += kwargs.get("column_list", [])
    return f"{name}({', '.join(map(str, columns))})"


def _build_one(spec: PipelineSpec, kind: str, index: int, entry: dict[str, dict[str, Any]], classes: dict[str, type]):
    name, kwargs = next(iter(entry.items()))
    where = f"{spec.name}: expectations.{kind}[{index}]"
    cls = classes.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, list(classes), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{where}: unknown expectation {name!r}{hint} "
                         f"(names are Great Expectations' snake_case expectation names)")
    if kind == "rows":
        from great_expectations.expectations.expectation import (
            ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)

        if not issubclass(cls, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)):
            raise ValueError(f"{where}: {name} judges the table as a whole, not single rows; "
                             f"move it to expectations.table")
    try:
        return cls(**kwargs, meta={"entry": index, "label": _label(name, kwargs)})
    except Exception as exc:  # pydantic.v1 ValidationError; its text lists each bad field
        raise ValueError(f"{where}: invalid arguments {kwargs} for {name}: {exc}") from None


def build_suite(spec: PipelineSpec):
    """The spec's (row-level suite, table-level suite); raise ``ValueError`` naming the bad entry.

    :param spec: the pipeline spec whose ``expectations.rows`` and ``expectations.table`` are built.
    """
    gx = import_gx()
    classes = _expectation_classes()
    suites = []
    for kind in ("rows", "table"):
        # Expectations go in through the constructor: add_expectation() needs a data context, this does not.
        expectations = [_build_one(spec, kind, i, entry, classes)
                        for i, entry in enumerate(getattr(spec.expectations, kind))]
        suites.append(gx.ExpectationSuite(name=f"{spec.name}_{kind}", expectations=expectations))
    return suites[0], suites[1]


# ---------------------------------------------------------------------------------------------- reasons


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _between_reason(subject: str, value: Any, low: Any, high: Any, strict_low: bool, strict_high: bool,
                    what: str = "minimum", what_high: str = "maximum") -> str:
    try:
        if low is not None and (value < low or (strict_low and value == low)):
            return f"{subject} is {'not above' if strict_low else 'below'} the {what} {_show(low)}"
        if high is not None and (value > high or (strict_high and value == high)):
            return f"{subject} is {'not below' if strict_high else 'above'} the {what_high} {_show(high)}"
    except TypeError:  # GE serialised the value (e.g. a date as text): fall back to the range
        pass
    return f"{subject} is not between {_show(low)} and {_show(high)}"


def _reason(name: str, kwargs: dict[str, Any], values: dict[str, Any]) -> str:
    """A sentence for one failed expectation of one row, naming the column(s) and the value(s)."""
    column = kwargs.get("column")
    value = values.get(column) if column else None
    subject = f"{column} {_show(value)}"
    if name == "expect_column_values_to_not_be_null":
        return f"{column} is null"
    if name == "expect_column_values_to_be_null":
        return f"{subject} is not null"
    if name == "expect_column_values_to_be_unique":
        return f"{subject} is duplicated"
    if name in ("expect_compound_columns_to_be_unique", "expect_select_column_values_to_be_unique_within_record"):
        shown = ", ".join(f"{c}={_show(values.get(c))}" for c in kwargs["column_list"])
        return f"({shown}) is duplicated" if name.startswith("expect_compound") else f"({shown}) repeats a value"
    if name == "expect_column_values_to_be_between":
        return _between_reason(subject, value, kwargs.get("min_value"), kwargs.get("max_value"),
                               kwargs.get("strict_min", False), kwargs.get("strict_max", False))
    if name == "expect_column_value_lengths_to_be_between":
        length = len(value) if isinstance(value, str) else None
        return _between_reason(f"{subject} (length {length})", length, kwargs.get("min_value"),
                               kwargs.get("max_value"), False, False, "minimum length", "maximum length")
    if name == "expect_column_value_lengths_to_equal":
        return f"{subject} has length {len(str(value))}, not {kwargs.get('value')}"
    if name == "expect_column_values_to_be_in_set":
        return f"{subject} is not one of {kwargs.get('value_set')}"
    if name == "expect_column_values_to_not_be_in_set":
        return f"{subject} is one of the forbidden values {kwargs.get('value_set')}"
    if name in ("expect_column_values_to_match_regex", "expect_column_values_to_match_like_pattern"):
        return f"{subject} does not match {_show(kwargs.get('regex') or kwargs.get('like_pattern'))}"
    if name in ("expect_column_values_to_not_match_regex", "expect_column_values_to_not_match_like_pattern"):
        return f"{subject} matches the forbidden {_show(kwargs.get('regex') or kwargs.get('like_pattern'))}"
    if column:
        return f"{subject} fails {name}"
    shown = ", ".join(f"{c}={_show(v)}" for c, v in values.items())
    return f"({shown}) fails {name}"


# ---------------------------------------------------------------------------------------------- failing rows


def _compound_duplicates(conn, table: sql.Identifier, columns: list[str]) -> list[dict[str, Any]]:
    """Rows whose ``columns`` values occur more than once (rows with all of them null are ignored, as GE does)."""
    cols = db.columns_sql(columns)
    all_null = sql.SQL(" and ").join(sql.SQL("{} is null").format(sql.Identifier(c)) for c in columns)
    query = sql.SQL(
        "select _row_number, {cols} from (select _row_number, {cols}, count(*) over (partition by {cols}) as n "
        "from {table} where not ({all_null})) as t where n > 1 order by _row_number"
    ).format(cols=cols, table=table, all_null=all_null)
    with conn.cursor() as cursor:
        cursor.execute(query)
        names = [d.name for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]


def _failing_rows(spec: PipelineSpec, conn, extracted: sql.Identifier, result) -> list[dict[str, Any]]:
    """``[{"_row_number": n, <column>: value, ...}]`` of every row one row-level expectation flagged."""
    config = result.expectation_config
    outcome = result.result
    expected = outcome.get("unexpected_count") or 0
    if expected == 0:
        return []
    if config.type == "expect_compound_columns_to_be_unique":
        rows = _compound_duplicates(conn, extracted, config.kwargs["column_list"])
    else:
        rows = outcome.get("unexpected_index_list") or []
    if len(rows) != expected:
        raise RuntimeError(f"{spec.name}: expectations.rows[{config.meta['entry']}] {config.type}: Great Expectations "
                           f"counted {expected} failing rows but identified {len(rows)}; cannot write rejects")
    return rows


def _observed(result) -> Any:
    outcome = result.result or {}
    if "observed_value" in outcome:
        return outcome["observed_value"]
    if "unexpected_count" in outcome:
        return f"{outcome['unexpected_count']} unexpected of {outcome.get('element_count')} rows"
    return outcome


# ---------------------------------------------------------------------------------------------- the step


def _write_pending(conn, pending: sql.Identifier, rejects: dict[int, tuple[list[str], list[str]]]) -> None:
    conn.execute(sql.SQL("drop table if exists {}").format(pending))
    conn.execute(sql.SQL("create table {} (_row_number bigint primary key, failed_expectations text[] not null, "
                         "reason text not null)").format(pending))
    rows = ((n, labels, "; ".join(reasons)) for n, (labels, reasons) in sorted(rejects.items()))
    db.copy_rows(conn, pending, REJECTS_COLUMNS, rows)


def _table_failure_message(spec: PipelineSpec, partition: Partition, valid: int, failed: list) -> str:
    lines = [f"{spec.name}: partition {partition}: {len(failed)} table-level expectation(s) failed "
             f"on the {valid} valid rows:"]
    for result in failed:
        config = result.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
        lines.append(f"  expectations.table[{config.meta['entry']}] {config.type} {kwargs}: "
                     f"observed {_observed(result)}")
    lines.append(f"Fix the source data for this partition, or change expectations.table in "
                 f"dags/pipelines/{spec.name}.yaml.")
    return "\n".join(lines)


FLOAT_TYPES = ("real", "double precision", "numeric")  # the types that can hold NaN and +-Infinity


def non_finite_rows(spec: PipelineSpec, conn, partition: Partition) -> list[tuple[int, str, str]]:
    """``(_row_number, label, reason)`` for each NaN or +-Infinity in a metric or tier column.

    Great Expectations lets them through (NaN passes ``min_value: 0``), and one NaN turns every mean, correlation
    and summary sentence of its partition into NaN; so they are rejected unless ``insights.non_finite: exclude``.
    """
    types = db.table_columns(conn, STAGING_SCHEMA, staging_name(spec, partition, "extracted"))
    found = []
    for column in spec.insights.number_columns:
        if types.get(column, "").split("(")[0] not in FLOAT_TYPES:
            continue
        rows = conn.execute(sql.SQL(
            "select _row_number, {c}::text from {extracted} where {c} in ('NaN', 'Infinity', '-Infinity') "
            "order by _row_number").format(c=sql.Identifier(column),
                                           extracted=staging_table(spec, partition, "extracted"))).fetchall()
        found += [(n, f"finite({column})", f"{column} {value} is not a finite number") for n, value in rows]
    return found


def validate_partition(spec: PipelineSpec, conninfo: str, partition: Partition) -> ValidationSummary:
    """Check ``partition``'s extracted rows; write its rejects table; raise if a table-level expectation fails.

    :param spec: the pipeline spec (its ``expectations``).
    :param conninfo: libpq conninfo of the database that holds the ``lm_staging`` tables.
    :param partition: the run's partition; its ``extracted`` staging table must exist.
    :raises TableExpectationsFailed: a table-level expectation failed; nothing new was written.
    """
    started = time.monotonic()
    row_suite, table_suite = build_suite(spec)
    context, datasource = gx_context(import_gx(), conninfo)
    try:
        return _validate(spec, conninfo, partition, context, datasource, row_suite, table_suite, started)
    finally:
        datasource.get_engine().dispose()  # close GE's pooled connections now, not at garbage collection


def _validate(spec: PipelineSpec, conninfo: str, partition: Partition, context, datasource, row_suite,
              table_suite, started: float) -> ValidationSummary:
    extracted = staging_table(spec, partition, "extracted")
    pending = staging_table(spec, partition, PENDING_STEP)
    rejects_table = staging_table(spec, partition, "rejects")
    with db.connect(conninfo) as conn:
        checked = conn.execute(sql.SQL("select count(*) from {}").format(extracted)).fetchone()[0]

    rejects: dict[int, tuple[list[str], list[str]]] = {}  # _row_number -> (labels, reasons)
    row_failures: dict[str, int] = {}
    if row_suite.expectations:
        asset = datasource.add_table_asset("extracted", table_name=staging_name(spec, partition, "extracted"), schema_name=STAGING_SCHEMA)
        # COMPLETE alone caps unexpected_index_list at partial_unexpected_count on SQL; lift the cap to the row count.
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": ["_row_number"],
                         "partial_unexpected_count": max(checked, 1), "return_unexpected_index_query": False}
        validation = run_suite(context, asset.add_batch_definition_whole_table("whole"), row_suite, result_format)
        with db.connect(conninfo) as conn:
            for result in validation.results:
                raise_on_exception(spec, "rows", result)
                config = result.expectation_config
                label = config.meta["label"]
                name, kwargs = next(iter(spec.expectations.rows[config.meta["entry"]].items()))
                failing = _failing_rows(spec, conn, extracted, result)
                row_failures[label] = len(failing)
                for values in failing:
                    labels, reasons = rejects.setdefault(int(values["_row_number"]), ([], []))
                    if label not in labels:
                        labels.append(label)
                        reasons.append(_reason(name, kwargs, values))

    with db.connect(conninfo) as conn:
        row_checks = non_finite_rows(spec, conn, partition) if spec.insights.non_finite == "reject" else []
        row_checks += toxicity.score_partition(spec, conninfo, conn, partition)  # [] unless its action is reject
        for row_number, label, reason in row_checks:
            labels, reasons = rejects.setdefault(row_number, ([], []))
            labels.append(label)
            reasons.append(reason)
            row_failures[label] = row_failures.get(label, 0) + 1
        _write_pending(conn, pending, rejects)

    table_results: list[tuple[str, bool, Any]] = []
    if table_suite.expectations:
        query = sql.SQL("select e.* from {} as e where not exists (select from {} as r "
                        "where r._row_number = e._row_number)").format(extracted, pending)
        with db.connect(conninfo) as conn:
            query_text = query.as_string(conn)
        asset = datasource.add_query_asset("valid", query=query_text)
        validation = run_suite(context, asset.add_batch_definition_whole_table("whole"), table_suite,
                          {"result_format": "SUMMARY"})
        failed = []
        for result in validation.results:
            raise_on_exception(spec, "table", result)
            table_results.append((result.expectation_config.meta["label"], bool(result.success), _observed(result)))
            if not result.success:
                failed.append(result)
        if failed:
            with db.connect(conninfo) as conn:
                conn.execute(sql.SQL("drop table if exists {}").format(pending))
            raise TableExpectationsFailed(_table_failure_message(spec, partition, checked - len(rejects), failed))

    with db.connect(conninfo) as conn:  # one transaction: the old rejects are replaced atomically
        conn.execute(sql.SQL("drop table if exists {}").format(rejects_table))
        conn.execute(sql.SQL("alter table {} rename to {}").format(pending, sql.Identifier(staging_name(spec, partition, "rejects"))))

    summary = ValidationSummary(checked=checked, rejected=len(rejects), row_failures=row_failures,
                                table_results=table_results)
    log.info("%s %s: validated %d rows, rejected %d (%s) in %.1fs", spec.name, partition.tag, checked,
             len(rejects), ", ".join(f"{k}: {v}" for k, v in row_failures.items() if v) or "none",
             time.monotonic() - started)
    return summary
