"""Oracle: one real DAG run (``dag.test``, the shipped spec, the real model) per synthetic scenario, and the planted
structure is what the platform reports: the planted source columns lead ``<pipeline>_drivers`` as significant
drivers pointing the planted way, the planted text signal is a significant segment finding of its label set, the
fields planted as noise are not significant (each checked on the loaded rows with scipy too), the summary claims
nothing about them, and the run's HTML report (what the UI's report tab serves) names the planted drivers."""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd
import psycopg
import pytest
from scipy import stats

from lm_insights.cli import run_dag
from lm_insights.explain.html_report import report_for_run
from lm_insights.runtime import scenarios

DAY = dt.date(2026, 11, 2)
SIGNIFICANT = 1e-3

# pipeline -> (the planted driver fields, the value or direction the planted effect points to)
PLANTED = {
    "market_risk": {"prior_volatility": "next_day_volatility rises as prior_volatility rises",
                    "headline_event_label": ("profit_warning", "lawsuit")},
    "shipments": {"route": (scenarios.SLOW_ROUTE,), "carrier": (scenarios.SLOW_CARRIER,),
                  "distance_km": "delay_hours rises as distance_km rises",
                  "note_topic_label": ("customs", "weather")},
}
NOISE = {"market_risk": ("sector", "volume", "return_pct"), "shipments": ("weight_kg",)}


@pytest.fixture(scope="module")
def warehouse(airflow_db) -> str:
    """The `warehouse` connection's database with two small days of both scenarios."""
    from lm_insights.airflow_dag import conninfo_for

    conninfo = conninfo_for("warehouse")
    scenarios.generate(conninfo, "market_risk", DAY - dt.timedelta(days=1), days=2, rows_per_day=150)
    scenarios.generate(conninfo, "shipments", DAY - dt.timedelta(days=1), days=2, rows_per_day=240)
    return conninfo


@pytest.fixture(scope="module", params=sorted(PLANTED))
def scenario_run(request, warehouse):
    """(pipeline, the DagRun): one real run of the scenario's DAG for DAY."""
    run = run_dag(request.param, DAY)
    assert run.state == "success"
    return request.param, run


def frame(conninfo: str, query: str) -> pd.DataFrame:
    with psycopg.connect(conninfo) as conn:
        cursor = conn.execute(query, (dt.datetime.combine(DAY, dt.time(0), dt.timezone.utc),))
        return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])


def p_value(rows: pd.DataFrame, field: str, target: str) -> float:
    """Pearson's test for a numeric field, one-way ANOVA for a categorical one, on the loaded rows."""
    if pd.api.types.is_numeric_dtype(rows[field]):
        return stats.pearsonr(rows[field].astype(float), rows[target].astype(float)).pvalue
    return stats.f_oneway(*[g[target].astype(float) for _, g in rows.groupby(field) if len(g) > 1]).pvalue


def test_the_planted_drivers_lead_and_are_significant(warehouse, scenario_run):
    pipeline, run = scenario_run
    target = {"market_risk": "next_day_volatility", "shipments": "delay_hours"}[pipeline]
    drivers = frame(warehouse, f"select field, importance, direction, significant from insights.{pipeline}_drivers "
                               "where partition_start = %s order by importance desc")
    findings = frame(warehouse, f"select kind, subject, effect, significant from insights.{pipeline}_findings "
                                "where partition_start = %s")
    rows = frame(warehouse, f"select * from insights.{pipeline}_rows where partition_start = %s")
    planted = PLANTED[pipeline]
    # source columns are drivers; what a label set read from the text is tested as its segments (findings)
    planted_columns = {field: expected for field, expected in planted.items() if not field.endswith("_label")}
    planted_labels = {field: expected for field, expected in planted.items() if field.endswith("_label")}
    ranked = list(drivers["field"])
    assert set(ranked[:len(planted_columns)]) == set(planted_columns), (
        f"planted {sorted(planted_columns)} should lead, got {ranked}")
    assert set(NOISE[pipeline]) <= set(ranked[len(planted_columns):])
    for field, expected in planted.items():
        assert p_value(rows, field, target) < SIGNIFICANT, field
    for field, expected in planted_columns.items():
        driver = drivers.loc[drivers["field"] == field].iloc[0]
        assert driver["significant"], field
        if isinstance(expected, str):
            assert driver["direction"] == expected
        else:
            assert driver["direction"].rsplit(" = ", 1)[-1] in expected, driver["direction"]
    for field, values in planted_labels.items():
        # the planted values' own groups can be under insights.min_group_rows on a small day: then the planted
        # effect shows as the other values' lower target
        label_set = field.removesuffix("_label")
        tested = findings[(findings["kind"] == "segment") & findings["significant"]
                          & findings["subject"].str.startswith(f"{label_set} = ")]
        planted_way = [subject for subject, effect in zip(tested["subject"], tested["effect"])
                       if (subject.rsplit(" = ", 1)[-1] in values) == (effect > 0)]
        assert planted_way and len(planted_way) == len(tested), (
            f"significant {label_set} segments pointing the planted way ({values} higher): "
            f"{findings[findings['subject'].str.startswith(label_set)].to_dict('records')}")
    for field in NOISE[pipeline]:
        assert p_value(rows, field, target) > SIGNIFICANT, field
        assert not drivers.loc[drivers["field"] == field, "significant"].any(), field
    # the report the Airflow UI shows for this run names the planted drivers
    status, pages = report_for_run(warehouse, pipeline, run.run_id)
    assert status == 200 and all(field in "".join(pages) for field in planted_columns)


def test_the_summary_claims_nothing_about_the_noise_fields(warehouse, scenario_run):
    pipeline, _ = scenario_run
    summary = frame(warehouse, f"select summary from insights.{pipeline}_summaries where partition_start = %s"
                    ).iloc[0, 0]
    segment_columns = {"sector"}  # listed by the segments part as a grouping, which claims nothing
    for field in set(NOISE[pipeline]) - segment_columns:
        claims = [s for s in re.split(r"(?<=\.) ", summary) if field in s and "not significant" not in s
                  and "uncertain" not in s]
        assert not claims, claims
