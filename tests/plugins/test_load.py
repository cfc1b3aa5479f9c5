"""Load replaces a partition in one transaction: a failure half-way leaves the previous data untouched."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from lm_insights.runtime import demo_warehouse
from lm_insights.steps.extract import extract_partition
from lm_insights.steps.insights import build_insights
from lm_insights.steps.load import MissingStaging, drop_staging, load_partition
from lm_insights.core.partition import Partition, staging_table
from lm_insights.core.cache import cache_key
from lm_insights.pipeline import run_partition
from lm_insights.spec import load_spec
from lm_insights.steps.textualize import textualize_partition
from lm_insights.steps.validate import validate_partition
from lm_insights.steps.infer import infer_shard

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "customer_reviews.yaml")
DAY = Partition.day("2026-11-01")


def partition_dump(conninfo: str) -> dict[str, list]:
    with psycopg.connect(conninfo) as conn:
        return {t: sorted(conn.execute(f'select * from insights."customer_reviews_{t}"').fetchall(), key=repr)
                for t in ("rows", "segments", "drivers", "summaries", "rejects")}


def test_a_failed_load_leaves_the_previous_partition_intact(warehouse_conninfo):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=DAY.start.date(), days=1, sales_per_day=5, reviews_per_day=15)
    assert run_partition(SPEC, warehouse_conninfo, warehouse_conninfo, DAY).status == "success"
    before = partition_dump(warehouse_conninfo)
    assert before["rows"] and before["rejects"]

    with psycopg.connect(warehouse_conninfo) as conn:  # new source data for the same day
        conn.execute("update retail.reviews set rating = 5 where rating between 1 and 4")
    extract_partition(SPEC, warehouse_conninfo, warehouse_conninfo, DAY)
    rejected = validate_partition(SPEC, warehouse_conninfo, DAY).rejected
    textualize_partition(SPEC, warehouse_conninfo, DAY)
    infer_shard(SPEC, warehouse_conninfo, DAY, 0, 1)
    build_insights(SPEC, warehouse_conninfo, DAY, cache_key(SPEC), rejected)
    with psycopg.connect(warehouse_conninfo) as conn:  # the 4th of 5 tables cannot be loaded
        conn.execute(sql.SQL("drop table {}").format(staging_table(SPEC, DAY, "summary")))

    with pytest.raises(MissingStaging, match="customer_reviews__20261101__summary is missing"):
        load_partition(SPEC, warehouse_conninfo, DAY)
    assert partition_dump(warehouse_conninfo) == before


def test_two_runs_of_one_partition_at_once_keep_their_own_staging(warehouse_conninfo):
    """A manual trigger during a backfill of the same day: two threads run every step at the same moment (a barrier
    before each step), and neither run breaks the other."""
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=DAY.start.date(), days=1, sales_per_day=5, reviews_per_day=8)
    runs = [dataclasses.replace(DAY, run_id=f"{kind}__2026-11-01") for kind in ("backfill", "manual")]
    barrier = threading.Barrier(len(runs), timeout=120)
    staging_seen: list[set[str]] = []

    def staging_tables() -> set[str]:
        with psycopg.connect(warehouse_conninfo) as conn:
            return {n for (n,) in conn.execute("select tablename from pg_tables where schemaname = 'lm_staging' "
                                               "and tablename like 'customer\\_reviews\\_\\_20261101%'")}

    def run(partition: Partition) -> dict[str, int]:
        steps = [lambda: extract_partition(SPEC, warehouse_conninfo, warehouse_conninfo, partition),
                 lambda: validate_partition(SPEC, warehouse_conninfo, partition).rejected,
                 lambda: textualize_partition(SPEC, warehouse_conninfo, partition),
                 lambda: infer_shard(SPEC, warehouse_conninfo, partition, 0, 1),
                 lambda: build_insights(SPEC, warehouse_conninfo, partition, cache_key(SPEC), results[1]),
                 lambda: staging_seen.append(staging_tables()),
                 lambda: load_partition(SPEC, warehouse_conninfo, partition),
                 lambda: drop_staging(SPEC, warehouse_conninfo, partition)]
        results = []
        try:
            for step in steps:
                barrier.wait()
                results.append(step())
        except Exception:
            barrier.abort()  # the other run stops at its next step instead of waiting for this one
            raise
        return results[6]

    with ThreadPoolExecutor(len(runs)) as pool:
        futures = [pool.submit(run, partition) for partition in runs]
    errors = [f.exception() for f in futures if f.exception() is not None]
    for error in sorted(errors, key=lambda e: isinstance(e, threading.BrokenBarrierError)):
        raise error
    loaded = [f.result() for f in futures]

    steps_by_run: dict[str, set[str]] = {}
    for name in set.union(*staging_seen):  # customer_reviews__20261101_<run hash>__<step>
        tag, step = name.split("__")[1:]
        steps_by_run.setdefault(tag, set()).add(step)
    assert len(steps_by_run) == 2, f"both runs' staging tables exist at once: {sorted(steps_by_run)}"
    assert len({frozenset(steps) for steps in steps_by_run.values()}) == 1 and "rows" in steps_by_run.popitem()[1]
    assert loaded[0] == loaded[1] and loaded[0]["rows"] > 0 and loaded[0]["rejects"] > 0
    assert staging_tables() == set(), "each run dropped its own staging tables"
    reference = run_partition(SPEC, warehouse_conninfo, warehouse_conninfo, DAY)
    assert (reference.loaded, reference.rejected) == (loaded[0]["rows"], loaded[0]["rejects"])


def test_runs_of_two_pipelines_with_one_run_id_are_both_recorded(warehouse_conninfo):
    """Backfills of one day give every pipeline the run id backfill__<date>; neither record may replace the other.
    A database whose runs table still has run_id alone as its key is migrated."""
    from lm_insights.runtime import db
    from lm_insights.steps.load import RunRecord, record_run

    with psycopg.connect(warehouse_conninfo) as conn:  # the runs table as earlier versions created it
        conn.execute("create schema insights")
        conn.execute("create table insights.runs (run_id text primary key, pipeline text not null, "
                     "partition_start timestamptz not null, partition_end timestamptz not null, status text not null, "
                     "extracted bigint, rejected bigint, cached bigint, computed bigint, loaded bigint, model_key text, "
                     "template_version text, head_version text, timings jsonb not null default '{}', message text, "
                     "recorded_at timestamptz not null default now())")
    for pipeline, loaded in (("product_sales", 40), ("customer_reviews", 25), ("product_sales", 41)):
        record_run(warehouse_conninfo, "insights", RunRecord(
            run_id="backfill__2026-11-02T00:00:00+00:00", pipeline=pipeline, partition=DAY, status="success",
            extracted=loaded, rejected=0, cached=0, computed=loaded, loaded=loaded, model_key="m",
            template_version="t", head_version="h"))
    with db.connect(warehouse_conninfo) as conn:
        rows = conn.execute("select pipeline, loaded from insights.runs order by pipeline").fetchall()
    assert rows == [("customer_reviews", 25), ("product_sales", 41)]
