"""The pipelines on a real Airflow deployment: REST triggers with Params, the two Celery queues, backfills through
the API, the Asset-scheduled report and the trigger form in a browser (the `airflow_stack` fixture)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import psycopg
import pytest

from lm_insights.runtime.services import AirflowStack, ApiError

pytestmark = pytest.mark.slow

PIPELINE = "product_sales"
REPORT_DAG = "insights_report"
INSIGHT_SUFFIXES = ("rows", "segments", "drivers", "summaries", "rejects")
BACKFILL_DAYS = [dt.date(2026, 11, 4), dt.date(2026, 11, 5), dt.date(2026, 11, 6)]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def utc_day(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), dt.timezone.utc)


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def runs_record(conninfo: str, run_id: str) -> dict | None:
    """The row of ``insights.runs`` that the record_run task of a DAG run wrote."""
    with psycopg.connect(conninfo) as conn:
        cursor = conn.execute("select * from insights.runs where run_id = %s", (run_id,))
        row = cursor.fetchone()
        return None if row is None else dict(zip([c.name for c in cursor.description], row))


def run_ids(stack: AirflowStack, dag_id: str) -> set[str]:
    runs = stack.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1000")["dag_runs"]
    return {r["dag_run_id"] for r in runs}


def insight_dump(conninfo: str, day: dt.date) -> dict[str, list[tuple]]:
    """Every insight table's rows of one partition, ordered, as comparable tuples."""
    with psycopg.connect(conninfo) as conn:
        return {suffix: sorted(conn.execute(f'select * from insights."{PIPELINE}_{suffix}" '
                                            "where partition_start = %s", (utc_day(day),)).fetchall(), key=repr)
                for suffix in INSIGHT_SUFFIXES}


# -- a. Params ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conf, param, complaint", [
    ({"shards": 0}, "shards", "less than the minimum of 1"),
    ({"shards": 65}, "shards", "greater than the maximum of 64"),
    ({"shards": "x"}, "shards", "is not of type"),
    ({"partition_start": "not-a-date"}, "partition_start", "is not a 'date'"),
    ({"partition_end": "2026-13-01"}, "partition_end", "is not a 'date'"),
    ({"force_recompute": "yes"}, "force_recompute", "is not of type 'boolean'"),
    ({"dry_run": 1}, "dry_run", "is not of type 'boolean'"),
    ({"model": ""}, "model", "does not match"),
    ({"model": "bad model!"}, "model", "does not match"),
])
def test_bad_param_is_refused_before_a_run_exists(api, conf, param, complaint):
    before = run_ids(api, PIPELINE)
    with pytest.raises(ApiError) as refused:
        api.trigger(PIPELINE, conf, run_id=f"bad_param_{param}")
    assert refused.value.status == 400
    detail = json.loads(refused.value.body)["detail"]
    assert f"Invalid input for param {param}:" in detail and complaint in detail
    assert run_ids(api, PIPELINE) == before, "a refused trigger creates no DAG run"


def test_partition_end_before_start_fails_in_plan_partition_without_retry(api, warehouse):
    """JSON Schema cannot compare two Params, so plan_partition refuses the range: AirflowFailException, no
    retry, nothing extracted, nothing recorded (record_run runs and fails: there is no plan)."""
    run = api.trigger(PIPELINE, {"partition_start": "2026-11-02", "partition_end": "2026-11-01"},
                      run_id="end_before_start")
    assert api.wait_for_run(PIPELINE, run["dag_run_id"], timeout_s=180)["state"] == "failed"
    states = {t["task_id"]: (t["state"], t["try_number"]) for t in api.task_instances(PIPELINE, "end_before_start")}
    assert states["plan_partition"] == ("failed", 1), "no retry of a bad range"
    assert states["extract"][0] == states["load"][0] == "upstream_failed"
    assert states["record_run"] == ("failed", 1)
    log = api.request("GET", f"/api/v2/dags/{PIPELINE}/dagRuns/end_before_start/taskInstances/plan_partition/"
                             "logs/1?full_content=true")
    assert "partition_end 2026-11-01 is before partition_start 2026-11-02" in json.dumps(log)
    assert runs_record(warehouse, "end_before_start") is None


# -- b. the two queues -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_shard_run(airflow_stack) -> dict:
    """A REST-triggered run of 2026-11-01 with two infer shards, finished."""
    run = airflow_stack.trigger(PIPELINE, {"partition_start": "2026-11-01", "shards": 2}, run_id="two_queues")
    return airflow_stack.wait_for_run(PIPELINE, run["dag_run_id"], timeout_s=300)


def test_run_uses_the_gpu_worker_for_infer_and_the_cpu_worker_for_the_rest(api, two_shard_run, warehouse):
    assert two_shard_run["state"] == "success"
    tis = api.task_instances(PIPELINE, "two_queues")
    infer = sorted((t for t in tis if t["task_id"] == "infer"), key=lambda t: t["map_index"])
    others = [t for t in tis if t["task_id"] != "infer"]
    assert [t["map_index"] for t in infer] == [0, 1]
    assert [t["rendered_map_index"] for t in infer] == ["shard 0", "shard 1"]
    for t in infer:
        assert (t["state"], t["queue"], t["pool"]) == ("success", "gpu", "lm_gpu")
        assert t["hostname"].startswith("gpu@"), t["hostname"]
    assert sorted(t["task_id"] for t in others) == sorted(
        ["plan_partition", "extract", "validate", "textualize", "plan_shards", "insights", "explain", "guard",
         "load", "record_run"])
    for t in others:
        assert (t["state"], t["queue"]) == ("success", "default"), t["task_id"]
        assert t["hostname"].startswith("cpu@"), (t["task_id"], t["hostname"])
    record = runs_record(warehouse, "two_queues")
    assert record["status"] == "success" and record["partition_start"] == utc_day(dt.date(2026, 11, 1))
    assert record["extracted"] == record["loaded"] + record["rejected"] and record["loaded"] > 0


# -- d. the Asset-scheduled report -------------------------------------------------------------------------------
def test_report_dag_runs_after_the_pipeline_lands(api, two_shard_run, warehouse):
    """insights_report is scheduled on the pipelines' Assets: `two_queues` (its record_run task, once the
    partition is loaded and recorded) triggers a run of it, and the report shows that run."""
    deadline = time.monotonic() + 120
    while True:
        report_run = next((r for r in api.request("GET", f"/api/v2/dags/{REPORT_DAG}/dagRuns?limit=100")["dag_runs"]
                           if any(e["source_run_id"] == "two_queues" for e in api.request(
                               "GET", f"/api/v2/dags/{REPORT_DAG}/dagRuns/{r['dag_run_id']}/upstreamAssetEvents"
                           )["asset_events"])), None)
        if report_run is not None or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert report_run is not None, "no insights_report run was triggered by two_queues"
    assert report_run["run_type"] == "asset_triggered"
    finished = api.wait_for_run(REPORT_DAG, report_run["dag_run_id"], timeout_s=120)
    assert finished["state"] == "success"
    events = api.request("GET", f"/api/v2/dags/{REPORT_DAG}/dagRuns/{report_run['dag_run_id']}/upstreamAssetEvents")
    assert {(e["name"], e["uri"], e["source_task_id"]) for e in events["asset_events"]} >= {
        ("insights.product_sales", "lm-insights://insights/product_sales", "record_run")}
    [result] = api.request("GET", f"/api/v2/dags/{REPORT_DAG}/dagRuns/{report_run['dag_run_id']}/taskInstances/"
                                  "write_report/xcomEntries/return_value")["value"]  # one sink: insights
    with psycopg.connect(warehouse) as conn:
        triggered_by, report = conn.execute("select triggered_by, report from insights.reports where id = %s",
                                            (result["report_id"],)).fetchone()
    assert "insights.product_sales" in triggered_by
    assert "== product_sales, partition" in report and "Recent runs" in report
    # the report is kept under this run, and the page of the triggering pipeline run under that run
    assert "two_queues" in result["pipeline_runs"]
    with psycopg.connect(warehouse) as conn:
        own = conn.execute("select id from insights.reports where dag_id = %s and run_id = %s and pipeline is null",
                           (REPORT_DAG, report_run["dag_run_id"])).fetchall()
        pipeline_page = conn.execute("select html, partition_start from insights.reports where dag_id = %s and "
                                     "run_id = 'two_queues' order by id desc limit 1", (PIPELINE,)).fetchone()
    assert own == [(result["report_id"],)]
    assert pipeline_page[1] == utc_day(dt.date(2026, 11, 1))
    assert "<h2>product_sales, partition 2026-11-01</h2>" in pipeline_page[0] and "run two_queues" in pipeline_page[0]


# -- c. backfills through the REST API ---------------------------------------------------------------------------
def backfill(stack: AirflowStack, reprocess_behavior: str, timeout_s: float = 330) -> list[dict]:
    """Create a backfill of BACKFILL_DAYS, wait until the scheduler completes it; return its runs by date.

    One run at a time, in date order: a partition's comparisons with the partitions before it (what changed, drift
    gates, the out-of-distribution reference) read what is loaded when it runs, so only an in-order backfill gives
    the figures a day-by-day schedule gives, and a second pass can reproduce them exactly."""
    created = stack.request("POST", "/api/v2/backfills", {
        "dag_id": PIPELINE, "from_date": f"{BACKFILL_DAYS[0]}T00:00:00Z", "to_date": f"{BACKFILL_DAYS[-1]}T00:00:00Z",
        "max_active_runs": 1, "reprocess_behavior": reprocess_behavior})
    deadline = time.monotonic() + timeout_s
    while stack.request("GET", f"/api/v2/backfills/{created['id']}")["completed_at"] is None:
        stack.check_running()
        assert time.monotonic() < deadline, f"backfill {created['id']} not complete after {timeout_s}s\n" \
                                            f"{stack.tails()}"
        time.sleep(3)
    runs = stack.request("GET", f"/api/v2/dags/{PIPELINE}/dagRuns?run_type=backfill&limit=100"
                                f"&logical_date_gte={BACKFILL_DAYS[0]}T00:00:00Z"
                                f"&logical_date_lte={BACKFILL_DAYS[-1]}T00:00:00Z")["dag_runs"]
    return sorted(runs, key=lambda r: r["logical_date"])


def test_backfill_loads_each_partition_once_and_a_second_pass_changes_nothing(api, warehouse):
    """`from_date`..`to_date` are logical dates, both inclusive; CronDataIntervalTimetable makes the logical date
    the start of the data interval, so 2026-11-04..06 gives three runs of the days 04, 05 and 06."""
    first = backfill(api, "none")
    assert [(parse_time(r["data_interval_start"]), parse_time(r["data_interval_end"])) for r in first] == [
        (utc_day(d), utc_day(d + dt.timedelta(days=1))) for d in BACKFILL_DAYS]
    assert [r["state"] for r in first] == ["success"] * 3
    records = {r["dag_run_id"]: runs_record(warehouse, r["dag_run_id"]) for r in first}
    with psycopg.connect(warehouse) as conn:
        for run, day in zip(first, BACKFILL_DAYS):
            record = records[run["dag_run_id"]]
            source = conn.execute("select count(*) from retail.product_sales where sale_date = %s",
                                  (day,)).fetchone()[0]
            rows, distinct_rows = conn.execute(
                "select count(*), count(distinct sale_id) from insights.product_sales_rows "
                "where partition_start = %s", (utc_day(day),)).fetchone()
            rejects = conn.execute("select count(*) from insights.product_sales_rejects where partition_start = %s",
                                   (utc_day(day),)).fetchone()[0]
            summaries = conn.execute("select count(*) from insights.product_sales_summaries "
                                     "where partition_start = %s", (utc_day(day),)).fetchone()[0]
            assert record["status"] == "success" and record["partition_start"] == utc_day(day)
            assert rows == distinct_rows == source - rejects == record["loaded"] > 0, day
            assert rejects == record["rejected"] > 0 and summaries == 1, day
            assert record["computed"] > 0, f"{day}: the first pass encodes the new texts"
    dumps = {day: insight_dump(warehouse, day) for day in BACKFILL_DAYS}

    second = backfill(api, "completed")
    assert [r["dag_run_id"] for r in second] == [r["dag_run_id"] for r in first], "the same runs, cleared"
    assert [r["state"] for r in second] == ["success"] * 3
    for day in BACKFILL_DAYS:
        again = insight_dump(warehouse, day)
        for suffix in INSIGHT_SUFFIXES:
            changed = [(b, a) for b, a in zip(dumps[day][suffix], again[suffix]) if a != b]
            assert again[suffix] == dumps[day][suffix], f"{day} {suffix}: first change (before, after) {changed[:1]}"
    for run in second:
        again, before = runs_record(warehouse, run["dag_run_id"]), records[run["dag_run_id"]]
        assert again["recorded_at"] > before["recorded_at"], "the second pass ran"
        assert again["computed"] == 0 and again["cached"] == before["cached"] + before["computed"]
        assert again["loaded"] == before["loaded"]


# -- e. the trigger form in a browser ----------------------------------------------------------------------------
FORM_FIELDS = {  # param -> (title, description) as pipeline_params declares them
    "partition_start": ("Partition start (date)", "Process this day instead of the run's data interval (UTC)."),
    "force_recompute": ("Force recompute", "Bypass the result cache and encode every text again."),
    "model": ("Model", "A model name of the lm_engine registry."),
    "shards": ("Infer shards", "Parallel inference shards; empty = from the partition size."),
    "dry_run": ("Dry run", "Extract and validate, report counts, load nothing."),
}


def test_trigger_form_in_the_browser_starts_a_dry_run(api, warehouse):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    before = run_ids(api, PIPELINE)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            # logged in as the admin (the UI reads the token from this cookie, as after its login form)
            page.context.add_cookies([{"name": "_token", "value": api.token(), "url": api.api_url}])
            page.set_default_timeout(60_000)
            page.goto(f"{api.api_url}/dags/{PIPELINE}", wait_until="networkidle")
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Run Parameters").wait_for()
            page.locator("#element_partition_start").wait_for()
            text = dialog.inner_text()
            for param, (title, description) in FORM_FIELDS.items():
                assert title in text and description in text, param
                assert dialog.locator(f'[name="element_{param}"]').count() == 1, param
            assert dialog.locator('[name="element_model"]').input_value() == "all-MiniLM-L6-v2"
            page.locator("#element_partition_start").fill("2026-11-02")
            dialog.locator('label[id="switch:element_dry_run"]').click()
            assert dialog.locator('[name="element_dry_run"]').is_checked()
            dialog.screenshot(path=str(ARTIFACTS / "trigger_form.png"))
            dialog.get_by_role("button", name="Trigger").click()
            deadline = time.monotonic() + 60
            while not (new := run_ids(api, PIPELINE) - before):
                assert time.monotonic() < deadline, "the form created no DAG run"
                time.sleep(1)
        finally:
            browser.close()
    (run_id,) = new
    run = api.wait_for_run(PIPELINE, run_id, timeout_s=240)
    assert run["state"] == "success" and run["triggered_by"] == "ui"
    assert run["conf"]["partition_start"] == "2026-11-02" and run["conf"]["dry_run"] is True
    states = {t["task_id"]: t["state"] for t in api.task_instances(PIPELINE, run_id)}
    assert states["validate"] == "success" and states["textualize"] == states["load"] == "skipped"
    assert states["record_run"] == "skipped", "a dry run is recorded but updates no Asset"
    assert api.request("GET", f"/api/v2/assets/events?source_run_id={run_id}")["total_entries"] == 0
    record = runs_record(warehouse, run_id)
    assert record["status"] == "dry_run" and record["partition_start"] == utc_day(dt.date(2026, 11, 2))
    assert record["extracted"] > 0 and record["loaded"] is None
