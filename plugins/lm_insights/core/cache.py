"""The result cache's key and table: what makes two computations of a text the same one.

Key: (model key, head version, template version, sha256 of the text). The model key covers the checkpoint's files,
the engine's code version and the numeric precision; the head version the label sets and the trained heads; the
template version everything that decides a row's text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
from psycopg import sql

from lm_insights.core.values import template_version
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

CACHE_COLUMNS = ("model_key", "head_version", "template_version", "text_sha256",
                 "embedding", "labels", "n_tokens", "truncated")


@dataclass(frozen=True)
class CacheKey:
    model_key: str
    head_version: str
    template_version: str


def head_version(spec: PipelineSpec, heads: dict[str, int] | None = None) -> str:
    """Short hash of what the heads compute: the label sets, their margins, whether embeddings are kept and
    the versions of the trained heads (``heads``: the promoted version of each head, see ``learn.models``)."""
    from lm_engine.zero_shot import label_set_version

    parts = {name: label_set_version(s.labels, s.min_margin) for name, s in sorted(spec.lm.label_sets.items())}
    # "outputs" versions the shape of the cached JSON: 2 added per-label scores (read by the attributions), 3 the
    # normalized entropy of each label set and classification head (guard.flags).
    recipe = {"embeddings": spec.lm.embeddings, "label_sets": parts, "outputs": 3}
    if spec.lm.heads:
        recipe["heads"] = {name: (heads or {}).get(name) for name in sorted(spec.lm.heads)}
    recipe = json.dumps(recipe, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def cache_key(spec: PipelineSpec, model: str | None = None, heads: dict[str, int] | None = None) -> CacheKey:
    """The result-cache key of this spec with ``model`` (default: the spec's) and the trained-head versions
    ``heads``, without loading the weights."""
    from lm_engine import registry

    name = model or spec.lm.model
    return CacheKey(registry.model_key(name, registry.resolve(name), spec.lm.precision), head_version(spec, heads),
                    template_version(spec))


def cache_table(spec: PipelineSpec) -> sql.Composed:
    return db.qualified(spec.sink.schema_, "lm_cache")


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form: ``[0.1,0.2,...]``."""
    return "[" + ",".join(map(repr, vector.tolist())) + "]"
