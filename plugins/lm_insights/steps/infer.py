"""Infer: run lm_engine on the partition's texts, computing only what the result cache does not hold.

The cache key is (model key, head version, template version, sha256 of the text); the model key covers the
checkpoint's files, the engine's code version and the numeric precision (lm.precision), so a change of model,
precision, label sets or template never reuses a stale result. Work is split into shards by the text hash;
each shard commits after every chunk, so a shard killed half-way and retried recomputes only what it had not
cached. Duplicate texts within a partition are computed once.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
from psycopg import sql

from lm_insights.core.cache import CACHE_COLUMNS, CacheKey, cache_key, cache_table, head_version, vector_literal
from lm_insights.core.partition import Partition
from lm_insights.core.texts import lm_texts
from lm_insights.core.values import template_version
from lm_insights.guard.flags import zero_shot_entropy
from lm_insights.learn.heads import predict_rows
from lm_insights.learn.models import load_heads
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

MAX_AUTO_SHARDS = 16  # automatic sharding stops here; a spec or Param can ask for more (up to 64)


@dataclass(frozen=True)
class InferSummary:
    shard: int
    texts: int  # distinct texts in the shard
    cached: int  # served from the cache
    computed: int  # encoded now

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def plan_shards(spec: PipelineSpec, distinct_texts: int, requested: int | None = None) -> int:
    """Number of infer shards: the Param, else the spec, else one per ``rows_per_shard`` distinct texts."""
    if requested:
        return requested
    if spec.lm.shards:
        return spec.lm.shards
    return max(1, min(MAX_AUTO_SHARDS, math.ceil(distinct_texts / spec.lm.rows_per_shard)))


def shard_texts_query(spec: PipelineSpec, partition: Partition) -> sql.Composed:
    """Distinct texts of one shard (``%(shard)s`` of ``%(shards)s``), assigned by a hash of the text hash."""
    return sql.SQL(
        "select text_sha256, min(text) from ({texts}) as t "
        "where mod(abs(hashtextextended(text_sha256, 0)), %(shards)s) = %(shard)s "
        "group by text_sha256 order by text_sha256"
    ).format(texts=lm_texts(spec, partition))


def classify_all(spec: PipelineSpec, engine, vectors: np.ndarray, prototypes: dict) -> list[dict]:
    """Per text: ``{label_set: {label, best, score, margin, entropy, scores: {label: cosine}}}``."""
    from lm_engine.zero_shot import classify_vectors

    per_text: list[dict] = [{} for _ in range(len(vectors))]
    for name, label_set in spec.lm.label_sets.items():
        results = classify_vectors(vectors, prototypes[name], list(label_set.labels), label_set.min_margin)
        entropies = zero_shot_entropy([list(r.scores.values()) for r in results]) if results else []
        for outputs, result, entropy in zip(per_text, results, entropies):
            outputs[name] = {"label": result.label, "best": result.best, "score": round(result.score, 6),
                             "margin": round(result.margin, 6), "entropy": round(float(entropy), 6),
                             "scores": {label: round(score, 6) for label, score in result.scores.items()}}
    return per_text


def infer_shard(spec: PipelineSpec, conninfo: str, partition: Partition, shard: int, shards: int,
                model: str | None = None, force_recompute: bool = False, engine=None,
                heads: dict[str, int] | None = None) -> InferSummary:
    """Fill the cache for one shard's texts; return how many were cached already and how many were computed.

    ``engine`` defaults to ``lm_engine.load_engine(model)``; benchmarks pass a stub to measure the platform alone.
    ``heads`` are the trained-head versions the run planned with (loaded from ``<schema>.models``).
    """
    key = cache_key(spec, model, heads) if engine is None else CacheKey(engine.model_key, head_version(spec, heads),
                                                                        template_version(spec))
    loaded: dict = {}

    def engine_and_prototypes():
        """The model is loaded on the first cache miss: a fully cached shard never loads it."""
        if not loaded:
            from lm_engine import load_engine

            loaded["engine"] = engine or load_engine(model or spec.lm.model, precision=spec.lm.precision)
            loaded["prototypes"] = {name: loaded["engine"].prototypes(s.labels)
                                    for name, s in spec.lm.label_sets.items()}
            loaded["heads"] = heads_for(spec, loaded["engine"], load_heads(conninfo, spec, heads or {}))
        return loaded["engine"], loaded["prototypes"], loaded["heads"]

    texts = cached = computed = 0
    with db.connect(conninfo) as read, db.connect(conninfo) as write:
        total = read.execute(
            sql.SQL("select count(*) from ({}) as s").format(shard_texts_query(spec, partition)),
            {"shard": shard, "shards": shards},
        ).fetchone()[0]
        progress = db.Progress(f"{spec.name} infer shard {shard}/{shards} {partition}", total, logger=log)
        write.execute(sql.SQL("create temp table cache_in (like {} including defaults) on commit delete rows")
                      .format(cache_table(spec)))
        chunks = db.stream_query(read, shard_texts_query(spec, partition), {"shard": shard, "shards": shards},
                                 spec.lm.chunk_size)
        for chunk in chunks:
            hashes = [h for h, _ in chunk]
            hits = set() if force_recompute else cached_hashes(write, spec, key, hashes)
            misses = [(h, t) for h, t in chunk if h not in hits]
            if misses:
                write_results(write, spec, key, misses, *engine_and_prototypes(), overwrite=force_recompute)
            write.commit()  # a retried shard starts from here
            texts += len(chunk)
            cached += len(hits)
            computed += len(misses)
            progress.add(len(chunk), cache_hit_rate=f"{cached / max(texts, 1):.0%}")
        progress.finish(cached=cached, computed=computed)
    return InferSummary(shard=shard, texts=texts, cached=cached, computed=computed)


def heads_for(spec: PipelineSpec, engine, trained_heads: dict) -> dict:
    """The trained heads that read this engine's embeddings; one trained on another model is left out (its
    columns stay empty, and the run's quality shows it abstained)."""
    usable = {name: h for name, h in trained_heads.items() if h.card.get("base_model_key") == engine.model_key}
    for name in trained_heads.keys() - usable.keys():
        log.warning("%s: head %s v%d was trained on %s, not %s; its outputs stay empty in this run", spec.name,
                    name, trained_heads[name].version, trained_heads[name].card.get("base_model_key"),
                    engine.model_key)
    return usable


def cached_hashes(conn, spec: PipelineSpec, key: CacheKey, hashes: list[str]) -> set[str]:
    """The hashes of ``hashes`` that the cache already holds for ``key`` (one round trip)."""
    rows = conn.execute(
        sql.SQL("select text_sha256 from {} where model_key = %s and head_version = %s and template_version = %s "
                "and text_sha256 = any(%s)").format(cache_table(spec)),
        (key.model_key, key.head_version, key.template_version, hashes),
    ).fetchall()
    return {h for (h,) in rows}


def write_results(conn, spec: PipelineSpec, key: CacheKey, misses: list[tuple[str, str]], engine,
                  prototypes: dict, trained_heads: dict | None = None, overwrite: bool = False) -> None:
    """Encode ``misses`` (hash, text) and COPY the outputs (label sets, trained heads) into the cache."""
    texts = [text for _, text in misses]
    encoded = engine.encode(texts)
    labels = classify_all(spec, engine, encoded.vectors, prototypes)
    for name, loaded in (trained_heads or {}).items():
        for outputs, head_output in zip(labels, predict_rows(loaded, engine, texts, encoded.vectors)):
            outputs.setdefault("heads", {})[name] = head_output
    rows = (
        (key.model_key, key.head_version, key.template_version, text_hash,
         vector_literal(vector) if spec.lm.embeddings else None,
         json.dumps(outputs), int(n_tokens), bool(truncated))
        for (text_hash, _), vector, outputs, n_tokens, truncated
        in zip(misses, encoded.vectors, labels, encoded.n_tokens, encoded.truncated)
    )
    db.copy_rows(conn, sql.Identifier("cache_in"), CACHE_COLUMNS, rows)
    conflict = (
        "do update set embedding = excluded.embedding, labels = excluded.labels, n_tokens = excluded.n_tokens, "
        "truncated = excluded.truncated, computed_at = now()" if overwrite else "do nothing"
    )
    conn.execute(sql.SQL(
        "insert into {cache} select * from cache_in "
        "on conflict (model_key, head_version, template_version, text_sha256) " + conflict
    ).format(cache=cache_table(spec)))
