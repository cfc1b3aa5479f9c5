"""Train a head from the warehouse's outcomes, backtest it over time, promote it only if it is better.

Rows come from the loaded insight table ``<pipeline>_rows`` (the text the model read and the target column) with
their embeddings from the result cache, so a ``linear`` head never encodes again. The window's rows are ordered by
the partition column and backtested by rolling origin (``learn.backtest``): hyper-parameters, the ``min_precision``
threshold and promotion are decided on the out-of-fold predictions with the head's one metric (``Head.objective``),
against the best constant answer on those rows, persistence, zero-shot and the promoted version (on the rows newer
than its training window, where it can be compared at all); the published model is refit on every labelled row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

from lm_insights.core.values import template_version
from lm_insights.learn import backtest, heads, models
from lm_insights.runtime import db
from lm_insights.spec import Head, PipelineSpec

log = logging.getLogger(__name__)

SEED = 0
BACKTEST_FOLDS = 4  # rolling origins over the newest evaluation_share of the window
MIN_COMPARED_ROWS = 20  # fewer backtest rows newer than the promoted version's window: no comparison with it
OOD_REFERENCE_ROWS = 1000  # training embeddings kept as the guard's OOD reference (float16: 0.75 MiB at 384 dims)
PREDICTION_RANGE_MARGIN = 0.1  # regression: the training targets' range widened by this share of it on each side
_CODE = (Path(__file__), Path(__file__).with_name("backtest.py"),
         Path(__file__).resolve().parents[3] / "lm_engine" / "train.py")


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


def train_head(spec: PipelineSpec, conninfo: str, name: str, options: TrainOptions = TrainOptions(),
               engine=None) -> TrainResult:
    """Train one head of the spec, backtest it against the promoted version and the baselines, store it.

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
    metric = head.objective

    def say(message: str) -> None:
        log.info("%s head %s: %s", spec.name, name, message)

    engine = engine or load_engine(spec.lm.model)
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, spec.sink.schema_)
        rows = labelled_rows(spec, conn, name, window, engine.model_key)
    if len(rows) < head.min_rows:
        raise TrainingError(f"{spec.name} head {name}: {len(rows)} rows with a known {head.target} in the last "
                            f"{window} days, fewer than min_rows {head.min_rows}; run more partitions first")
    folds = backtest.rolling_folds(rows.times, head.evaluation_share, BACKTEST_FOLDS)
    labels = None
    if head.task == "classification":
        labels = list(head.classes) if head.classes else sorted(set(rows.targets))
        first_training = {rows.targets[i] for i in folds[0].train}
        missing = [label for label in labels if label not in first_training]
        if missing:
            raise TrainingError(f"{spec.name} head {name}: no rows of the class(es) {missing} among the "
                                f"{len(folds[0].train)} oldest rows (up to {rows.times[len(folds[0].train) - 1]}) "
                                "that the first backtest fold trains on; widen the window or wait for more data")
    settings = {"method": method, "window_days": window, "epochs": epochs if method == "finetune" else None,
                "learning_rate": head.learning_rate if method == "finetune" else None, "labels": labels,
                "evaluation_share": head.evaluation_share, "folds": BACKTEST_FOLDS, "metric": metric,
                "encoder": engine.model_key, "seed": SEED,
                **({"exclude_inconsistent": True} if head.exclude_inconsistent else {})}
    data_fingerprint = fingerprint(rows, settings)
    promoted = models.promoted_versions(conninfo, spec).get(name)
    promoted_head = models.load_head(conninfo, spec, name, promoted) if promoted else None
    if promoted_head and promoted_head.card.get("fingerprint") == data_fingerprint and not options.force:
        say(f"v{promoted} was trained on the same rows with the same settings; nothing to do (force retrains)")
        return TrainResult(name, "skipped", f"v{promoted} already trained on these rows with these settings",
                           promoted)
    tested = backtest.backtest_index(folds)
    say(f"{len(rows)} rows ({rows.times[0]} .. {rows.times[-1]}); rolling-origin backtest of {len(folds)} folds "
        f"over the newest {len(tested)} rows ({rows.times[tested[0]]} ..); method {method}, metric {metric}")

    base = fill_embeddings(rows, engine, say)
    truth = target_array(head.task, rows.targets, labels)
    trainable, excluded = consistent_mask(head, rows, base, labels, say)
    fitted = fit_head(head, method, rows, base, labels, engine, epochs, say, trainable)
    trained, fold_predictions, chosen = fitted.trained, fitted.fold_predictions, fitted.chosen
    metrics, card_extra = backtest_metrics(spec, head, rows, folds, fold_predictions, truth, labels, base, engine)
    if promoted_head:
        metrics["promoted"] = promoted_comparison(promoted, promoted_head, head, labels, engine, rows, base, folds,
                                                  fold_predictions, truth)
    decision, reason = decide(metric, metrics, promoted)
    say(f"{decision}: {reason}")
    head_engine = train.head_engine(engine, trained)
    card = {
        "pipeline": spec.name, "head": name, "task": head.task, "method": method, "target": head.target,
        "classes": head.classes, "labels": labels, "metric": metric, "encoder_key": head_engine.model_key,
        "base_model_key": engine.model_key, "template_version": template_version(spec),
        "fingerprint": data_fingerprint, "settings": settings, "metrics": metrics, "decision": decision,
        "reason": reason, "train_rows": len(rows), "train_from": str(rows.times[0]),
        "train_until": str(rows.times[-1]),
        "backtest": {"folds": [{"train_rows": len(f.train), "test_rows": len(f.test),
                                "test_from": str(rows.times[f.test[0]]), "test_until": str(rows.times[f.test[-1]])}
                               for f in folds], "rows": len(tested), "hyper_parameters": chosen},
        "training": json.loads(json.dumps(trained.info, default=str)), "code_version": code_version(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), **card_extra,
        **({"inconsistent_excluded": excluded} if head.exclude_inconsistent else {}),
    }
    card = json.loads(json.dumps(card, default=_plain))
    reference, card["ood_reference"] = ood_reference(base, spec.guard.ood_quantile)
    card["ood_reference"]["encoder"] = engine.model_key
    weights = train.to_safetensors(trained)
    card["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    with db.connect(conninfo) as conn:
        version = models.save_version(conn, spec, name, weights, card, decision, reason, reference)
    say(f"stored as v{version} in {spec.sink.schema_}.models ({len(weights)} bytes)")
    return TrainResult(name, decision, reason, version, card["metrics"])


@dataclass
class FittedHead:
    trained: Any  # lm_engine.train.TrainedHead, refit on every trainable row
    folds: list[backtest.Fold]
    fold_predictions: list[np.ndarray]  # out-of-fold outputs per fold (probabilities or values)
    chosen: dict[str, Any]  # the linear hyper-parameters the backtest chose (the finetune probe's too)
    search: list[dict[str, Any]]


def fit_head(head: Head, method: str, rows: LabelledRows, base: np.ndarray, labels: list[str] | None, engine,
             epochs: int, say=lambda message: None, trainable: np.ndarray | None = None) -> FittedHead:
    """What ``lm-insights train`` fits, without the database: the rolling-origin backtest that chooses the
    hyper-parameters on ``head.objective``, its out-of-fold predictions, and the head refit on every row
    (``trainable``: a mask of the rows a model may learn from; every row is still predicted and measured)."""
    from lm_engine import train

    metric = head.objective
    folds = backtest.rolling_folds(rows.times, head.evaluation_share, BACKTEST_FOLDS)
    trainable = np.ones(len(rows), dtype=bool) if trainable is None else trainable
    learning = [backtest.Fold(fold.train[trainable[fold.train]], fold.test) for fold in folds]
    truth = target_array(head.task, rows.targets, labels)
    chosen, search, fold_predictions = search_linear(head.task, base, rows.targets, labels, learning, metric, truth)
    say(f"backtest chose {chosen}: out-of-fold {metric} {_best_score(search):.4f}")
    every = np.flatnonzero(trainable)
    if method == "linear":
        trained = train.fit_linear(base[every], [rows.targets[i] for i in every], head.task, labels=labels,
                                   seed=SEED, metric=metric, hyper_parameters=chosen, log=say)
        trained.info["search"] = search
    else:
        fold_predictions = backtest.out_of_fold(learning, lambda fit, test: _finetune_predict(
            engine, rows, base, fit, test, head, labels, epochs, chosen, metric, say))
        trained = finetune_head(engine, rows, base, every, head, labels, epochs, chosen, metric, say)
    return FittedHead(trained, folds, fold_predictions, chosen, search)


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers for the JSON card; anything else as text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _best_score(search: list[dict]) -> float:
    from lm_engine.train import choose

    return abs(choose(search)["score"])


def target_array(task: str, targets: list, labels: list[str] | None) -> np.ndarray:
    """Class indexes in ``labels`` order, or float targets."""
    if task == "classification":
        return np.array([labels.index(t) for t in targets])
    return np.asarray(targets, dtype=float)


def search_linear(task: str, base: np.ndarray, targets: list, labels, folds, metric: str, truth: np.ndarray):
    """(best setting, search rows with their pooled out-of-fold score, that setting's per-fold predictions):
    every setting of the linear grid backtested on the same folds, scored by ``metric``."""
    from lm_engine import train

    search, predictions = [], {}
    tested = backtest.backtest_index(folds)
    for i, setting in enumerate(train.hyper_parameter_grid(task)):
        def fit_predict(fit, test, setting=setting):
            trained = train.fit_linear(base[fit], [targets[j] for j in fit], task, labels=labels, seed=SEED,
                                       metric=metric, hyper_parameters=setting)
            return train.predict_from_embeddings(trained, base[test])

        predictions[i] = backtest.out_of_fold(folds, fit_predict)
        pooled = np.concatenate(predictions[i])
        row = {**setting, "score": train.objective_score(metric, pooled, truth[tested], len(labels or []))}
        if task == "classification":
            row["log_loss"] = train.log_loss(pooled, truth[tested])
        search.append(row)
    best = train.choose(search)
    index = search.index(best)
    return {k: v for k, v in best.items() if k not in ("score", "log_loss")}, search, predictions[index]


def finetune_head(engine, rows: LabelledRows, base, fit, head: Head, labels, epochs, probe, metric, say):
    from lm_engine import train

    return train.finetune(engine, [rows.texts[i] for i in fit], [rows.targets[i] for i in fit], head.task,
                          labels=labels, epochs=epochs, learning_rate=head.learning_rate, seed=SEED, log=say,
                          embeddings=base[fit], metric=metric, probe_hyper_parameters=probe)


def _finetune_predict(engine, rows, base, fit, test, head, labels, epochs, probe, metric, say):
    from lm_engine import train

    trained = finetune_head(engine, rows, base, fit, head, labels, epochs, probe, metric, say)
    vectors = train.head_engine(engine, trained).encode([rows.texts[i] for i in test]).vectors
    return train.predict_from_embeddings(trained, np.asarray(vectors))


def backtest_metrics(spec: PipelineSpec, head: Head, rows: LabelledRows, folds, fold_predictions, truth, labels,
                     base, engine) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, card fields) of the out-of-fold predictions and of every reference on the same backtest rows."""
    from lm_engine.train import objective_score

    metric = head.objective
    tested = backtest.backtest_index(folds)
    pooled = np.concatenate(fold_predictions)
    true = truth[tested]
    n_classes = len(labels or [])
    metrics: dict[str, Any] = {"objective": metric, "rows": len(tested)}
    references: dict[str, np.ndarray] = {}
    constant, references["best constant"] = backtest.best_constant(metric, true, n_classes)
    previous = backtest.persistence(rows.times, truth, tested)
    if previous is not None:
        references["persistence"] = previous
    card: dict[str, Any] = {}
    if head.task == "classification":
        answers = pooled.argmax(axis=1)
        named = lambda index: [labels[i] for i in index]  # noqa: E731
        metrics["candidate"] = heads.classification_metrics(named(true), named(answers), labels)
        overall, per_fold = backtest.cross_fitted_threshold(fold_predictions, [truth[f.test] for f in folds],
                                                            head.precision_target)
        published, published_true = [], []
        for fold, predicted, threshold in zip(folds[1:], fold_predictions[1:], per_fold[1:]):
            published += [o["label"] for o in heads.classify_outputs(predicted, labels, threshold)]
            published_true += named(truth[fold.test])
        metrics["candidate_published"] = heads.classification_metrics(published_true, published, labels) | {
            "calibration": "cross-fitted forward: each fold's threshold chosen on the earlier folds only"}
        if head.zero_shot:
            from lm_engine.zero_shot import classify_vectors

            label_set = spec.lm.label_sets[head.zero_shot]
            results = classify_vectors(base[tested], engine.prototypes(label_set.labels), list(label_set.labels),
                                       label_set.min_margin)
            references["zero-shot"] = np.array([labels.index(r.best) for r in results])
            metrics["zero_shot_published"] = heads.classification_metrics(named(true), [r.label for r in results],
                                                                          labels)
        for reference, predicted in references.items():
            metrics[reference] = heads.classification_metrics(named(true), named(predicted), labels)
        metrics["best constant"]["answer"] = labels[constant]
        card |= {"threshold": overall, "min_precision": head.precision_target,
                 "majority_class": Counter(rows.targets).most_common(1)[0][0]}
        candidate_answers = answers
    else:
        metrics["candidate"] = heads.regression_metrics(true, pooled)
        for reference, predicted in references.items():
            metrics[reference] = heads.regression_metrics(true, predicted)
        metrics["best constant"]["answer"] = constant
        residuals = true - pooled
        tail = (1 - head.interval) / 2
        card |= {"residual_low": float(np.quantile(residuals, tail)),
                 "residual_high": float(np.quantile(residuals, 1 - tail)), "interval": head.interval,
                 "train_mean": float(np.mean(rows.targets)), "prediction_range": prediction_range(rows.targets)}
        candidate_answers = pooled
    for name in ("candidate", *references):
        predicted = candidate_answers if name == "candidate" else references[name]
        scores = np.eye(n_classes)[predicted] if head.task == "classification" else predicted
        metrics[name]["objective"] = abs(objective_score(metric, scores, true, n_classes))
    metrics["comparisons"] = {reference: backtest.paired_bootstrap(metric, true, candidate_answers, predicted,
                                                                   n_classes)
                              for reference, predicted in references.items()}
    return metrics, card


def consistent_mask(head: Head, rows: LabelledRows, base: np.ndarray, labels: list[str] | None,
                    say) -> tuple[np.ndarray, int]:
    """(mask of the rows a model may learn from, how many are left out): with ``exclude_inconsistent``
    (classification), not those whose recorded class confident learning on out-of-fold probabilities calls a
    label error (guard/inconsistent.py); else every row. Left-out rows are still predicted and measured."""
    mask = np.ones(len(rows), dtype=bool)
    if not head.exclude_inconsistent or head.task != "classification":
        return mask, 0
    from lm_insights.guard.inconsistent import consistent_rows

    mask[:] = False
    mask[list(consistent_rows(base, rows.targets, labels))] = True
    excluded = int(len(rows) - mask.sum())
    say(f"left out {excluded} of {len(rows)} training rows whose recorded {head.target} the out-of-fold model "
        "contradicts with high confidence (exclude_inconsistent)")
    return mask, excluded


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


def promoted_comparison(promoted: int, loaded, head: Head, labels, engine, rows: LabelledRows, base, folds,
                        fold_predictions, truth) -> dict[str, Any]:
    """The promoted version against the candidate's out-of-fold predictions on the backtest rows newer than the
    promoted version's training window (it was fitted on the older ones, so they cannot judge it); or why they
    could not be compared (``comparable`` false)."""
    from lm_engine.train import predict_from_embeddings

    card, metric = loaded.card, head.objective
    if card["task"] != head.task or card.get("labels") != labels or card.get("base_model_key") != engine.model_key:
        return {"comparable": False, "why": "it predicts other classes or reads another encoder"}
    until = card.get("train_until") or card.get("evaluation_split", {}).get("evaluation_until")
    tested = backtest.backtest_index(folds)
    pooled = np.concatenate(fold_predictions)
    newer = [k for k, i in enumerate(tested) if until is None or str(rows.times[i]) > until]
    if len(newer) < MIN_COMPARED_ROWS:
        return {"comparable": False, "rows": len(newer),
                "why": f"only {len(newer)} backtest rows are newer than its training window (until {until}); "
                       f"at least {MIN_COMPARED_ROWS} are needed"}
    index = tested[newer]
    vectors = base[index] if loaded.head.method == "linear" else np.asarray(
        loaded.engine_for(engine).encode([rows.texts[i] for i in index]).vectors)
    predicted = predict_from_embeddings(loaded.head, vectors)
    candidate = pooled[newer]
    if head.task == "classification":
        candidate, predicted = candidate.argmax(axis=1), predicted.argmax(axis=1)
    comparison = backtest.paired_bootstrap(metric, truth[index], candidate, predicted, len(labels or []))
    return {"comparable": True, "version": promoted, **comparison}


def decide(metric: str, metrics: dict[str, Any], promoted: int | None) -> tuple[str, str]:
    """Promote only if the candidate beats, beyond noise (paired bootstrap on the same backtest rows), the best
    constant answer, persistence, zero-shot and the promoted version where it can be compared."""
    candidate = metrics["candidate"]
    summary = f"backtest {metric} {candidate['objective']:.3f} on {metrics['rows']} out-of-fold rows"
    beaten, lost = [], []
    for reference, comparison in metrics["comparisons"].items():
        line = (f"{reference} {metrics[reference]['objective']:.3f} (difference {comparison['difference']:+.3f}, "
                f"{comparison['confidence']:.0%} lower bound {comparison['interval'][0]:+.3f})")
        (beaten if comparison["better"] else lost).append(line)
    note = ""
    against = metrics.get("promoted")
    if promoted and against is not None:
        if against["comparable"]:
            line = (f"promoted v{promoted} on the {against['rows']} rows newer than its window (difference "
                    f"{against['difference']:+.3f}, lower bound {against['interval'][0]:+.3f})")
            (beaten if against["better"] else lost).append(line)
        elif "rows" in against:
            return "rejected", f"{summary}; could not compare with promoted v{promoted}: {against['why']}; keeping it"
        else:
            note = f"; could not compare with promoted v{promoted}: {against['why']}"
    if lost:
        return "rejected", f"{summary} is not better beyond noise than " + "; ".join(lost) + note
    return "promoted", f"{summary} beats " + "; ".join(beaten) + note
