"""Rules that reproduce the model: a shallow decision tree per label set (and for the target metric) per partition,
or over a window (``explain.rules.window_days``: this partition's rows and the loaded rows of the days before it).

Each leaf of the tree becomes one readable rule, its conditions merged per column
("150 < price <= 250 and category = Electronics -> premium, 91% of 140 rows"). The tree's fidelity is measured on
held-out rows (seeded k-fold cross-validation of the whole fitting procedure, depth choice included) against what
it imitates (accuracy for a label, R² for the metric) and against the majority rule (the commonest label, or the
mean) predicted from the same folds. A rule set is *faithful*, and quoted in the summary, only when its held-out
fidelity reaches ``explain.rules.min_fidelity`` and it beats the majority rule beyond noise: a one-sided paired
test on the held-out rows (exact McNemar for labels, a t-test on the squared errors for the metric) below
``explain.rules.p_value``. Otherwise the rules are stored but marked not faithful (docs/explain.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from lm_insights.core.partition import STAGING_SCHEMA, Partition, replace_staging_table, staging_name, staging_table
from lm_insights.guard import toxicity
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec, Rules

log = logging.getLogger(__name__)

MAX_CATEGORIES = 20  # a text column with more distinct values is free text, not a column a rule can name
UNKNOWN = "unknown"
FOLDS = 5  # held-out fidelity: every row is predicted by trees fitted on the other four fifths
RULE_COLUMNS = ("partition_start", "explains", "kind", "rule_order", "rule", "conditions", "prediction", "rows",
                "share", "fidelity", "measure", "depth", "n", "faithful", "min_fidelity", "window_start", "partitions",
                "baseline", "gain", "gain_ci_low", "gain_ci_high", "p_value")


@dataclass(frozen=True)
class Rule:
    conditions: str  # "150 < price <= 250 and category = Electronics", or "all rows"
    prediction: str  # the label, or the metric's mean in the leaf
    rows: int
    share: float | None  # labels: share of the rule's rows where the model gave that label

    def text(self, outcome: str) -> str:
        if self.share is None:
            return f"{self.conditions} -> mean {outcome} {self.prediction} over {self.rows} rows"
        return f"{self.conditions} -> {self.prediction}, {self.share:.0%} of {self.rows} rows"


@dataclass(frozen=True)
class HeldOut:
    """The tree against the majority rule on held-out rows (out-of-fold predictions of every row).

    Labels: ``fidelity`` and ``baseline`` are accuracies, ``gain`` their difference. Metric: ``fidelity`` is the
    held-out R² (1 - the tree's squared error / the fold means' squared error), ``baseline`` is 0 (the mean) and
    ``gain`` equals ``fidelity``. ``gain_ci``: the 95% interval of ``gain`` (paired normal approximation, R²
    capped at 1); ``p_value``: one-sided, that the tree is no better than the majority rule."""
    fidelity: float
    baseline: float
    gain: float
    gain_ci: tuple[float, float]
    p_value: float
    majority: str  # what the majority rule predicts from every row: the commonest label, or the mean


@dataclass(frozen=True)
class RuleSet:
    explains: str  # the label set's name or the target metric
    kind: Literal["label", "metric"]
    rules: list[Rule]  # most rows first
    held_out: HeldOut  # fidelity on held-out rows against the majority rule
    depth: int
    n: int
    faithful: bool  # held-out fidelity >= min_fidelity and better than the majority rule beyond noise
    window: Window | None = None  # the partitions the rows came from (None: fitted outside a pipeline)

    @property
    def measure(self) -> str:
        return "accuracy" if self.kind == "label" else "r2"

    @property
    def fidelity(self) -> float:
        return self.held_out.fidelity

    def telling_rule(self) -> Rule | None:
        """The largest rule that says something the majority rule does not: a label other than the commonest, or
        the mean furthest from the overall mean."""
        if self.kind == "label":
            return next((r for r in self.rules if r.prediction != self.held_out.majority), None)
        mean = float(self.held_out.majority)
        return max(self.rules, key=lambda r: (abs(float(r.prediction) - mean), r.rows), default=None)

    def describe_fidelity(self) -> str:
        h = self.held_out
        if self.kind == "label":
            figure = (f"{h.fidelity:.0%} against {h.baseline:.0%} for the majority label (+{h.gain:.0%}, 95% CI "
                      f"{h.gain_ci[0]:+.0%} to {h.gain_ci[1]:+.0%})").replace("+-", "-")
        else:
            figure = f"{h.fidelity:.2f} (95% CI {h.gain_ci[0]:.2f} to {h.gain_ci[1]:.2f})"
        window = f" of {self.window.describe()}" if self.window and self.window.partitions > 1 else ""
        return (f"held-out {self.measure} {figure}, p = {h.p_value:.2g}, on {self.n} rows{window}, "
                f"depth {self.depth}")


@dataclass(frozen=True)
class Window:
    """The partitions whose rows a tree was fitted on: ``partitions`` of them from ``first`` to ``last``."""
    first: dt.datetime
    last: dt.datetime
    partitions: int

    def describe(self) -> str:
        return f"{self.partitions} partitions ({self.first.date()} to {self.last.date()})"


# -------------------------------------------------------------------------------------------------- fitting

def encode(frame, features: dict[str, bool]):
    """The feature matrix: numeric columns as floats (NaN for missing), one 0/1 column per categorical value.

    ``features`` maps column -> is numeric. Returns the matrix and, per matrix column, (source column, value)
    where value is None for a numeric column.
    """
    import numpy as np
    import pandas as pd

    blocks, names = [], []
    for column, numeric in features.items():
        if numeric:
            values = pd.to_numeric(frame[column].astype("float64"), errors="coerce").replace([np.inf, -np.inf], np.nan)
            blocks.append(values.to_numpy()[:, None])
            names.append((column, None))
        else:
            values = frame[column].astype("object").where(frame[column].notna(), UNKNOWN).astype(str)
            for value in sorted(values.unique()):
                blocks.append((values == value).to_numpy(dtype="float64")[:, None])
                names.append((column, value))
    return np.hstack(blocks), names


def path_conditions(path: list[tuple[str, str | None, str, float]]) -> str:
    """Merge a leaf's path into one condition per column: tightest bounds, the one value, or the values left out."""
    lower: dict[str, float] = {}
    upper: dict[str, float] = {}
    equal: dict[str, str] = {}
    excluded: dict[str, list[str]] = {}
    order: list[str] = []
    for column, value, side, threshold in path:
        order.append(column)
        if value is None:
            if side == "left":
                upper[column] = min(upper.get(column, math.inf), threshold)
            else:
                lower[column] = max(lower.get(column, -math.inf), threshold)
        elif side == "right":  # the row has this value
            equal[column] = value
        else:
            excluded.setdefault(column, []).append(value)
    parts = []
    for column in dict.fromkeys(order):
        if column in equal:
            parts.append(f"{column} = {equal[column]}")
        elif column in excluded:
            values = sorted(excluded[column])
            parts.append(f"{column} != {values[0]}" if len(values) == 1 else f"{column} not in ({', '.join(values)})")
        else:
            low, high = lower.get(column), upper.get(column)
            if low is not None and high is not None:
                parts.append(f"{format_threshold(low)} < {column} <= {format_threshold(high)}")
            elif low is not None:
                parts.append(f"{column} > {format_threshold(low)}")
            else:
                parts.append(f"{column} <= {format_threshold(high)}")
    return " and ".join(parts) or "all rows"


def format_threshold(value: float) -> str:
    return f"{value:.6g}"


def leaf_paths(tree, names) -> dict[int, list[tuple[str, str | None, str, float]]]:
    """Every leaf's node id -> the splits on the way to it (column, category value or None, side, threshold)."""
    paths, stack = {}, [(0, [])]
    inner = tree.tree_
    while stack:
        node, path = stack.pop()
        left, right = inner.children_left[node], inner.children_right[node]
        if left == right:  # a leaf
            paths[node] = path
            continue
        column, value = names[inner.feature[node]]
        threshold = float(inner.threshold[node])
        stack.append((left, path + [(column, value, "left", threshold)]))
        stack.append((right, path + [(column, value, "right", threshold)]))
    return paths


def fit_tree(matrix, outcome, kind: str, depth: int, min_leaf_rows: int):
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    model = DecisionTreeClassifier if kind == "label" else DecisionTreeRegressor
    tree = model(max_depth=depth, min_samples_leaf=min_leaf_rows, random_state=0).fit(matrix, outcome)
    return tree, float(tree.score(matrix, outcome))


def fit_shallowest(matrix, outcome, kind: str, settings: Rules):
    """The shallowest tree (up to ``settings.max_depth``) whose fit is within 0.01 of the deepest's, and its depth."""
    trees = [fit_tree(matrix, outcome, kind, depth, settings.min_leaf_rows)
             for depth in range(1, settings.max_depth + 1)]
    best = trees[-1][1]
    return next((t[0], d) for d, t in enumerate(trees, start=1) if t[1] >= best - 0.01)


def held_out(matrix, outcome, kind: str, settings: Rules, seed: int = 0) -> HeldOut:
    """Out-of-fold predictions of the whole procedure (depth choice included) and of the majority rule, compared
    row by row: exact one-sided McNemar test on the rows where exactly one is right (labels), or a one-sided
    t-test on the paired squared errors (metric)."""
    import numpy as np
    from scipy import stats
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(outcome)
    if kind == "label":
        _, counts = np.unique(outcome, return_counts=True)
        splitter = (StratifiedKFold(FOLDS, shuffle=True, random_state=seed) if counts.min() >= FOLDS
                    else KFold(FOLDS, shuffle=True, random_state=seed))
    else:
        splitter = KFold(FOLDS, shuffle=True, random_state=seed)
    tree_prediction = np.empty(n, dtype=outcome.dtype)
    majority_prediction = np.empty(n, dtype=outcome.dtype)
    for train, test in splitter.split(matrix, outcome):
        tree, _ = fit_shallowest(matrix[train], outcome[train], kind, settings)
        tree_prediction[test] = tree.predict(matrix[test])
        if kind == "label":
            values, counts = np.unique(outcome[train], return_counts=True)
            majority_prediction[test] = values[counts.argmax()]
        else:
            majority_prediction[test] = outcome[train].mean()
    z = float(stats.norm.ppf(0.975))
    if kind == "label":
        tree_right, majority_right = tree_prediction == outcome, majority_prediction == outcome
        only_tree = int((tree_right & ~majority_right).sum())
        only_majority = int((~tree_right & majority_right).sum())
        discordant = only_tree + only_majority
        p = float(stats.binomtest(only_tree, discordant, 0.5, alternative="greater").pvalue) if discordant else 1.0
        difference = tree_right.astype(float) - majority_right.astype(float)
        fidelity, baseline = float(tree_right.mean()), float(majority_right.mean())
        gain, spread = fidelity - baseline, float(difference.std(ddof=1) / math.sqrt(n))
        values, counts = np.unique(outcome, return_counts=True)
        return HeldOut(fidelity, baseline, gain, (gain - z * spread, gain + z * spread), p,
                       str(values[counts.argmax()]))
    tree_error = (outcome - tree_prediction) ** 2
    majority_error = (outcome - majority_prediction) ** 2
    scale = float(majority_error.mean())
    reduction = (majority_error - tree_error) / scale  # per row; its mean is the held-out R²
    fidelity = float(reduction.mean())
    spread = float(reduction.std(ddof=1) / math.sqrt(n))
    p = float(stats.ttest_1samp(reduction, 0.0, alternative="greater").pvalue) if spread > 0 else \
        (0.0 if fidelity > 0 else 1.0)
    return HeldOut(fidelity, 0.0, fidelity, (fidelity - z * spread, min(fidelity + z * spread, 1.0)), p,
                   f"{float(outcome.mean()):.1f}")  # R² is at most 1


def fit_rules(frame, outcome_column: str, features: dict[str, bool], kind: Literal["label", "metric"],
              settings: Rules, explains: str | None = None) -> RuleSet | None:
    """Fit the shallowest tree (up to ``settings.max_depth``) whose fit is within 0.01 of the deepest's, on every
    row; its fidelity is that procedure's on held-out rows (:func:`held_out`).

    ``frame`` holds the feature columns and ``outcome_column`` (the model's label or the metric); rows without an
    outcome are left out. Returns None when there is nothing to fit (no feature, fewer rows than two leaves' in
    each of the folds, or an outcome without variance).
    """
    import numpy as np

    enough_rows = 2 * settings.min_leaf_rows * FOLDS // (FOLDS - 1) + 1
    frame = frame[frame[outcome_column].notna()]
    if not features or len(frame) < enough_rows:
        return None
    matrix, names = encode(frame, features)
    if kind == "label":
        outcome = frame[outcome_column].astype(str).to_numpy()
        constant = len(set(outcome)) < 2
    else:
        outcome = frame[outcome_column].astype("float64").to_numpy()
        finite = np.isfinite(outcome)
        matrix, outcome = matrix[finite], outcome[finite]
        constant = len(outcome) == 0 or np.ptp(outcome) == 0
    if len(outcome) < enough_rows or constant:
        return None
    tree, depth = fit_shallowest(matrix, outcome, kind, settings)
    measured = held_out(matrix, outcome, kind, settings)
    leaves = tree.apply(matrix)
    rules = []
    for leaf, path in leaf_paths(tree, names).items():
        in_leaf = outcome[leaves == leaf]
        if not len(in_leaf):
            continue
        if kind == "label":
            values, counts = np.unique(in_leaf, return_counts=True)
            prediction, share = str(values[counts.argmax()]), float(counts.max() / len(in_leaf))
        else:
            prediction, share = f"{float(in_leaf.mean()):.1f}", None
        rules.append(Rule(path_conditions(path), prediction, int(len(in_leaf)), share))
    rules.sort(key=lambda r: (-r.rows, r.conditions))
    faithful = measured.fidelity >= settings.min_fidelity and measured.p_value < settings.p_value
    return RuleSet(explains or outcome_column, kind, rules, measured, depth, int(len(outcome)), faithful)


# --------------------------------------------------------------------------------------------- partition

NOT_RULE_TYPES = ("boolean", "json", "jsonb", "xml")


def rule_features(spec: PipelineSpec, column_types: dict[str, str], frame, kind: str) -> dict[str, bool]:
    """Source columns a rule may name (column -> numeric), never the key or partition column. A label's tree reads
    what the model read (the text columns) and the tier columns; the metric's tree reads every row column but the
    metrics (revenue = price x units is an outcome, not a cause). Categorical columns only with at most
    MAX_CATEGORIES values."""
    from lm_insights.core.sql_expressions import is_numeric

    skip = {*spec.source.key, spec.source.partition_column}
    if kind == "metric":
        candidates = [c for c in spec.row_columns if c not in spec.insights.metrics]
    else:
        tiers = [s.by_tiers.column for s in spec.insights.segments if s.by_tiers]
        candidates = list(dict.fromkeys([*spec.text.columns, *tiers]))
    features = {}
    for column in candidates:
        if column in skip or column not in column_types or column_types[column] in NOT_RULE_TYPES \
                or column_types[column].endswith("[]"):  # booleans, documents and arrays make no readable rule
            continue
        numeric = is_numeric(column_types[column])
        if numeric or 1 < frame[column].nunique(dropna=True) <= MAX_CATEGORIES:
            features[column] = numeric
    return features


def read_rows(spec: PipelineSpec, conn, partition: Partition, limit: int, window_days: int | None = None):
    """The partition's staged rows, with the loaded ``<pipeline>_rows`` of the ``window_days - 1`` days before it
    when a window is set (a seeded sample of ``limit`` when larger), as a DataFrame with ``partition_start``."""
    import pandas as pd

    columns = [*spec.row_columns, *(f"{name}_label" for name in spec.lm.label_sets)]
    staged = sql.SQL("select {start}::timestamptz as partition_start, _row_number, {cols} from {rows} as r "
                     "where {kept}").format(start=sql.Literal(partition.start), cols=db.columns_sql(columns),
                                            rows=staging_table(spec, partition, "rows"),
                                            kept=toxicity.kept_for_findings(spec, partition))
    loaded_columns = db.table_columns(conn, spec.sink.schema_, f"{spec.name}_rows")
    if window_days and window_days > 1 and loaded_columns:
        # columns a changed spec added since are NULL in the older rows
        selected = sql.SQL(", ").join(sql.Identifier(c) if c in loaded_columns else
                                      sql.SQL("null as {}").format(sql.Identifier(c)) for c in columns)
        staged = sql.SQL("{staged} union all select partition_start, _row_number, {selected} from {loaded} "
                         "where partition_start >= {first} and partition_start < {start} and {kept}").format(
            staged=staged, selected=selected, loaded=db.qualified(spec.sink.schema_, f"{spec.name}_rows"),
            first=sql.Literal(partition.start - dt.timedelta(days=window_days - 1)),
            start=sql.Literal(partition.start), kept=toxicity.kept_loaded(spec, loaded_columns))
    cursor = conn.execute(sql.SQL("select * from ({}) as w order by hashtext(extract(epoch from partition_start)::bigint "
                                  "|| ':' || _row_number), partition_start, _row_number limit %s").format(staged),
                          (limit,))
    return pd.DataFrame(cursor.fetchall(), columns=["partition_start", "_row_number", *columns])


def rows_window(frame) -> Window | None:
    if frame.empty:
        return None
    import pandas as pd

    starts = frame["partition_start"]
    return Window(pd.Timestamp(starts.min()).to_pydatetime(), pd.Timestamp(starts.max()).to_pydatetime(),
                  int(starts.nunique()))


def measure_rules(spec: PipelineSpec, conn, partition: Partition) -> list[RuleSet]:
    """One rule set per label set (the model's label) and one for the target metric, fitted on the partition's
    rows or on the window's (``explain.rules.window_days``); fidelity is measured on the same rows."""
    settings = spec.explain.rules
    frame = read_rows(spec, conn, partition, settings.max_rows, settings.window_days)
    window = rows_window(frame)
    types = db.table_columns(conn, STAGING_SCHEMA, staging_name(spec, partition, "rows"))
    rule_sets = []
    for name in spec.lm.label_sets:
        found = fit_rules(frame, f"{name}_label", rule_features(spec, types, frame, "label"), "label", settings,
                          explains=name)
        if found:
            rule_sets.append(dataclasses.replace(found, window=window))
    found = fit_rules(frame, spec.target, rule_features(spec, types, frame, "metric"), "metric", settings)
    if found:
        rule_sets.append(dataclasses.replace(found, window=window))
    return rule_sets


def build_rules(spec: PipelineSpec, conn, partition: Partition) -> list[RuleSet]:
    """Staging ``rules``: one row per rule with its rule set's held-out fidelity, the majority rule's (``baseline``),
    the gain over it with its 95% interval and one-sided p-value, depth and whether it is faithful."""
    rule_sets = measure_rules(spec, conn, partition) if spec.explain.rules.enabled else []
    replace_staging_table(conn, spec, partition, "rules", sql.SQL(
        "(partition_start timestamptz not null, explains text not null, kind text not null, "
        "rule_order integer not null, rule text not null, conditions text not null, prediction text not null, "
        "rows bigint not null, share double precision, fidelity double precision not null, measure text not null, "
        "depth integer not null, n bigint not null, faithful boolean not null, min_fidelity double precision not null, "
        "window_start timestamptz not null, partitions integer not null, baseline double precision not null, "
        "gain double precision not null, gain_ci_low double precision not null, "
        "gain_ci_high double precision not null, p_value double precision not null)"), columns=RULE_COLUMNS, rows=(
        (partition.start, s.explains, s.kind, i, rule.text(s.explains), rule.conditions, rule.prediction, rule.rows,
         rule.share, s.fidelity, s.measure, s.depth, s.n, s.faithful, spec.explain.rules.min_fidelity,
         s.window.first, s.window.partitions, s.held_out.baseline, s.held_out.gain, *s.held_out.gain_ci,
         s.held_out.p_value)
        for s in rule_sets for i, rule in enumerate(s.rules, start=1)))
    return rule_sets


def rules_summary(rule_sets: list[RuleSet], min_fidelity: float, quoted: int = 2) -> list[str]:
    """Sentences for the summary: faithful rule sets quote their telling rule (:meth:`RuleSet.telling_rule`) and the
    largest others; the others say why they are not quoted."""
    sentences = []
    for s in rule_sets:
        what = f"the {s.explains} label" if s.kind == "label" else s.explains
        if s.faithful:
            telling = s.telling_rule()
            ordered = [telling, *(r for r in s.rules if r is not telling)] if telling else s.rules
            top = "; ".join(rule.text(s.explains) for rule in ordered[:quoted])
            sentences.append(f"Rules that reproduce {what} ({s.describe_fidelity()}): {top}.")
            continue
        floor = f"{min_fidelity:.0%}" if s.kind == "label" else f"{min_fidelity:.2f}"
        why = (f"below the floor of {floor}" if s.fidelity < min_fidelity else
               f"not better than the {'majority label' if s.kind == 'label' else 'mean'} beyond chance")
        sentences.append(f"No shallow rules reproduce {what} faithfully ({s.describe_fidelity()}; {why}); they are "
                         "stored as not faithful and not quoted here.")
    return sentences


def rule_findings(rule_sets: list[RuleSet], partition: Partition) -> list[dict[str, object]]:
    """One candidate ``kind = rule`` row of ``<pipeline>_findings`` per rule set: the held-out gain over the majority
    rule, its interval, one-sided p-value and n. Every tested rule set is a candidate (so the false-discovery control
    counts it); ``significant`` is this module's own verdict (``faithful``), ``q_value`` and ``rank`` are left to the
    caller that adjusts over all of the partition's candidates."""
    findings = []
    for s in rule_sets:
        what = f"the {s.explains} label" if s.kind == "label" else s.explains
        telling = s.telling_rule()
        top = telling.text(s.explains) if telling else f"every rule predicts {s.held_out.majority}"
        findings.append({
            "partition_start": partition.start, "partition_end": partition.end, "kind": "rule",
            "subject": telling.conditions if telling else "all rows", "target": s.explains, "effect": s.held_out.gain,
            "effect_measure": ("held-out accuracy minus the majority label's" if s.kind == "label"
                               else "held-out r2 against the mean"),
            "ci_low": s.held_out.gain_ci[0], "ci_high": s.held_out.gain_ci[1], "p_value": s.held_out.p_value,
            "q_value": None, "n": s.n, "significant": s.faithful, "rank": None,
            "sentence": f"Rules reproduce {what} ({s.describe_fidelity()}), e.g. {top}."})
    return findings
