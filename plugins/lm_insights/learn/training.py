"""Train a head from the warehouse's outcomes, evaluate it on later rows, and promote it only if it is better.

Rows come from the loaded insight table ``<pipeline>_rows`` (the text the model read and the target column) with
their embeddings from the result cache, so a ``linear`` head never encodes again. The window's rows are ordered by
the partition column: the latest ``evaluation_share`` is the evaluation set (never trained on, and the same set
on which the promoted version, the majority / mean baseline and zero-shot are measured); the latest part of the
rest is the validation slice on which the trainer picks its hyper-parameters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

from lm_insights.core.values import template_version
from lm_insights.learn import heads, models
from lm_insights.runtime import db
from lm_insights.spec import Head, PipelineSpec

log = logging.getLogger(__name__)

SEED = 0
VALIDATION_SHARE = 0.15  # of the training part: the latest rows, for the trainer's hyper-parameters
OOD_REFERENCE_ROWS = 1000  # training embeddings kept as the guard's OOD reference (float16: 0.75 MiB at 384 dims)
PREDICTION_RANGE_MARGIN = 0.1  # regression: the training targets' range widened by this share of it on each side
_CODE = (Path(__file__), Path(__file__).resolve().parents[3] / "lm_engine" / "train.py")


class TrainingError(ValueError):
    """Training cannot run on this data (too few labelled rows, one class only...): retrying cannot help."""


@dataclass(frozen=True)
class TrainOptions:
    """What a trigger may change for one training run; None keeps the spec's value."""

    window_days: int | None = None
    method: str | None = None
    epochs: int | None = None
    force: bool = False  # train even when the data and settings are those of the promoted version


@dataclass
class LabelledRows:
    keys: list[str]
    times: list[Any]
    texts: list[str]
    hashes: list[str]
    targets: list[Any]  # class names or floats
    embeddings: list[np.ndarray | None]

    def take(self, index: list[int]) -> LabelledRows:
        return LabelledRows(*([values[i] for i in index] for values in (
            self.keys, self.times, self.texts, self.hashes, self.targets, self.embeddings)))

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class TrainResult:
    head: str
    decision: str  # promoted | rejected | skipped
    reason: str
    version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"head": self.head, "decision": self.decision, "reason": self.reason, "version": self.version,
                "metrics": self.metrics}


def code_version() -> str:
    digest = hashlib.sha256()
    for path in _CODE:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def labelled_rows(spec: PipelineSpec, conn, name: str, window_days: int, model_key: str) -> LabelledRows:
    """The window's rows with a known target, oldest first, with their cached embedding (None when not cached).

    The window is the last ``window_days`` days up to the latest loaded row (1: the latest day's rows). A row
    loaded by several runs of its partition counts once (its latest load).
    """
    head = spec.lm.heads[name]
    rows_table = db.qualified(spec.sink.schema_, f"{spec.name}_rows")
    if not db.table_exists(conn, spec.sink.schema_, f"{spec.name}_rows"):
        raise TrainingError(f"{spec.name}: {spec.sink.schema_}.{spec.name}_rows does not exist yet; run the "
                            "pipeline on some past partitions first")
    time_column, target = sql.Identifier(spec.source.partition_column), sql.Identifier(head.target)
    key = sql.SQL(" || '|' || ").join(sql.SQL("coalesce({}::text, '')").format(sql.Identifier(k))
                                      for k in spec.source.key)
    query = sql.SQL(
        "with latest as (select distinct on ({key}) {key} as row_key, {time} as row_time, text, {target} as target "
        "from {rows} where {target} is not null "
        "and {time} > (select max({time}) from {rows}) - make_interval(days => %(days)s) "
        "order by {key}, partition_start desc), "
        "hashed as (select *, encode(sha256(convert_to(text, 'UTF8')), 'hex') as text_sha256 from latest) "
        "select h.row_key, h.row_time, h.text, h.text_sha256, h.target, "
        "(select c.embedding::text from {cache} as c where c.model_key = %(model_key)s "
        "and c.template_version = %(template_version)s and c.text_sha256 = h.text_sha256 "
        "and c.embedding is not null limit 1) from hashed as h order by h.row_time, h.row_key"
    ).format(key=key, time=time_column, target=target, rows=rows_table,
             cache=db.qualified(spec.sink.schema_, "lm_cache"))
    found = conn.execute(query, {"days": window_days, "model_key": model_key,
                                 "template_version": template_version(spec)}).fetchall()
    kept, unmapped = [], Counter()
    for row_key, row_time, text, text_hash, value, embedding in found:
        mapped = heads.target_of(head, value)
        if mapped is None:
            unmapped[str(value)] += 1
            continue
        vector = np.asarray(json.loads(embedding), dtype=np.float32) if embedding else None
        kept.append((row_key, row_time, text, text_hash, mapped, vector))
    if unmapped:
        log.warning("%s head %s: %d rows have a %s outside the classes and are left out: %s", spec.name, name,
                    sum(unmapped.values()), head.target, dict(unmapped.most_common(5)))
    return LabelledRows(*(list(column) for column in zip(*kept))) if kept else LabelledRows([], [], [], [], [], [])


def split_by_time(rows: LabelledRows, share: float) -> tuple[list[int], list[int]]:
    """(train, evaluation) indexes: evaluation is the latest ``share`` of the rows, cut between two times when the
    data has them (rows of one time stay on one side), else by position in (time, key) order."""
    n = len(rows)
    n_eval = max(1, math.ceil(share * n))
    cutoff = rows.times[n - n_eval]
    first_eval = rows.times.index(cutoff)
    if first_eval == 0:  # one time for most rows: cut by position
        first_eval = n - n_eval
    return list(range(first_eval)), list(range(first_eval, n))


def fingerprint(rows: LabelledRows, settings: dict[str, Any]) -> str:
    """sha256 of the training and evaluation data (row keys, text hashes, targets) and the settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for key, text_hash, target in zip(rows.keys, rows.hashes, rows.targets):
        digest.update(f"{key}\x1f{text_hash}\x1f{target}\x1e".encode())
    return digest.hexdigest()


def fill_embeddings(rows: LabelledRows, engine, log_line) -> np.ndarray:
    """The rows' base embeddings as one matrix; texts missing from the cache are encoded now."""
    missing = [i for i, v in enumerate(rows.embeddings) if v is None]
    if missing:
        log_line(f"{len(missing)} of {len(rows)} texts have no cached embedding; encoding them")
        encoded = engine.encode([rows.texts[i] for i in missing]).vectors
        for i, vector in zip(missing, encoded):
            rows.embeddings[i] = np.asarray(vector, dtype=np.float32)
    return np.stack(rows.embeddings)


def evaluate(task: str, labels: list[str] | None, predicted: np.ndarray, true: list) -> dict[str, Any]:
    """Metrics of one model's predictions on the evaluation set (classification: argmax, every row answered)."""
    if task == "classification":
        return heads.classification_metrics(true, [labels[i] for i in predicted.argmax(axis=1)])
    return heads.regression_metrics(true, predicted)


def better(task: str, candidate: dict[str, Any], other: dict[str, Any] | None) -> bool:
    if other is None:
        return True
    if task == "classification":
        return candidate["accuracy"] > other["accuracy"]
    return candidate["mae"] < other["mae"]


def train_head(spec: PipelineSpec, conninfo: str, name: str, options: TrainOptions = TrainOptions(),
               engine=None) -> TrainResult:
    """Train one head of the spec, evaluate it against the promoted version and the baselines, store it.

    The new version and the promotion are written in one transaction at the very end: a run that fails or is
    killed before leaves the registry, and so the promoted head, as it was.
    """
    from lm_engine import load_engine, train

    head: Head = spec.lm.heads[name]
    method = options.method or head.method
    if method not in train.METHODS:
        raise TrainingError(f"{spec.name} head {name}: method {method!r} is not one of {train.METHODS}")
    window = options.window_days or head.train_window_days
    epochs = options.epochs or head.epochs

    def say(message: str) -> None:
        log.info("%s head %s: %s", spec.name, name, message)

    engine = engine or load_engine(spec.lm.model)
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, spec.sink.schema_)
        rows = labelled_rows(spec, conn, name, window, engine.model_key)
    if len(rows) < head.min_rows:
        raise TrainingError(f"{spec.name} head {name}: {len(rows)} rows with a known {head.target} in the last "
                            f"{window} days, fewer than min_rows {head.min_rows}; run more partitions first")
    train_index, eval_index = split_by_time(rows, head.evaluation_share)
    train_rows, eval_rows = rows.take(train_index), rows.take(eval_index)
    n_fit = len(train_rows) - max(1, math.ceil(VALIDATION_SHARE * len(train_rows)))
    fit_rows, validation_rows = train_rows.take(list(range(n_fit))), train_rows.take(
        list(range(n_fit, len(train_rows))))
    labels = None
    if head.task == "classification":
        labels = list(head.classes) if head.classes else sorted(set(rows.targets))
        missing = [label for label in labels if label not in set(fit_rows.targets)]
        if missing:
            raise TrainingError(f"{spec.name} head {name}: no training rows of the class(es) {missing} among "
                                f"{len(fit_rows)} rows up to {fit_rows.times[-1]}; widen the window or wait for "
                                "more data")
    settings = {"method": method, "window_days": window, "epochs": epochs if method == "finetune" else None,
                "learning_rate": head.learning_rate if method == "finetune" else None, "labels": labels,
                "evaluation_share": head.evaluation_share, "encoder": engine.model_key, "seed": SEED,
                **({"exclude_inconsistent": True} if head.exclude_inconsistent else {})}
    data_fingerprint = fingerprint(rows, settings)
    promoted = models.promoted_versions(conninfo, spec).get(name)
    promoted_head = models.load_head(conninfo, spec, name, promoted) if promoted else None
    if promoted_head and promoted_head.card.get("fingerprint") == data_fingerprint and not options.force:
        say(f"v{promoted} was trained on the same rows with the same settings; nothing to do (force retrains)")
        return TrainResult(name, "skipped", f"v{promoted} already trained on these rows with these settings",
                           promoted)
    say(f"{len(fit_rows)} training rows ({fit_rows.times[0]} .. {fit_rows.times[-1]}), {len(validation_rows)} "
        f"validation rows, {len(eval_rows)} evaluation rows ({eval_rows.times[0]} .. {eval_rows.times[-1]}); "
        f"method {method}")

    base = fill_embeddings(rows, engine, say)
    train_base, eval_base = base[train_index], base[eval_index]
    fit_rows, fit_base, excluded = without_inconsistent(head, fit_rows, train_base[:n_fit], labels, say)
    if method == "linear":
        trained = train.fit_linear(fit_base, fit_rows.targets, head.task, labels=labels, seed=SEED,
                                   validation=(train_base[n_fit:], validation_rows.targets), log=say)
    else:
        trained = train.finetune(engine, fit_rows.texts, fit_rows.targets, head.task, labels=labels,
                                 epochs=epochs, learning_rate=head.learning_rate, seed=SEED,
                                 validation=(validation_rows.texts, validation_rows.targets), log=say,
                                 embeddings=fit_base, validation_embeddings=train_base[n_fit:])
    head_engine = train.head_engine(engine, trained)
    eval_vectors = eval_base if method == "linear" else np.asarray(head_engine.encode(eval_rows.texts).vectors)
    predicted = train.predict_from_embeddings(trained, eval_vectors)
    metrics: dict[str, Any] = {"candidate": evaluate(head.task, labels, predicted, eval_rows.targets)}
    card_extra: dict[str, Any] = {}
    if head.task == "classification":
        true_index = np.array([labels.index(t) for t in eval_rows.targets])
        threshold = train.threshold_for_precision(predicted, true_index, head.precision_target)
        at_threshold = heads.classify_outputs(predicted, labels, threshold)
        metrics["candidate_published"] = heads.classification_metrics(eval_rows.targets,
                                                                      [o["label"] for o in at_threshold])
        majority = Counter(train_rows.targets).most_common(1)[0][0]
        metrics["majority"] = heads.classification_metrics(eval_rows.targets, [majority] * len(eval_rows))
        card_extra |= {"threshold": threshold, "min_precision": head.precision_target, "majority_class": majority}
        if head.zero_shot:
            from lm_engine.zero_shot import classify_vectors

            label_set = spec.lm.label_sets[head.zero_shot]
            results = classify_vectors(eval_base, engine.prototypes(label_set.labels), list(label_set.labels),
                                       label_set.min_margin)
            metrics["zero_shot"] = heads.classification_metrics(eval_rows.targets, [r.best for r in results])
            metrics["zero_shot_published"] = heads.classification_metrics(eval_rows.targets,
                                                                           [r.label for r in results])
    else:
        residuals = np.asarray(eval_rows.targets, dtype=float) - predicted
        tail = (1 - head.interval) / 2
        mean = float(np.mean(train_rows.targets))
        metrics["mean"] = heads.regression_metrics(eval_rows.targets, [mean] * len(eval_rows))
        card_extra |= {"residual_low": float(np.quantile(residuals, tail)),
                       "residual_high": float(np.quantile(residuals, 1 - tail)), "interval": head.interval,
                       "train_mean": mean, "prediction_range": prediction_range(train_rows.targets)}
    if promoted_head:
        metrics["promoted"] = promoted_metrics(promoted_head, head, labels, engine, eval_base, eval_rows)

    decision, reason = decide(head.task, metrics, promoted)
    say(f"{decision}: {reason}")
    card = {
        "pipeline": spec.name, "head": name, "task": head.task, "method": method, "target": head.target,
        "classes": head.classes, "labels": labels, "encoder_key": head_engine.model_key,
        "base_model_key": engine.model_key, "template_version": template_version(spec),
        "fingerprint": data_fingerprint, "settings": settings, "metrics": metrics, "decision": decision,
        "reason": reason, "evaluation_split": {
            "train_rows": len(fit_rows), "validation_rows": len(validation_rows), "evaluation_rows": len(eval_rows),
            "train_from": str(train_rows.times[0]), "train_until": str(train_rows.times[-1]),
            "evaluation_from": str(eval_rows.times[0]), "evaluation_until": str(eval_rows.times[-1])},
        "training": json.loads(json.dumps(trained.info, default=str)), "code_version": code_version(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), **card_extra,
        **({"inconsistent_excluded": excluded} if head.exclude_inconsistent else {}),
    }
    reference, card["ood_reference"] = ood_reference(train_base, spec.guard.ood_quantile)
    card["ood_reference"]["encoder"] = engine.model_key
    weights = train.to_safetensors(trained)
    with db.connect(conninfo) as conn:
        version = models.save_version(conn, spec, name, weights, card, decision, reason, reference)
    say(f"stored as v{version} in {spec.sink.schema_}.models ({len(weights)} bytes)")
    return TrainResult(name, decision, reason, version, metrics)


def without_inconsistent(head: Head, fit_rows: LabelledRows, fit_base: np.ndarray, labels: list[str] | None,
                         say) -> tuple[LabelledRows, np.ndarray, int]:
    """With ``exclude_inconsistent`` (classification), the training rows less those whose recorded class confident
    learning on out-of-fold probabilities calls a label error (guard/inconsistent.py); else all of them."""
    if not head.exclude_inconsistent or head.task != "classification":
        return fit_rows, fit_base, 0
    from lm_insights.guard.inconsistent import consistent_rows

    kept = consistent_rows(fit_base, fit_rows.targets, labels)
    excluded = len(fit_rows) - len(kept)
    say(f"left out {excluded} of {len(fit_rows)} training rows whose recorded {head.target} the out-of-fold model "
        "contradicts with high confidence (exclude_inconsistent)")
    return fit_rows.take(list(kept)), fit_base[kept], excluded


def ood_reference(train_base: np.ndarray, quantile: float) -> tuple[bytes, dict[str, Any]]:
    """A seeded sample of at most ``OOD_REFERENCE_ROWS`` training embeddings (unit, float16 bytes) and what the
    card says of it: rows, dimensions and the OOD threshold, the ``quantile`` of the sample's own leave-one-out
    nearest-neighbour distances (the guard flags a row further from every sample row than that)."""
    from lm_insights.guard.flags import self_distance_threshold, unit

    rng = np.random.default_rng(SEED)
    index = np.sort(rng.choice(len(train_base), size=min(OOD_REFERENCE_ROWS, len(train_base)), replace=False))
    sample = unit(np.asarray(train_base[index], dtype=np.float32)).astype("<f2")
    threshold = self_distance_threshold(sample.astype(np.float32), quantile) if len(sample) > 1 else None
    return sample.tobytes(), {"rows": len(sample), "of": len(train_base), "dim": int(sample.shape[1]),
                              "seed": SEED, "quantile": quantile, "threshold": threshold}


def prediction_range(targets: list[float]) -> dict[str, float]:
    """The range a regression head's predictions are expected in: the training targets' range widened by
    ``PREDICTION_RANGE_MARGIN`` of it on each side."""
    low, high = float(np.min(targets)), float(np.max(targets))
    margin = PREDICTION_RANGE_MARGIN * ((high - low) or abs(high) or 1.0)
    return {"min": low - margin, "max": high + margin, "margin": PREDICTION_RANGE_MARGIN,
            "train_min": low, "train_max": high}


def promoted_metrics(promoted, head: Head, labels, engine, eval_base: np.ndarray, eval_rows: LabelledRows):
    """The promoted version's metrics on this evaluation set; None when it predicts something else (other
    classes or task) or reads another base encoder."""
    from lm_engine.train import predict_from_embeddings

    card = promoted.card
    if card["task"] != head.task or card.get("labels") != labels or card.get("base_model_key") != engine.model_key:
        return None
    vectors = eval_base if promoted.head.method == "linear" else np.asarray(
        promoted.engine_for(engine).encode(eval_rows.texts).vectors)
    return evaluate(head.task, labels, predict_from_embeddings(promoted.head, vectors), eval_rows.targets)


def decide(task: str, metrics: dict[str, Any], promoted: int | None) -> tuple[str, str]:
    """Promote only if the candidate beats every reference measured on the same evaluation set."""
    figure = "accuracy" if task == "classification" else "mae"
    candidate = metrics["candidate"]
    references = {"majority baseline": metrics.get("majority"), "mean baseline": metrics.get("mean"),
                  "zero-shot": metrics.get("zero_shot")}
    if promoted:
        references[f"promoted v{promoted}"] = metrics.get("promoted")
    beaten, lost = [], []
    for reference, other in references.items():
        if other is None:
            continue
        (beaten if better(task, candidate, other) else lost).append(f"{reference} {other[figure]:.3f}")
    summary = f"{figure} {candidate[figure]:.3f} on {candidate['rows']} evaluation rows"
    if lost:
        return "rejected", f"{summary} does not beat " + ", ".join(lost)
    incomparable = " (the promoted version predicts other classes or reads another encoder)" if (
        promoted and metrics.get("promoted") is None) else ""
    return "promoted", f"{summary} beats " + ", ".join(beaten) + incomparable
