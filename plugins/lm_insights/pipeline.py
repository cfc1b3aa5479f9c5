"""The whole chain for one partition without a scheduler: used by the benchmark and ``lm-insights run``.

The Airflow DAG (``lm_insights.airflow_dag``) calls the same step functions as separate tasks; this module is the
same order in one process, for scripts and for measuring each step's share of the time.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from lm_insights.core.cache import CacheKey, cache_key, head_version
from lm_insights.core.partition import Partition
from lm_insights.core.texts import count_distinct_texts
from lm_insights.core.values import template_version
from lm_insights.explain.words import explain_partition
from lm_insights.guard.gates import guard_partition
from lm_insights.learn.models import promoted_versions
from lm_insights.spec import PipelineSpec
from lm_insights.steps.extract import extract_partition
from lm_insights.steps.infer import infer_shard, plan_shards
from lm_insights.steps.insights import build_insights
from lm_insights.steps.load import RunRecord, drop_staging, load_guarded, record_run
from lm_insights.steps.preflight import check_source
from lm_insights.steps.textualize import textualize_partition
from lm_insights.steps.validate import validate_partition

T = TypeVar("T")


def run_partition(spec: PipelineSpec, source_conninfo: str, sink_conninfo: str, partition: Partition,
                  model: str | None = None, force_recompute: bool = False, shards: int | None = None,
                  run_id: str | None = None, engine=None) -> RunRecord:
    """Extract, validate, textualize, infer (shard by shard), build insights and load one partition.

    ``engine`` replaces the lm_engine model (benchmarks pass a stub); its ``model_key`` then keys the cache.
    """
    heads = promoted_versions(sink_conninfo, spec)  # fixed for the whole run, even if a training promotes now
    key = cache_key(spec, model, heads) if engine is None else CacheKey(engine.model_key, head_version(spec, heads),
                                                                        template_version(spec))
    run_id = run_id or f"script__{uuid.uuid4().hex[:12]}"
    partition = dataclasses.replace(partition, run_id=run_id)
    record = RunRecord(run_id=run_id, pipeline=spec.name,
                       partition=partition, status="running", model_key=key.model_key,
                       template_version=key.template_version, head_version=key.head_version)

    def timed(step: str, work: Callable[[], T]) -> T:
        started = time.monotonic()
        result = work()
        record.timings[step] = round(time.monotonic() - started, 3)
        return result

    try:
        check_source(spec, source_conninfo)
        record.extracted = timed("extract", lambda: extract_partition(spec, source_conninfo, sink_conninfo, partition))
        record.rejected = timed("validate", lambda: validate_partition(spec, sink_conninfo, partition)).rejected
        timed("textualize", lambda: textualize_partition(spec, sink_conninfo, partition))
        n_shards = plan_shards(spec, count_distinct_texts(spec, sink_conninfo, partition), shards)
        summaries = timed("infer", lambda: [
            infer_shard(spec, sink_conninfo, partition, shard, n_shards, model, force_recompute, engine, heads)
            for shard in range(n_shards)])
        record.cached = sum(s.cached for s in summaries)
        record.computed = sum(s.computed for s in summaries)
        built = timed("insights", lambda: build_insights(spec, sink_conninfo, partition, key, record.rejected, heads))
        record.quality = built["quality"]
        record.timings |= built["timings"]  # explain_* parts of the insights step
        words = timed("explain_words", lambda: explain_partition(spec, sink_conninfo, partition, key, model, engine))
        record.timings |= words["timings"]  # rows explained and skipped for the budget
        verdict = timed("guard", lambda: guard_partition(spec, sink_conninfo, partition, key, heads))
        record.loaded = timed("load", lambda: load_guarded(spec, sink_conninfo, partition, run_id, verdict))["rows"]
        record.status = verdict.status
    except Exception as exc:
        record.status, record.message = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            record_run(sink_conninfo, spec.sink.schema_, record)
        finally:  # a failed run's staging holds full copies of source rows: never leave it behind
            drop_staging(spec, sink_conninfo, partition)
    return record
