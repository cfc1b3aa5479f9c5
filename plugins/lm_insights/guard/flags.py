"""Per-row flags of the staged partition, loaded into ``<pipeline>_rows`` with the row:

- ``quality_flags`` (text[]): ``empty`` (nothing left of the text columns once markup and entities are removed),
  ``too_short`` (fewer than ``guard.min_text_chars`` characters left), ``markup_or_digits`` (under half of the
  text columns' characters are letters), ``duplicate`` (another row of the partition has the same text),
  ``truncated`` (longer than the model reads), ``toxic`` (guard/toxicity.py), ``inconsistent`` (a promoted head
  contradicts the recorded outcome with high confidence: guard/inconsistent.py);
- ``ambiguous``: some label set's best label leads the runner-up by less than its ``min_margin`` (``uncertain``),
  or some label set's or classification head's ``<name>_entropy`` is above ``guard.max_entropy``;
- ``ood_score``: cosine distance of the row's embedding to its nearest reference embedding (the promoted head's
  training rows, else the loaded rows of the window); ``ood`` when above the reference's own ``ood_quantile`` of
  leave-one-out nearest-neighbour distances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg import sql

from lm_insights.core.partition import STAGING_SCHEMA, Partition, staging_name, staging_table
from lm_insights.core.uncertainty import normalized_entropy
from lm_insights.guard import inconsistent, toxicity
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

if TYPE_CHECKING:
    from lm_insights.core.cache import CacheKey

# Cosines of a text to the label prototypes become a distribution by softmax(ZERO_SHOT_SCALE * cosine):
# all-MiniLM-L6-v2 was trained with a cross entropy over the cosines of a batch's candidate pairs (its model card),
# the objective of sentence-transformers' MultipleNegativesRankingLoss, which scales the cosines by 20 by default.
ZERO_SHOT_SCALE = 20.0
QUALITY_FLAGS = ("empty", "too_short", "markup_or_digits", "duplicate", "truncated", "toxic", "inconsistent")
MARKUP = r"<[^>]*>|&[#a-zA-Z0-9]+;"  # tags and HTML entities
OOD_DECIMALS = 6  # ood_score's precision: far below any threshold's meaning, above float noise


def text_quality_sql(spec: PipelineSpec, text_columns: list[str]) -> sql.Composable:
    """The array of quality flags of a row of staging ``rows`` (a window function: duplicates)."""
    raw = (sql.SQL("concat_ws(' ', {})").format(sql.SQL(", ").join(sql.Identifier(c) for c in text_columns))
           if text_columns else sql.SQL("''"))
    cleaned = sql.SQL("btrim(regexp_replace({raw}, {markup}, ' ', 'g'))").format(raw=raw, markup=sql.Literal(MARKUP))
    letters = sql.SQL("length(regexp_replace({raw}, '[^[:alpha:]]', '', 'g'))::float8").format(raw=raw)
    checks = [
        sql.SQL("case when {c} = '' then 'empty' end").format(c=cleaned) if text_columns else sql.NULL,
        sql.SQL("case when {c} <> '' and length({c}) < {n} then 'too_short' end").format(
            c=cleaned, n=sql.Literal(spec.guard.min_text_chars)) if text_columns else sql.NULL,
        sql.SQL("case when length({raw}) > 0 and {letters} / length({raw}) < 0.5 then 'markup_or_digits' end"
                ).format(raw=raw, letters=letters) if text_columns else sql.NULL,
        sql.SQL("case when count(*) over (partition by text) > 1 then 'duplicate' end"),
        sql.SQL("case when truncated then 'truncated' end"),
    ]
    return sql.SQL("array_remove(array[{}]::text[], null)").format(sql.SQL(", ").join(checks))


def zero_shot_entropy(cosines: np.ndarray) -> np.ndarray:
    """Normalized entropy of softmax(ZERO_SHOT_SCALE * cosine) over each row's label prototypes."""
    logits = ZERO_SHOT_SCALE * np.asarray(cosines, dtype=np.float64)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return normalized_entropy(weights / weights.sum(axis=1, keepdims=True))


def entropy_columns(spec: PipelineSpec) -> list[str]:
    """The ``<name>_entropy`` columns of the label sets and classification heads."""
    names = [*spec.lm.label_sets, *(n for n, h in spec.lm.heads.items() if h.task == "classification")]
    return [f"{name}_entropy" for name in names]


def low_margin_sql(spec: PipelineSpec) -> sql.Composable:
    margins = [sql.SQL("coalesce({} < {}, false)").format(sql.Identifier(f"{name}_margin"),
                                                          sql.Literal(label_set.min_margin))
               for name, label_set in spec.lm.label_sets.items()]
    return sql.SQL(" or ").join(margins) if margins else sql.SQL("false")


def high_entropy_sql(spec: PipelineSpec) -> sql.Composable:
    entropies = [sql.SQL("coalesce({} > {}, false)").format(sql.Identifier(column),
                                                            sql.Literal(spec.guard.max_entropy))
                 for column in entropy_columns(spec)]
    return sql.SQL(" or ").join(entropies) if entropies else sql.SQL("false")


@dataclass
class OodReference:
    """The embeddings a row's ``ood_score`` is measured against and the distance beyond which a row is ``ood``."""
    source: str  # "head": the promoted head's training rows; "window": the loaded rows of the trailing window
    vectors: np.ndarray  # (n, d) unit vectors
    threshold: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "rows": len(self.vectors), "threshold": self.threshold, **self.details}


def self_distance_threshold(reference: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of each reference vector's distance to its nearest other one (unit vectors)."""
    return float(np.quantile(nearest_distances(reference, reference, leave_one_out=True), quantile))


def window_reference(spec: PipelineSpec, embeddings: np.ndarray) -> OodReference:
    """The trailing window's embeddings as the OOD reference (no threshold with fewer than two)."""
    vectors = unit(embeddings) if len(embeddings) else embeddings
    threshold = self_distance_threshold(vectors, spec.guard.ood_quantile) if len(vectors) > 1 else None
    return OodReference("window", vectors, threshold, {"window_days": spec.guard.window_days})


def nearest_distances(queries: np.ndarray, reference: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
    """Cosine distance of each query to its nearest reference vector (unit vectors; chunks of 1024 queries).

    In float64, rounded to OOD_DECIMALS: a distance near 0 is 1 minus a cosine near 1, and float32 products differ in
    their last bits with the chunk a row falls in, so the same rows would not get the same score twice."""
    reference = np.asarray(reference, dtype=np.float64)
    out = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), 1024):
        similarity = np.asarray(queries[start:start + 1024], dtype=np.float64) @ reference.T  # (chunk, n_reference)
        if leave_one_out:  # query i is reference i: its nearest other vector
            own = np.arange(len(similarity))
            similarity[own, start + own] = -np.inf
        out[start:start + 1024] = 1.0 - similarity.max(axis=1)
    return np.round(out, OOD_DECIMALS)


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9, None)


def flag_rows(spec: PipelineSpec, conn, partition: Partition, reference: OodReference, key: CacheKey,
              conninfo: str | None = None, heads: dict[str, int] | None = None) -> dict:
    """Add the flag columns to staging ``rows``; return per-partition counts and the OOD reference used.
    ``heads``: the promoted head versions the run used (``conninfo`` loads them), for ``inconsistent``."""
    rows, name = staging_table(spec, partition, "rows"), staging_name(spec, partition, "rows")
    types = db.table_columns(conn, STAGING_SCHEMA, name)
    text_columns = toxicity.text_columns(spec, types)
    for column, type_name in (("quality_flags", "text[]"), ("ambiguous", "boolean"),
                              ("ood_score", "double precision"), ("ood", "boolean")):
        conn.execute(sql.SQL("alter table {} add column if not exists {} {}").format(
            rows, sql.Identifier(column), sql.SQL(type_name)))
    conn.execute(sql.SQL("update {rows} as r set quality_flags = f.flags, ambiguous = {low_margin} or {entropy} "
                         "from (select _row_number, {flags} as flags from {rows}) as f "
                         "where f._row_number = r._row_number").format(
        rows=rows, flags=text_quality_sql(spec, text_columns), low_margin=low_margin_sql(spec),
        entropy=high_entropy_sql(spec)))
    toxicity.copy_to_rows(spec, conn, partition)
    inconsistent.flag_partition(spec, conninfo, conn, partition, key, heads or {})
    if spec.lm.embeddings and reference.threshold is not None:
        found = conn.execute(sql.SQL(
            "select r._row_number, c.embedding::real[] from {rows} as r join {texts} as t using (_row_number) "
            "join {cache} as c on c.text_sha256 = t.text_sha256 and c.model_key = %(model_key)s "
            "and c.head_version = %(head_version)s and c.template_version = %(template_version)s "
            "where c.embedding is not null order by r._row_number").format(
                rows=rows, texts=staging_table(spec, partition, "texts"),
                cache=db.qualified(spec.sink.schema_, "lm_cache")),
            vars(key)).fetchall()
        if found:
            scores = nearest_distances(unit(np.array([e for _, e in found], dtype=np.float32)), reference.vectors)
            conn.execute("create temporary table ood_scores (_row_number bigint, ood_score float8) on commit drop")
            db.copy_rows(conn, sql.Identifier("ood_scores"), ("_row_number", "ood_score"),
                         ((n, float(s)) for (n, _), s in zip(found, scores)))
            conn.execute(sql.SQL("update {} as r set ood_score = s.ood_score, ood = s.ood_score > %s "
                                 "from ood_scores as s where s._row_number = r._row_number").format(rows),
                         (reference.threshold,))
    total, ambiguous, low_margin, high_entropy, ood = conn.execute(sql.SQL(
        "select count(*), count(*) filter (where ambiguous), count(*) filter (where {}), "
        "count(*) filter (where {}), count(*) filter (where ood) from {}").format(
        low_margin_sql(spec), high_entropy_sql(spec), rows)).fetchone()
    counts = {"rows": total, "ambiguous": ambiguous, "low_margin": low_margin, "high_entropy": high_entropy,
              "ood": ood}
    for flag in QUALITY_FLAGS:
        counts[flag] = conn.execute(sql.SQL("select count(*) from {} where %s = any(quality_flags)").format(rows),
                                    (flag,)).fetchone()[0]
    return {"counts": counts, "ood_threshold": reference.threshold, "ood_reference": reference.describe()}
