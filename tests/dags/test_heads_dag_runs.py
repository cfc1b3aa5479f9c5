"""Real DAG runs (``dag.test``) of ``customer_reviews__train`` and of ``customer_reviews`` using the trained head."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from lm_insights.cli import run_dag
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_spec
from lm_insights.core.values import template_version

SPEC_FILE = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "customer_reviews.yaml"
START = dt.date(2026, 11, 1)
HEAD = "learned_sentiment"


@pytest.fixture(scope="module")
def warehouse(airflow_db):
    """The `warehouse` connection's database with four demo days. Afterwards everything customer_reviews left
    (models, cached results, runs, insight tables) is removed: later modules start from an empty pipeline."""
    from lm_insights.airflow_dag import conninfo_for

    conninfo = conninfo_for("warehouse")
    demo_warehouse.create_schema(conninfo)
    # 38 a day: day 4 alone has 48 rated rows, under min_rows 50 (the fail-fast test trains on it)
    demo_warehouse.generate(conninfo, start=START, days=4, sales_per_day=0, reviews_per_day=38)
    yield conninfo
    spec = load_spec(SPEC_FILE)
    with psycopg.connect(conninfo) as conn:
        conn.execute("delete from insights.models where pipeline = 'customer_reviews'")
        conn.execute("delete from insights.runs where pipeline = 'customer_reviews'")
        conn.execute("delete from insights.lm_cache where template_version = %s", (template_version(spec),))
        for suffix in ("rows", "segments", "drivers", "summaries", "rejects", "quality"):
            conn.execute(f"drop table if exists insights.customer_reviews_{suffix}")


def query(conninfo: str, statement: str, params=()) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(statement, params).fetchall()


def test_train_dag_promotes_a_head_that_the_pipeline_dag_then_uses(warehouse):
    for offset in range(3):
        assert run_dag("customer_reviews", START + dt.timedelta(days=offset)).state == "success"

    trained = run_dag("customer_reviews__train", START + dt.timedelta(days=2))
    assert trained.state == "success"
    assert query(warehouse, "select version, decision, promoted from insights.models where pipeline = "
                            "'customer_reviews' and head = %s", (HEAD,)) == [(1, "promoted", True)]

    rolled_back = run_dag("customer_reviews__train", START + dt.timedelta(days=2), conf={"rollback": True})
    assert rolled_back.state == "success"
    assert query(warehouse, "select count(*) from insights.models where promoted and pipeline = "
                            "'customer_reviews'") == [(0,)]

    retrained = run_dag("customer_reviews__train", START + dt.timedelta(days=2), conf={"force": True})
    assert retrained.state == "success"
    assert query(warehouse, "select version from insights.models where promoted and pipeline = "
                            "'customer_reviews'") == [(2,)]

    day = START + dt.timedelta(days=3)
    run = run_dag("customer_reviews", day)
    assert run.state == "success"
    start = dt.datetime.combine(day, dt.time(0), dt.timezone.utc)
    labels = query(warehouse, f"select {HEAD}_label, count(*) from insights.customer_reviews_rows "
                              "where partition_start = %s group by 1", (start,))
    assert labels and {label for label, _ in labels} <= {"negative", "neutral", "positive", "uncertain"}
    quality = query(warehouse, "select model, head_version, rows from insights.customer_reviews_quality "
                               "where partition_start = %s and head is not null order by model", (start,))
    assert [(model, version) for model, version, _ in quality] == [("head", 2), ("majority", 2), ("zero_shot", 2)]
    assert quality[0][2] == query(warehouse, "select count(*) from insights.customer_reviews_rows where "
                                             "partition_start = %s and rating between 1 and 5", (start,))[0][0]
    (runs_quality, head_version), = query(warehouse, "select quality, head_version from insights.runs where "
                                                     "run_id = %s", (run.run_id,))
    assert runs_quality[HEAD]["version"] == 2
    (earlier_head_version,), = query(warehouse, "select head_version from insights.runs where pipeline = "
                                                "'customer_reviews' and partition_start = %s order by recorded_at "
                                                "desc limit 1", (start - dt.timedelta(days=1),))[0:1]
    assert head_version != earlier_head_version  # the head's version is part of the result-cache key
    (summary,), = query(warehouse, "select summary from insights.customer_reviews_summaries where "
                                   "partition_start = %s", (start,))
    assert f"{HEAD} (head v2):" in summary


def test_train_dag_fails_fast_without_enough_rows(warehouse):
    run = run_dag("customer_reviews__train", START, conf={"window": 1, "force": True})
    assert run.state == "failed"
    (ti,) = [ti for ti in run.get_task_instances() if ti.task_id == f"train_{HEAD}"]
    assert ti.state == "failed" and ti.try_number == 1  # a deterministic error: no retry
