"""Extract reads exactly [start, end) of the partition column, and names the spec file when the source differs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from lm_insights.steps.extract import SourceError, extract_partition
from lm_insights.steps.partition import Partition, staging_table
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
