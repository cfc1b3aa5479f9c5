"""Expectations on the model's outputs, run with Great Expectations on the staged rows like the input
expectations (steps/validate.py): labels within the label set, scores and margins within range, the share of
``uncertain`` labels and of out-of-distribution rows. Each result is a check with the spec's action."""

from __future__ import annotations

from lm_insights.guard.drift import Check
from lm_insights.spec import RESERVED_LABELS, PipelineSpec
from lm_insights.steps.partition import STAGING_SCHEMA, Partition, staging_name

UNCERTAIN = RESERVED_LABELS[0]


def build_output_suite(spec: PipelineSpec):
    """The Great Expectations suite of ``guard.outputs``; each expectation's meta names its check subject."""
    from lm_insights.steps.validate import _gx

    gx = _gx()
    outputs, expectations = spec.guard.outputs, []
    for name, label_set in spec.lm.label_sets.items():
        label = f"{name}_label"
        expectations += [
            gx.expectations.ExpectColumnValuesToBeInSet(
                column=label, value_set=[*label_set.labels, UNCERTAIN], meta={"subject": f"{label} in label set"}),
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=f"{name}_score", min_value=-1, max_value=1, meta={"subject": f"{name}_score in [-1, 1]"}),
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=f"{name}_margin", min_value=0, max_value=2, meta={"subject": f"{name}_margin in [0, 2]"}),
            gx.expectations.ExpectColumnValuesToNotBeInSet(
                column=label, value_set=[UNCERTAIN], mostly=1 - outputs.max_uncertain_share,
                meta={"subject": f"{label} share uncertain <= {outputs.max_uncertain_share:g}",
                      "share": outputs.max_uncertain_share}),
        ]
    if spec.lm.embeddings:
        expectations.append(gx.expectations.ExpectColumnValuesToBeInSet(
            column="ood", value_set=[False], mostly=1 - outputs.max_ood_share,
            meta={"subject": f"share ood <= {outputs.max_ood_share:g}", "share": outputs.max_ood_share}))
    return gx.ExpectationSuite(name=f"{spec.name}_outputs", expectations=expectations)


def check_outputs(spec: PipelineSpec, conninfo: str, partition: Partition) -> list[Check]:
    """Run the output suite on staging ``rows``; one check per expectation (figure: share of unexpected rows)."""
    from lm_insights.steps.validate import _context, _gx, _raise_on_exception, _run

    if spec.guard.outputs is None:
        return []
    suite = build_output_suite(spec)
    context, datasource = _context(_gx(), conninfo)
    try:
        asset = datasource.add_table_asset("rows", table_name=staging_name(spec, partition, "rows"),
                                           schema_name=STAGING_SCHEMA)
        validation = _run(context, asset.add_batch_definition_whole_table("whole"), suite,
                          {"result_format": "SUMMARY"})
    finally:
        datasource.get_engine().dispose()
    checks = []
    for result in validation.results:
        config = result.expectation_config
        if (result.exception_info or {}).get("raised_exception"):
            config.meta["entry"] = config.meta["subject"]
            _raise_on_exception(spec, "guard.outputs", result)
        outcome = result.result or {}
        share = (outcome.get("unexpected_percent") or 0.0) / 100
        checks.append(Check("output_expectation", config.meta["subject"], share, config.meta.get("share", 0.0),
                            spec.guard.outputs.action, bool(result.success),
                            {"expectation": config.type, "unexpected_count": outcome.get("unexpected_count"),
                             "rows": outcome.get("element_count"),
                             "partial_unexpected": outcome.get("partial_unexpected_list", [])[:5]}))
    return checks
