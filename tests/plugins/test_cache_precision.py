"""The result cache keys on the encoder's numeric precision: a bf16 result is never served to an fp32 run.

No GPU here: bf16 runs on the CPU (torch supports it, slowly), which gives real bf16 vectors for a few rows.
"""

from __future__ import annotations

import json

import numpy as np
import psycopg

from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import DEFAULT_PIPELINES_DIR, load_spec
from lm_insights.core.cache import cache_key
from lm_insights.core.partition import Partition

DAY = Partition.day("2026-11-01")


def with_precision(spec, precision):
    return spec.model_copy(update={"lm": spec.lm.model_copy(update={"precision": precision, "attributions": False})})


def test_a_bf16_result_is_not_served_to_an_fp32_run(warehouse_conninfo):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=DAY.start.date(), days=1, sales_per_day=8, reviews_per_day=1)
    spec = load_spec(DEFAULT_PIPELINES_DIR / "product_sales.yaml")
    bf16, fp32 = with_precision(spec, "bf16"), with_precision(spec, "fp32")
    assert cache_key(bf16).model_key.endswith("/bf16") and cache_key(fp32).model_key.endswith("/fp32")
    assert cache_key(bf16).model_key.split("/")[0] == cache_key(fp32).model_key.split("/")[0]

    first = run_partition(bf16, warehouse_conninfo, warehouse_conninfo, DAY)
    assert first.computed > 0 and first.cached == 0
    second = run_partition(fp32, warehouse_conninfo, warehouse_conninfo, DAY)
    assert (second.cached, second.computed) == (0, first.computed)
    assert run_partition(fp32, warehouse_conninfo, warehouse_conninfo, DAY).cached == first.computed

    with psycopg.connect(warehouse_conninfo) as conn:
        rows = conn.execute("select model_key, text_sha256, embedding::text from insights.lm_cache").fetchall()
        recorded = conn.execute("select model_key from insights.runs order by recorded_at").fetchall()
    assert [k for (k,) in recorded] == [cache_key(bf16).model_key] + [cache_key(fp32).model_key] * 2
    vectors = {(key.rsplit("/", 1)[1], text): np.array(json.loads(vector)) for key, text, vector in rows}
    texts = {text for _, text in vectors}
    assert len(vectors) == 2 * len(texts)
    # the two precisions give different vectors for the same text, which is why they must not share an entry
    gaps = [np.abs(vectors["bf16", t] - vectors["fp32", t]).max() for t in texts]
    assert min(gaps) > 1e-4, gaps
