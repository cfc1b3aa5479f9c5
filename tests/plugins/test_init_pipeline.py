"""``init-pipeline``: a spec proposed from a live table validates, runs as a real DAG run and rejects bad rows."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import psycopg
import pytest

from lm_insights.init_pipeline import InitError, init_pipeline
from lm_insights.runtime import demo_warehouse
from lm_insights.runtime.local_env import PROJECT_DIR
from lm_insights.spec import load_spec

PIPELINES_DIR = PROJECT_DIR / "dags" / "pipelines"  # where the DAG factory reads specs
SENSOR_DAYS = [dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
SITES = ("North Field", "Greenhouse 2", "Dock")
# Same rows as the other suites' demo warehouse (each day is generated from its own seed).
DEMO_WAREHOUSE = dict(start=dt.date(2026, 11, 1), days=6, sales_per_day=40, reviews_per_day=20)


def create_sensor_table(conninfo: str) -> None:
    """A table unlike the demo: mixed-case names with spaces and symbols, a column named `text`, uuid key in a
    unique index (no primary key), two timestamp columns, real/smallint/boolean/jsonb types."""
    rng = random.Random(7)
    with psycopg.connect(conninfo) as conn:
        conn.execute('create schema if not exists sensor_lab')
        conn.execute('drop table if exists sensor_lab."Readings-2026" cascade')
        conn.execute('''create table sensor_lab."Readings-2026" (
            "Reading ID" uuid not null, "Measured At" timestamptz not null, "Calibrated On" date,
            "Station_ID" integer not null, "Temp °C" real not null, "Battery %" smallint not null,
            "Site" varchar(20) not null, "text" text not null, "OK" boolean not null, payload jsonb)''')
        conn.execute('create unique index readings_by_id on sensor_lab."Readings-2026" ("Reading ID")')
        for day in SENSOR_DAYS:
            for n in range(30):
                temp = round(rng.gauss(20, 3), 1)
                site = SITES[n % 3]
                notes = (f"Routine check {n} at {site}: {'fan noise reported' if n % 4 else 'all nominal'}, "
                         f"filter {'replaced' if n % 5 == 0 else 'clean'}.")
                conn.execute('insert into sensor_lab."Readings-2026" values (%s, %s, %s, %s, %s, %s, %s, %s, %s, '
                             '%s)', (uuid.UUID(int=rng.getrandbits(128)),
                                     dt.datetime.combine(day, dt.time(n // 2, n % 60), dt.timezone.utc),
                                     dt.date(2026, 10, 1), 100 + n % 7, temp, rng.randint(40, 100), site, notes,
                                     temp < 25, '{"raw": 1}'))


def plant_bad_rows(conninfo: str, day: dt.date) -> dict[str, str]:
    """Rows the proposed expectations must reject: reading id -> the word their reason must contain."""
    bad = {"temp_c": ("Temp °C", 500.0), "site": ("Site", "Mars"), "battery": ("Battery %", None)}
    planted = {}
    with psycopg.connect(conninfo) as conn:
        for n, (spec_column, (column, value)) in enumerate(bad.items()):
            reading_id = uuid.UUID(int=n + 1)
            conn.execute('insert into sensor_lab."Readings-2026" values (%s, %s, null, 101, 20.5, 80, %s, '
                         '%s, true, null)', (reading_id, dt.datetime.combine(day, dt.time(23, n), dt.timezone.utc),
                                             "Dock", "Planted row."))
            if column == "Battery %":
                conn.execute('alter table sensor_lab."Readings-2026" alter column "Battery %" drop not null')
            conn.execute(f'update sensor_lab."Readings-2026" set "{column.replace("%", "%%")}" = %s '
                         'where "Reading ID" = %s',
                         (value, reading_id))
            planted[str(reading_id)] = spec_column
    return planted


@pytest.fixture
def pipelines():
    """Specs written into the project's dags/pipelines (the DAG factory reads them there), removed afterwards."""
    written = []
    yield written
    for path in written:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def warehouse(airflow_db) -> str:
    from lm_insights.airflow_dag import conninfo_for

    conninfo = conninfo_for("warehouse")
    demo_warehouse.create_schema(conninfo)
    demo_warehouse.generate(conninfo, **DEMO_WAREHOUSE)
    create_sensor_table(conninfo)
    yield conninfo
    with psycopg.connect(conninfo) as conn:  # the shared warehouse as the other suites expect it
        conn.execute("drop schema if exists sensor_lab cascade")
        for (table,) in conn.execute("select tablename from pg_tables where schemaname = 'insights' "
                                     "and tablename like 'init\\_%'").fetchall():
            conn.execute(f'drop table insights."{table}"')
        if conn.execute("select to_regclass('insights.runs')").fetchone()[0]:
            conn.execute("delete from insights.runs where pipeline like 'init\\_%'")


def runs_record(conninfo: str, pipeline: str, run_id: str) -> dict:
    with psycopg.connect(conninfo) as conn:
        cursor = conn.execute("select * from insights.runs where pipeline = %s and run_id = %s", (pipeline, run_id))
        return dict(zip([c.name for c in cursor.description], cursor.fetchone()))


def run_and_check(conninfo: str, name: str, day: dt.date) -> dict:
    """A real DAG run of the generated spec; extracted = loaded + rejected; return the runs record."""
    from lm_insights.cli import run_dag

    run = run_dag(name, day)
    assert run.state == "success"
    record = runs_record(conninfo, name, run.run_id)
    assert record["status"] == "success" and record["extracted"] > 0
    assert record["extracted"] == record["loaded"] + record["rejected"]
    return record


def test_unfamiliar_table_gives_a_view_a_valid_spec_a_run_and_rejects(warehouse, pipelines):
    result = init_pipeline("init_sensor_readings", warehouse, "sensor_lab.Readings-2026",
                           pipelines_dir=PIPELINES_DIR, create_view=True)
    pipelines.append(result.path)
    spec = load_spec(result.path)
    assert result.view_created and 'create or replace view sensor_lab.readings_2026_lm' in result.view_sql
    assert '"Temp °C" as temp_c' in result.view_sql and '"text" as text_value' in result.view_sql
    assert spec.source.table == "sensor_lab.readings_2026_lm"
    assert (spec.source.key, result.key_source) == (["reading_id"], "unique index readings_by_id")
    assert spec.source.partition_column == "measured_at" and result.partition_days == 3
    assert "payload" not in spec.source.columns and "payload (jsonb)" in result.spec_yaml
    assert "station_id" not in spec.insights.metrics + spec.text.columns, "ids are neither metrics nor text"
    assert set(spec.insights.metrics) == {"temp_c", "battery"}
    assert [s.name for s in spec.insights.segments][1:] == ["column:site"]
    rows = {(name, kwargs.get("column")): kwargs for entry in spec.expectations.rows
            for name, kwargs in entry.items()}
    assert rows[("expect_column_values_to_be_in_set", "site")]["value_set"] == sorted(SITES)
    assert ("expect_column_values_to_be_unique", "reading_id") in rows
    temp = rows[("expect_column_values_to_be_between", "temp_c")]
    assert temp["min_value"] < 10 and 30 < temp["max_value"] < 100
    assert "# sample: min" in result.spec_yaml and "0 nulls in 90 rows" in result.spec_yaml
    assert spec.text.template.startswith("Site: {site}.") and "{text_value}" in spec.text.template

    day = SENSOR_DAYS[-1]
    planted = plant_bad_rows(warehouse, day)
    record = run_and_check(warehouse, "init_sensor_readings", day)
    assert record["extracted"] == 33
    with psycopg.connect(warehouse) as conn:
        rejects = dict(conn.execute("select row_key, reason from insights.init_sensor_readings_rejects "
                                    "where partition_start = %s", (dt.datetime.combine(day, dt.time(0),
                                                                                       dt.timezone.utc),)).fetchall())
    assert set(rejects) == {f"reading_id={r}" for r in planted}, rejects
    for reading_id, column in planted.items():
        assert column in rejects[f"reading_id={reading_id}"]


@pytest.mark.parametrize("name, table, key, template_field", [
    ("init_product_sales", "retail.product_sales", ["sale_id"], "{price}"),
    ("init_customer_reviews", "retail.customer_reviews", ["review_id"], "{review_text}"),
])
def test_demo_tables_give_specs_that_run(warehouse, pipelines, name, table, key, template_field):
    result = init_pipeline(name, warehouse, table, key=key, pipelines_dir=PIPELINES_DIR)
    pipelines.append(result.path)
    spec = load_spec(result.path)
    assert result.view_sql is None and spec.source.table == table and result.key_source == "--key"
    assert template_field in spec.text.template
    run_and_check(warehouse, name, dt.date(2026, 11, 2))


def test_no_key_asks_for_key_and_an_existing_spec_needs_force(warehouse, tmp_path):
    with pytest.raises(InitError, match="no primary key or unique index.*--key"):
        init_pipeline("sales_copy", warehouse, "retail.product_sales", pipelines_dir=tmp_path)
    first = init_pipeline("sales_copy", warehouse, "retail.product_sales", key=["sale_id"], pipelines_dir=tmp_path)
    first.path.write_text("# edited by hand\n" + first.spec_yaml)
    with pytest.raises(InitError, match="exists; pass --force"):
        init_pipeline("sales_copy", warehouse, "retail.product_sales", key=["sale_id"], pipelines_dir=tmp_path)
    assert first.path.read_text().startswith("# edited by hand")
    init_pipeline("sales_copy", warehouse, "retail.product_sales", key=["sale_id"], pipelines_dir=tmp_path,
                  force=True)
    assert not first.path.read_text().startswith("# edited by hand")
    with pytest.raises(InitError, match="--partition-column 'price' is not a date"):
        init_pipeline("sales_copy2", warehouse, "retail.product_sales", key=["sale_id"], partition_column="price",
                      pipelines_dir=tmp_path)


def test_names_and_values_survive_the_yaml_the_spec_is_written_in():
    import yaml

    from lm_insights.init_pipeline import _flow, spec_name

    assert [spec_name(n) for n in ("Temp °C", "text", "2nd Reading", "Battery %", "ok")] == [
        "temp_c", "text_value", "c_2nd_reading", "battery", "ok"]
    values = ["yes", "12", "null", "Home & Kitchen", "a: b", "Café", "on"]
    assert yaml.safe_load(_flow({"value_set": values, "min_value": 0.00001, "max_value": 12})) == {
        "value_set": values, "min_value": 0.00001, "max_value": 12}
