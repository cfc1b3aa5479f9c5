"""Rolling-origin (time-ordered) cross-validation of a head over its training window, and the paired comparison
that decides promotion.

The window's rows, oldest first, are cut at ``1 - share`` of them and the rest into ``folds`` consecutive blocks;
fold k trains on every row older than its block and predicts the block. Pooled over the folds, every backtest
row is predicted by a model that never saw it or anything newer, as tomorrow's rows will be. Hyper-parameters,
the abstention threshold and promotion are all decided on these out-of-fold predictions with the head's one
metric; the published model is then refit on every row of the window.

The ``min_precision`` threshold is cross-fitted forward: the threshold that fold k's labels would have used is
chosen on the out-of-fold predictions of the folds before k only, so the precision reported for the published
labels is measured on rows that played no part in choosing it (folds 2..K), and those rows are newer than the
rows that set it. The published threshold is chosen the same way on all out-of-fold rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95  # one-sided: the candidate must be better at the 5th percentile of the paired bootstrap


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # indexes of the rows older than the block
    test: np.ndarray  # indexes of the block


def rolling_folds(times: Sequence[Any], share: float, folds: int) -> list[Fold]:
    """Folds over rows sorted by time: the newest ``share`` of the rows in ``folds`` blocks. A cut falls between
    two times where the data has them (rows of one time stay in one block), else by position."""
    n = len(times)
    first = n - max(folds, math.ceil(share * n))
    cuts = []
    for position in np.linspace(first, n, folds + 1)[:-1].round().astype(int):
        position = int(position)
        at_time = list(times).index(times[position])
        cut = at_time if at_time > (cuts[-1] if cuts else 0) else position
        if cut > (cuts[-1] if cuts else 0):
            cuts.append(cut)
    cuts.append(n)
    return [Fold(np.arange(cuts[k]), np.arange(cuts[k], cuts[k + 1])) for k in range(len(cuts) - 1)
            if cuts[k + 1] > cuts[k]]


def backtest_index(folds: list[Fold]) -> np.ndarray:
    return np.concatenate([fold.test for fold in folds])


def out_of_fold(folds: list[Fold], fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Per fold, the predictions of a model fitted on ``fold.train`` for ``fold.test`` rows."""
    return [np.asarray(fit_predict(fold.train, fold.test)) for fold in folds]


def cross_fitted_threshold(fold_probabilities: list[np.ndarray], fold_truth: list[np.ndarray],
                           min_precision: float) -> tuple[float | None, list[float | None]]:
    """(threshold on every out-of-fold row, [threshold fold k's labels get: chosen on folds < k; None for
    fold 0, which has no earlier rows])."""
    from lm_engine.train import threshold_for_precision

    per_fold: list[float | None] = [None]
    for k in range(1, len(fold_probabilities)):
        per_fold.append(threshold_for_precision(np.concatenate(fold_probabilities[:k]),
                                                np.concatenate(fold_truth[:k]), min_precision))
    overall = threshold_for_precision(np.concatenate(fold_probabilities), np.concatenate(fold_truth), min_precision)
    return overall, per_fold


def best_constant(metric: str, truth: np.ndarray, n_classes: int = 0) -> tuple[Any, np.ndarray]:
    """(answer, predictions) of the constant that scores best on these rows under ``metric``: the rows' own
    majority class for accuracy, the class that maximises macro-F1 / balanced accuracy, the median for MAE."""
    from lm_engine.train import objective_score

    if metric == "mae":
        answer = float(np.median(truth))
        return answer, np.full(len(truth), answer)
    scores = [objective_score(metric, np.eye(n_classes)[np.full(len(truth), c)], truth, n_classes)
              for c in range(n_classes)]
    answer = int(np.argmax(scores))
    return answer, np.full(len(truth), answer)


def persistence(times: Sequence[Any], targets: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
    """For each of ``rows``, the target of the latest row with an earlier time (the previous value); None when
    some row has no earlier one."""
    predictions = []
    for i in rows:
        earlier = int(i)
        while earlier > 0 and times[earlier - 1] == times[i]:
            earlier -= 1
        if earlier == 0:
            return None
        predictions.append(targets[earlier - 1])
    return np.asarray(predictions)


def paired_bootstrap(metric: str, truth: np.ndarray, candidate: np.ndarray, reference: np.ndarray,
                     n_classes: int = 0) -> dict[str, Any]:
    """How much better the candidate's predictions are than the reference's on the same rows, with a seeded
    paired bootstrap interval. Predictions are class indexes (classification) or values (MAE). ``difference``
    is positive when the candidate is better (higher metric, lower MAE); ``better`` when the interval's lower
    end (one-sided ``CONFIDENCE``) is above zero, and for accuracy also when McNemar's exact test (one-sided,
    on the rows only one of the two gets right) is below ``1 - CONFIDENCE``: with few such rows the bootstrap
    alone is too ready to call a difference real."""
    truth, candidate, reference = np.asarray(truth), np.asarray(candidate), np.asarray(reference)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    n = len(truth)
    resamples = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    if metric in ("accuracy", "mae"):
        if metric == "accuracy":
            per_row = (candidate == truth).astype(float) - (reference == truth).astype(float)
        else:
            per_row = np.abs(reference - truth) - np.abs(candidate - truth)
        difference, draws = float(per_row.mean()), per_row[resamples].mean(axis=1)
    else:
        score = lambda t, p: _class_metric(metric, t, p, n_classes)  # noqa: E731
        difference = score(truth, candidate) - score(truth, reference)
        draws = np.array([score(truth[r], candidate[r]) - score(truth[r], reference[r]) for r in resamples])
    low, high = np.quantile(draws, [1 - CONFIDENCE, CONFIDENCE])
    result = {"metric": metric, "rows": n, "difference": difference, "interval": [float(low), float(high)],
              "confidence": CONFIDENCE, "better": bool(low > 0)}
    if metric == "accuracy":
        from scipy.stats import binomtest

        only_candidate = int(np.sum((candidate == truth) & (reference != truth)))
        only_reference = int(np.sum((candidate != truth) & (reference == truth)))
        discordant = only_candidate + only_reference
        p_value = binomtest(only_candidate, discordant, 0.5, alternative="greater").pvalue if discordant else 1.0
        result |= {"mcnemar_p": float(p_value), "better": bool(result["better"] and p_value < 1 - CONFIDENCE)}
    return result


def _class_metric(metric: str, truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    from lm_engine.train import objective_score

    return objective_score(metric, np.eye(n_classes)[predicted], truth, n_classes)
