"""Validate step on a real PostgreSQL with real Great Expectations."""

from __future__ import annotations

import pytest
from psycopg import sql

from lm_insights.runtime import db
from lm_insights.core.partition import Partition, staging_table
from lm_insights.spec import PipelineSpec
from lm_insights.steps.validate import TableExpectationsFailed, build_suite, validate_partition

PARTITION = Partition.day("2026-11-01")
COLUMNS = ["sale_id", "sale_date", "product", "price", "units"]
NOT_NULL = "expect_column_values_to_not_be_null(price)"
BETWEEN = "expect_column_values_to_be_between(price)"
UNIQUE = "expect_column_values_to_be_unique(sale_id)"
LENGTH = "expect_column_value_lengths_to_be_between(product)"

# (_row_number, sale_id, sale_date, product, price, units)
ROWS = [
    (1, 10, "2026-11-01", "tea", 3.5, 2),
    (2, 11, "2026-11-01", "coffee", None, 1),  # null price
    (3, 12, "2026-11-01", "cake", -3.0, 4),  # negative price
    (4, 13, "2026-11-01", "juice", 2.0, 1),
    (5, 13, "2026-11-01", "water", 1.0, 6),  # duplicate sale_id 13 (with row 4)
    (6, 14, "2026-11-01", "a very long product name", -1.5, 1),  # negative price and too long a name
    (7, 15, "2026-11-01", "milk", 1.2, 3),
]


def make_spec(rows=None, table=None) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "product_sales",
        "start_date": "2026-01-01",
        "source": {"table": "shop.sales", "key": ["sale_id"], "partition_column": "sale_date", "columns": COLUMNS},
        "expectations": {
            "rows": rows if rows is not None else [
                {"expect_column_values_to_not_be_null": {"column": "price"}},
                {"expect_column_values_to_be_between": {"column": "price", "min_value": 0}},
                {"expect_column_values_to_be_unique": {"column": "sale_id"}},
                {"expect_column_value_lengths_to_be_between": {"column": "product", "max_value": 10}},
            ],
            "table": table if table is not None else [{"expect_table_row_count_to_be_between": {"min_value": 1}}],
        },
        "text": {"columns": ["product"]},
        "insights": {"metrics": ["price"], "segments": [{"by_tiers": {"column": "price", "edges": [0, 5, 100]}}]},
    })


def fill_extracted(conninfo: str, spec: PipelineSpec, rows) -> None:
    table = staging_table(spec, PARTITION, "extracted")
    with db.connect(conninfo) as conn:
        conn.execute("create schema if not exists lm_staging")
        conn.execute(sql.SQL("drop table if exists {}").format(table))
        conn.execute(sql.SQL("create table {} (_row_number bigint primary key, sale_id integer, sale_date date, "
                             "product text, price double precision, units integer)").format(table))
        db.copy_rows(conn, table, ["_row_number", *COLUMNS], rows)


def read_rejects(conninfo: str, spec: PipelineSpec) -> list[tuple]:
    table = staging_table(spec, PARTITION, "rejects")
    with db.connect(conninfo) as conn:
        return conn.execute(sql.SQL("select * from {} order by _row_number").format(table)).fetchall()


def test_rejects_name_each_failing_row_with_all_its_expectations(warehouse_conninfo):
    spec = make_spec()
    fill_extracted(warehouse_conninfo, spec, ROWS)

    summary = validate_partition(spec, warehouse_conninfo, PARTITION)

    rejects = read_rejects(warehouse_conninfo, spec)
    assert [(n, failed) for n, failed, _ in rejects] == [
        (2, [NOT_NULL]),
        (3, [BETWEEN]),
        (4, [UNIQUE]),
        (5, [UNIQUE]),
        (6, [BETWEEN, LENGTH]),
    ]
    reasons = {n: reason for n, _, reason in rejects}
    assert reasons[2] == "price is null"
    assert reasons[3] == "price -3.0 is below the minimum 0"
    assert reasons[4] == "sale_id 13 is duplicated"
    assert reasons[5] == "sale_id 13 is duplicated"
    assert "price -1.5 is below the minimum 0" in reasons[6]
    assert "product 'a very long product name'" in reasons[6] and "maximum length 10" in reasons[6]
    assert summary.checked == 7
    assert summary.rejected == 5
    assert summary.row_failures == {NOT_NULL: 1, BETWEEN: 2, UNIQUE: 2, LENGTH: 1}
    assert summary.table_results == [("expect_table_row_count_to_be_between()", True, 2)]  # 7 rows - 5 rejected


def test_rerun_writes_identical_rejects(warehouse_conninfo):
    spec = make_spec()
    fill_extracted(warehouse_conninfo, spec, ROWS)
    validate_partition(spec, warehouse_conninfo, PARTITION)
    first = read_rejects(warehouse_conninfo, spec)

    validate_partition(spec, warehouse_conninfo, PARTITION)

    assert read_rejects(warehouse_conninfo, spec) == first
    assert len(first) == 5


def test_compound_uniqueness_rejects_every_row_of_a_duplicated_key(warehouse_conninfo):
    spec = make_spec(rows=[{"expect_compound_columns_to_be_unique": {"column_list": ["sale_id", "sale_date"]}}])
    fill_extracted(warehouse_conninfo, spec, ROWS)

    summary = validate_partition(spec, warehouse_conninfo, PARTITION)

    rejects = read_rejects(warehouse_conninfo, spec)
    assert [n for n, _, _ in rejects] == [4, 5]
    assert rejects[0][1] == ["expect_compound_columns_to_be_unique(sale_id, sale_date)"]
    assert "sale_id=13" in rejects[0][2] and "duplicated" in rejects[0][2]
    assert summary.rejected == 2


def test_more_failing_rows_than_ge_partial_count_are_all_rejected(warehouse_conninfo):
    # GE caps SQL unexpected_index_list at partial_unexpected_count (20 by default), even with COMPLETE.
    spec = make_spec(rows=[{"expect_column_values_to_not_be_null": {"column": "price"}}])
    rows = [(n, n, "2026-11-01", "tea", None if n % 2 else 1.0, 1) for n in range(1, 201)]
    fill_extracted(warehouse_conninfo, spec, rows)

    summary = validate_partition(spec, warehouse_conninfo, PARTITION)

    assert summary.rejected == 100
    assert [n for n, _, _ in read_rejects(warehouse_conninfo, spec)] == list(range(1, 201, 2))


def test_table_level_failure_raises_and_keeps_previous_rejects(warehouse_conninfo):
    spec = make_spec()
    fill_extracted(warehouse_conninfo, spec, ROWS)
    validate_partition(spec, warehouse_conninfo, PARTITION)
    before = read_rejects(warehouse_conninfo, spec)
    strict = make_spec(table=[{"expect_table_row_count_to_be_between": {"min_value": 1}},
                              {"expect_column_mean_to_be_between": {"column": "price", "min_value": 100}}])
    fill_extracted(warehouse_conninfo, strict, ROWS[:3])  # new data: only rows 1-3

    with pytest.raises(TableExpectationsFailed) as raised:
        validate_partition(strict, warehouse_conninfo, PARTITION)

    message = str(raised.value)
    assert "product_sales" in message and "2026-11-01" in message
    assert "expect_column_mean_to_be_between" in message and "'min_value': 100" in message
    assert "observed 3.5" in message  # the mean price of the one valid row (row 1)
    assert "expect_table_row_count_to_be_between" not in message  # it passed
    assert "dags/pipelines/product_sales.yaml" in message
    assert read_rejects(warehouse_conninfo, spec) == before


def test_empty_partition_rejects_nothing_and_fails_row_count(warehouse_conninfo):
    spec = make_spec()
    fill_extracted(warehouse_conninfo, spec, [])

    with pytest.raises(TableExpectationsFailed, match=r"expect_table_row_count_to_be_between .*observed 0"):
        validate_partition(spec, warehouse_conninfo, PARTITION)

    relaxed = make_spec(table=[])
    summary = validate_partition(relaxed, warehouse_conninfo, PARTITION)
    assert (summary.checked, summary.rejected) == (0, 0)
    assert read_rejects(warehouse_conninfo, relaxed) == []


def test_unknown_expectation_names_the_entry_and_suggests_the_right_name():
    spec = make_spec(rows=[{"expect_column_values_to_not_be_nul": {"column": "price"}}])

    with pytest.raises(ValueError, match=r"product_sales: expectations\.rows\[0\]: unknown expectation "
                                         r"'expect_column_values_to_not_be_nul'; did you mean "
                                         r"expect_column_values_to_not_be_null"):
        build_suite(spec)


def test_bad_kwargs_name_the_entry():
    spec = make_spec(table=[{"expect_table_row_count_to_be_between": {"min_value": 1}},
                            {"expect_column_mean_to_be_between": {"column": "price", "minimum": 1}}])

    with pytest.raises(ValueError, match=r"expectations\.table\[1\]: invalid arguments .*minimum"):
        build_suite(spec)


def test_table_expectation_in_rows_is_refused():
    spec = make_spec(rows=[{"expect_table_row_count_to_be_between": {"min_value": 1}}])

    with pytest.raises(ValueError, match=r"expectations\.rows\[0\]: .*move it to expectations\.table"):
        build_suite(spec)


def test_build_suite_maps_names_to_ge_classes():
    rows, table = build_suite(make_spec())

    assert [type(e).__name__ for e in rows.expectations] == [
        "ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeBetween", "ExpectColumnValuesToBeUnique",
        "ExpectColumnValueLengthsToBeBetween"]
    assert [type(e).__name__ for e in table.expectations] == ["ExpectTableRowCountToBeBetween"]


def test_expectation_that_cannot_run_names_the_entry(warehouse_conninfo):
    spec = make_spec(rows=[{"expect_column_values_to_match_regex": {"column": "units", "regex": "^[0-9]+$"}}])
    fill_extracted(warehouse_conninfo, spec, ROWS)  # units is an integer: PostgreSQL has no integer ~ text

    with pytest.raises(ValueError, match=r"product_sales: expectations\.rows\[0\] "
                                         r"expect_column_values_to_match_regex could not run"):
        validate_partition(spec, warehouse_conninfo, PARTITION)


def test_a_range_partition_of_a_run_validates_through_great_expectations(warehouse_conninfo):
    """Great Expectations folds unquoted names to lower case: a range's staging name must survive that."""
    import dataclasses

    spec = make_spec()
    week = dataclasses.replace(Partition.days("2008-01-01", "2017-12-31"), run_id="manual__2026-11-28T10:53:12")
    table = staging_table(spec, week, "extracted")
    with db.connect(warehouse_conninfo) as conn:
        conn.execute("create schema if not exists lm_staging")
        conn.execute(sql.SQL("create table {} (_row_number bigint primary key, sale_id integer, sale_date date, "
                             "product text, price double precision, units integer)").format(table))
        db.copy_rows(conn, table, ["_row_number", *COLUMNS], ROWS)

    summary = validate_partition(spec, warehouse_conninfo, week)

    assert (summary.checked, summary.rejected) == (7, 5)
