"""Drift figures of one partition against a reference window: pure functions on counts, summaries and vectors.

Every gate trips only when its figure passes the threshold *and* a test calls the difference significant, so a
small partition's sampling noise does not raise an alarm (docs/guards.md: how the thresholds were chosen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PSI_EPSILON = 1e-4  # share given to a label absent on one side, so that the PSI stays finite
MIN_SEGMENT_ROWS = 10  # a segment needs this many rows on each side to be compared (tiny ones: noise)
SEVERITY = {"warn": 1, "quarantine": 2, "fail": 3}  # the most severe tripped gate decides the run


@dataclass
class Check:
    """One gate's outcome: a row of ``<pipeline>_quality``. ``passed`` is None when it could not be measured."""
    check: str
    subject: str
    figure: float | None
    threshold: float | None
    action: str
    passed: bool | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tripped(self) -> bool:
        return self.passed is False

    def sentence(self) -> str:
        figure = "n/a" if self.figure is None else f"{self.figure:.3g}"
        threshold = "none" if self.threshold is None else f"{self.threshold:g}"
        return f"{self.check} of {self.subject}: {figure} (threshold {threshold}) -> {self.action}"


def psi(reference: dict[str, int], current: dict[str, int]) -> float:
    """Population stability index of two label counts: sum over labels of (c - r) * ln(c / r) on shares."""
    labels = sorted(set(reference) | set(current))
    r_total, c_total = sum(reference.values()), sum(current.values())
    total = 0.0
    for label in labels:
        r = max(reference.get(label, 0) / r_total, PSI_EPSILON)
        c = max(current.get(label, 0) / c_total, PSI_EPSILON)
        total += (c - r) * math.log(c / r)
    return total


def label_mix(subject: str, reference: dict[str, int], current: dict[str, int], threshold: float,
              p_value: float, action: str) -> Check:
    """PSI of the label mix, tripped when above ``threshold`` and a chi-square test gives p below ``p_value``."""
    from scipy.stats import chi2_contingency

    labels = sorted(set(reference) | set(current))
    table = np.array([[reference.get(label, 0) for label in labels], [current.get(label, 0) for label in labels]])
    table = table[:, table.sum(axis=0) > 0]
    figure = psi(reference, current)
    p = float(chi2_contingency(table).pvalue) if table.shape[1] > 1 else 1.0
    details = {"psi": round(figure, 4), "chi2_p_value": p, "p_value_threshold": p_value,
               "reference": reference, "current": current}
    return Check("label_mix", subject, figure, threshold, action, not (figure > threshold and p < p_value), details)


@dataclass(frozen=True)
class Moments:
    """Rows, mean and sample standard deviation of a metric in one segment."""
    n: int
    mean: float | None
    sd: float | None


def metric_drift(subject: str, reference: dict[str, Moments], current: dict[str, Moments], threshold: float,
                 p_value: float, action: str) -> Check:
    """Largest per-segment mean shift in reference standard deviations; tripped by a segment whose shift is
    above ``threshold`` with Welch's t-test p below ``p_value`` divided by the segments compared (Bonferroni:
    more segments do not mean more false alarms). Segments under ``MIN_SEGMENT_ROWS`` rows on a side are left out."""
    from scipy.stats import ttest_ind_from_stats

    compared = [s for s in sorted(set(reference) & set(current))
                if min(reference[s].n, current[s].n) >= MIN_SEGMENT_ROWS
                and reference[s].mean is not None and current[s].mean is not None]
    if not compared:
        return Check("metric_drift", subject, None, threshold, action, None,
                     {"skipped": f"no segment has {MIN_SEGMENT_ROWS}+ rows with a value on both sides"})
    per_segment_p = p_value / len(compared)
    segments = {}
    for segment in compared:
        r, c = reference[segment], current[segment]
        spread = r.sd or c.sd or 0.0
        if spread == 0:  # constant on both sides: any change of the value is a shift
            effect, p = (0.0, 1.0) if c.mean == r.mean else (math.inf, 0.0)
        else:
            effect = abs(c.mean - r.mean) / spread
            p = float(ttest_ind_from_stats(c.mean, c.sd or 0.0, c.n, r.mean, r.sd or 0.0, r.n, equal_var=False).pvalue)
        segments[segment] = {"effect_size": round(effect, 4), "p_value": p, "reference_mean": r.mean,
                             "current_mean": c.mean, "reference_rows": r.n, "current_rows": c.n,
                             "drifted": effect > threshold and p < per_segment_p}
    worst = max(compared, key=lambda s: (segments[s]["drifted"], segments[s]["effect_size"]))
    return Check("metric_drift", subject, segments[worst]["effect_size"], threshold, action,
                 not segments[worst]["drifted"],
                 {"worst_segment": worst, "p_value_threshold": p_value, "per_segment_p_value": per_segment_p,
                  "segments": segments})


def domain_classifier_auc(reference: np.ndarray, current: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Out-of-fold ROC AUC of a logistic regression telling current (1) from reference (0) embeddings, and the
    one-sided Mann-Whitney p-value that current rows score higher than reference rows (as Evidently's
    domain-classifier drift, with a test so that a small sample's noise does not trip it)."""
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([reference, current])
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    folds = StratifiedKFold(n_splits=min(5, len(reference), len(current)), shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")[:, 1]
    p = float(mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater").pvalue)
    return float(roc_auc_score(y, scores)), p


def embedding_drift(reference: np.ndarray, current: np.ndarray, threshold: float, p_value: float,
                    action: str) -> Check:
    """The domain classifier's ROC AUC, tripped above ``threshold`` with its p below ``p_value``."""
    if min(len(reference), len(current)) < 2 * MIN_SEGMENT_ROWS:
        return Check("embedding_drift", "text", None, threshold, action, None,
                     {"skipped": f"fewer than {2 * MIN_SEGMENT_ROWS} embeddings on a side",
                      "reference_rows": len(reference), "current_rows": len(current)})
    auc, p = domain_classifier_auc(reference, current)
    return Check("embedding_drift", "text", auc, threshold, action, not (auc > threshold and p < p_value),
                 {"roc_auc": round(auc, 4), "mann_whitney_p_value": p, "p_value_threshold": p_value,
                  "reference_rows": len(reference), "current_rows": len(current)})


def decide(checks: list[Check]) -> str:
    """The run's action: the most severe action among tripped gates, or ``load``."""
    tripped = [c.action for c in checks if c.tripped]
    return max(tripped, key=SEVERITY.__getitem__) if tripped else "load"
