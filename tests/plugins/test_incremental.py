"""The result cache and the shards: compute only what changed, never lose or duplicate a row.

These run the plain step functions (no scheduler) with the real all-MiniLM-L6-v2 model on a small demo day.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from lm_insights.guard.gates import guard_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.core.texts import count_distinct_texts
from lm_insights.steps.infer import infer_shard
from lm_insights.steps.insights import build_insights
from lm_insights.steps.load import load_partition
from lm_insights.core.partition import Partition
from lm_insights.core.cache import cache_key
from lm_insights.pipeline import run_partition
from lm_insights.spec import Words, load_spec
from lm_insights.steps.textualize import textualize_partition
from lm_insights.core.values import format_value
from lm_insights.steps.extract import extract_partition
from lm_insights.steps.validate import validate_partition

SPEC_FILE = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "product_sales.yaml"
DAY = Partition.day("2026-11-01")


class CountingEngine:
    """The real engine, counting the texts it encodes; optionally failing on its n-th call (a killed worker)."""

    def __init__(self, fail_on_call: int | None = None):
        from lm_engine import load_engine

        self.engine = load_engine("all-MiniLM-L6-v2")
        self.model_key = self.engine.model_key
        self.encoded: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def encode(self, texts):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("worker killed half-way")
        self.encoded.extend(texts)
        return self.engine.encode(texts)

    def prototypes(self, labels):
        return self.engine.prototypes(labels)


@pytest.fixture
def spec():
    """product_sales without attributions or word explanations, so every encoded text is a row's text (both have
    their own tests)."""
    loaded = with_lm(load_spec(SPEC_FILE), attributions=False)
    return loaded.model_copy(update={"explain": loaded.explain.model_copy(update={"words": Words(enabled=False)})})


@pytest.fixture
def warehouse(warehouse_conninfo) -> str:
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=DAY.start.date(), days=1, sales_per_day=40, reviews_per_day=5)
    return warehouse_conninfo


def insight_tables(conninfo: str, pipeline: str) -> dict[str, list]:
    with psycopg.connect(conninfo) as conn:
        return {suffix: sorted(conn.execute(f'select * from insights."{pipeline}_{suffix}"').fetchall(), key=repr)
                for suffix in ("rows", "segments", "drivers", "summaries", "rejects")}


def with_lm(spec, **changes):
    return spec.model_copy(update={"lm": spec.lm.model_copy(update=changes)})


def test_rerun_encodes_nothing_and_changes_of_labels_or_template_recompute(spec, warehouse):
    first = CountingEngine()
    cold = run_partition(spec, warehouse, warehouse, DAY, engine=first)
    assert cold.computed == len(set(first.encoded)) > 0

    again = CountingEngine()
    rerun = run_partition(spec, warehouse, warehouse, DAY, engine=again)
    assert again.encoded == [] and rerun.computed == 0 and rerun.cached == cold.computed

    relabelled = spec.lm.label_sets | {"mood": spec.lm.label_sets["positioning"].model_copy(
        update={"labels": {"cheerful": "A happy product", "gloomy": "A sad product"}})}
    new_labels = CountingEngine()
    assert run_partition(with_lm(spec, label_sets=relabelled), warehouse, warehouse, DAY,
                         engine=new_labels).computed == cold.computed
    retemplated = spec.model_copy(update={"text": spec.text.model_copy(update={"template": "Item {product_name}."})})
    new_template = CountingEngine()
    run_partition(retemplated, warehouse, warehouse, DAY, engine=new_template)
    assert new_template.encoded and set(new_template.encoded) <= {f"Item {format_value(name)}." for name in
                                                                 _product_names(warehouse)}


def _product_names(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo) as conn:
        return {n for (n,) in conn.execute("select distinct product_name from retail.product_sales")}


def test_duplicate_texts_are_encoded_once(spec, warehouse):
    """With a template of the product name alone, 40+ rows share a handful of texts."""
    by_product = spec.model_copy(update={"text": spec.text.model_copy(update={"template": "Product {product_name}."})})
    engine = CountingEngine()
    record = run_partition(by_product, warehouse, warehouse, DAY, engine=engine)
    assert len(engine.encoded) == len(set(engine.encoded)) == record.computed
    assert record.computed < record.loaded


def test_a_shard_killed_half_way_resumes_and_matches_an_uninterrupted_run(spec, warehouse, pg_server):
    """Three shards with small chunks; shard 1 dies after committing its first chunk and is retried."""
    from lm_insights.runtime import embedded_pg

    spec = with_lm(spec, chunk_size=5, shards=3)
    reference_db = embedded_pg.ensure_database(pg_server, "incremental_reference")
    demo_warehouse.create_schema(reference_db)
    demo_warehouse.generate(reference_db, start=DAY.start.date(), days=1, sales_per_day=40, reviews_per_day=5)
    uninterrupted = run_partition(spec, reference_db, reference_db, DAY, engine=CountingEngine())

    extracted = extract_partition(spec, warehouse, warehouse, DAY)
    rejected = validate_partition(spec, warehouse, DAY).rejected
    textualize_partition(spec, warehouse, DAY)
    assert count_distinct_texts(spec, warehouse, DAY) > 10
    killed = CountingEngine(fail_on_call=2)
    with pytest.raises(RuntimeError, match="killed"):
        infer_shard(spec, warehouse, DAY, 1, 3, engine=killed)
    done_before_kill = len(killed.encoded)
    assert done_before_kill == 5
    retried = infer_shard(spec, warehouse, DAY, 1, 3, engine=CountingEngine())
    assert retried.cached == done_before_kill and retried.computed == retried.texts - done_before_kill
    others = [infer_shard(spec, warehouse, DAY, shard, 3, engine=CountingEngine()) for shard in (0, 2)]
    assert sum(s.texts for s in [retried, *others]) == count_distinct_texts(spec, warehouse, DAY)
    build_insights(spec, warehouse, DAY, cache_key(spec), rejected)
    guard_partition(spec, warehouse, DAY, cache_key(spec))  # the row flags, as run_partition adds them
    loaded = load_partition(spec, warehouse, DAY)

    assert extracted == loaded["rows"] + loaded["rejects"] == uninterrupted.extracted
    assert insight_tables(warehouse, spec.name) == insight_tables(reference_db, spec.name)
    with psycopg.connect(warehouse) as conn:
        keys = [k for (k,) in conn.execute("select sale_id from insights.product_sales_rows")]
    assert len(keys) == len(set(keys)), "no row is duplicated across shards"
