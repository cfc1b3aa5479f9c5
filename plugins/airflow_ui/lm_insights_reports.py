"""Airflow plugin: the LM insights HTML report inside the Airflow UI, as a tab on every DAG run page.

A FastAPI app mounted on the api-server at ``/lm-insights`` serves the latest report of ``insights.reports``
(written by the ``insights_report`` DAG); an external view puts it on the DAG run page. Access needs an Airflow
login with read access to the DAG's runs (``requires_access_dag``), like the run page itself.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

URL_PREFIX = "/lm-insights"
app = FastAPI(title="LM insights reports")


@app.get("/report/{dag_id}/{run_id}", response_class=HTMLResponse,
         dependencies=[Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))])
def report_page(dag_id: str, run_id: str) -> HTMLResponse:
    """The latest stored HTML report (rendered now when none is stored yet)."""
    from lm_insights.airflow_dag import conninfo_for
    from lm_insights.explain.html_report import latest_html

    return HTMLResponse(latest_html(conninfo_for("warehouse")))


class LmInsightsReportsPlugin(AirflowPlugin):
    name = "lm_insights_reports"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "LM insights reports"}]
    external_views = [{"name": "LM insights report", "href": f"{URL_PREFIX.lstrip('/')}/report/{{DAG_ID}}/{{RUN_ID}}",
                       "destination": "dag_run", "url_route": "lm_insights_report"}]
