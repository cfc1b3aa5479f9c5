"""Search by meaning on a real run: a planted near-duplicate review comes back first, through the HNSW index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from lm_insights.explain.similar import RowNotFound, index_name, nearest_rows_sql, similar
from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_spec
from lm_insights.core.cache import cache_key
from lm_insights.core.partition import Partition

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "customer_reviews.yaml")
DAY = Partition.day("2026-11-01")
ORIGINAL = "The espresso machine leaked water all over the kitchen counter on the very first morning."
NEAR_DUPLICATE = "The espresso machine leaked water all over my kitchen counter on its first morning."


def test_a_planted_near_duplicate_comes_back_first(warehouse_conninfo):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=DAY.start.date(), days=1, sales_per_day=0, reviews_per_day=20)
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("insert into retail.reviews (review_id, product_id, review_date, rating, review_text) values "
                     "(990001, 1, %s, 1, %s), (990002, 1, %s, 1, %s)",
                     (DAY.start.date(), ORIGINAL, DAY.start.date(), NEAR_DUPLICATE))
    assert run_partition(SPEC, warehouse_conninfo, warehouse_conninfo, DAY).status == "success"
    key = cache_key(SPEC)

    [first, *rest] = similar(SPEC, warehouse_conninfo, "review_id=990001", key, limit=3)
    assert first["review_id"] == 990002 and "sentiment_label" in first and len(rest) == 2
    assert first["distance"] < min(r["distance"] for r in rest)
    by_text = similar(SPEC, warehouse_conninfo, "espresso machine leaking water onto the counter", key, limit=2)
    assert {r["review_id"] for r in by_text} == {990001, 990002}

    with psycopg.connect(warehouse_conninfo) as conn:  # the documented query can be ordered by the HNSW index
        conn.execute("set enable_seqscan = off; set enable_sort = off; set enable_incremental_sort = off")
        plan = "\n".join(r[0] for r in conn.execute(
            psycopg.sql.SQL("explain ") + nearest_rows_sql(SPEC, key, 384, ["review_id"]),
            {"query": "[" + ",".join(["0.1"] * 384) + "]", "exclude": "", "limit": 3, "candidates": 30,
             "head_version": key.head_version, "template_version": key.template_version}).fetchall())
    assert index_name(key, 384) in plan

    with pytest.raises(RowNotFound, match="no row with review_id=424242"):
        similar(SPEC, warehouse_conninfo, "review_id=424242", key)

    # the command itself, as a user runs it, against the same database
    def similar_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lm_insights.cli", "similar", *args, "--conn", warehouse_conninfo],
                              capture_output=True, text=True, env=os.environ, timeout=300)

    def first_key(done: subprocess.CompletedProcess) -> int:
        assert done.returncode == 0, done.stderr
        header, _, first, *_ = done.stdout.splitlines()
        assert header.split()[0] == "review_id" and header.split()[-1] == "distance"
        return int(first.split()[0])

    assert first_key(similar_command("customer_reviews", "review_id=990001", "--limit", "3")) == 990002
    assert first_key(similar_command("customer_reviews", "review_id=990002", "--limit", "3")) == 990001
    paraphrase = "The espresso machine leaked water all over the counter of my kitchen on the first morning."
    assert first_key(similar_command("customer_reviews", paraphrase, "--limit", "2")) in (990001, 990002)
    unknown = similar_command("nope", "anything")
    assert unknown.returncode == 1
    assert "lm-insights similar: unknown pipeline 'nope'; known: ['customer_reviews', 'market_risk', 'product_sales', 'shipments']" in unknown.stderr
    missing = similar_command("customer_reviews", "review_id=424242")
    assert missing.returncode == 1 and "lm-insights similar: customer_reviews: no row with review_id=424242" in \
        missing.stderr
