"""Word-level explanations: which words carried a row's label, for a bounded sample of rows per partition.

For each label set, the sample is the rows with the smallest margin (the most uncertain) plus a seeded random
sample (sizes in the spec's ``explain.words``), explained in that order (every label set's uncertain rows, then the
random ones) while their encodes fit in ``max_infer_share`` of the partition's distinct texts (what a cold infer of
the partition encodes); the rows left are counted as skipped for the budget in the run's timings. The budget is
counted in texts encoded, not seconds, so the same partition always gets the same explanations.

Each row's text is split into words; captum's KernelShap (or Lime, or FeatureAblation: leave one word out)
perturbs which words are kept and explains the row's best label's margin: cosine to that label's prototype minus
the cosine to the nearest other label's. KernelShap and Lime encode ``n_samples`` perturbed texts, and at least
``samples_per_word`` per word and one more: a fixed count leaves a long text's weights undetermined (on an
additive model of 100 words, 32 samples recovered 0.2 of the true top 5 words; 2 per word recover 5 of 5,
tests/plugins/test_explain_words.py). Per row the top words are stored with signed weights (positive: the word
pushes towards the label). Results are cached by text hash, model, label-set version and method with every
setting that changes the result (samples, seed, top words), so a rerun of the same rows encodes nothing and a
changed setting is computed anew.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from lm_insights.core.cache import CacheKey, cache_table
from lm_insights.core.partition import Partition, staging_table
from lm_insights.guard import toxicity
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec, Words

log = logging.getLogger(__name__)

EXPLANATION_COLUMNS = ("partition_start", "_row_number", "row_key", "label_set", "label", "sample", "top_word",
                       "words", "method")


MAX_BATCH = 256  # perturbed texts encoded in one batch (a long text's samples are encoded in several)


def method_version(settings: Words) -> str:
    """The part of the cache key that the explanation's settings decide: the method, its sampling (samples, per
    word, seed; ablation has none) and the words kept."""
    if settings.method == "ablation":
        return f"ablation:top{settings.top_words}"
    return (f"{settings.method}:{settings.n_samples}:{settings.samples_per_word:g}/word:seed{settings.seed}:"
            f"top{settings.top_words}")


def sample_count(text: str, settings: Words) -> int:
    """Perturbed texts KernelShap or Lime encodes for ``text``: ``n_samples``, and at least ``samples_per_word``
    per word plus one (a linear model of W words needs W + 1 samples to be determined)."""
    return max(settings.n_samples, math.ceil(settings.samples_per_word * len(text.split())) + 1)


def margin_function(engine, prototypes, label_index: int) -> Callable:
    """Texts -> margin of label ``label_index`` over the nearest other label (cosine to the prototypes)."""
    import numpy as np

    proto = np.asarray(prototypes, dtype="float32")
    proto = proto / np.maximum(np.linalg.norm(proto, axis=1, keepdims=True), 1e-12)
    others = [i for i in range(len(proto)) if i != label_index]

    def margins(texts: list[str]):
        vectors = np.asarray(engine.encode(texts).vectors, dtype="float32")
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        cosine = vectors @ proto.T
        return cosine[:, label_index] - cosine[:, others].max(axis=1)

    return margins


def explain_words(text: str, margins: Callable, settings: Words, seed: int = 0) -> list[tuple[str, float]]:
    """(word, weight) for the text's words, largest absolute weight first (captum on a word keep/drop mask)."""
    import torch
    from captum.attr import FeatureAblation, KernelShap, Lime

    words = text.split()
    if not words:
        return []

    def forward(kept):  # (B, W): 1 keeps the word, 0 drops it
        texts = [" ".join(w for w, keep in zip(words, row) if keep > 0.5) for row in kept.tolist()]
        return torch.as_tensor(margins(texts), dtype=torch.float32)

    inputs = torch.ones(1, len(words))
    baselines = torch.zeros(1, len(words))
    torch.manual_seed(seed)
    if settings.method == "ablation":
        weights = FeatureAblation(forward).attribute(inputs, baselines=baselines,
                                                    perturbations_per_eval=len(words))
    else:
        explainer = KernelShap(forward) if settings.method == "kernel_shap" else Lime(forward)
        samples = sample_count(text, settings)
        weights = explainer.attribute(inputs, baselines=baselines, n_samples=samples,
                                      perturbations_per_eval=min(samples, MAX_BATCH))
    ranked = sorted(zip(words, weights[0].tolist()), key=lambda p: -abs(p[1]))
    return [(w, round(float(v), 6)) for w, v in ranked[:settings.top_words]]


def sample_rows(spec: PipelineSpec, conn, partition: Partition, label_set: str, key: CacheKey,
                settings: Words) -> list[tuple]:
    """(_row_number, row key, text, text hash, best label, sample) of the most uncertain and the random rows."""
    key_text = sql.SQL(" || ', ' || ").join(
        sql.SQL("{} || '=' || coalesce(r.{}::text, 'NULL')").format(sql.Literal(k), sql.Identifier(k))
        for k in spec.source.key)
    best = sql.SQL("c.labels -> {} ->> 'best'").format(sql.Literal(label_set))
    base = sql.SQL(
        "select r._row_number, {key_text} as row_key, r.text, t.text_sha256, {best} as best, {kind} as sample "
        "from {rows} as r join {texts} as t using (_row_number) join {cache} as c on c.text_sha256 = t.text_sha256 "
        "and c.model_key = %(model_key)s and c.head_version = %(head_version)s "
        "and c.template_version = %(template_version)s where {best} is not null and {kept}")
    parts = dict(key_text=key_text, best=best, rows=staging_table(spec, partition, "rows"),
                 texts=staging_table(spec, partition, "texts"), cache=cache_table(spec),
                 kept=toxicity.kept_for_findings(spec, partition))
    margin = sql.Identifier(f"{label_set}_margin")
    query = sql.SQL("(({uncertain} order by r.{margin} nulls last, r._row_number limit %(uncertain)s) union all "
                    "({random} order by hashtext(r._row_number::text || %(seed)s), r._row_number "
                    "limit %(uncertain)s + %(random)s))").format(
        uncertain=base.format(kind=sql.Literal("uncertain"), **parts), margin=margin,
        random=base.format(kind=sql.Literal("random"), **parts))
    rows = conn.execute(query, {**vars(key), "uncertain": settings.uncertain_rows,
                                "random": settings.random_rows, "seed": str(settings.seed)}).fetchall()
    chosen, seen = [], set()
    for row in rows:  # random rows that are also among the uncertain ones are replaced by the next random ones
        if row[0] not in seen and (row[5] == "uncertain" or sum(r[5] == "random" for r in chosen) < settings.random_rows):
            chosen.append(row)
            seen.add(row[0])
    return chosen


def create_explanations_table(spec: PipelineSpec, conn, partition: Partition) -> sql.Composed:
    """An empty staging ``explanations`` (the insights step leaves one, so a partition loads without them too)."""
    target = staging_table(spec, partition, "explanations")
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    conn.execute(sql.SQL(
        "create table {} (partition_start timestamptz not null, _row_number bigint not null, row_key text not null, "
        "label_set text not null, label text not null, sample text not null, top_word text, words jsonb not null, "
        "method text not null)").format(target))
    return target


@dataclass
class WordsBudget:
    """The cap on what word explanations may cost in one run, in texts encoded (``texts``)."""
    texts: int
    encoded: int = 0  # spent so far
    computed: int = 0  # rows explained now (not from the cache)

    def allows(self, cost: int) -> bool:
        """True when a row that encodes ``cost`` texts still fits."""
        return self.encoded + cost <= self.texts

    def spend(self, cost: int) -> None:
        self.encoded += cost
        self.computed += 1


def explanation_cost(text: str, settings: Words) -> int:
    """Texts one row's explanation encodes: its perturbations (kernel_shap, lime: :func:`sample_count`), or the text
    with each word left out and the text itself (ablation)."""
    return len(text.split()) + 1 if settings.method == "ablation" else sample_count(text, settings)


@dataclass(frozen=True)
class WordsOutcome:
    explained: int  # rows with stored words (computed now or from the cache)
    skipped_for_budget: int  # sampled rows left unexplained because the budget was spent
    budget: WordsBudget  # what was allowed, encoded and computed now

    def timings(self) -> dict[str, int]:
        """The run-timings entries (counts, not seconds) that ``runs``, the report and the bench read."""
        return {"explain_words_explained": self.explained,
                "explain_words_skipped_for_budget": self.skipped_for_budget,
                "explain_words_budget_texts": self.budget.texts, "explain_words_encoded": self.budget.encoded}


def priority_order(samples: dict[str, list[tuple]]) -> list[tuple[str, tuple]]:
    """(label set, sampled row) with every label set's uncertain rows first, then the random ones."""
    ordered = [(name, row) for name, rows in samples.items() for row in rows if row[5] == "uncertain"]
    return ordered + [(name, row) for name, rows in samples.items() for row in rows if row[5] != "uncertain"]


def build_explanations(spec: PipelineSpec, conn, partition: Partition, key: CacheKey,
                       load_engine: Callable, budget: WordsBudget) -> WordsOutcome:
    """Staging ``explanations`` (and the explanation cache) for the sampled rows, in priority order until
    ``budget`` is spent. ``load_engine()`` gives the model; it is called on the first cache miss only.
    """
    from lm_engine.zero_shot import label_set_version

    settings = spec.explain.words
    target = create_explanations_table(spec, conn, partition)
    if not settings.enabled or not spec.lm.label_sets:
        return WordsOutcome(0, 0, budget)
    cache = db.qualified(spec.sink.schema_, "explanation_cache")
    method = method_version(settings)
    samples = {name: sample_rows(spec, conn, partition, name, key, settings) for name in spec.lm.label_sets}
    skipped, rows_out, loaded, functions = 0, [], {}, {}
    for name, (number, row_key, text, text_hash, best, sample) in priority_order(samples):
        label_set = spec.lm.label_sets[name]
        version = label_set_version(label_set.labels, label_set.min_margin)
        cached = conn.execute(sql.SQL(
            "select words from {} where model_key = %s and label_set_version = %s and method = %s "
            "and text_sha256 = %s and label = %s").format(cache),
            (key.model_key, version, method, text_hash, best)).fetchone()
        if cached:
            words = cached[0]
        elif not budget.allows(explanation_cost(text, settings)):
            skipped += 1
            continue
        else:
            if (name, best) not in functions:
                if "engine" not in loaded:
                    loaded["engine"] = load_engine()
                functions[name, best] = margin_function(loaded["engine"], loaded["engine"].prototypes(label_set.labels),
                                                        list(label_set.labels).index(best))
            words = [{"word": w, "weight": v}
                     for w, v in explain_words(text, functions[name, best], settings, settings.seed)]
            conn.execute(sql.SQL("insert into {} (model_key, label_set_version, method, text_sha256, label, words) "
                                 "values (%s, %s, %s, %s, %s, %s) on conflict do nothing").format(cache),
                         (key.model_key, version, method, text_hash, best, json.dumps(words)))
            budget.spend(explanation_cost(text, settings))
        top = max(words, key=lambda w: w["weight"])["word"] if words else None
        rows_out.append((partition.start, number, row_key, name, best, sample, top, json.dumps(words),
                         settings.method))
    db.copy_rows(conn, target, EXPLANATION_COLUMNS, rows_out)
    log.info("%s %s: %d word-level explanations (%d computed, %d cached), %d rows skipped for the budget of %d "
             "encoded texts (%d used)", spec.name, partition, len(rows_out), budget.computed,
             len(rows_out) - budget.computed, skipped, budget.texts, budget.encoded)
    return WordsOutcome(len(rows_out), skipped, budget)


def explain_partition(spec: PipelineSpec, conninfo: str, partition: Partition, key: CacheKey,
                      model: str | None = None, engine=None) -> dict[str, object]:
    """Build staging ``explanations`` for one partition, encoding at most ``explain.words.max_infer_share`` of the
    partition's distinct texts; the model is loaded only when an explanation is missing from the cache (``engine``
    replaces it, as in ``infer_shard``). Returns the seconds and the run-timings entries (counts and budget)."""
    from lm_insights.core.texts import count_distinct_texts

    def load():
        if engine is not None:
            return engine
        from lm_engine import load_engine

        return load_engine(model or spec.lm.model, precision=spec.lm.precision)

    import torch  # noqa: F401  (loaded first: threadpoolctl limits only the libraries already loaded)
    from threadpoolctl import threadpool_limits

    started = time.monotonic()
    budget = WordsBudget(int(spec.explain.words.max_infer_share * count_distinct_texts(spec, conninfo, partition)))
    # Measured on 2 busy cores: KernelShap of one row (32 short texts in one batch) took 6.3 s with every OpenMP
    # thread and 0.2 s with one; the batches here are too small to gain from threads.
    with db.connect(conninfo) as conn, threadpool_limits(1, user_api="openmp"):
        db.ensure_insight_schema(conn, spec.sink.schema_)
        outcome = build_explanations(spec, conn, partition, key, load, budget)
    return {"seconds": round(time.monotonic() - started, 3), "computed": outcome.budget.computed,
            "timings": outcome.timings()}
