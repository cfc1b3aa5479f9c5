"""What heads share between training, inference and the per-run quality: target classes, outputs, metrics.

A classification head publishes ``<head>_label`` (``uncertain`` below the probability threshold that reached the
head's ``min_precision`` on its out-of-fold backtest rows, see ``learn.backtest``), ``<head>_probability``, ``<head>_margin`` (to the runner-up) and
``<head>_entropy`` (normalized entropy of the class probabilities, see ``guard.flags``);
a regression head ``<head>_prediction`` with ``<head>_prediction_low`` / ``_high`` from evaluation residuals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from psycopg import sql

from lm_insights.core.uncertainty import normalized_entropy
from lm_insights.core.values import format_value
from lm_insights.spec import HEAD_COLUMN_SUFFIXES, Head, PipelineSpec

UNCERTAIN = "uncertain"
# (column suffix, type) of each output, in HEAD_COLUMN_SUFFIXES's order (the spec reserves those names)
CLASSIFICATION_OUTPUTS = tuple(zip(HEAD_COLUMN_SUFFIXES["classification"],
                                   ("text", "double precision", "double precision", "double precision"), strict=True))
REGRESSION_OUTPUTS = tuple((suffix, "double precision") for suffix in HEAD_COLUMN_SUFFIXES["regression"])


def outputs(head: Head) -> tuple[tuple[str, str], ...]:
    return CLASSIFICATION_OUTPUTS if head.task == "classification" else REGRESSION_OUTPUTS


def output_suffixes() -> tuple[str, ...]:
    """Column suffixes of head outputs that are scores, not factors (drivers skip them)."""
    return tuple(f"_{name}" for name, _ in (*CLASSIFICATION_OUTPUTS[1:], *REGRESSION_OUTPUTS))


def head_columns(spec: PipelineSpec) -> list[sql.Composable]:
    """The head outputs of every head of the spec, read from the cached JSON (NULL without a promoted head)."""
    parts = []
    for name, head in spec.lm.heads.items():
        for field, cast in outputs(head):
            parts.append(sql.SQL("(c.labels -> 'heads' -> {} ->> {})::{} as {}").format(
                sql.Literal(name), sql.Literal(field), sql.SQL(cast), sql.Identifier(f"{name}_{field}")))
    return parts


def class_of(head: Head, value: object) -> str | None:
    """The class a target value belongs to (None: no value, or one outside ``classes``)."""
    if value is None:
        return None
    text = format_value(value)
    if head.classes is None:
        return text
    for label, values in head.classes.items():
        if text in {format_value(v) for v in values}:
            return label
    return None


def target_of(head: Head, value: object) -> str | float | None:
    """The training target of a source value: its class, or a float for regression."""
    if head.task == "classification":
        return class_of(head, value)
    if value is None:
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def classify_outputs(probabilities: np.ndarray, labels: Sequence[str], threshold: float | None) -> list[dict]:
    """Per row: best label, its probability, margin to the runner-up, normalized entropy, and the published
    label."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    entropies = normalized_entropy(probabilities)
    rows = []
    for p, ranked, entropy in zip(probabilities, order, entropies):
        best, top = labels[ranked[0]], float(p[ranked[0]])
        margin = top - float(p[ranked[1]]) if len(labels) > 1 else top
        published = best if threshold is not None and top >= threshold else UNCERTAIN
        rows.append({"label": published, "best": best, "probability": round(top, 6), "margin": round(margin, 6),
                     "entropy": round(float(entropy), 6)})
    return rows


def regression_outputs(predictions: np.ndarray, residual_low: float, residual_high: float) -> list[dict]:
    return [{"prediction": round(float(p), 6), "prediction_low": round(float(p) + residual_low, 6),
             "prediction_high": round(float(p) + residual_high, 6)} for p in predictions]


def predict_rows(loaded, base_engine, texts: list[str], base_vectors: np.ndarray) -> list[dict]:
    """The outputs of one loaded head (``learn.models.LoadedHead``) for texts whose base embeddings are given."""
    from lm_engine.train import predict_from_embeddings

    vectors = base_vectors if loaded.head.method == "linear" else loaded.engine_for(base_engine).encode(texts).vectors
    predicted = predict_from_embeddings(loaded.head, np.asarray(vectors))
    card = loaded.card
    if card["task"] == "classification":
        return classify_outputs(predicted, card["labels"], card.get("threshold"))
    return regression_outputs(predicted, card["residual_low"], card["residual_high"])


def classification_metrics(true: Sequence[str], predicted: Sequence[str],
                           labels: Sequence[str] | None = None) -> dict:
    """Accuracy on the answered rows (prediction not ``uncertain``), coverage, coverage-adjusted accuracy (right
    answers over all rows), macro-F1 over every class (``labels``, and any class seen; an abstained row is a
    miss of its true class, so a class the head always abstains on scores F1 0), confusion counts."""
    pairs = list(zip(true, predicted))
    answered = [(t, p) for t, p in pairs if p != UNCERTAIN]
    right = sum(t == p for t, p in answered)
    classes = sorted(set(labels or ()) | set(true) | {p for _, p in answered})
    f1s = []
    for label in classes:
        tp = sum(t == label and p == label for t, p in pairs)
        fp = sum(t != label and p == label for t, p in pairs)
        fn = sum(t == label and p != label for t, p in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    confusion: dict[str, dict[str, int]] = {}
    for (t, p), n in sorted(Counter(pairs).items()):
        confusion.setdefault(t, {})[p] = n
    return {"rows": len(true), "answered": len(answered), "right": right,
            "coverage": len(answered) / len(true) if true else None,
            "accuracy": right / len(answered) if answered else None,
            "coverage_adjusted_accuracy": right / len(true) if true else None,
            "macro_f1": sum(f1s) / len(f1s) if f1s else None, "confusion": confusion}


def regression_metrics(true: Sequence[float], predicted: Sequence[float]) -> dict:
    """Mean absolute error and R² (None when the target does not vary)."""
    y, p = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
    if not len(y):
        return {"rows": 0, "mae": None, "r2": None}
    total = float(((y - y.mean()) ** 2).sum())
    return {"rows": len(y), "mae": float(np.abs(y - p).mean()),
            "r2": 1 - float(((y - p) ** 2).sum()) / total if total > 0 else None}
