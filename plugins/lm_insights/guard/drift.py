"""Drift figures of one partition against a reference window: pure functions on counts, summaries and vectors.

Every gate trips only when its figure passes the threshold *and* a test calls the difference significant, so a
small partition's sampling noise does not raise an alarm; :func:`control_family` then holds the chance that any
gate of a run trips on unshifted data at the gates' stated level (weighted Holm over all of them; docs/guards.md).
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
    p_value: float | None = None  # the gate's test (adjusted within the gate), None when nothing was tested
    level: float | None = None  # the gate's p_value setting: the level of this check alone
    beyond_threshold: bool = False  # the figure passed the gate's threshold (the test decides the rest)

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
    return gate_check("label_mix", subject, figure, threshold, action, figure > threshold, p, p_value, details)


def gate_check(name: str, subject: str, figure: float, threshold: float, action: str, beyond_threshold: bool,
               p: float, level: float, details: dict) -> Check:
    """A measured gate's check, tripped (alone) when the figure is beyond its threshold and p is below ``level``."""
    return Check(name, subject, figure, threshold, action, not (beyond_threshold and p < level), details, p, level,
                 beyond_threshold)


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
    shifted = [s for s in compared if segments[s]["effect_size"] > threshold]
    # the gate's p-value: the smallest Bonferroni-adjusted p among the segments that moved beyond the threshold
    p = min((min(1.0, segments[s]["p_value"] * len(compared)) for s in shifted), default=1.0)
    return gate_check("metric_drift", subject, segments[worst]["effect_size"], threshold, action, bool(shifted), p,
                      p_value, {"worst_segment": worst, "p_value_threshold": p_value,
                                "per_segment_p_value": per_segment_p, "adjusted_p_value": p, "segments": segments})


def domain_classifier_auc(reference: np.ndarray, current: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """ROC AUC of a logistic regression telling current (1) from reference (0) embeddings, fitted on a seeded half
    of each side and scored on the other half, and the one-sided Mann-Whitney p-value that the held-out current rows
    score higher than the held-out reference rows (Evidently's domain-classifier drift, with a test so that a small
    sample's noise does not trip it).

    One model scores every tested row, so on unshifted data the held-out scores of both sides are exchangeable and
    the rank test holds its level. (Pooling the out-of-fold scores of five separately fitted models, as before,
    mixed five scales: a review measured 4.5% of unshifted samples tripping at a nominal 1%; docs/guards.md.)"""
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x = np.vstack([reference, current])
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    scores = LogisticRegression(max_iter=1000).fit(x_fit, y_fit).predict_proba(x_test)[:, 1]
    p = float(mannwhitneyu(scores[y_test == 1], scores[y_test == 0], alternative="greater").pvalue)
    return float(roc_auc_score(y_test, scores)), p


def embedding_drift(reference: np.ndarray, current: np.ndarray, threshold: float, p_value: float,
                    action: str) -> Check:
    """The domain classifier's ROC AUC, tripped above ``threshold`` with its p below ``p_value``."""
    if min(len(reference), len(current)) < 2 * MIN_SEGMENT_ROWS:
        return Check("embedding_drift", "text", None, threshold, action, None,
                     {"skipped": f"fewer than {2 * MIN_SEGMENT_ROWS} embeddings on a side",
                      "reference_rows": len(reference), "current_rows": len(current)})
    auc, p = domain_classifier_auc(reference, current)
    return gate_check("embedding_drift", "text", auc, threshold, action, auc > threshold, p, p_value,
                      {"roc_auc": round(auc, 4), "mann_whitney_p_value": p, "p_value_threshold": p_value,
                       "held_out_rows": (len(reference) + len(current)) // 2,
                       "reference_rows": len(reference), "current_rows": len(current)})


def control_family(checks: list[Check]) -> list[Check]:
    """Hold the family-wise error rate over every measured gate check of a run (each label set's label mix, each
    metric's drift, the embeddings) at the mean of their ``level``s (each gate's ``p_value``; 0.01 when all keep
    the default): weighted Holm, each check weighted by its own level. The check with the smallest p / level is
    tested first at ``mean level x its level / the levels of the checks left``, i.e. its level / checks at the
    first step (Bonferroni), and each rejection frees the next; the first check that fails stops it. A check
    trips when its figure is beyond its threshold and the procedure rejects it. Each check's details record the
    level it was held to; ``passed`` is updated in place, and the checks are returned."""
    tested = [c for c in checks if c.p_value is not None and c.passed is not None]
    if not tested:
        return checks
    mean_level = sum(c.level for c in tested) / len(tested)
    left, rejected, stopped = sum(c.level for c in tested), set(), False
    for check in sorted(tested, key=lambda c: (c.p_value / c.level, c.check, c.subject)):
        needed = mean_level * check.level / left
        if not stopped and check.p_value < needed:  # strict, as a gate alone (p < its p_value)
            rejected.add(id(check))
            left -= check.level
        stopped = stopped or id(check) not in rejected
        check.details.update(family_checks=len(tested), family_error_rate=mean_level,
                             family_p_value_threshold=needed)
        check.passed = not (check.beyond_threshold and id(check) in rejected)
    return checks


def flag_share(subject: str, reference: tuple[int, int], current: tuple[int, int], increase: float, p_value: float,
               action: str) -> Check:
    """The share of rows flagged ``subject`` (``(flagged, rows)`` per side), tripped when it rose by more than
    ``increase`` over the reference's and a one-sided Fisher exact test gives p below ``p_value``."""
    from scipy.stats import fisher_exact

    (r_flagged, r_rows), (c_flagged, c_rows) = reference, current
    if min(r_rows, c_rows) == 0:
        return Check("flag_share", subject, None, increase, action, None, {"skipped": "no rows on a side"})
    r_share, c_share = r_flagged / r_rows, c_flagged / c_rows
    p = float(fisher_exact([[c_flagged, c_rows - c_flagged], [r_flagged, r_rows - r_flagged]],
                           alternative="greater").pvalue)
    rise = c_share - r_share
    return gate_check("flag_share", subject, rise, increase, action, rise > increase, p, p_value,
                      {"current_share": round(c_share, 4), "reference_share": round(r_share, 4),
                       "current_rows": c_rows, "reference_rows": r_rows, "fisher_p_value": p,
                       "p_value_threshold": p_value})


def decide(checks: list[Check]) -> str:
    """The run's action: the most severe action among tripped gates, or ``load``."""
    tripped = [c.action for c in checks if c.tripped]
    return max(tripped, key=SEVERITY.__getitem__) if tripped else "load"
