"""learn.backtest and the head metrics on synthetic data: rolling-origin folds, cross-fitted calibration that holds
on newer rows, paired comparisons, and abstention counted in every metric."""

from __future__ import annotations

import numpy as np
import pytest

from lm_engine import train
from lm_insights.learn import backtest, heads, training


def synthetic_rows(n, seed, dim=16, n_classes=3, signal=1.0, weights=None):
    """Vectors whose class shifts the mean along one axis per class: learnable, with overlap (not separable)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(n_classes, size=n, p=weights)
    x = rng.normal(size=(n, dim))
    x[np.arange(n), y] += signal
    return x.astype(np.float32), [f"class{c}" for c in y]


def test_folds_train_only_on_older_rows_and_keep_a_time_in_one_block():
    times = [day for day in range(20) for _ in range(10)]  # 20 days of 10 rows
    folds = backtest.rolling_folds(times, 0.5, 4)
    assert len(folds) == 4
    tested = backtest.backtest_index(folds)
    assert list(tested) == list(range(tested[0], 200)) and 90 <= len(tested) <= 110
    for fold in folds:
        assert list(fold.train) == list(range(fold.test[0]))  # every older row, nothing newer
        assert times[fold.test[0]] != times[fold.test[0] - 1]  # the cut falls between two days
    one_time = backtest.rolling_folds([0] * 40, 0.5, 4)  # no time to cut between: by position
    assert [len(f.test) for f in one_time] == [5, 5, 5, 5] and len(one_time[0].train) == 20


def test_an_always_abstaining_class_lowers_macro_f1():
    true = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    answering = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    abstaining_on_c = ["a"] * 4 + ["b"] * 4 + [heads.UNCERTAIN] * 4
    full = heads.classification_metrics(true, answering, ["a", "b", "c"])
    partial = heads.classification_metrics(true, abstaining_on_c, ["a", "b", "c"])
    assert full["macro_f1"] == 1.0
    assert partial["accuracy"] == 1.0  # right on every answered row ...
    assert partial["macro_f1"] == pytest.approx(2 / 3)  # ... but class c is never found: its F1 is 0
    assert partial["coverage_adjusted_accuracy"] == pytest.approx(8 / 12)
    # a class with no row and no answer still counts when the head has it
    assert heads.classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"])["macro_f1"] == pytest.approx(2 / 3)


def test_paired_bootstrap_needs_a_difference_beyond_noise():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=300)
    coin = rng.integers(0, 2, size=300)
    same = backtest.paired_bootstrap("accuracy", truth, coin, coin)
    assert same["difference"] == 0 and not same["better"]
    slightly = coin.copy()
    slightly[np.flatnonzero(slightly != truth)[:3]] ^= 1  # 3 more right of 300: within noise
    assert not backtest.paired_bootstrap("accuracy", truth, slightly, coin)["better"]
    good = np.where(rng.random(300) < 0.8, truth, 1 - truth)
    clear = backtest.paired_bootstrap("accuracy", truth, good, coin)
    assert clear["better"] and clear["interval"][0] > 0.15
    assert backtest.paired_bootstrap("macro_f1", truth, good, coin, 2)["better"]
    values = rng.normal(size=300)
    assert backtest.paired_bootstrap("mae", values, values * 0.2, np.zeros(300))["better"]


def test_best_constant_is_the_evaluation_rows_own_answer():
    truth = np.array([0] * 10 + [1] * 30 + [2] * 5)
    assert backtest.best_constant("accuracy", truth, 3)[0] == 1
    assert backtest.best_constant("mae", np.array([1.0, 2.0, 10.0]))[0] == 2.0
    assert backtest.persistence([0, 0, 1, 2], np.array([5, 6, 7, 8]), np.array([2, 3])).tolist() == [6, 7]
    assert backtest.persistence([0, 0, 1], np.array([5, 6, 7]), np.array([1, 2])) is None


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_selection_scores_every_setting_on_the_heads_own_metric(metric):
    """Imbalanced classes: the search ranks C x class weighting by the metric the head is promoted on."""
    x, y = synthetic_rows(400, seed=3, weights=[0.7, 0.2, 0.1])
    labels = ["class0", "class1", "class2"]
    folds = backtest.rolling_folds(list(range(400)), 0.5, 4)
    truth = training.target_array("classification", y, labels)
    chosen, search, predictions = training.search_linear("classification", x, y, labels, folds, metric, truth)
    assert len(search) == len(train.hyper_parameter_grid("classification"))
    tested = backtest.backtest_index(folds)
    for row in search:  # each score is the metric of that setting's pooled out-of-fold predictions
        assert row["score"] <= train.choose(search)["score"]
    pooled = np.concatenate(predictions)
    assert train.objective_score(metric, pooled, truth[tested], 3) == pytest.approx(train.choose(search)["score"])
    assert {k: v for k, v in train.choose(search).items() if k not in ("score", "log_loss")} == chosen


def test_calibration_holds_on_newer_rows_it_was_not_fitted_on():
    """20 seeded windows of 400 rows, a head refit on all of them with the cross-fitted threshold, measured on
    4000 newer rows of the same source. The threshold chosen on the rows it is then measured on (the old way,
    z = 0) falls short there; this one must not, on average, and rarely by more than 0.02."""
    min_precision, fresh_precision, naive_precision = 0.9, [], []
    labels = ["class0", "class1", "class2"]

    def fit(x, y):
        return train.fit_linear(x, y, train.CLASSIFICATION, labels=labels)

    for seed in range(20):
        x, y = synthetic_rows(400, seed=seed, signal=2.0)
        new_x, new_y = synthetic_rows(4000, seed=1000 + seed, signal=2.0)
        folds = backtest.rolling_folds(list(range(400)), 0.5, 4)
        truth = training.target_array("classification", y, labels)
        predictions = backtest.out_of_fold(folds, lambda fit_rows, test: train.predict_from_embeddings(
            fit(x[fit_rows], [y[i] for i in fit_rows]), x[test]))
        threshold, _ = backtest.cross_fitted_threshold(predictions, [truth[f.test] for f in folds], min_precision)
        head = fit(x, y)
        new_probabilities = train.predict_from_embeddings(head, new_x)
        new_truth = training.target_array("classification", new_y, labels)
        fresh_precision.append(precision_at(new_probabilities, new_truth, threshold))
        tested = backtest.backtest_index(folds)
        naive = train.threshold_for_precision(np.concatenate(predictions), truth[tested], min_precision, z=0)
        naive_precision.append(precision_at(new_probabilities, new_truth, naive))
    fresh, naive = np.array(fresh_precision), np.array(naive_precision)
    assert fresh.mean() >= min_precision, fresh
    assert np.mean(fresh < min_precision - 0.02) <= 0.1, fresh
    assert naive.mean() < fresh.mean()  # the selection effect the bound corrects is there to correct


def precision_at(probabilities, truth, threshold):
    covered = probabilities.max(axis=1) >= threshold
    assert covered.mean() > 0.05  # a threshold that labels (almost) nothing proves nothing
    return float(np.mean(probabilities.argmax(axis=1)[covered] == truth[covered]))
