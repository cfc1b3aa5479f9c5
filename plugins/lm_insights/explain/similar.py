"""Search by meaning: the rows whose cached embeddings lie nearest a text or a row (cosine distance, pgvector HNSW).

``lm_cache.embedding`` is an untyped ``vector`` (any model's width), and an HNSW index needs a fixed width, so the
index is a partial expression index per model: ``(embedding::vector(D)) vector_cosine_ops where model_key = K``.
A query uses the same expression and predicate (docs/explain.md shows it as plain SQL).
"""

from __future__ import annotations

import hashlib
import logging
import re

import psycopg
from psycopg import sql

from lm_insights.core.cache import CacheKey, cache_table
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

CANDIDATES_PER_RESULT = 10  # the cache also holds occlusion texts and other pipelines' texts: look further


class RowNotFound(LookupError):
    """A row key given to ``similar`` names no row of the pipeline's rows table."""


def index_name(key: CacheKey, dimensions: int) -> str:
    return f"lm_cache_hnsw_{hashlib.sha256(key.model_key.encode()).hexdigest()[:10]}_{dimensions}"


def ensure_similarity_index(spec: PipelineSpec, conn, key: CacheKey) -> str | None:
    """Create the model's HNSW (cosine) index on the cache's embeddings if it is missing; return its name."""
    dimensions = conn.execute(sql.SQL("select vector_dims(embedding) from {} where model_key = %s "
                                      "and embedding is not null limit 1").format(cache_table(spec)),
                              (key.model_key,)).fetchone()
    if dimensions is None:
        return None
    name = index_name(key, dimensions[0])
    if not conn.execute("select 1 from pg_indexes where schemaname = %s and indexname = %s",
                        (spec.sink.schema_, name)).fetchone():
        try:
            with conn.transaction():  # a savepoint: a concurrent run may create the same index first
                conn.execute(sql.SQL("create index if not exists {} on {} using hnsw ((embedding::vector({})) "
                                     "vector_cosine_ops) where model_key = {}").format(
                    sql.Identifier(name), cache_table(spec), sql.Literal(dimensions[0]), sql.Literal(key.model_key)))
        except psycopg.errors.UniqueViolation:
            log.info("%s: index %s was created by a concurrent run", spec.name, name)
    return name


def parse_row_key(spec: PipelineSpec, query: str) -> dict[str, str] | None:
    """``sale_id=5`` (or ``a=1, b=2`` for a composite key) when the query names every key column, else None."""
    pairs = dict(re.findall(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([^,]+?)\s*(?:,|$)", query))
    return pairs if pairs and set(pairs) == set(spec.source.key) else None


def row_embedding(spec: PipelineSpec, conn, key: CacheKey, row_key: dict[str, str]) -> tuple[str, str]:
    """The pgvector text and text hash of the latest loaded row with this key."""
    where = sql.SQL(" and ").join(sql.SQL("r.{}::text = %s").format(sql.Identifier(k)) for k in row_key)
    found = conn.execute(sql.SQL(
        "select c.embedding::text, r.text_sha256 from {rows} as r join {cache} as c on c.text_sha256 = r.text_sha256 "
        "and c.model_key = %s and c.head_version = %s and c.template_version = %s where {where} "
        "order by r.partition_start desc limit 1").format(
        rows=db.qualified(spec.sink.schema_, f"{spec.name}_rows"), cache=cache_table(spec), where=where),
        (key.model_key, key.head_version, key.template_version, *row_key.values())).fetchone()
    if found is None:
        shown = ", ".join(f"{k}={v}" for k, v in row_key.items())
        raise RowNotFound(f"{spec.name}: no row with {shown} in {spec.sink.schema_}.{spec.name}_rows with an "
                          f"embedding of model {key.model_key}; check the key, or run the partition that holds it")
    return found


def nearest_rows_sql(spec: PipelineSpec, key: CacheKey, dimensions: int, columns: list[str]) -> sql.Composed:
    """The documented query: nearest cached texts by the HNSW index, joined back to the pipeline's rows."""
    return sql.SQL(
        "with nearest as (select c.text_sha256, (c.embedding::vector({d})) <=> %(query)s::vector({d}) as distance "
        "from {cache} as c where c.model_key = {model_key} and c.head_version = %(head_version)s "
        "and c.template_version = %(template_version)s and c.text_sha256 <> %(exclude)s "
        "order by (c.embedding::vector({d})) <=> %(query)s::vector({d}) limit %(candidates)s) "
        "select {columns}, n.distance from nearest as n join {rows} as r using (text_sha256) "
        "order by n.distance, r.partition_start desc limit %(limit)s"
    ).format(d=sql.Literal(dimensions), cache=cache_table(spec), model_key=sql.Literal(key.model_key),
             columns=sql.SQL(", ").join(sql.Identifier("r", c) for c in columns),
             rows=db.qualified(spec.sink.schema_, f"{spec.name}_rows"))


def similar(spec: PipelineSpec, conninfo: str, query: str, key: CacheKey, limit: int = 5,
            engine=None) -> list[dict[str, object]]:
    """The ``limit`` rows nearest ``query`` (a row key such as ``sale_id=5``, or any text) with labels and metrics.

    A row key searches from that row's cached embedding and leaves out rows of the same text; any other query is
    encoded with the spec's model (``engine`` replaces it).
    """
    with db.connect(conninfo) as conn:
        rows_columns = db.table_columns(conn, spec.sink.schema_, f"{spec.name}_rows")
        if not rows_columns:
            raise RowNotFound(f"{spec.sink.schema_}.{spec.name}_rows does not exist yet; run the pipeline first")
        row_key = parse_row_key(spec, query)
        if row_key:
            vector, exclude = row_embedding(spec, conn, key, row_key)
        else:
            if engine is None:
                from lm_engine import load_engine

                engine = load_engine(spec.lm.model, precision=spec.lm.precision)
            from lm_insights.core.cache import vector_literal

            vector, exclude = vector_literal(engine.encode([query]).vectors[0]), ""
        dimensions = len(vector.strip("[]").split(","))
        wanted = [*spec.source.key, "partition_start", "text", *(f"{n}_label" for n in spec.lm.label_sets),
                  *spec.insights.metrics, "cluster_name"]
        columns = [c for c in dict.fromkeys(wanted) if c in rows_columns]
        cursor = conn.execute(nearest_rows_sql(spec, key, dimensions, columns), {
            "query": vector, "exclude": exclude, "limit": limit, "candidates": limit * CANDIDATES_PER_RESULT,
            "head_version": key.head_version, "template_version": key.template_version})
        return [dict(zip([c.name for c in cursor.description], row)) for row in cursor.fetchall()]
