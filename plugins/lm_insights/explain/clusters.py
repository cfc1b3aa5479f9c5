"""Discovery: groups of rows in embedding space that no label set named, per partition.

k-means on the cached (unit-length) embeddings, with k chosen by the silhouette score (cosine) over
2..``explain.clusters.max_clusters``; each cluster is named by its most distinctive terms (class-based TF-IDF, as
BERTopic does) and by the row nearest its centre. Ids are stable across reruns of the same data: the fit is seeded
and clusters are numbered by size, ties broken by their smallest text hash. ``<pipeline>_rows.cluster`` and
``cluster_name`` join each row to its cluster, and the segments table gets a ``cluster`` segment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg import sql

from lm_insights.core.cache import CacheKey, cache_table
from lm_insights.core.partition import Partition, staging_table
from lm_insights.explain.findings import Finding, cluster_finding
from lm_insights.guard import toxicity
from lm_insights.runtime import db
from lm_insights.spec import Clusters, PipelineSpec

log = logging.getLogger(__name__)

CLUSTER_SEGMENT = "cluster"
SILHOUETTE_SAMPLE = 2000  # rows the silhouette score is measured on (it is quadratic in rows)
TERM_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"  # words of two letters or more, no numbers
CLUSTER_COLUMNS = ("partition_start", "cluster", "name", "terms", "rows", "share", "representative_key",
                   "representative_text", "k", "silhouette")


@dataclass(frozen=True)
class Cluster:
    cluster: int  # 1 = the largest
    terms: list[str]  # most distinctive first
    rows: int
    representative: int | None  # index of the row nearest the cluster's centre (of those that may be shown)

    @property
    def name(self) -> str:
        return f"{self.cluster}: {', '.join(self.terms)}"


@dataclass(frozen=True)
class Discovery:
    assignments: list[int]  # cluster id per row, in the input's order
    clusters: list[Cluster]
    silhouette: float  # of the chosen k (cosine); the k with the highest score was chosen


def class_tfidf_terms(texts: list[str], assignments, n_terms: int) -> dict[int, list[str]]:
    """Per cluster, the terms with the highest class-based TF-IDF: tf of the term in the cluster's texts (as one
    document, normalised by its length) x log(1 + average words per cluster / the term's count over all)."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    labels = sorted(set(assignments))
    documents = [" ".join(t for t, a in zip(texts, assignments) if a == label) for label in labels]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=TERM_PATTERN, lowercase=True)
    try:
        counts = vectorizer.fit_transform(documents).toarray().astype("float64")
    except ValueError:  # no word at all (texts of numbers only)
        return {label: [] for label in labels}
    vocabulary = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    idf = np.log(1 + counts.sum(axis=1).mean() / np.maximum(counts.sum(axis=0), 1))
    scores = tf * idf
    terms = {}
    for row, label in enumerate(labels):
        ranked = sorted(np.flatnonzero(scores[row]), key=lambda j: (-scores[row, j], vocabulary[j]))
        terms[label] = [str(vocabulary[j]) for j in ranked[:n_terms]]
    return terms


def discover(vectors, texts: list[str], hashes: list[str], settings: Clusters,
             shown: list[bool] | None = None) -> Discovery | None:
    """Cluster the rows' unit-length ``vectors``; None when there are too few rows for two clusters. ``shown``:
    per row, whether it may name its cluster and be its representative (default: every row)."""
    import sklearn.cluster  # noqa: F401  (loaded first: threadpoolctl limits only the libraries already loaded)
    from threadpoolctl import threadpool_limits

    n = len(vectors)
    if n < 2 * settings.min_cluster_rows:
        return None
    with threadpool_limits(1):  # measured: OpenMP threads beside torch's take 8 s instead of 0.1 s for 300 rows
        return fit_clusters(vectors, texts, hashes, settings, shown)


def fit_clusters(vectors, texts: list[str], hashes: list[str], settings: Clusters,
                 shown: list[bool] | None = None) -> Discovery | None:
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(vectors)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    rng = np.random.default_rng(0)
    fitted = np.sort(rng.choice(n, settings.max_rows, replace=False)) if n > settings.max_rows else np.arange(n)
    scored = fitted[np.sort(rng.choice(len(fitted), SILHOUETTE_SAMPLE, replace=False))] \
        if len(fitted) > SILHOUETTE_SAMPLE else fitted
    best = None
    for k in range(2, min(settings.max_clusters, len(fitted) // settings.min_cluster_rows) + 1):
        model = KMeans(n_clusters=k, n_init=4, random_state=0).fit(vectors[fitted])
        labels = model.predict(vectors[scored])
        if len(set(labels)) < 2:
            continue
        score = float(silhouette_score(vectors[scored], labels, metric="cosine"))
        if best is None or score > best[0] + 1e-9:
            best = (score, model)
    if best is None:
        return None
    score, model = best
    raw = model.predict(vectors)
    order = sorted(set(raw), key=lambda c: (-(raw == c).sum(), min(h for h, r in zip(hashes, raw) if r == c)))
    renumber = {old: new for new, old in enumerate(order, start=1)}
    assignments = [renumber[c] for c in raw]
    shown = np.ones(n, dtype=bool) if shown is None else np.asarray(shown, dtype=bool)
    terms = class_tfidf_terms([t if ok else "" for t, ok in zip(texts, shown)], assignments, settings.name_terms)
    clusters = []
    for old, new in renumber.items():
        members = np.flatnonzero(raw == old)
        centre = vectors[members].mean(axis=0)
        candidates = members[shown[members]]  # none: a cluster of hidden rows has no representative
        nearest = int(candidates[np.argmax(vectors[candidates] @ centre)]) if len(candidates) else None
        clusters.append(Cluster(new, terms[new], int(len(members)), nearest))
    return Discovery(assignments, sorted(clusters, key=lambda c: c.cluster), score)


def read_embeddings(spec: PipelineSpec, conn, partition: Partition, key: CacheKey):
    """Row numbers, row keys, texts, text hashes and embeddings of the partition's staged rows."""
    import numpy as np

    key_text = sql.SQL(" || ', ' || ").join(
        sql.SQL("{} || '=' || coalesce(r.{}::text, 'NULL')").format(sql.Literal(k), sql.Identifier(k))
        for k in spec.source.key)
    rows = conn.execute(sql.SQL(
        "select r._row_number, {key_text}, r.text, t.text_sha256, c.embedding::real[] from {rows} as r "
        "join {texts} as t using (_row_number) join {cache} as c on c.text_sha256 = t.text_sha256 "
        "and c.model_key = %(model_key)s and c.head_version = %(head_version)s "
        "and c.template_version = %(template_version)s where c.embedding is not null order by r._row_number"
    ).format(key_text=key_text, rows=staging_table(spec, partition, "rows"),
             texts=staging_table(spec, partition, "texts"), cache=cache_table(spec)), vars(key)).fetchall()
    vectors = np.array([r[4] for r in rows], dtype="float32").reshape(len(rows), -1)
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], vectors


def build_clusters(spec: PipelineSpec, conn, partition: Partition, key: CacheKey) -> Discovery | None:
    """Staging ``clusters`` and the ``cluster``/``cluster_name`` columns of staging ``rows``."""
    settings = spec.explain.clusters
    rows = staging_table(spec, partition, "rows")
    discovery = None
    if settings.enabled and spec.lm.embeddings:
        numbers, keys, texts, hashes, vectors = read_embeddings(spec, conn, partition, key)
        excluded = toxicity.excluded_row_numbers(spec, conn, partition)
        discovery = discover(vectors, texts, hashes, settings, [n not in excluded for n in numbers])
    conn.execute(sql.SQL("alter table {} add column if not exists cluster integer, "
                         "add column if not exists cluster_name text").format(rows))
    target = staging_table(spec, partition, "clusters")
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    conn.execute(sql.SQL(
        "create table {} (partition_start timestamptz not null, cluster integer not null, name text not null, "
        "terms text[] not null, rows bigint not null, share double precision not null, representative_key text, "
        "representative_text text, k integer not null, silhouette double precision not null)").format(target))
    if discovery is None:
        return None
    names = {c.cluster: c.name for c in discovery.clusters}
    conn.execute("drop table if exists pg_temp.cluster_assignments")
    conn.execute("create temporary table cluster_assignments (_row_number bigint primary key, cluster integer) "
                 "on commit drop")
    db.copy_rows(conn, sql.Identifier("cluster_assignments"), ["_row_number", "cluster"],
                 zip(numbers, discovery.assignments))
    conn.execute(sql.SQL(
        "update {rows} as r set cluster = a.cluster, cluster_name = n.name from cluster_assignments as a "
        "join unnest(%s::int[], %s::text[]) as n(cluster, name) using (cluster) where a._row_number = r._row_number"
    ).format(rows=rows), (list(names), list(names.values())))
    total = len(numbers)
    db.copy_rows(conn, target, CLUSTER_COLUMNS, (
        (partition.start, c.cluster, c.name, c.terms, c.rows, c.rows / total,
         *((keys[c.representative], texts[c.representative]) if c.representative is not None else (None, None)),
         len(discovery.clusters), discovery.silhouette) for c in discovery.clusters))
    log.info("%s %s: %d clusters (silhouette %.3f) over %d rows", spec.name, partition, len(discovery.clusters),
             discovery.silhouette, total)
    return discovery


def cluster_candidates(spec: PipelineSpec, discovery: Discovery | None, total: int) -> list[Finding]:
    """Discovery's groups as a finding: separated when the silhouette reaches ``explain.clusters.min_silhouette``,
    otherwise "no clear groups" (k-means always returns k groups, even of uniform noise)."""
    if discovery is None:
        return []
    named = "; ".join(f"{c.name} ({c.rows} rows)" for c in discovery.clusters)
    return [cluster_finding(spec.target, len(discovery.clusters), discovery.silhouette, total,
                            spec.explain.clusters.min_silhouette, named)]
