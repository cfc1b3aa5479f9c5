"""The Airflow plugin serves the HTML report on the DAG run page, behind Airflow's authentication."""

from __future__ import annotations

from lm_insights.explain.report import store_report


def test_report_tab_on_dag_runs_needs_a_login_and_serves_the_stored_page(airflow_db, monkeypatch):
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from lm_insights.airflow_dag import conninfo_for

    # as when the UI is exposed beyond loopback (local_env): logins are required
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    stored = store_report(conninfo_for("warehouse"), ["test"])
    client = TestClient(create_app("all"))
    url = "/lm-insights/report/product_sales/manual__2026-11-02"
    assert client.get(url).status_code == 401

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    headers = {"Authorization": f"Bearer {token}"}
    page = client.get(url, headers=headers)
    assert page.status_code == 200 and page.text.startswith("<!doctype html>")
    assert len(page.text) == stored["html_chars"]

    views = [v for p in client.get("/api/v2/plugins", headers=headers).json()["plugins"] for v in p["external_views"]]
    [view] = [v for v in views if v["name"] == "LM insights report"]
    assert view["destination"] == "dag_run" and view["href"] == "lm-insights/report/{DAG_ID}/{RUN_ID}"
