"""NaN and +-Infinity in metric and tier columns: rejected with a reason (or excluded), never a NaN figure."""

from __future__ import annotations

import psycopg
import pytest

from lm_insights.pipeline import run_partition
from lm_insights.spec import PipelineSpec
from lm_insights.core.partition import Partition

DAY = Partition.day("2026-11-01")
# (sale_id, price, units): units fall as price rises; then the hostile values.
VALID = [(i, 10.0 * i, 100 - 5 * i) for i in range(1, 13)]
HOSTILE = [(20, "NaN", 50), (21, "Infinity", 40), (22, 30.0, "-Infinity"), (23, 40.0, "NaN"),
           (24, "-Infinity", 30)]
NULLS = [(30, None, 45), (31, 55.0, None)]  # NULLs are valid rows; statistics skip them


def make_spec(non_finite: str | None = None) -> PipelineSpec:
    insights = {"metrics": ["units"], "target": "units",
                "segments": [{"by_tiers": {"column": "price", "edges": [0, 60, 1000]}}]}
    if non_finite:
        insights["non_finite"] = non_finite
    return PipelineSpec.model_validate({
        "name": "hostile_sales", "start_date": "2026-11-01",
        "source": {"table": "shop.sales", "key": ["sale_id"], "partition_column": "sale_date",
                   "columns": ["sale_id", "sale_date", "product", "price", "units"]},
        # NaN passes min_value 0 in Great Expectations: the finite check is the platform's own
        "expectations": {"rows": [{"expect_column_values_to_be_between": {"column": "price", "min_value": 0}}]},
        "text": {"columns": ["product", "price"]},
        "insights": insights,
    })


@pytest.fixture
def hostile(warehouse_conninfo) -> str:
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("create schema shop")
        conn.execute("create table shop.sales (sale_id bigint, sale_date date, product text, "
                     "price double precision, units numeric)")
        for sale_id, price, units in VALID + HOSTILE + NULLS:
            conn.execute("insert into shop.sales values (%s, '2026-11-01', %s, %s::float8, %s::numeric)",
                         (sale_id, f"item {sale_id}", price, units))
    return warehouse_conninfo


def insight_tables(conn) -> dict[str, list[tuple[str, str]]]:
    rows = conn.execute("select table_name, column_name, data_type from information_schema.columns "
                        "where table_schema = 'insights' and table_name like 'hostile_sales_%' "
                        "order by table_name, ordinal_position").fetchall()
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        tables.setdefault(table, []).append((column, data_type))
    return tables


def non_finite_figures(conn) -> list[str]:
    """Each NaN/Infinity number or 'nan'/'inf' word in the aggregate tables, and each 'nan' in the rows' texts.

    The rows' source columns hold the data as it came (an excluded NaN stays visible there); "infinity" may be a
    row's text, since it is what the value means.
    """
    found = []
    for table, columns in insight_tables(conn).items():
        aggregate = not table.endswith(("_rows", "_rejects"))
        for column, data_type in columns:
            if aggregate and data_type in ("double precision", "numeric", "real"):
                bad = conn.execute(f'select count(*) from insights."{table}" where "{column}"::float8 '
                                   "in ('NaN', 'Infinity', '-Infinity')").fetchone()[0]
            elif data_type == "text" and (aggregate or (table.endswith("_rows") and column == "text")):
                pattern = r"\mnan\M|\minf" if aggregate else r"\mnan\M"
                bad = conn.execute(f'select count(*) from insights."{table}" where "{column}" ~* %s',
                                   (pattern,)).fetchone()[0]
            else:
                continue
            if bad:
                found.append(f"{table}.{column}: {bad} rows")
    return found


def test_non_finite_metric_and_tier_values_are_rejected_with_the_reason(hostile):
    record = run_partition(make_spec(), hostile, hostile, DAY)

    assert record.status == "success"
    assert record.extracted == len(VALID + HOSTILE + NULLS)
    assert record.rejected == len(HOSTILE) and record.loaded == len(VALID + NULLS)
    with psycopg.connect(hostile) as conn:
        rejects = dict(conn.execute("select row_key, reason from insights.hostile_sales_rejects").fetchall())
        assert rejects == {"sale_id=20": "price NaN is not a finite number",
                           "sale_id=21": "price Infinity is not a finite number",
                           "sale_id=22": "units -Infinity is not a finite number",
                           "sale_id=23": "units NaN is not a finite number",
                           # -Infinity also fails min_value 0: both reasons, in the order checked
                           "sale_id=24": "price -inf is below the minimum 0; price -Infinity is not a finite number"}
        assert non_finite_figures(conn) == []
        method, direction = conn.execute("select method, direction from insights.hostile_sales_drivers "
                                         "where field = 'price'").fetchone()
        summary = conn.execute("select summary from insights.hostile_sales_summaries").fetchone()[0]
    assert method == "pearson r = -1.000" and direction == "units falls as price rises"
    assert "price explains 100% of the variance of units (95% CI 100% to 100%, n = 12); units falls as price " \
           "rises (r = -1.00)." in summary


def test_excluded_non_finite_values_stay_in_rows_but_out_of_every_statistic(hostile):
    record = run_partition(make_spec("exclude"), hostile, hostile, DAY)

    assert record.status == "success"
    assert record.rejected == 1 and record.loaded == record.extracted - 1  # only -Infinity < min_value 0 (sale 24)
    with psycopg.connect(hostile) as conn:
        assert non_finite_figures(conn) == []
        segments = conn.execute("select segment_value, row_count, mean from insights.hostile_sales_segments "
                                "order by segment_order, segment_value").fetchall()
        driver = conn.execute("select method, n from insights.hostile_sales_drivers where field = 'price'").fetchone()
        text = conn.execute("select text from insights.hostile_sales_rows where sale_id = 20").fetchone()[0]
    finite_prices = [p for _, p, u in VALID + [(22, 30.0, 0), (23, 40.0, 0)]]
    low = [u for _, p, u in VALID if p < 60]
    assert ("[0, 60)", len(low), pytest.approx(sum(low) / len(low))) in segments  # 22/23 have no finite units
    assert any(value == "unknown" for value, _, _ in segments)  # NaN/Infinity prices, like the NULL one
    assert driver[0] == "pearson r = -1.000" and driver[1] == len(VALID)
    assert len(finite_prices) > driver[1]  # rows with a finite price but non-finite units are left out too
    assert text == "The product is item 20. The price is unknown."
