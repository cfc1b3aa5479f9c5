"""Days and ranges compose: whatever sequence of daily and range runs, each valid source row of the covered days is
in ``<pipeline>_rows`` exactly once with the latest covering run's result, rows + rejects equal the source, and
every aggregate left describes exactly the rows now loaded (aggregates of overlapping intervals are dropped)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import psycopg
import pytest

from lm_insights.cli import run_dag
from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_specs
from lm_insights.core.partition import Partition

DAYS = [dt.date(2026, 11, 1), dt.date(2026, 11, 2)]
RANGE = Partition.days(DAYS[0], DAYS[-1])
AGGREGATES = ("segments", "drivers", "summaries")


def fill(conninfo: str) -> None:
    demo_warehouse.create_schema(conninfo)
    demo_warehouse.generate(conninfo, start=DAYS[0], days=len(DAYS) + 1, sales_per_day=12, reviews_per_day=2)


def check_composition(conninfo: str, latest: dict[dt.date, Partition], aggregates: list[Partition]) -> None:
    """Assert the invariant for product_sales after a sequence of runs: ``latest`` is each day's latest run,
    ``aggregates`` the runs no later run overlapped (their segments, drivers and summary remain)."""
    days = sorted(latest)
    with psycopg.connect(conninfo) as conn:
        source = Counter(i for (i,) in conn.execute(
            "select sale_id from retail.product_sales where sale_date = any(%s)", (days,)).fetchall())
        loaded = conn.execute("select sale_id, sale_date, partition_start, partition_end "
                              "from insights.product_sales_rows where sale_date = any(%s)", (days,)).fetchall()
        rejected = Counter(i for (i,) in conn.execute(
            "select (row ->> 'sale_id')::bigint from insights.product_sales_rejects "
            "where (row ->> 'sale_date')::date = any(%s)", (days,)).fetchall())
        # only intervals that touch these days: other tests share the warehouse and leave their own days' figures
        span = (dt.datetime.combine(days[0], dt.time(0), dt.timezone.utc),
                dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time(0), dt.timezone.utc))
        intervals = {suffix: sorted(conn.execute(
            f"select partition_start, partition_end from insights.product_sales_{suffix} "
            "where partition_start < %s and partition_end > %s", (span[1], span[0])).fetchall())
            for suffix in AGGREGATES}
        staging = conn.execute("select count(*) from pg_tables where schemaname = 'lm_staging' "
                               "and tablename like 'product_sales%'").fetchone()[0]
    ids = Counter(i for i, *_ in loaded)
    assert loaded and rejected
    assert max(ids.values()) == 1, "a valid source row is loaded once"
    assert ids + rejected == source, "rows + rejects equal the source over the covered days"
    for sale_id, day, start, end in loaded:
        assert (start, end) == (latest[day].start, latest[day].end), f"sale {sale_id} of {day} is not the latest run's"
    kept = {(p.start, p.end) for p in aggregates}
    for suffix in AGGREGATES:
        assert set(intervals[suffix]) == kept, f"{suffix}: aggregates of overlapped intervals are dropped"
    assert intervals["summaries"] == sorted(kept), "one summary per remaining interval"
    assert staging == 0


def test_days_then_range_then_a_day_compose(warehouse_conninfo):
    """Both orders without a scheduler: days then range, range then a day inside it."""
    fill(warehouse_conninfo)
    spec = next(s for s in load_specs() if s.name == "product_sales")
    days = [Partition.day(day) for day in DAYS]
    for day in days:
        assert run_partition(spec, warehouse_conninfo, warehouse_conninfo, day).status == "success"
    check_composition(warehouse_conninfo, dict(zip(DAYS, days)), days)

    record = run_partition(spec, warehouse_conninfo, warehouse_conninfo, RANGE)
    assert record.extracted == record.loaded + record.rejected
    check_composition(warehouse_conninfo, {day: RANGE for day in DAYS}, [RANGE])
    with psycopg.connect(warehouse_conninfo) as conn:
        summary = conn.execute("select summary from insights.product_sales_summaries").fetchone()[0]
    assert summary.startswith("product_sales for 2026-11-01 to 2026-11-02:")

    run_partition(spec, warehouse_conninfo, warehouse_conninfo, days[1])
    # Day 1's rows stay the range's result; the range's aggregates counted day 2's replaced rows, so they go.
    check_composition(warehouse_conninfo, {DAYS[0]: RANGE, DAYS[1]: days[1]}, [days[1]])


@pytest.fixture(scope="module")
def warehouse(airflow_db) -> str:
    from lm_insights.airflow_dag import conninfo_for

    conninfo = conninfo_for("warehouse")
    fill(conninfo)
    return conninfo


def test_range_then_days_inside_then_the_range_again_through_real_dag_runs(warehouse):
    range_conf = {"partition_start": DAYS[0].isoformat(), "partition_end": DAYS[-1].isoformat()}
    assert run_dag("product_sales", DAYS[-1], range_conf).state == "success"
    check_composition(warehouse, {day: RANGE for day in DAYS}, [RANGE])

    latest, aggregates = {day: RANGE for day in DAYS}, []
    for day in DAYS:
        assert run_dag("product_sales", day).state == "success"
        latest[day] = Partition.day(day)
        aggregates.append(Partition.day(day))
        check_composition(warehouse, latest, aggregates)

    assert run_dag("product_sales", DAYS[-1], range_conf).state == "success"
    check_composition(warehouse, {day: RANGE for day in DAYS}, [RANGE])
