"""Airflow plugin: the LM insights HTML report inside the Airflow UI, as a tab on every DAG run page.

A FastAPI app mounted on the api-server at ``/lm-insights`` serves the report of the DAG run whose page shows the
tab: the UI fills the external view's ``{DAG_ID}`` and ``{RUN_ID}`` with that run's ids. A pipeline run's report
shows its own partition (stored by the ``insights_report`` DAG, or rendered from the insight tables until then);
an ``insights_report`` run's report is the one it stored; a run without one gets a page that says why. Access
needs an Airflow login with read access to the DAG's runs (``requires_access_dag``), like the run page itself.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

URL_PREFIX = "/lm-insights"
app = FastAPI(title="LM insights reports")


# run ids may hold "/" (the UI sends it as %2F, which arrives decoded): the path converter keeps the rest whole
@app.get("/report/{dag_id}/{run_id:path}", response_class=HTMLResponse,
         dependencies=[Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))])
def report_page(dag_id: str, run_id: str) -> HTMLResponse:
    """The report of DAG run (``dag_id``, ``run_id``); 404 with a page that says why when it has none."""
    from lm_insights.airflow_dag import conninfo_for
    from lm_insights.explain.html_report import report_for_run

    status, page = report_for_run(conninfo_for("warehouse"), dag_id, run_id)
    return HTMLResponse(page, status_code=status)


class LmInsightsReportsPlugin(AirflowPlugin):
    name = "lm_insights_reports"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "LM insights reports"}]
    external_views = [{"name": "LM insights report", "href": f"{URL_PREFIX.lstrip('/')}/report/{{DAG_ID}}/{{RUN_ID}}",
                       "destination": "dag_run", "url_route": "lm_insights_report"}]
