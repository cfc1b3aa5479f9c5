"""Quarantine and release on a real PostgreSQL: a held partition is published exactly once, never over rows a later
run published, with every table of the set (the heads' quality rows included).

The runs load real staging tables through the real ``load_partition``; the staging tables are written here
instead of by a model run, so each test takes a second, not a minute.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import psycopg
import pytest

from lm_insights.core.partition import STAGING_SCHEMA, Partition, staging_name
from lm_insights.guard.gates import release
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec, SpecError, load_spec
from lm_insights.core.insight_tables import HELD_TABLES, insight_tables
from lm_insights.steps.load import load_partition

WEEK = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(7)]
SPEC = PipelineSpec.model_validate({
    "name": "shop", "start_date": "2026-11-01",
    "source": {"table": "shop.sales", "key": ["sale_id"], "partition_column": "sale_day",
               "columns": ["sale_id", "sale_day", "note", "price"]},
    "text": {"columns": ["note"]},
    "lm": {"heads": {"price_model": {"task": "regression", "target": "price"}}},
    "insights": {"metrics": ["price"], "segments": [{"by_column": "note"}]},
})
# staging step -> its columns after partition_start (what the insights step leaves, cut to what load reads)
AGGREGATE_STEPS = ("segments", "drivers", "rules", "clusters", "explanations", "findings")


def stage_run(conninfo: str, partition: Partition, version: str) -> None:
    """The staging tables a run of ``partition`` leaves for load: one row per day, texts saying ``version``."""
    days = [d for d in WEEK + [WEEK[-1] + dt.timedelta(days=1)] if partition.start.date() <= d < partition.end.date()]

    def table(step: str, columns: str, rows: list[tuple]) -> None:
        name = sql_name(step)
        conn.execute(f"drop table if exists {name}")
        conn.execute(f"create table {name} ({columns})")
        with conn.cursor().copy(f"copy {name} from stdin") as copy:
            for row in rows:
                copy.write_row(row)

    def sql_name(step: str) -> str:
        return f"{STAGING_SCHEMA}.{staging_name(SPEC, partition, step)}"

    with psycopg.connect(conninfo) as conn:
        conn.execute(f"create schema if not exists {STAGING_SCHEMA}")
        start = partition.start
        ids = [day.toordinal() for day in days]
        table("rows", "partition_start timestamptz, _row_number bigint, sale_id bigint, sale_day date, text text, "
              "text_sha256 text", [(start, i, sale_id, day, f"{version} {day}", f"sha of {version} {day}")
                                   for i, (sale_id, day) in enumerate(zip(ids, days))])
        table("extracted", "_row_number bigint, sale_id bigint, sale_day date, note text, price numeric",
              [(i, sale_id, day, version, -1) for i, (sale_id, day) in enumerate(zip(ids, days))])
        table("rejects", "_row_number bigint, failed_expectations text[], reason text",
              [(i, "{expect_column_values_to_be_between}", f"{version} price < 0") for i in range(len(days))])
        for step in AGGREGATE_STEPS:
            table(step, "partition_start timestamptz, made_by text", [(start, version)])
        table("summary", "partition_start timestamptz, summary text", [(start, f"{version} summary")])
        table("quality", "partition_start timestamptz, head text, rows integer", [(start, "price_model", len(days))])


def run(conninfo: str, partition: Partition, version: str, held: bool = False) -> None:
    """A run of ``partition`` that loads (or, ``held``, holds) what it staged, recorded in insights.runs."""
    partition = dataclasses.replace(partition, run_id=version)
    stage_run(conninfo, partition, version)
    load_partition(SPEC, conninfo, partition, held=held)
    with psycopg.connect(conninfo) as conn:
        conn.execute("insert into insights.runs (run_id, pipeline, partition_start, partition_end, status) "
                     "values (%s, 'shop', %s, %s, %s)",
                     (version, partition.start, partition.end, "quarantined" if held else "success"))


@pytest.fixture
def sink(warehouse_conninfo) -> str:
    with db.connect(warehouse_conninfo) as conn:
        db.ensure_insight_schema(conn, "insights")
    return warehouse_conninfo


def query(conninfo: str, statement: str, params=()) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(statement, params).fetchall()


def published_texts(conninfo: str, table: str = "shop_rows") -> dict[dt.date, str]:
    return dict(query(conninfo, f"select sale_day, text from insights.{table} order by 1"))


def made_by(conninfo: str, table: str) -> list[tuple]:
    column = "summary" if table.endswith("summaries") else "made_by"
    return query(conninfo, f"select partition_start::date, partition_end::date, {column} from insights.{table} "
                           "order by 1, 2")


def test_release_keeps_the_days_a_later_run_published(sink):
    week, day3 = Partition.days(WEEK[0], WEEK[-1]), Partition.day(WEEK[2])
    run(sink, week, "held", held=True)
    run(sink, day3, "later")  # a later run publishes 11-03 while the week waits in quarantine

    released = release(SPEC, sink, WEEK[0], WEEK[-1])

    texts = published_texts(sink)
    assert texts[WEEK[2]] == f"later {WEEK[2]}", "the later run's rows of 11-03 stay"
    assert texts == {day: f"{'later' if day == WEEK[2] else 'held'} {day}" for day in WEEK}, "each day exactly once"
    rejects = query(sink, "select row ->> 'sale_day', reason from insights.shop_rejects order by 1")
    assert rejects == [(str(day), f"{'later' if day == WEEK[2] else 'held'} price < 0") for day in WEEK]
    # the week's aggregates described the old 11-03: they went when 11-03 was replaced; 11-03's own stay
    assert made_by(sink, "shop_summaries") == [(WEEK[2], WEEK[3], "later summary")]
    assert made_by(sink, "shop_segments") == [(WEEK[2], WEEK[3], "later")]
    assert released[str(week)]["rows"] == 6
    assert query(sink, "select status from insights.runs where run_id = 'held'") == [("released",)]
    assert query(sink, "select count(*) from insights.shop_quarantine_rows") == [(0,)]


def test_release_replaces_what_was_published_before_the_hold(sink):
    week = Partition.days(WEEK[0], WEEK[-1])
    run(sink, Partition.day(WEEK[2]), "earlier")  # published before the hold: the held week replaces it
    run(sink, week, "held", held=True)

    release(SPEC, sink, WEEK[0], WEEK[-1])

    assert published_texts(sink) == {day: f"held {day}" for day in WEEK}
    assert made_by(sink, "shop_summaries") == [(WEEK[0], WEEK[-1] + dt.timedelta(days=1), "held summary")]


def test_a_newer_hold_of_a_day_is_never_overwritten_by_releasing_an_older_hold(sink):
    week, day3 = Partition.days(WEEK[0], WEEK[-1]), Partition.day(WEEK[2])
    run(sink, week, "older_hold", held=True)
    run(sink, day3, "newer_hold", held=True)
    release(SPEC, sink, WEEK[2])  # the newer hold of 11-03 alone
    assert published_texts(sink) == {WEEK[2]: f"newer_hold {WEEK[2]}"}

    release(SPEC, sink, WEEK[0], WEEK[-1])  # then the older week

    assert published_texts(sink) == {day: f"{'newer_hold' if day == WEEK[2] else 'older_hold'} {day}" for day in WEEK}


def test_release_publishes_the_heads_quality_rows_too(sink):
    assert "quality" in insight_tables(SPEC)
    run(sink, Partition.day(WEEK[0]), "held", held=True)
    assert query(sink, "select head, rows from insights.shop_quarantine_quality") == [("price_model", 1)]

    released = release(SPEC, sink, WEEK[0])

    assert released[str(Partition.day(WEEK[0]))]["quality"] == 1
    assert query(sink, "select head, rows from insights.shop_quality") == [("price_model", 1)]
    assert query(sink, "select count(*) from insights.shop_quarantine_quality") == [(0,)]


def test_the_held_rows_table_gets_its_own_text_hash_index(sink):
    run(sink, Partition.day(WEEK[0]), "published")
    run(sink, Partition.day(WEEK[1]), "held", held=True)
    indexed = dict(query(sink, "select indexname, tablename from pg_indexes where schemaname = 'insights' "
                               "and indexdef like '%%(text_sha256)%%'"))
    assert indexed == {"shop_rows_by_text_sha256": "shop_rows",
                       "shop_quarantine_rows_by_text_sha256": "shop_quarantine_rows"}


# Every relation a pipeline owns in its sink schema: insight tables, held copies and the rows tables' indexes.
PIPELINE_RELATIONS = [*HELD_TABLES, *(f"quarantine_{t}" for t in HELD_TABLES),
                      *(f"{held}rows_by_{column}" for held in ("", "quarantine_") for column in ("partition",
                                                                                                "text_sha256"))]


def spec_file(tmp_path, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nstart_date: 2026-11-01\nsource: {{table: shop.sales, key: [sale_id], "
                    "partition_column: sale_day, columns: [sale_id, sale_day, note, price]}\n"
                    "text: {columns: [note]}\ninsights: {metrics: [price], segments: [{by_column: note}]}\n")
    return path


def test_a_pipeline_name_that_would_take_another_pipelines_tables_is_refused(tmp_path):
    assert load_spec(spec_file(tmp_path, "x")).name == "x"
    with pytest.raises(SpecError, match=r"x_quarantine.yaml: invalid pipeline spec\n  name: 'x_quarantine': a name "
                                        r"may not contain '__' or end in _quarantine"):
        load_spec(spec_file(tmp_path, "x_quarantine"))  # x's held rows wait in x_quarantine_rows
    with pytest.raises(SpecError, match="may not contain '__'"):
        load_spec(spec_file(tmp_path, "x__train"))  # the DAG that trains x's heads


def test_no_valid_name_owns_a_relation_of_another_pipeline(tmp_path):
    # <p>_<a> == <q>_<b> for a longer q means q = <p>_<m> where a = <m>_<b>: each such ending m must be refused
    endings = {a[:-len(b) - 1] for a in PIPELINE_RELATIONS for b in PIPELINE_RELATIONS if a.endswith("_" + b)}
    assert endings == {"quarantine"}
    for ending in endings:
        with pytest.raises(SpecError, match="rename it"):
            load_spec(spec_file(tmp_path, f"x_{ending}"))
