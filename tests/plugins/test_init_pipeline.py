"""``init-pipeline``: a spec proposed from a live table validates, runs as a real DAG run and rejects bad rows."""

from __future__ import annotations

import datetime as dt
import decimal
import random
import re
import uuid

import psycopg
import psycopg.sql
import pytest
import yaml

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
    assert "# profile: min" in result.spec_yaml and f"0 nulls in {result.sample_rows} profile rows" in result.spec_yaml
    assert result.sample_rows + result.check_rows == 90 and result.reject_share <= 0.01
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
    from lm_insights.init_pipeline import _yaml, spec_name

    assert [spec_name(n) for n in ("Temp °C", "text", "2nd Reading", "Battery %", "ok")] == [
        "temp_c", "text_value", "c_2nd_reading", "battery", "ok"]
    values = ["yes", "12", "null", "Home & Kitchen", "a: b", "Café", "on"]
    assert yaml.safe_load(_yaml({"value_set": values, "min_value": 0.00001, "max_value": 12})) == {
        "value_set": values, "min_value": 0.00001, "max_value": 12}


# ---------------------------------------------------------------------------------------------- a long history

HISTORY_FIRST, HISTORY_LAST = dt.date(2008, 1, 1), dt.date(2017, 12, 31)
CONDITIONS = ("Acne", "Birth Control", "Depression", "Pain")


def create_history_table(conninfo: str) -> None:
    """Ten years of uneven history, like the public drug reviews: a few rows a year, a busy 2012-2014, and five
    rows in the newest days. ``useful_count`` grows with a review's age, drug names keep changing (new ones
    appear every year), conditions stay the same four, and ``total`` is ``price x quantity``."""
    rng = random.Random(11)
    rows = []
    for year in range(2008, 2018):
        per_year = 250 if year in (2012, 2013, 2014) else 25
        for n in range(per_year):
            day = dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(360))
            rows.append((day, year, n))
    rows += [(HISTORY_LAST - dt.timedelta(days=n % 3), 2017, 900 + n) for n in range(5)]  # the newest days
    with psycopg.connect(conninfo) as conn:
        conn.execute("create schema history_lab")
        conn.execute("create table history_lab.reviews (review_id integer primary key, review_date date not null, "
                     "drug_name text not null, condition text not null, rating smallint not null, "
                     "useful_count integer not null, price numeric(8, 2) not null, quantity integer not null, "
                     "total numeric(10, 2) not null, review text not null)")
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into history_lab.reviews values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(i + 1, day, f"Drug {year}", CONDITIONS[rng.randrange(4)], rng.randint(1, 10),
                  int((2018 - year) * 25 * rng.random()), price, quantity, price * quantity,
                  f"Review {i} of a drug taken since {year}: {'worked well' if i % 3 else 'side effects'}.")
                 for i, (day, year, n) in enumerate(rows)
                 for price, quantity in [(decimal.Decimal(rng.randrange(500, 9000)) / 100, rng.randint(1, 6))]])


def plant_history_rows(conninfo: str) -> dict[int, str]:
    """Rows the proposed expectations must reject: review id -> the column their reason names."""
    planted = {9001: ("rating", 500), 9002: ("condition", "Mars"), 9003: ("useful_count", -5),
               9004: ("quantity", 10_000)}
    with psycopg.connect(conninfo) as conn:
        for review_id, (column, value) in planted.items():
            conn.execute("insert into history_lab.reviews select %s, review_date, drug_name, condition, rating, "
                         "useful_count, price, quantity, total, review from history_lab.reviews where review_id = 1",
                         (review_id,))
            conn.execute(psycopg.sql.SQL("update history_lab.reviews set {} = %s where review_id = %s").format(
                psycopg.sql.Identifier(column)), (value, review_id))
    return {review_id: column for review_id, (column, _) in planted.items()}


def validate_whole_history(conninfo: str, spec) -> tuple[int, dict[str, str]]:
    """Extract and validate 2008..2017 as one partition with real Great Expectations: (rows, {row key: reason})."""
    from lm_insights.core.partition import Partition, staging_table
    from lm_insights.steps.extract import extract_partition
    from lm_insights.steps.load import drop_staging
    from lm_insights.steps.validate import validate_partition

    partition = Partition(Partition.day(HISTORY_FIRST).start, Partition.day(HISTORY_LAST).end, run_id="history")
    try:
        extracted = extract_partition(spec, conninfo, conninfo, partition)
        validate_partition(spec, conninfo, partition)
        with psycopg.connect(conninfo) as conn:
            rejects = conn.execute(psycopg.sql.SQL(
                "select e.review_id, r.reason from {} as r join {} as e using (_row_number)").format(
                staging_table(spec, partition, "rejects"), staging_table(spec, partition, "extracted"))).fetchall()
    finally:
        drop_staging(spec, conninfo, partition)
    return extracted, {review_id: reason for review_id, reason in rejects}


def test_a_long_uneven_history_gives_a_spec_that_keeps_clean_rows_and_rejects_bad_ones(warehouse_conninfo, tmp_path):
    create_history_table(warehouse_conninfo)
    result = init_pipeline("drug_reviews", warehouse_conninfo, "history_lab.reviews", pipelines_dir=tmp_path)
    spec = load_spec(result.path)

    extracted, rejects = validate_whole_history(warehouse_conninfo, spec)
    assert extracted == 930
    assert len(rejects) <= 0.01 * extracted, (f"{len(rejects)} of {extracted} clean rows rejected, e.g. "
                                              f"{list(rejects.items())[:3]}")

    planted = plant_history_rows(warehouse_conninfo)
    extracted, rejects = validate_whole_history(warehouse_conninfo, spec)
    assert extracted == 930 + len(planted)
    for review_id, column in planted.items():
        assert column in rejects.get(review_id, ""), (review_id, rejects.get(review_id))

    # What was proposed, and on which figures: ranges from the whole history, no set for drifting drug names.
    rows = {(name, kwargs.get("column")): kwargs for entry in spec.expectations.rows
            for name, kwargs in entry.items()}
    assert rows[("expect_column_values_to_be_in_set", "condition")]["value_set"] == list(CONDITIONS)
    assert ("expect_column_values_to_be_in_set", "drug_name") not in rows
    assert "no allowed values for drug_name" in result.spec_yaml, result.spec_yaml
    assert rows[("expect_column_values_to_be_between", "useful_count")]["max_value"] >= 200
    assert result.first_day.year == 2008 and result.last_day == HISTORY_LAST
    assert result.check_rows > 300 and result.sample_rows > 300
    assert result.reject_share <= 0.01 and all(c.checked for c in result.checks if c.failing is not None)
    # Outcomes: total = price x quantity, found in the rows, said in a comment.
    assert spec.insights.outcomes == ["total"] and "total = price x quantity in" in result.spec_yaml


def test_an_expectation_that_rejects_more_check_rows_than_allowed_is_left_out_and_the_file_says_so(
        warehouse_conninfo, tmp_path):
    """useful_count has rare outliers (7 of 930 rows): the profile's p1..p99 range leaves them out, the check
    rows show the share it rejects, and a threshold below that share keeps the range out of the spec."""
    create_history_table(warehouse_conninfo)
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("update history_lab.reviews set useful_count = 100000 where review_id % 125 = 0")
    label = "expect_column_values_to_be_between(useful_count)"
    lenient = init_pipeline("drug_reviews", warehouse_conninfo, "history_lab.reviews", pipelines_dir=tmp_path)
    share = next(c.share for c in lenient.checks if c.label == label)
    assert 0.002 < share < 0.01 and label not in lenient.spec_yaml.split("not proposed")[-1]

    strict = init_pipeline("drug_reviews", warehouse_conninfo, "history_lab.reviews", pipelines_dir=tmp_path,
                           force=True, max_reject_share=0.002)
    refused = {c.label: c for c in strict.checks if not c.proposed}
    assert label in refused and refused[label].share == share
    assert f"# not proposed: {label} would reject more than 0%" in strict.spec_yaml
    spec = load_spec(strict.path)
    assert not [e for e in spec.expectations.rows
                if e.get("expect_column_values_to_be_between", {}).get("column") == "useful_count"]
    assert strict.reject_share <= 0.002


def test_the_command_prints_what_each_expectation_rejects(warehouse_conninfo, tmp_path, capsys):
    from lm_insights.cli import main

    create_history_table(warehouse_conninfo)
    main(["init-pipeline", "drug_reviews", "--table", "history_lab.reviews", "--conn", warehouse_conninfo,
          "--days", "3", "--sample", "200", "--outcomes", "price", "--pipelines-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "2008-01" in printed and "..2017-12-31)" in printed
    assert re.search(r"expect_column_values_to_be_between\(rating\) +rejects +0\.0%", printed), printed
    assert re.search(r"together reject \d+\.\d%", printed) and "the newest 3 days" in printed
    assert "outcomes ['total', 'price']" in printed or "outcomes ['price', 'total']" in printed
    spec = load_spec(tmp_path / "drug_reviews.yaml")
    assert set(spec.insights.outcomes) == {"price", "total"}
    assert "price: named with --outcomes" in (tmp_path / "drug_reviews.yaml").read_text()


def test_hostile_names_and_values_cannot_add_keys_or_lines(tmp_path):
    """Names and values from the warehouse reach the file only through YAML's escaping; comments carry none raw."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from lm_insights.init_pipeline import Sample, _profile, _propose

    text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=24)

    @settings(max_examples=100, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(column=text, values=st.lists(text, min_size=2, max_size=4, unique=True), table=text)
    def check(column, values, table):
        numbers = [float(n) for n in range(40)]
        site_values = [values[n % len(values)] for n in range(40)]
        profiles = {"reading_id": _profile("reading_id", "reading_id", "integer", list(range(40))),
                    "measured_at": _profile("measured_at", "measured_at", "date", [dt.date(2026, 1, 1)] * 40),
                    "site": _profile("site", column, "text", site_values),
                    "temp": _profile("temp", "temp", "double precision", numbers)}
        rows = [{"reading_id": n, "measured_at": None, "site": site_values[n], "temp": numbers[n]} for n in range(40)]
        sample = Sample(profiles, rows, query=None, profile_rows=40, check_rows=0)
        proposal = _propose("hostile", "warehouse", "public.readings_lm", table, ["reading_id"],
                            f"unique index {table}", "measured_at", 1, dt.date(2026, 1, 1), dt.date(2026, 1, 1), 7, sample,
                            f"create view ... {column}", {column + "x": "jsonb"}, [])
        written = proposal.render()
        document = yaml.safe_load(written)
        assert list(document) == ["name", "description", "owner", "tags", "schedule", "start_date", "catchup",
                                  "retries", "source", "expectations", "text", "lm", "insights", "sink"]
        assert list(document["source"]) == ["conn_id", "table", "key", "partition_column", "columns"]
        in_set = [kw for entry in document["expectations"]["rows"] for name, kw in entry.items()
                  if name == "expect_column_values_to_be_in_set"]
        assert in_set == [{"column": "site", "value_set": sorted(values)}]
        for line in written.splitlines():  # every line is a comment, blank, or a key/item the proposal wrote
            assert re.match(r"^( *#.*| *| *- [a-z_]+: .*| *[a-z_]+:( .*)?)$", line), line
        path = tmp_path / "hostile.yaml"
        path.write_text(written)
        assert load_spec(path).expectations.rows == document["expectations"]["rows"]

    check()
