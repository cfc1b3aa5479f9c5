"""
# lm_insights_maintenance

Daily housekeeping of the insight database. Drops the staging tables (`lm_staging.*`: full copies of a partition's
source rows) that runs left behind when they were killed before their `record_run` task could drop them.

A table goes when its run started more than `older_than` ago (Param, default `1d`; `12h`, `2w` work too; at least
`1h`) and Airflow does not call that run queued or running: a run that is still working keeps its tables, however
long it takes. The same from a shell: `lm-insights clean-staging --older-than 1d`.
"""

import datetime as dt

from airflow.exceptions import AirflowFailException
from airflow.sdk import Param, dag, get_current_context, task

from lm_insights.airflow_dag import conninfo_for


@dag(
    schedule="@daily",
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["lm-insights", "maintenance"],
    default_args={"owner": "data-team", "retries": 1, "retry_delay": dt.timedelta(minutes=5)},
    params={
        "older_than": Param("1d", type="string", pattern=r"^\s*\d+(\.\d+)?\s*[smhdw]\s*$", title="Older than",
                            description="Age of the staging tables to drop: a number and s, m, h, d or w."),
        "conn_ids": Param(["warehouse"], type="array", items={"type": "string"}, minItems=1,
                          title="Connections", description="Airflow connections of the sink databases to sweep."),
    },
    doc_md=__doc__,
)
def lm_insights_maintenance():
    @task
    def clean_staging() -> dict:
        from lm_insights.steps.staging import clean_staging, parse_age

        context = get_current_context()
        params, ti = context["params"], context["ti"]

        def is_running(dag_id: str, run_id: str) -> bool:
            return ti.get_dr_count(dag_id=dag_id, run_ids=[run_id], states=["queued", "running"]) > 0

        try:
            age = parse_age(params["older_than"])
            return {conn_id: clean_staging(conninfo_for(conn_id), age, is_running) for conn_id in params["conn_ids"]}
        except ValueError as exc:  # a bad age: retrying cannot help
            raise AirflowFailException(f"older_than: {exc}") from exc

    clean_staging()


lm_insights_maintenance()
