"""
# insights_report

Data-aware: runs whenever a pipeline run has loaded its insight tables and recorded itself in `insights.runs`
(an Airflow Asset per pipeline, updated by the run's record_run task).
Writes a plain-text report of the latest partitions (runs, summaries, segment tables, drivers) into
`insights.reports`, one row per run of this DAG.
"""

import datetime as dt
from pathlib import Path

from airflow.sdk import AssetAny, dag, get_current_context, task

from lm_insights.airflow_dag import conninfo_for, insight_asset
from lm_insights.spec import load_specs_isolated

SPECS, _ = load_specs_isolated(Path(__file__).parent / "pipelines")  # invalid ones: lm_insights_spec_check.py


@dag(
    schedule=AssetAny(*(insight_asset(spec) for spec in SPECS)) if SPECS else None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["lm-insights", "report"],
    default_args={"owner": "data-team", "retries": 1},
    doc_md=__doc__,
)
def insights_report():
    @task
    def write_report() -> dict:
        from lm_insights.explain.report import store_report

        events = get_current_context()["triggering_asset_events"]
        triggered_by = sorted(str(asset.name) for asset in events)
        return store_report(conninfo_for("warehouse"), triggered_by)

    write_report()


insights_report()
