"""Expectations on the model's outputs, run with Great Expectations on the staged rows like the input
expectations (steps/validate.py): labels within the label set or head classes, scores, margins, probabilities and
entropies within range, regression predictions within their range, the share of ``uncertain`` labels and of
out-of-distribution rows. Each result is a check with the spec's action. They run in every run (a spec without a
``guard:`` section gets the defaults)."""

from __future__ import annotations

from typing import Any

from lm_insights.core.partition import STAGING_SCHEMA, Partition, staging_name
from lm_insights.guard.drift import Check
from lm_insights.spec import RESERVED_LABELS, PipelineSpec

UNCERTAIN = RESERVED_LABELS[0]


def prediction_ranges(spec: PipelineSpec, cards: dict[str, dict[str, Any]]) -> dict[str, tuple[float, float, str]]:
    """Per regression head: (min, max, where the range comes from): the spec's ``guard.outputs.prediction_ranges``,
    else the promoted version's card (its training targets' range with a margin); a head with neither is absent."""
    ranges = {}
    for name, head in spec.lm.heads.items():
        if head.task != "regression":
            continue
        declared = spec.guard.outputs.prediction_ranges.get(name)
        derived = (cards.get(name) or {}).get("prediction_range")
        if declared:
            ranges[name] = (declared.min, declared.max, "spec guard.outputs.prediction_ranges")
        elif derived:
            ranges[name] = (derived["min"], derived["max"], f"training targets of v{cards[name].get('version')} "
                                                            f"+- {derived['margin']:.0%} of their range")
    return ranges


def between(gx, column: str, low: float, high: float, subject: str, **meta):
    return gx.expectations.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high,
                                                        meta={"subject": subject, **meta})


def build_output_suite(spec: PipelineSpec, cards: dict[str, dict[str, Any]] | None = None):
    """The Great Expectations suite of ``guard.outputs``; each expectation's meta names its check subject.
    ``cards``: the cards of the head versions the run used (regression prediction ranges)."""
    from lm_insights.core.gx import import_gx

    gx = import_gx()
    outputs, expectations = spec.guard.outputs, []
    for name, label_set in spec.lm.label_sets.items():
        label = f"{name}_label"
        expectations += [
            gx.expectations.ExpectColumnValuesToBeInSet(
                column=label, value_set=[*label_set.labels, UNCERTAIN], meta={"subject": f"{label} in label set"}),
            between(gx, f"{name}_score", -1, 1, f"{name}_score in [-1, 1]"),
            between(gx, f"{name}_margin", 0, 2, f"{name}_margin in [0, 2]"),
            between(gx, f"{name}_entropy", 0, 1, f"{name}_entropy in [0, 1]"),
            gx.expectations.ExpectColumnValuesToNotBeInSet(
                column=label, value_set=[UNCERTAIN], mostly=1 - outputs.max_uncertain_share,
                meta={"subject": f"{label} share uncertain <= {outputs.max_uncertain_share:g}",
                      "share": outputs.max_uncertain_share}),
        ]
    for name, head in spec.lm.heads.items():  # NULL outputs (no promoted version yet) are not checked
        if head.task == "classification":
            classes = list(head.classes) if head.classes else None
            if classes:
                expectations.append(gx.expectations.ExpectColumnValuesToBeInSet(
                    column=f"{name}_label", value_set=[*classes, UNCERTAIN],
                    meta={"subject": f"{name}_label in head classes"}))
            expectations += [between(gx, f"{name}_probability", 0, 1, f"{name}_probability in [0, 1]"),
                             between(gx, f"{name}_margin", 0, 1, f"{name}_margin in [0, 1]"),
                             between(gx, f"{name}_entropy", 0, 1, f"{name}_entropy in [0, 1]")]
    for name, (low, high, source) in prediction_ranges(spec, cards or {}).items():
        expectations.append(between(gx, f"{name}_prediction", low, high,
                                    f"{name}_prediction in [{low:.4g}, {high:.4g}]", source=source))
    if spec.lm.embeddings:
        expectations.append(gx.expectations.ExpectColumnValuesToBeInSet(
            column="ood", value_set=[False], mostly=1 - outputs.max_ood_share,
            meta={"subject": f"share ood <= {outputs.max_ood_share:g}", "share": outputs.max_ood_share}))
    return gx.ExpectationSuite(name=f"{spec.name}_outputs", expectations=expectations)


def check_outputs(spec: PipelineSpec, conninfo: str, partition: Partition,
                  cards: dict[str, dict[str, Any]] | None = None) -> list[Check]:
    """Run the output suite on staging ``rows``; one check per expectation (figure: share of unexpected rows)."""
    from lm_insights.core.gx import gx_context, import_gx, raise_on_exception, run_suite

    suite = build_output_suite(spec, cards)
    context, datasource = gx_context(import_gx(), conninfo)
    try:
        asset = datasource.add_table_asset("rows", table_name=staging_name(spec, partition, "rows"),
                                           schema_name=STAGING_SCHEMA)
        validation = run_suite(context, asset.add_batch_definition_whole_table("whole"), suite,
                          {"result_format": "SUMMARY"})
    finally:
        datasource.get_engine().dispose()
    checks = []
    for result in validation.results:
        config = result.expectation_config
        if (result.exception_info or {}).get("raised_exception"):
            config.meta["entry"] = config.meta["subject"]
            raise_on_exception(spec, "guard.outputs", result)
        outcome = result.result or {}
        share = (outcome.get("unexpected_percent") or 0.0) / 100
        checks.append(Check("output_expectation", config.meta["subject"], share, config.meta.get("share", 0.0),
                            spec.guard.outputs.action, bool(result.success),
                            {"expectation": config.type, "unexpected_count": outcome.get("unexpected_count"),
                             "rows": outcome.get("element_count"),
                             "partial_unexpected": outcome.get("partial_unexpected_list", [])[:5],
                             **({"range_from": config.meta["source"]} if "source" in config.meta else {})}))
    return checks
