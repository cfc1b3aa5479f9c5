"""Airflow plugin: the LM insights HTML report inside the Airflow UI, as a tab on every DAG run page.

A FastAPI app mounted on the api-server at ``/lm-insights`` serves the report of the DAG run whose page shows the
tab: the UI fills the external view's ``{DAG_ID}`` and ``{RUN_ID}`` with that run's ids. A pipeline run's report
shows its own partition (stored by the ``insights_report`` DAG, or rendered from the insight tables until then);
an ``insights_report`` run's report is the one it stored; a run without one gets a page that says why. Each is read
from the pipeline's own sink (``sink.conn_id``, ``sink.schema`` of its spec).

Access needs an Airflow login with read access to the DAG's runs (``requires_access_dag``), like the run page
itself, and each pipeline shown needs read access to that pipeline's DAG (the auth manager's per-DAG check): an
``insights_report`` run shows a viewer only the pipelines they may read.

The stored pages come from the database, which holds warehouse values: each is served escaped, inside a sandboxed
frame (no scripts, no same origin), under a Content-Security-Policy that allows inline styles and ``data:`` images
only.
"""

from __future__ import annotations

import html

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

URL_PREFIX = "/lm-insights"
REPORT_DAG = "insights_report"
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'; "
                           "base-uri 'none'; form-action 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
app = FastAPI(title="LM insights reports")


def framed_page(pages: list[str]) -> str:
    """The pages, each escaped into the ``srcdoc`` of a sandboxed frame: nothing in them runs or reaches Airflow."""
    frames = "".join(f'<iframe sandbox="" title="LM insights report {i + 1}" srcdoc="{html.escape(page, quote=True)}">'
                     "</iframe>" for i, page in enumerate(pages))
    return ('<!doctype html><html><head><meta charset="utf-8"><title>LM insights report</title>'
            "<style>body{margin:0}iframe{display:block;border:0;width:100%;height:92vh}</style></head>"
            f"<body>{frames}</body></html>")


def sinks_of(dag_id: str) -> list[tuple[str, str]]:
    """The (conn_id, schema) sinks the reports of ``dag_id`` are in: its spec's, or every spec's for insights_report."""
    from lm_insights import spec

    specs, _ = spec.load_specs_isolated(spec.DEFAULT_PIPELINES_DIR)
    return sorted({(s.sink.conn_id, s.sink.schema_) for s in specs if dag_id in (s.name, REPORT_DAG)})


# run ids may hold "/" (the UI sends it as %2F, which arrives decoded): the path converter keeps the rest whole
@app.get("/report/{dag_id}/{run_id:path}", response_class=HTMLResponse,
         dependencies=[Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))])
def report_page(dag_id: str, run_id: str, user: GetUserDep) -> HTMLResponse:
    """The report of DAG run (``dag_id``, ``run_id``), only the pipelines ``user`` may read; 404 (403) with a page
    that says why when it has none (none the user may read)."""
    from airflow.api_fastapi.app import get_auth_manager

    from lm_insights.airflow_dag import conninfo_for
    from lm_insights.explain.html_report import no_report_page, report_for_run

    auth = get_auth_manager()

    def may_read(pipeline: str) -> bool:
        return auth.is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                      details=DagDetails(id=pipeline), user=user)

    found = [report_for_run(conninfo_for(conn_id), dag_id, run_id, schema, may_read)
             for conn_id, schema in sinks_of(dag_id)]
    shown = [page for status, pages in found if status == 200 for page in pages]
    if shown:
        return HTMLResponse(framed_page(shown), headers=SECURITY_HEADERS)
    status, pages = min(found, default=(404, [no_report_page(
        dag_id, run_id, "it is neither a pipeline DAG (dags/pipelines/*.yaml) nor insights_report")]))
    return HTMLResponse(framed_page(pages), status_code=status, headers=SECURITY_HEADERS)


class LmInsightsReportsPlugin(AirflowPlugin):
    name = "lm_insights_reports"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "LM insights reports"}]
    external_views = [{"name": "LM insights report", "href": f"{URL_PREFIX.lstrip('/')}/report/{{DAG_ID}}/{{RUN_ID}}",
                       "destination": "dag_run", "url_route": "lm_insights_report"}]
