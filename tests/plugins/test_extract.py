"""Extract reads exactly [start, end) of the partition column, and names the spec file when the source differs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from lm_insights.steps.extract import SourceError, extract_partition
from lm_insights.core.partition import Partition, staging_table
from lm_insights.spec import load_spec

SPEC_FILE = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "product_sales.yaml"


@pytest.fixture
def events(warehouse_conninfo) -> str:
    """A timestamp-partitioned source with rows on both edges of a day and one duplicated key."""
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("create schema retail")
        conn.execute("create table retail.product_sales (sale_id bigint, sale_date timestamptz, product_name text, "
                     "category text, price numeric, units int, revenue numeric)")
        rows = [(1, "2026-11-01 23:59:59.999+00"), (2, "2026-11-02 00:00:00+00"), (3, "2026-11-02 12:00:00+00"),
                (3, "2026-11-02 13:00:00+00"), (4, "2026-11-02 23:59:59.999+00"), (5, "2026-11-03 00:00:00+00")]
        for sale_id, at in rows:
            conn.execute("insert into retail.product_sales values (%s, %s, 'A', 'Toys', 100, 1, 100)", (sale_id, at))
    return warehouse_conninfo


def test_extract_takes_exactly_the_data_interval_in_a_stable_order(events):
    spec = load_spec(SPEC_FILE)
    day = Partition.day("2026-11-02")
    assert extract_partition(spec, events, events, day) == 4
    with psycopg.connect(events) as conn:
        got = conn.execute(sql.SQL("select _row_number, sale_id, sale_date from {} order by 1").format(
            staging_table(spec, day, "extracted"))).fetchall()
    assert [(n, k) for n, k, _ in got] == [(1, 2), (2, 3), (3, 3), (4, 4)]
    assert got[1][2] < got[2][2], "duplicate keys keep a stable order: by key, then the other columns"
    assert extract_partition(spec, events, events, day) == 4, "a rerun replaces the staging table"


def test_a_column_missing_from_the_source_names_the_spec_file_and_field(events, tmp_path):
    raw = yaml.safe_load(SPEC_FILE.read_text())
    raw["source"]["columns"].append("discount")
    path = tmp_path / "product_sales.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SourceError, match=rf"{path}: source.columns \['discount'\] do not exist in "
                                          r"retail.product_sales; it has \['sale_id', "):
        extract_partition(load_spec(path), events, events, Partition.day(dt.date(2026, 11, 2)))


# (sale_id, partition column value as the Shanghai source stores it); the partition is 2026-11-02 UTC
SHANGHAI_ROWS = {
    "date": [(1, "2026-11-01"), (2, "2026-11-02"), (3, "2026-11-02"), (4, "2026-11-03")],
    "timestamptz": [(1, "2026-11-02 07:59:59.999+08"), (2, "2026-11-02 08:00:00+08"), (3, "2026-11-03 07:59:59+08"),
                    (4, "2026-11-03 08:00:00+08")],
}


@pytest.mark.parametrize("column_type", ["date", "timestamptz"])
def test_a_source_in_another_time_zone_keeps_the_utc_partition_exact(warehouse_conninfo, column_type):
    """The source database runs in Asia/Shanghai (UTC+8): a run still reads exactly [00:00 UTC, 24:00 UTC) of its
    day; a `date` is a UTC day (extract sets its session to UTC: without that, 2026-11-02 would start at 16:00 UTC
    of the day before)."""
    from lm_insights.pipeline import run_partition
    from tests.oracles import check_partition

    with psycopg.connect(warehouse_conninfo, autocommit=True) as conn:
        database = conn.execute("select current_database()").fetchone()[0]
        conn.execute(sql.SQL("alter database {} set timezone to 'Asia/Shanghai'").format(sql.Identifier(database)))
    with psycopg.connect(warehouse_conninfo) as conn:
        assert conn.execute("show timezone").fetchone()[0] == "Asia/Shanghai"
        conn.execute("create schema retail")
        conn.execute(sql.SQL("create table retail.product_sales (sale_id bigint, sale_date {}, product_name text, "
                             "category text, price numeric, units int, revenue numeric)").format(sql.SQL(column_type)))
        for sale_id, at in SHANGHAI_ROWS[column_type]:
            conn.execute("insert into retail.product_sales values (%s, %s, %s, 'Toys', %s, %s, %s)",
                         (sale_id, at, f"Toy {sale_id}", 100 * sale_id, 10 * sale_id, 1000 * sale_id * sale_id))
    spec, day = load_spec(SPEC_FILE), Partition.day("2026-11-02")
    assert extract_partition(spec, warehouse_conninfo, warehouse_conninfo, day) == 2
    with psycopg.connect(warehouse_conninfo) as conn:
        extracted = [k for (k,) in conn.execute(sql.SQL("select sale_id from {} order by 1").format(
            staging_table(spec, day, "extracted")))]
    assert extracted == [2, 3]
    record = run_partition(spec, warehouse_conninfo, warehouse_conninfo, day)
    assert record.status == "success" and (record.extracted, record.loaded) == (2, 2)
    tables = check_partition(warehouse_conninfo, warehouse_conninfo, spec, day)
    assert sorted(tables["rows"]["sale_id"]) == [2, 3]
    assert set(tables["rows"]["partition_start"]) == {day.start}
