"""
# insights_report

Data-aware: runs whenever a pipeline run has loaded its insight tables and recorded itself in `insights.runs`
(an Airflow Asset per pipeline, updated by the run's record_run task).
Writes the report of the latest partitions (as text, and as the HTML pages the "LM insights report" tab shows, one
per pipeline) into each spec's sink (`<sink.schema>.reports` of `sink.conn_id`) under this run, and the page of each
triggering pipeline run's partition under that run.
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
    def write_report() -> list[dict]:
        from lm_insights.explain.report_store import store_reports

        context = get_current_context()
        events = context["triggering_asset_events"]
        triggered_by = sorted(str(asset.name) for asset in events)
        # each pipeline run that triggered this one gets its partition's page, shown on its own DAG run page
        source_runs = sorted({(e.source_dag_id, e.source_run_id) for asset_events in events.values()
                              for e in asset_events if e.source_dag_id and e.source_run_id})
        return store_reports(SPECS, conninfo_for, triggered_by, context["dag"].dag_id, context["run_id"], source_runs)

    write_report()


insights_report()
