"""The HTML report in the Airflow UI: headless Chromium opens it from the DAG run page of a real run."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PIPELINE = "product_sales"
SECTIONS = ("Summary", "Segments", "Label mix: positioning", "Drivers", "Rules that reproduce the model", "Clusters",
            "Explained rows")


def test_report_tab_on_the_dag_run_page_shows_every_section(api, warehouse):
    from playwright.sync_api import sync_playwright

    run = api.trigger(PIPELINE, {"partition_start": "2026-11-03"}, run_id="report_in_browser")
    assert api.wait_for_run(PIPELINE, run["dag_run_id"], timeout_s=400)["state"] == "success"
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{api.api_url}/dags/{PIPELINE}/runs/{run['dag_run_id']}", wait_until="networkidle")
            page.get_by_role("tab", name="LM insights report").or_(page.get_by_text("LM insights report")).first.click()
            report = page.frame_locator("iframe").first
            report.locator("h1", has_text="LM insights report").wait_for()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(ARTIFACTS / "report_on_dag_run_page.png"), full_page=True)
            for heading in SECTIONS:
                assert report.locator("h3", has_text=heading).count() >= 1, heading
            images = report.locator('img[src^="data:image/png;base64,"]')
            assert images.count() >= 2
            assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
                       for i in range(images.count())), "a plot did not render"
            assert report.locator("mark").count() > 0, "no highlighted words"
            report.locator("h3", has_text="Rules that reproduce the model").first.screenshot(
                path=str(ARTIFACTS / "report_rules_heading.png"))
        finally:
            browser.close()
    assert not errors, errors
