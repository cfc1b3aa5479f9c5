"""
Learning from labelled rows: a head on frozen sentence vectors (`linear`), or the encoder and a head trained
together (`finetune`).

    head = fit_linear(vectors, labels_of_rows, CLASSIFICATION, validation=(val_vectors, val_labels))
    head = finetune(engine, texts, labels_of_rows, CLASSIFICATION, validation=(val_texts, val_labels))
    probabilities = predict_from_embeddings(head, head_engine(engine, head).encode(new_texts).vectors)
    threshold = threshold_for_precision(val_probabilities, val_true_index, min_precision=0.9)

One objective: `metric` (accuracy | macro_f1 | balanced_accuracy for classification, mae for regression) picks
the regularisation strength and the class weighting (none or balanced: a hyper-parameter, not a fixed choice), as
it picks the epoch of `finetune`; the platform then calibrates and promotes on the same metric.

A head is linear on the sentence vector the engine returns (pooled, L2-normalised when the checkpoint says so):
logits = x W^T + b, softmax for classification; for regression prediction = (x W^T + b) * target_scale +
target_mean. `finetune` starts its head from `fit_linear` on the frozen vectors (linear probing, then
fine-tuning: the encoder is not pushed around by a random head in the first steps), uses AdamW with linear
warm-up and decay, dropout only in training, bf16 autocast on CUDA and fp32 on CPU, and keeps the epoch that
scores best on `validation`.

Determinism: the same inputs and seed give bit-identical tensors on CPU (seeded shuffles, seeded dropout in a
forked RNG, deterministic solvers). Heads travel as safetensors with JSON metadata: no pickle anywhere.
"""

import copy
import hashlib
import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

CLASSIFICATION, REGRESSION = "classification", "regression"
TASKS = (CLASSIFICATION, REGRESSION)
METHODS = ("linear", "finetune")  # linear: head on frozen embeddings; finetune: encoder + head trained together
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "balanced_accuracy")
REGRESSION_METRICS = ("mae",)
LOGISTIC_C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # inverse L2 strength, tried on validation
CLASS_WEIGHTS = (None, "balanced")  # balanced helps macro-F1 / balanced accuracy, often costs plain accuracy
DEFAULT_LOGISTIC_C = 1.0  # scikit-learn's default, used when there is no validation slice
# threshold_for_precision keeps a cut only where the precision's lower bound (Wilson, z standard errors) reaches
# min_precision: the smallest cut that merely touches it on the calibration rows falls short on newer rows
# (choosing the cut is itself a selection), by about 0.02 at a few hundred rows.
PRECISION_BOUND_Z = 1.0
RIDGE_ALPHA_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_RIDGE_ALPHA = 1.0
WARMUP_SHARE = 0.1  # share of optimizer steps with a linearly rising learning rate
WEIGHT_DECAY = 0.01  # AdamW decay on weight matrices (not on biases and LayerNorm), as BERT fine-tuning does
HEAD_LEARNING_RATE_FACTOR = 50.0  # the head sits on unit vectors: it needs far larger steps than the encoder
FORMAT = "lm_engine.trained_head/1"
PROGRESS_INTERVAL_S = 30.0  # seconds between progress lines inside an epoch


@dataclass
class TrainedHead:
    task: str  # CLASSIFICATION | REGRESSION
    method: str  # "linear" | "finetune"
    labels: list[str] | None  # class names in output order (classification); None for regression
    tensors: dict[str, torch.Tensor]  # "weight" (C, D), "bias" (C,); regression also target_mean/target_scale
    encoder_state: dict[str, torch.Tensor] | None  # finetune: encoder weights under checkpoint names; else None
    info: dict = field(default_factory=dict)  # hyper-parameters, per-epoch log, train_seconds, n_train, seed, ...


def _check_task(task, targets, labels):
    """Targets as a numpy array (class indices for classification, float64 for regression) and the labels."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not supported; valid: {', '.join(TASKS)}")
    if len(targets) == 0:
        raise ValueError("no training rows: targets is empty")
    if task == REGRESSION:
        values = np.asarray(targets, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"regression targets must be finite numbers; row {int(np.argmin(np.isfinite(values)))} "
                             f"is {targets[int(np.argmin(np.isfinite(values)))]!r}")
        return values, None
    labels = [str(label) for label in labels] if labels is not None else sorted({str(t) for t in targets})
    index = {label: i for i, label in enumerate(labels)}
    unknown = [(i, t) for i, t in enumerate(targets) if not isinstance(t, str) or t not in index]
    if unknown:
        raise ValueError(f"row {unknown[0][0]}: target {unknown[0][1]!r} is not one of the labels {labels} "
                         f"(targets are label strings)")
    indices = np.array([index[t] for t in targets], dtype=np.int64)
    missing = [label for i, label in enumerate(labels) if not np.any(indices == i)]
    if len(labels) < 2 or missing:
        raise ValueError(f"classification needs at least 2 labels, each with training rows; labels {labels}, "
                         f"without rows: {missing}")
    return indices, labels


def _macro_f1(true_index, predicted_index, n_classes):
    scores = []
    for c in range(n_classes):
        tp = np.sum((predicted_index == c) & (true_index == c))
        fp = np.sum((predicted_index == c) & (true_index != c))
        fn = np.sum((predicted_index != c) & (true_index == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def _balanced_accuracy(true_index, predicted_index, n_classes):
    recalls = [np.mean(predicted_index[true_index == c] == c) for c in range(n_classes) if np.any(true_index == c)]
    return float(np.mean(recalls))


def default_metric(task: str) -> str:
    return "accuracy" if task == CLASSIFICATION else "mae"


def check_metric(task: str, metric: str | None) -> str:
    """The metric, or the task's default; ValueError naming the valid ones."""
    metric = metric or default_metric(task)
    valid = CLASSIFICATION_METRICS if task == CLASSIFICATION else REGRESSION_METRICS
    if metric not in valid:
        raise ValueError(f"metric {metric!r} does not fit a {task} head; valid: {', '.join(valid)}")
    return metric


def objective_score(metric: str, predictions: np.ndarray, truth: np.ndarray, n_classes: int = 0) -> float:
    """Higher is better: the metric of argmax predictions (classification) or -MAE (regression)."""
    if metric == "mae":
        return -float(np.mean(np.abs(np.asarray(predictions) - truth)))
    predicted = np.asarray(predictions).argmax(axis=1)
    if metric == "accuracy":
        return float(np.mean(predicted == truth))
    if metric == "macro_f1":
        return _macro_f1(truth, predicted, n_classes)
    if metric == "balanced_accuracy":
        return _balanced_accuracy(truth, predicted, n_classes)
    raise ValueError(f"metric {metric!r}: valid are {', '.join(CLASSIFICATION_METRICS + REGRESSION_METRICS)}")


def log_loss(probabilities, truth):
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, None))))


def _binary_to_softmax(coef, intercept):
    """scikit-learn's binary logistic (1, D) as two softmax rows: softmax([-z/2, z/2]) = [1 - s(z), s(z)]."""
    return np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])


def _fit_logistic(x, y, n_classes, c, class_weight, seed):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000, random_state=seed)
    model.fit(x, y)
    coef, intercept = model.coef_, model.intercept_
    if n_classes == 2:
        coef, intercept = _binary_to_softmax(coef, intercept)
    return coef, intercept


def _fit_ridge(x, y_scaled, alpha):
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=alpha).fit(x, y_scaled)
    return model.coef_[None, :], np.atleast_1d(model.intercept_)


def _head_tensors(weight, bias, target_mean=None, target_scale=None):
    tensors = {"weight": torch.tensor(np.asarray(weight), dtype=torch.float32).contiguous(),
               "bias": torch.tensor(np.asarray(bias), dtype=torch.float32).contiguous()}
    if target_mean is not None:
        tensors["target_mean"] = torch.tensor([target_mean], dtype=torch.float64)
        tensors["target_scale"] = torch.tensor([target_scale], dtype=torch.float64)
    return tensors


def _target_scaling(values):
    """(mean, scale) that standardise regression targets; scale 1 for a constant target."""
    scale = float(np.std(values))
    return float(np.mean(values)), scale if scale > 0 else 1.0


def fit_linear(embeddings: np.ndarray, targets: Sequence, task: str, *, labels: list[str] | None = None,
               seed: int = 0, validation: tuple[np.ndarray, Sequence] | None = None,
               log: Callable[[str], None] | None = None, metric: str | None = None,
               hyper_parameters: dict | None = None) -> TrainedHead:
    """A logistic (classification) or ridge (regression) head on frozen embeddings.

    ``hyper_parameters`` ({"C", "class_weight"} or {"alpha"}) fixes them; else, with ``validation``, the grid
    (C x class weighting, or alpha) is searched on ``metric`` there; else scikit-learn's defaults."""
    log = log or (lambda message: None)
    start = time.monotonic()
    metric = check_metric(task, metric)
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(targets):
        raise ValueError(f"embeddings {x.shape} do not match {len(targets)} targets: need one row per target")
    y, labels = _check_task(task, targets, labels)
    mean, scale = _target_scaling(y) if task == REGRESSION else (None, None)

    def fit(setting):
        if task == CLASSIFICATION:
            return _head_tensors(*_fit_logistic(x, y, len(labels), setting["C"], setting["class_weight"], seed))
        return _head_tensors(*_fit_ridge(x, (y - mean) / scale, setting["alpha"]), mean, scale)

    search = []
    if hyper_parameters is not None:
        best = dict(hyper_parameters)
    elif validation is not None:
        val_x = np.asarray(validation[0], dtype=np.float32)
        val_y = _validation_targets(task, validation[1], labels)
        for setting in hyper_parameter_grid(task):
            predictions = predict_from_embeddings(TrainedHead(task, "linear", labels, fit(setting), None), val_x)
            row = {**setting, "score": objective_score(metric, predictions, val_y, len(labels or []))}
            if task == CLASSIFICATION:  # ties on the metric go to the better-calibrated head
                row["log_loss"] = log_loss(predictions, val_y)
            search.append(row)
            log(f"linear: {setting} validation {metric} {abs(row['score']):.4f}")
        best = {k: v for k, v in choose(search).items() if k not in ("score", "log_loss")}
    else:
        best = default_hyper_parameters(task)
    tensors = fit(best)
    info = {"hyper_parameters": best, "metric": metric, "search": search,
            "train_seconds": round(time.monotonic() - start, 3), "n_train": int(len(y)),
            "n_validation": int(len(validation[1])) if validation is not None else 0, "seed": seed,
            "device": "cpu", "precision": "fp64"}
    log(f"linear: {best} trained on {len(y)} rows in {info['train_seconds']:.1f} s")
    return TrainedHead(task, "linear", labels, tensors, None, info)


def hyper_parameter_grid(task: str) -> list[dict]:
    """Every setting ``fit_linear`` searches: C x class weighting (classification) or alpha (regression)."""
    if task == CLASSIFICATION:
        return [{"C": c, "class_weight": w} for w in CLASS_WEIGHTS for c in LOGISTIC_C_GRID]
    return [{"alpha": alpha} for alpha in RIDGE_ALPHA_GRID]


def default_hyper_parameters(task: str) -> dict:
    if task == CLASSIFICATION:
        return {"C": DEFAULT_LOGISTIC_C, "class_weight": None}
    return {"alpha": DEFAULT_RIDGE_ALPHA}


def choose(search: list[dict]) -> dict:
    """The best row of a search: highest "score" (``objective_score``), ties to the lower "log_loss" (the
    better-calibrated head), remaining ties to the earlier row (stronger regularisation first in the grid)."""
    return max(search, key=lambda r: (r["score"], -r.get("log_loss", 0.0)))


def _validation_targets(task, targets, labels):
    """Validation targets as class indices (every one must be a training label) or float64 values."""
    if task == REGRESSION:
        return _check_task(task, targets, None)[0]
    index = {label: i for i, label in enumerate(labels)}
    unknown = [(i, t) for i, t in enumerate(targets) if t not in index]
    if unknown:
        raise ValueError(f"validation row {unknown[0][0]}: target {unknown[0][1]!r} is not one of {labels}")
    return np.array([index[t] for t in targets], dtype=np.int64)


def predict_from_embeddings(head: TrainedHead, embeddings: np.ndarray) -> np.ndarray:
    """Classification: (N, C) probabilities, rows sum to 1; regression: (N,) predictions in target units."""
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    weight, bias = head.tensors["weight"], head.tensors["bias"]
    if x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"embeddings {tuple(x.shape)} do not fit the head: it expects (N, {weight.shape[1]})")
    logits = x @ weight.T + bias  # (N, C)
    if head.task == CLASSIFICATION:
        return torch.softmax(logits.double(), dim=1).numpy()
    return (logits[:, 0].double() * head.tensors["target_scale"] + head.tensors["target_mean"]).numpy()


def threshold_for_precision(probabilities: np.ndarray, true_index: np.ndarray, min_precision: float,
                            z: float = PRECISION_BOUND_Z) -> float | None:
    """The smallest threshold t on the max probability such that the rows with max-prob >= t are predicted
    (argmax) with a precision whose Wilson lower bound (``z`` standard errors; 0: the precision itself) is
    >= min_precision on this data; None when no threshold reaches it."""
    probabilities, true_index = np.asarray(probabilities), np.asarray(true_index)
    if len(probabilities) == 0:
        return None
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == true_index
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    precision = wilson_lower_bound(np.cumsum(correct), np.arange(1, len(correct) + 1), z)
    # a threshold keeps every row tied with it: only the last row of each run of equal confidences is a cut
    last_of_tie = np.append(confidence[1:] != confidence[:-1], True)
    reaching = np.flatnonzero(last_of_tie & (precision >= min_precision))
    return float(confidence[reaching[-1]]) if len(reaching) else None


def wilson_lower_bound(successes, trials, z: float):
    """Wilson score interval's lower end of successes / trials (z = 0: the plain proportion)."""
    successes, trials = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    p = successes / trials
    if z == 0:
        return p
    centre = p + z * z / (2 * trials)
    spread = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (centre - spread) / (1 + z * z / trials)


def _forked_rng(device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _padded(ids, device):
    """input_ids and attention_mask (B, T) for token id lists, padded with 0 to the longest."""
    longest = max(len(row) for row in ids)
    input_ids = torch.zeros((len(ids), longest), dtype=torch.long)
    attention_mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for r, row in enumerate(ids):
        input_ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[r, :len(row)] = 1
    return input_ids.to(device), attention_mask.to(device)


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _embed_for_validation(model, ids, device, batch_size=64):
    """Sentence vectors (N, D) float32 of the model in eval mode, in input order."""
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    vectors = np.empty((len(ids), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode(), _autocast(device):
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            vectors[rows] = model.sentence_embedding(*_padded([ids[i] for i in rows], device)).float().cpu().numpy()
    return vectors


def _optimizer(model, head, learning_rate, head_learning_rate):
    """AdamW with weight decay on weight matrices only, as BERT fine-tuning does."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY, "lr": learning_rate},
              {"params": no_decay, "weight_decay": 0.0, "lr": learning_rate},
              {"params": list(head.parameters()), "weight_decay": 0.0, "lr": head_learning_rate}]
    return torch.optim.AdamW(groups)


def _warmup_then_decay(optimizer, total_steps):
    warmup = max(1, int(WARMUP_SHARE * total_steps))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _trainable_copy(engine, device):
    """A float32 copy of engine's encoder on device; engine itself is never touched."""
    if next(engine.model.parameters()).dtype == torch.float32:
        return copy.deepcopy(engine.model).to(device)
    from lm_engine import checkpoint  # a bf16 inference copy: start again from the fp32 weights

    model = checkpoint.load_model(engine.model_dir)
    if getattr(engine, "encoder_state", None) is not None:  # an engine that head_engine built
        model.load_state_dict(engine.encoder_state, strict=True)
    return model.to(device)


def finetune(engine, texts: list[str], targets: Sequence, task: str, *, labels: list[str] | None = None,
             epochs: int = 3, learning_rate: float = 2e-5, batch_size: int = 16, seed: int = 0,
             validation: tuple[list[str], Sequence] | None = None,
             log: Callable[[str], None] | None = None, head_learning_rate: float | None = None,
             max_length: int | None = None, device=None, embeddings: np.ndarray | None = None,
             validation_embeddings: np.ndarray | None = None, metric: str | None = None,
             probe_hyper_parameters: dict | None = None) -> TrainedHead:
    """The encoder of `engine` and a linear head trained together (cross-entropy, class-weighted as the linear
    probe chose, or MSE on standardised targets). With `validation`, the epoch with the best `metric` is kept;
    `probe_hyper_parameters` fixes the probe's (else it searches them on `validation`).
    max_length truncates training texts further than the engine does (faster on CPU); device defaults to
    the engine's; embeddings / validation_embeddings are engine.encode() vectors of the texts when the caller
    has them already (the linear probe that starts the head needs them)."""
    log = log or (lambda message: None)
    start = time.monotonic()
    metric = check_metric(task, metric)
    device = torch.device(device) if device is not None else engine.device
    y, labels = _check_task(task, targets, labels)
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError(f"epochs ({epochs}) and batch_size ({batch_size}) must be >= 1, learning_rate "
                         f"({learning_rate}) > 0")
    head_learning_rate = head_learning_rate or learning_rate * HEAD_LEARNING_RATE_FACTOR
    ids, _ = engine.tokenize(texts)
    if max_length:
        ids = [row[:max_length - 1] + row[-1:] if len(row) > max_length else row for row in ids]  # keep [SEP]
    val_ids = val_y = None
    if validation is not None:
        val_ids, _ = engine.tokenize(validation[0])
        val_y = _validation_targets(task, validation[1], labels)

    # linear probe first: the head starts where logistic regression / ridge on the frozen vectors ends
    frozen = embeddings if embeddings is not None else engine.encode(texts).vectors
    if validation is not None and validation_embeddings is None:
        validation_embeddings = engine.encode(validation[0]).vectors
    probe = fit_linear(frozen, targets, task, labels=labels, seed=seed, metric=metric,
                       hyper_parameters=probe_hyper_parameters,
                       validation=(validation_embeddings, validation[1]) if validation else None)
    class_weighting = probe.info["hyper_parameters"].get("class_weight")
    mean, scale = _target_scaling(y) if task == REGRESSION else (None, None)

    with _forked_rng(device):
        torch.manual_seed(seed)
        model = _trainable_copy(engine, device)
        head = torch.nn.Linear(model.config.hidden_size, probe.tensors["weight"].shape[0]).to(device)
        with torch.no_grad():
            head.weight.copy_(probe.tensors["weight"])
            head.bias.copy_(probe.tensors["bias"])
        if task == CLASSIFICATION:
            counts = np.bincount(y, minlength=len(labels))
            class_weight = torch.tensor(len(y) / (len(labels) * counts), dtype=torch.float32, device=device)
            loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight if class_weighting == "balanced" else None)
            train_targets = torch.tensor(y, dtype=torch.long)
        else:
            loss_fn = torch.nn.MSELoss()
            train_targets = torch.tensor((y - mean) / scale, dtype=torch.float32)
        steps_per_epoch = math.ceil(len(ids) / batch_size)
        total_steps = steps_per_epoch * epochs
        optimizer = _optimizer(model, head, learning_rate, head_learning_rate)
        scheduler = _warmup_then_decay(optimizer, total_steps)
        shuffler = np.random.default_rng(seed)
        history, best_score, best_state, best_epoch = [], -math.inf, None, epochs
        step, last_log = 0, time.monotonic()
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for rows in _length_bucketed_batches(ids, batch_size, shuffler):
                with _autocast(device):
                    vectors = model.sentence_embedding(*_padded([ids[i] for i in rows], device))
                    outputs = head(vectors.float())
                outputs = outputs.float() if task == CLASSIFICATION else outputs.float()[:, 0]  # (B, C) | (B,)
                loss = loss_fn(outputs, train_targets[rows].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                step += 1
                if time.monotonic() - last_log >= PROGRESS_INTERVAL_S:
                    last_log = time.monotonic()
                    log(f"finetune: epoch {epoch}/{epochs} step {step}/{total_steps} loss {np.mean(losses):.4f} "
                        f"ETA {_eta(start, step, total_steps):.0f} s")
            entry = {"epoch": epoch, "loss": float(np.mean(losses))}
            if val_ids is not None:
                val_head = TrainedHead(task, "finetune", labels, _current_head(head, mean, scale), None)
                score = objective_score(metric, predict_from_embeddings(
                    val_head, _embed_for_validation(model, val_ids, device)), val_y, len(labels or []))
                entry["validation_" + metric] = abs(score)
                if score > best_score:
                    best_score, best_epoch = score, epoch
                    best_state = _cpu_state(model), _current_head(head, mean, scale)
            history.append(entry)
            log(f"finetune: epoch {epoch}/{epochs} loss {entry['loss']:.4f}"
                + (f" validation {metric} {entry['validation_' + metric]:.4f}"
                   if val_ids is not None else "") + f" ETA {_eta(start, step, total_steps):.0f} s")
    encoder_state, tensors = best_state if best_state is not None else (_cpu_state(model),
                                                                         _current_head(head, mean, scale))
    info = {"hyper_parameters": {"epochs": epochs, "learning_rate": learning_rate,
                                 "head_learning_rate": head_learning_rate, "batch_size": batch_size,
                                 "max_length": max_length or engine.max_seq_length, "warmup_share": WARMUP_SHARE,
                                 "weight_decay": WEIGHT_DECAY, "head_init": "linear probe",
                                 "class_weight": class_weighting, "metric": metric},
            "best_epoch": best_epoch, "history": history, "train_seconds": round(time.monotonic() - start, 3),
            "n_train": int(len(ids)), "n_validation": int(len(val_ids)) if val_ids is not None else 0,
            "seed": seed, "device": str(device), "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
            "base_model_key": engine.model_key}
    log(f"finetune: kept epoch {best_epoch} of {epochs}; {len(ids)} rows in {info['train_seconds']:.0f} s")
    return TrainedHead(task, "finetune", labels, tensors, encoder_state, info)


def _length_bucketed_batches(ids, batch_size, shuffler, bucket_batches=8):
    """Shuffled batches of rows of similar length: rows are shuffled, cut into buckets of bucket_batches
    batches, sorted by length inside each bucket, cut into batches, and the batches shuffled. Padding (wasted
    compute on CPU) drops several-fold against plain shuffled batches; the order depends only on the seed."""
    order = shuffler.permutation(len(ids))
    batches = []
    for first in range(0, len(order), batch_size * bucket_batches):
        bucket = sorted(order[first:first + batch_size * bucket_batches], key=lambda i: len(ids[i]))
        batches.extend(bucket[b:b + batch_size] for b in range(0, len(bucket), batch_size))
    return [np.array(batches[i]) for i in shuffler.permutation(len(batches))]


def _eta(start, step, total_steps):
    return (time.monotonic() - start) / max(step, 1) * (total_steps - step)


def _cpu_state(model):
    return {name: tensor.detach().to("cpu", torch.float32).clone().contiguous()
            for name, tensor in model.state_dict().items()}


def _current_head(head, mean, scale):
    return _head_tensors(head.weight.detach().cpu().numpy(), head.bias.detach().cpu().numpy(), mean, scale)


def encoder_sha256(encoder_state):
    """sha256 over the encoder's tensor names, shapes, dtypes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(encoder_state):
        tensor = encoder_state[name].contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def head_engine(base, head: TrainedHead):
    """linear: base itself; finetune: an Engine with base's tokenizer and device whose encoder carries
    head.encoder_state, keyed '<base name>+finetune@<12 hex of the fine-tuned weights>/<precision>'."""
    if head.method == "linear":
        return base
    if head.encoder_state is None:
        raise ValueError("a finetune head must carry encoder_state; this one has none")
    from lm_engine import checkpoint
    from lm_engine.engine import Engine

    model = checkpoint.load_model(base.model_dir)
    model.load_state_dict(head.encoder_state, strict=True)
    # the precision changes the vectors as it does for the base model (registry.model_key)
    model_key = f"{base.name}+finetune@{encoder_sha256(head.encoder_state)[:12]}/{base.precision}"
    engine = Engine.from_model(base.name, base.model_dir, base.device, model, model_key, base.precision)
    engine.encoder_state = head.encoder_state
    return engine


def to_safetensors(head: TrainedHead) -> bytes:
    """The head (tensors under "head.", encoder under "encoder.") with task, method, labels and info as JSON
    strings in the safetensors metadata."""
    from safetensors.torch import save

    tensors = {f"head.{k}": v.contiguous() for k, v in head.tensors.items()}
    tensors.update({f"encoder.{k}": v.contiguous() for k, v in (head.encoder_state or {}).items()})
    metadata = {"format": FORMAT, "task": head.task, "method": head.method, "labels": json.dumps(head.labels),
                "info": json.dumps(head.info, sort_keys=True)}
    return save(tensors, metadata=metadata)


def from_safetensors(data: bytes) -> TrainedHead:
    """The TrainedHead that to_safetensors wrote; ValueError when the bytes are not one."""
    from safetensors.torch import load

    if len(data) < 8:
        raise ValueError("not a safetensors head: fewer than 8 bytes")
    (header_size,) = struct.unpack("<Q", data[:8])
    try:
        metadata = json.loads(data[8:8 + header_size]).get("__metadata__") or {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"not a safetensors head: unreadable header ({e})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"not a trained head: metadata format is {metadata.get('format')!r}, expected {FORMAT!r}")
    tensors = load(data)
    head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    encoder = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    return TrainedHead(task=metadata["task"], method=metadata["method"], labels=json.loads(metadata["labels"]),
                       tensors=head, encoder_state=encoder or None, info=json.loads(metadata["info"]))
