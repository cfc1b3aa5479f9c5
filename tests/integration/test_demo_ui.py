"""What a new user sees after ``make demo`` then ``make up``: real runs with real durations, who started them, task
logs in the UI. The demo runs as a subprocess on a database cluster and AIRFLOW_HOME of its own (its scheduler
must not meet the session's Celery stack), then an api-server on them serves the UI to headless Chromium."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from lm_insights.runtime import embedded_pg, local_env
from lm_insights.runtime.services import LocalStack

pytestmark = pytest.mark.slow

PIPELINES = ("customer_reviews", "product_sales")
DEMO_DAYS = 2
# Small data: two days of 10 reviews are too few labelled rows to train a head, so the heads step is left out.
DEMO_ARGS = ["demo", "--days", str(DEMO_DAYS), "--sales-per-day", "20", "--reviews-per-day", "10", "--no-heads"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def utc(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory):
    """(stack serving the UI on the demo's database, the demo's stdout, when the demo started)."""
    root = tmp_path_factory.mktemp("demo_ui")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"LM_INSIGHTS_PGDATA": str(root / "pgdata"), "LM_INSIGHTS_AIRFLOW_HOME": str(root / "airflow")}
    command = [sys.executable, "-m", "lm_insights.cli"]
    started = dt.datetime.now(dt.timezone.utc)
    stack = None
    try:
        demo = subprocess.run([*command, *DEMO_ARGS], env=env, capture_output=True, text=True, timeout=900)
        assert demo.returncode == 0, f"{demo.stdout[-3000:]}\n{demo.stderr[-5000:]}"
        server = embedded_pg.start(root / "pgdata")  # the server the demo left running
        stack = LocalStack(dict(os.environ) | local_env.airflow_environment(server, root / "airflow"), root / "ui")
        stack.start(dag_ids=[*PIPELINES, "insights_report"], unpaused=[])
        yield stack, demo.stdout, started
    finally:
        if stack is not None:
            stack.stop()
        subprocess.run([*command, "stop"], env=env, capture_output=True, timeout=120)


def test_demo_runs_are_backfills_with_real_times_and_readable_logs(demo_ui):
    stack, stdout, started = demo_ui
    for pipeline in PIPELINES:
        runs = stack.request("GET", f"/api/v2/dags/{pipeline}/dagRuns?limit=100")["dag_runs"]
        assert len(runs) == DEMO_DAYS and {r["state"] for r in runs} == {"success"}, runs
        for run in runs:
            assert (run["run_type"], run["triggered_by"]) == ("backfill", "backfill")
            assert run["triggering_user_name"] == getpass.getuser()
            assert started <= utc(run["start_date"]) < utc(run["end_date"]), "a run starts when it started"
            assert (utc(run["end_date"]) - utc(run["start_date"])).total_seconds() < 3600
            day = run["data_interval_start"][:10]
            assert re.search(rf"{pipeline} {day}: success in \d+s, extracted \d+", stdout), stdout
        assert stack.get_dag(pipeline)["is_paused"], "the demo pauses what it unpaused"
        run_id = urllib.parse.quote(runs[0]["dag_run_id"], safe="")
        log = stack.request("GET", f"/api/v2/dags/{pipeline}/dagRuns/{run_id}/taskInstances/extract/logs/1"
                                   "?full_content=true")
        assert f"{pipeline} extract" in str(log["content"]) and " rows/s" in str(log["content"]), log


def test_runs_page_in_the_browser_shows_no_run_longer_than_an_hour(demo_ui):
    from playwright.sync_api import sync_playwright

    stack, _, _ = demo_ui
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.context.add_cookies([{"name": "_token", "value": stack.token(), "url": stack.api_url}])
            page.set_default_timeout(60_000)
            page.goto(f"{stack.api_url}/dags/product_sales/runs", wait_until="networkidle")
            page.get_by_text("backfill__", exact=False).first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "demo_runs.png"), full_page=True)
            text = page.locator("body").inner_text()
            headers = [h.strip() for h in page.locator("table thead th").all_inner_texts()]
            rows = [row.locator("td").all_inner_texts() for row in page.locator("table tbody tr").all()]
        finally:
            browser.close()
    assert "Backfill in progress" not in text, "the demo leaves its backfills complete"
    column = headers.index("Duration")
    durations = [cells[column].strip() for cells in rows]
    assert len(durations) == DEMO_DAYS, (headers, rows)
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d(\.\d+)?", d) for d in durations), durations  # HH:MM:SS[.fff]
    assert all(d < "01:00:00" for d in durations), f"a run of an hour or more: {durations}"
    assert all(getpass.getuser() in [c.strip() for c in cells] for cells in rows), rows
