"""The Airflow plugin serves each DAG run's own HTML report on its run page, behind Airflow's authentication."""

from __future__ import annotations

from urllib.parse import quote

from lm_insights.explain.report import store_report


def test_report_tab_on_dag_runs_needs_a_login_and_serves_the_stored_page(airflow_db, monkeypatch):
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from lm_insights.airflow_dag import conninfo_for

    # as when the UI is exposed beyond loopback (local_env): logins are required
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    run_id = "manual__2026-11-02T00:00:00+00:00"  # the UI puts it into the tab's URL with encodeURIComponent
    stored = store_report(conninfo_for("warehouse"), ["test"], dag_id="insights_report", run_id=run_id)
    client = TestClient(create_app("all"))
    url = f"/lm-insights/report/insights_report/{quote(run_id, safe='')}"
    assert client.get(url).status_code == 401

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    headers = {"Authorization": f"Bearer {token}"}
    page = client.get(url, headers=headers)
    assert page.status_code == 200 and page.text.startswith("<!doctype html>")
    assert len(page.text) == stored["html_chars"], "the page that run stored"
    store_report(conninfo_for("warehouse"), ["test"], dag_id="insights_report", run_id="a later run")
    assert client.get(url, headers=headers).text == page.text, "still that run's page, not the newest"

    slashed = client.get(f"/lm-insights/report/product_sales/{quote('backfill/2026-11-02', safe='')}",
                         headers=headers)  # a run that has recorded nothing: a page that says so
    assert slashed.status_code == 404 and "No report for run backfill/2026-11-02 of DAG product_sales" in slashed.text
    assert client.get("/lm-insights/report/product_sales/never_ran").status_code == 401

    views = [v for p in client.get("/api/v2/plugins", headers=headers).json()["plugins"] for v in p["external_views"]]
    [view] = [v for v in views if v["name"] == "LM insights report"]
    assert view["destination"] == "dag_run" and view["href"] == "lm-insights/report/{DAG_ID}/{RUN_ID}"
