"""Rows whose recorded outcome the model contradicts with high confidence: confident learning (Northcutt, Jiang and
Chuang 2021, "Confident Learning: Estimating Uncertainty in Dataset Labels") through cleanlab's
``find_label_issues`` (its default, ``prune_by_noise_rate``).

Confident learning estimates, from the model's probabilities, how many rows of each recorded class truly belong to
each other class (the confident joint: a row counts for class j when p_j reaches j's mean self-confidence), and
calls that many rows label issues per pair of classes, those with the largest margin p_j - p_recorded; a row whose
most probable class is its recorded one is never an issue. The benchmark (``python -m
lm_insights.guard.inconsistent_bench``) plants label errors in real reviews and measures it.

In a run, every classification head with a promoted version (``linear``) gets its probabilities on the partition's
rows with a known target (the cached embeddings through the promoted head); a row found is flagged ``inconsistent``
in ``quality_flags`` and ``inconsistency`` holds the evidence per head: the recorded value and its class, the
predicted class and its probability, the probability of the recorded class.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from psycopg import sql

from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec
from lm_insights.core.partition import Partition, staging_table

log = logging.getLogger(__name__)

INCONSISTENT = "inconsistent"
MIN_COMPARED_ROWS = 10  # fewer rows with a known target: the confident joint would be one or two rows' noise
OUT_OF_FOLD_SPLITS = 5  # training rows: out-of-fold probabilities, so no row is judged by a model that learnt it


def label_issues(labels, probabilities) -> np.ndarray:
    """The rows confident learning calls label issues (bool mask). ``labels``: (N,) class index per row;
    ``probabilities``: (N, K) out-of-sample probabilities of the classes."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:  # one recorded class: nothing to contradict it with
        return np.zeros(len(labels), dtype=bool)
    # n_jobs=1: cleanlab otherwise forks a multiprocessing pool from a process that holds torch's and Airflow's
    # threads, and a forked child can wait forever on a lock one of them held (seen: a test run hung for 15 min)
    return np.asarray(find_label_issues(labels, np.asarray(probabilities, dtype=np.float64), n_jobs=1), dtype=bool)


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, n_classes: int,
                              seed: int = 0) -> np.ndarray:
    """(N, n_classes) probabilities of a logistic regression on the embeddings, each row from the fold that left it
    out (stratified, at most OUT_OF_FOLD_SPLITS folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    splits = min(OUT_OF_FOLD_SPLITS, int(np.bincount(labels, minlength=n_classes)[np.unique(labels)].min()))
    probabilities = np.zeros((len(labels), n_classes))
    if splits < 2:  # a class with one row: no fold can leave it out and still know it
        probabilities[np.arange(len(labels)), labels] = 1.0
        return probabilities
    for fit, held in StratifiedKFold(splits, shuffle=True, random_state=seed).split(embeddings, labels):
        model = LogisticRegression(max_iter=1000).fit(embeddings[fit], labels[fit])
        probabilities[np.ix_(held, model.classes_)] = model.predict_proba(embeddings[held])
    return probabilities


def consistent_rows(embeddings: np.ndarray, targets: list, classes: list[str]) -> np.ndarray:
    """Indexes of the training rows that confident learning does not call label errors (out-of-fold)."""
    labels = np.array([classes.index(t) for t in targets])
    issues = label_issues(labels, out_of_fold_probabilities(np.asarray(embeddings), labels, len(classes)))
    return np.flatnonzero(~issues)


def flag_partition(spec: PipelineSpec, conninfo: str, conn, partition: Partition, key, heads: dict[str, int]) -> int:
    """Add ``inconsistency`` (jsonb) to staging ``rows`` and ``inconsistent`` to the ``quality_flags`` of the rows a
    promoted classification head contradicts; return how many rows are flagged."""
    from lm_insights.learn import heads as head_outputs, models  # noqa: I001

    rows = staging_table(spec, partition, "rows")
    conn.execute(sql.SQL("alter table {} add column if not exists inconsistency jsonb").format(rows))
    evidence: dict[int, dict] = {}
    for name, head in spec.lm.heads.items():
        if head.task != "classification" or name not in heads:
            continue
        loaded = models.load_head(conninfo, spec, name, heads[name])
        if loaded.head.method != "linear":
            log.info("%s head %s: inconsistency is measured for linear heads only (this one is %s)", spec.name,
                     name, loaded.head.method)
            continue
        found = conn.execute(sql.SQL(
            "select r._row_number, r.{target}, c.embedding::real[] from {rows} as r join {texts} as t "
            "using (_row_number) join {cache} as c on c.text_sha256 = t.text_sha256 and c.model_key = %(model_key)s "
            "and c.head_version = %(head_version)s and c.template_version = %(template_version)s "
            "where r.{target} is not null and c.embedding is not null order by r._row_number").format(
            target=sql.Identifier(head.target), rows=rows, texts=staging_table(spec, partition, "texts"),
            cache=db.qualified(spec.sink.schema_, "lm_cache")), vars(key)).fetchall()
        classes = loaded.card["labels"]
        known = [(n, value, head_outputs.class_of(head, value), vector) for n, value, vector in found]
        known = [(n, value, label, vector) for n, value, label, vector in known if label in classes]
        if len(known) < MIN_COMPARED_ROWS:
            continue
        from lm_engine.train import predict_from_embeddings

        probabilities = predict_from_embeddings(loaded.head, np.array([v for *_, v in known], dtype=np.float32))
        labels = np.array([classes.index(label) for _, _, label, _ in known])
        for i in np.flatnonzero(label_issues(labels, probabilities)):
            n, value, label, _ = known[i]
            j = int(probabilities[i].argmax())
            evidence.setdefault(n, {})[name] = {
                "recorded": str(value), "recorded_class": label, "predicted": classes[j],
                "probability": round(float(probabilities[i, j]), 4),
                "recorded_class_probability": round(float(probabilities[i, labels[i]]), 4),
                "version": heads[name], "rows_compared": len(known)}
    if evidence:
        conn.execute("create temporary table inconsistent_rows (_row_number bigint, evidence jsonb) on commit drop")
        db.copy_rows(conn, sql.Identifier("inconsistent_rows"), ("_row_number", "evidence"),
                     ((n, json.dumps(e)) for n, e in evidence.items()))
        conn.execute(sql.SQL(
            "update {} as r set inconsistency = i.evidence, quality_flags = array_append(coalesce(array_remove("
            "r.quality_flags, {flag}), '{{}}'), {flag}) from inconsistent_rows as i "
            "where i._row_number = r._row_number").format(rows, flag=sql.Literal(INCONSISTENT)))
    return len(evidence)
