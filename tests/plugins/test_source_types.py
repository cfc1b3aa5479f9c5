"""Column types a real warehouse has: extracted exactly (or as text), refused by name, widened on load."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from lm_insights.pipeline import run_partition
from lm_insights.runtime import db, embedded_pg
from lm_insights.spec import PipelineSpec
from lm_insights.steps.extract import SourceError, extract_partition
from lm_insights.core.insight_tables import IncompatibleColumnType, holds
from lm_insights.core.partition import Partition, staging_name, staging_table

DAY = Partition.day("2026-11-01")
COLUMNS = ["event_id", "happened_at", "payload", "meta", "tags", "mood", "moods", "amount", "ratio", "note",
           "counts", "local_time", "wait"]
STAGED_TYPES = {"event_id": "uuid", "happened_at": "timestamp with time zone", "payload": "jsonb", "meta": "json",
                "tags": "text[]", "mood": "text", "moods": "text[]", "amount": "numeric(12,4)",
                "ratio": "double precision", "note": "character varying(20)", "counts": "integer[]",
                "local_time": "timestamp without time zone", "wait": "interval"}


def make_spec(columns=COLUMNS, text=("note", "mood", "payload")) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "events", "start_date": "2026-11-01",
        "source": {"table": "shop.events", "key": ["event_id"], "partition_column": "happened_at",
                   "columns": list(columns)},
        "text": {"columns": list(text)},
        "insights": {"metrics": ["amount"], "segments": [{"by_tiers": {"column": "ratio", "edges": [0, 1, 2]}}]},
    })


@pytest.fixture
def source(warehouse_conninfo) -> str:
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("create schema shop")
        conn.execute("create type shop.mood as enum ('calm', 'angry')")
        conn.execute("create table shop.events (event_id uuid, happened_at timestamptz, payload jsonb, meta json, "
                     "tags text[], mood shop.mood, moods shop.mood[], amount numeric(12,4), ratio float8, "
                     "note varchar(20), counts int[], local_time timestamp, wait interval, spot point, doc xml)")
        for i in range(6):
            conn.execute(
                "insert into shop.events values (gen_random_uuid(), '2026-11-01 10:00+00'::timestamptz + %s * "
                "interval '1 hour', %s, %s, %s, %s, %s, %s, %s, %s, %s, '2026-11-01 08:30:00.123456', "
                "'1 day 02:03:04', point(1, 2), null)",
                (i, psycopg.types.json.Jsonb({"k": i, "nested": {"list": [1, "two", None]}}),
                 psycopg.types.json.Json({"same": "json"}) if i % 2 else None,
                 ["a b", "c,d", 'q"uote'], ["calm", "angry"][i % 2], ["calm", "angry"],
                 f"{1234.5678 + i}", 0.1 + 0.3 * i, f"note {i}", [i, None, 3]))
    return warehouse_conninfo


@pytest.fixture
def other_sink(pg_server, warehouse_conninfo) -> str:
    """A second database: it lacks the source's enum type."""
    name = psycopg.conninfo.conninfo_to_dict(warehouse_conninfo)["dbname"] + "_sink"
    return embedded_pg.ensure_database(pg_server, name)


def test_json_arrays_numbers_uuid_times_and_enums_arrive_exactly_in_another_database(source, other_sink):
    spec = make_spec()
    assert extract_partition(spec, source, other_sink, DAY) == 6

    with psycopg.connect(other_sink) as sink, psycopg.connect(source) as src:
        staged = db.table_columns(sink, "lm_staging", staging_name(spec, DAY, "extracted"))
        assert {c: t for c, t in staged.items() if c != "_row_number"} == STAGED_TYPES
        for conn in (sink, src):
            conn.execute("set time zone 'UTC'")
        text_of = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in COLUMNS)
        got = sink.execute(sql.SQL("select {} from {} order by _row_number").format(
            text_of, staging_table(spec, DAY, "extracted"))).fetchall()
        want = src.execute(sql.SQL("select {} from shop.events order by event_id").format(text_of)).fetchall()
    assert got == want


def test_an_unsupported_type_is_refused_by_column_and_type_before_any_work(source, other_sink):
    spec = make_spec(columns=[*COLUMNS, "spot", "doc"])

    with pytest.raises(SourceError, match=r"spot \(point\), doc \(xml\).*Cast the column in a view"):
        extract_partition(spec, source, other_sink, DAY)
    with psycopg.connect(other_sink) as sink:
        created = sink.execute("select nspname from pg_namespace where nspname in ('lm_staging', 'insights')"
                               ).fetchall()
    assert created == []


@pytest.mark.parametrize("wide, narrow, fits", [
    ("character varying(50)", "character varying(20)", True),
    ("character varying(20)", "character varying(50)", False),
    ("text", "character varying(20)", True),
    ("numeric(12,4)", "numeric(10,2)", True),
    ("numeric(12,4)", "numeric(12,2)", False),  # two more integer digits
    ("bigint", "integer", True),
    ("integer", "bigint", False),
    ("double precision", "real", True),
    ("integer[]", "smallint[]", True),
    ("integer", "text", False),
])
def test_which_column_types_hold_which(wide, narrow, fits):
    assert holds(wide, narrow) is fits


def test_load_widens_a_grown_source_column_and_names_an_incompatible_one(source):
    spec = make_spec()
    assert run_partition(spec, source, source, DAY).status == "success"
    with psycopg.connect(source) as conn:
        conn.execute("alter table shop.events alter column note type varchar(50)")
        conn.execute("update shop.events set note = repeat('long note ', 4)")

    assert run_partition(spec, source, source, DAY).status == "success"
    with psycopg.connect(source) as conn:
        note_type = db.table_columns(conn, "insights", "events_rows")["note"]
        notes = {n for (n,) in conn.execute("select note from insights.events_rows").fetchall()}
        conn.execute("alter table shop.events alter column note type integer using length(note)")
    assert note_type == "character varying(50)" and notes == {"long note " * 4}

    with pytest.raises(IncompatibleColumnType, match=r'insights.events_rows.note is character varying\(50\), but '
                                                     r'the source now gives integer.*alter table insights.events_rows '
                                                     r'alter column "note" type integer'):
        run_partition(make_spec(), source, source, DAY)
