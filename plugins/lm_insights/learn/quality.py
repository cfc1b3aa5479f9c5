"""Per-run quality: where a partition's rows carry a head's target, measure the published head outputs on them.

Next to the head: the majority class (classification) or the training mean (regression) of the promoted version's
training rows, and the zero-shot label set the head names. Rows inside the head's training window (a backfill of a
day it was trained on) are counted apart and left out of the head's figures: they are not held-out quality. The figures go to staging ``quality`` (loaded into
``<pipeline>_quality`` with the other insight tables), to ``runs.quality`` and to the summary.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

from lm_insights.core.partition import Partition, replace_staging_table, staging_table
from lm_insights.learn import heads, models
from lm_insights.spec import PipelineSpec

QUALITY_COLUMNS = ("partition_start", "head", "head_version", "model", "rows", "answered", "coverage", "accuracy",
                   "macro_f1", "mae", "r2", "confusion")


def measure(spec: PipelineSpec, conn, partition: Partition, versions: dict[str, int]) -> dict[str, dict]:
    """``{head: {"version": v, "target": column, "models": {model: metrics}}}`` for this partition's rows."""
    cards = models.cards(conn, spec, versions)
    rows_table = staging_table(spec, partition, "rows")
    measured = {}
    for name, head in spec.lm.heads.items():
        version, card = versions.get(name), cards.get(name)
        until = training_until(card)
        # true when the row's time is inside the head's training window: the head has seen it
        trained_on = sql.SQL("{}::timestamptz <= %(until)s::timestamptz").format(
            sql.Identifier(spec.source.partition_column)) if until else sql.SQL("false")
        output = sql.Identifier(f"{name}_label" if head.task == "classification" else f"{name}_prediction")
        zero_shot = sql.Identifier(f"{head.zero_shot}_label") if head.zero_shot else sql.NULL
        found = conn.execute(sql.SQL("select {t}, {p}, {z}, {trained_on} from {rows} where {t} is not null "
                                     "order by _row_number")
                             .format(t=sql.Identifier(head.target), p=output, z=zero_shot, trained_on=trained_on,
                                     rows=rows_table), {"until": until}).fetchall()
        found = [(heads.target_of(head, t), p, z, seen) for t, p, z, seen in found]
        found = [row for row in found if row[0] is not None]
        held_out = [row for row in found if not row[3]]
        results = {}
        if head.task == "classification":
            true = [t for t, _, _, _ in held_out]
            labels = card.get("labels") if card else None
            if card and true:
                results["head"] = heads.classification_metrics(
                    true, [p or heads.UNCERTAIN for _, p, _, _ in held_out], labels)
                results["majority"] = heads.classification_metrics(true, [card["majority_class"]] * len(true),
                                                                    labels)
            if head.zero_shot and found:
                results["zero_shot"] = heads.classification_metrics([t for t, _, _, _ in found],
                                                                    [z or heads.UNCERTAIN for _, _, z, _ in found])
        else:
            pairs = [(t, p) for t, p, _, _ in held_out if p is not None]
            true = [t for t, _ in pairs]
            if card and true:
                results["head"] = heads.regression_metrics(true, [p for _, p in pairs])
                results["mean"] = heads.regression_metrics(true, [card["train_mean"]] * len(true))
        measured[name] = {"version": version if card else None, "target": head.target, "rows": len(true),
                          "rows_in_training_window": len(found) - len(held_out), "trained_until": until,
                          "models": results}
    return measured


def training_until(card: dict | None) -> str | None:
    """The time of the newest row the head version was trained on (older cards: their evaluation's end)."""
    if not card:
        return None
    return card.get("train_until") or (card.get("evaluation_split") or {}).get("evaluation_until")


def build_quality(spec: PipelineSpec, conn, partition: Partition, versions: dict[str, int]) -> dict[str, dict]:
    """Staging ``quality``: one row per head and model; return what :func:`measure` found."""
    measured = measure(spec, conn, partition, versions)
    replace_staging_table(conn, spec, partition, "quality", sql.SQL(
        "(partition_start timestamptz not null, head text not null, head_version integer, "
        "model text not null, rows bigint not null, answered bigint, coverage double precision, "
        "accuracy double precision, macro_f1 double precision, mae double precision, r2 double precision, "
        "confusion jsonb)"), columns=QUALITY_COLUMNS, rows=(
        (partition.start, name, found["version"], model, m["rows"], m.get("answered"), m.get("coverage"),
         m.get("accuracy"), m.get("macro_f1"), m.get("mae"), m.get("r2"),
         json.dumps(m["confusion"]) if "confusion" in m else None)
        for name, found in measured.items() for model, m in found["models"].items()))
    return measured


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def sentences(spec: PipelineSpec, measured: dict[str, dict]) -> list[str]:
    """One sentence per head for the summary, from the measured figures only."""
    parts = []
    for name, found in measured.items():
        head, results, target = spec.lm.heads[name], found["models"], found["target"]
        if found["version"] is None:
            zero_shot = results.get("zero_shot")
            extra = (f" Zero-shot {head.zero_shot} is {_percent(zero_shot['accuracy'])} right on the "
                     f"{zero_shot['answered']} of {zero_shot['rows']} rows with a {target} it labelled."
                     if zero_shot and zero_shot["answered"] else "")
            parts.append(f"{name}: no trained head yet, so its columns are empty; train one with "
                         f"`lm-insights train {spec.name}` or the {spec.name}__train DAG.{extra}")
            continue
        measured_head = results.get("head")
        if measured_head is None and found.get("rows_in_training_window"):
            parts.append(f"{name} (head v{found['version']}): the {found['rows_in_training_window']} rows with a "
                         f"{target} in this partition are inside its training window (up to "
                         f"{found['trained_until']}): not measured, as they are not held out.")
        elif measured_head is None:
            parts.append(f"{name} (head v{found['version']}): no rows with a {target} in this partition to "
                         "measure it on.")
        elif head.task == "classification":
            abstained = 1 - measured_head["coverage"]
            if measured_head["answered"]:
                sentence = (f"{name} (head v{found['version']}): {_percent(measured_head['accuracy'])} right on "
                            f"the {measured_head['answered']} of {measured_head['rows']} rows with a {target} it "
                            f"labelled; {abstained:.0%} abstained, so "
                            f"{_percent(measured_head['coverage_adjusted_accuracy'])} of all those rows are "
                            "labelled right")
            else:
                sentence = (f"{name} (head v{found['version']}): abstained on all {measured_head['rows']} rows "
                            f"with a {target}")
            references = [f"majority class {_percent(results['majority']['accuracy'])}"]
            if "zero_shot" in results:
                zero_shot = results["zero_shot"]
                references.insert(0, f"zero-shot {head.zero_shot} {_percent(zero_shot['accuracy'])} right, "
                                     f"{1 - zero_shot['coverage']:.0%} abstained")
            parts.append(f"{sentence} ({'; '.join(references)}).")
        else:
            r2 = measured_head["r2"]
            parts.append(f"{name} (head v{found['version']}): mean absolute error {measured_head['mae']:.2f}"
                         + (f", R² {r2:.2f}" if r2 is not None else "")
                         + f" on {measured_head['rows']} rows with a {target} (mean baseline: "
                         f"{results['mean']['mae']:.2f}).")
    return parts


def run_figures(measured: dict[str, dict]) -> dict[str, Any]:
    """What ``runs.quality`` keeps: per head its version and each model's figures (no confusion matrices)."""
    return {name: {"version": found["version"], "rows": found["rows"],
                   "rows_in_training_window": found.get("rows_in_training_window", 0),
                   "models": {model: {k: v for k, v in m.items() if k != "confusion"}
                              for model, m in found["models"].items()}}
            for name, found in measured.items()}

