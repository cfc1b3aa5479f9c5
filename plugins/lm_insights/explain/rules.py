"""Rules that reproduce the model: a shallow decision tree per label set (and for the target metric) per partition,
or over a window (``explain.rules.window_days``: this partition's rows and the loaded rows of the days before it).

Each leaf of the tree becomes one readable rule, its conditions merged per column
("150 < price <= 250 and category = Electronics -> premium, 91% of 140 rows"). The tree's fidelity is measured
against what it imitates on the same rows (accuracy for a label, R² for the metric); below the spec's
``explain.rules.min_fidelity`` the rules are stored but marked not faithful, and the summary does not quote them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from lm_insights.core.partition import STAGING_SCHEMA, Partition, staging_name, staging_table
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec, Rules

log = logging.getLogger(__name__)

MAX_CATEGORIES = 20  # a text column with more distinct values is free text, not a column a rule can name
UNKNOWN = "unknown"
RULE_COLUMNS = ("partition_start", "explains", "kind", "rule_order", "rule", "conditions", "prediction", "rows",
                "share", "fidelity", "measure", "depth", "n", "faithful", "min_fidelity", "window_start", "partitions")


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
class RuleSet:
    explains: str  # the label set's name or the target metric
    kind: Literal["label", "metric"]
    rules: list[Rule]  # most rows first
    fidelity: float  # accuracy (labels) or R² (metric) of the tree against the model / metric on the n rows
    depth: int
    n: int
    faithful: bool
    window: Window | None = None  # the partitions the rows came from (None: fitted outside a pipeline)

    @property
    def measure(self) -> str:
        return "accuracy" if self.kind == "label" else "r2"

    def describe_fidelity(self) -> str:
        figure = f"{self.fidelity:.0%}" if self.kind == "label" else f"{self.fidelity:.2f}"
        window = f" of {self.window.describe()}" if self.window and self.window.partitions > 1 else ""
        return f"{self.measure} {figure} on {self.n} rows{window}, depth {self.depth}"


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


def fit_rules(frame, outcome_column: str, features: dict[str, bool], kind: Literal["label", "metric"],
              settings: Rules, explains: str | None = None) -> RuleSet | None:
    """Fit the shallowest tree (up to ``settings.max_depth``) whose fidelity is within 0.01 of the deepest's.

    ``frame`` holds the feature columns and ``outcome_column`` (the model's label or the metric); rows without an
    outcome are left out. Returns None when there is nothing to fit (no feature, fewer than two leaves' rows, or
    a metric without variance).
    """
    import numpy as np

    frame = frame[frame[outcome_column].notna()]
    if not features or len(frame) < 2 * settings.min_leaf_rows:
        return None
    matrix, names = encode(frame, features)
    if kind == "label":
        outcome = frame[outcome_column].astype(str).to_numpy()
    else:
        outcome = frame[outcome_column].astype("float64").to_numpy()
        finite = np.isfinite(outcome)
        matrix, outcome = matrix[finite], outcome[finite]
        if len(outcome) < 2 * settings.min_leaf_rows or np.ptp(outcome) == 0:
            return None
    trees = [fit_tree(matrix, outcome, kind, depth, settings.min_leaf_rows)
             for depth in range(1, settings.max_depth + 1)]
    best = trees[-1][1]
    depth, (tree, fidelity) = next((d, t) for d, t in enumerate(trees, start=1) if t[1] >= best - 0.01)
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
    return RuleSet(explains or outcome_column, kind, rules, fidelity, depth, int(len(outcome)),
                   faithful=fidelity >= settings.min_fidelity)


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
    staged = sql.SQL("select {start}::timestamptz as partition_start, _row_number, {cols} from {rows}").format(
        start=sql.Literal(partition.start), cols=db.columns_sql(columns), rows=staging_table(spec, partition, "rows"))
    loaded_columns = db.table_columns(conn, spec.sink.schema_, f"{spec.name}_rows")
    if window_days and window_days > 1 and loaded_columns:
        # columns a changed spec added since are NULL in the older rows
        selected = sql.SQL(", ").join(sql.Identifier(c) if c in loaded_columns else
                                      sql.SQL("null as {}").format(sql.Identifier(c)) for c in columns)
        staged = sql.SQL("{staged} union all select partition_start, _row_number, {selected} from {loaded} "
                         "where partition_start >= {first} and partition_start < {start}").format(
            staged=staged, selected=selected, loaded=db.qualified(spec.sink.schema_, f"{spec.name}_rows"),
            first=sql.Literal(partition.start - dt.timedelta(days=window_days - 1)),
            start=sql.Literal(partition.start))
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
    """Staging ``rules``: one row per rule with its rule set's fidelity, depth and whether it is faithful."""
    rule_sets = measure_rules(spec, conn, partition) if spec.explain.rules.enabled else []
    target = staging_table(spec, partition, "rules")
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    conn.execute(sql.SQL(
        "create table {} (partition_start timestamptz not null, explains text not null, kind text not null, "
        "rule_order integer not null, rule text not null, conditions text not null, prediction text not null, "
        "rows bigint not null, share double precision, fidelity double precision not null, measure text not null, "
        "depth integer not null, n bigint not null, faithful boolean not null, min_fidelity double precision not null, "
        "window_start timestamptz not null, partitions integer not null)"
    ).format(target))
    db.copy_rows(conn, target, RULE_COLUMNS, (
        (partition.start, s.explains, s.kind, i, rule.text(s.explains), rule.conditions, rule.prediction, rule.rows,
         rule.share, s.fidelity, s.measure, s.depth, s.n, s.faithful, spec.explain.rules.min_fidelity,
         s.window.first, s.window.partitions)
        for s in rule_sets for i, rule in enumerate(s.rules, start=1)))
    return rule_sets


def rules_summary(rule_sets: list[RuleSet], min_fidelity: float, quoted: int = 2) -> list[str]:
    """Sentences for the summary: faithful rule sets quote their largest rules; the others say they are not."""
    sentences = []
    for s in rule_sets:
        what = f"the {s.explains} label" if s.kind == "label" else s.explains
        if s.faithful:
            top = "; ".join(rule.text(s.explains) for rule in s.rules[:quoted])
            sentences.append(f"Rules that reproduce {what} ({s.describe_fidelity()}): {top}.")
        else:
            floor = f"{min_fidelity:.0%}" if s.kind == "label" else f"{min_fidelity:.2f}"
            sentences.append(f"No shallow rules reproduce {what} faithfully ({s.describe_fidelity()}, below the "
                             f"floor of {floor}); they are stored as not faithful and not quoted here.")
    return sentences
