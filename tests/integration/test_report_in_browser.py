"""The HTML report in the Airflow UI: headless Chromium opens it from the DAG run page of a real run, and it is
that run's report (its partition), not the newest one."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PIPELINE = "product_sales"
SECTIONS = ("Summary", "Segments", "Label mix: positioning", "Quality over the last", "Drivers",
            "Rules that reproduce the model", "Clusters", "Explained rows")
# h3 headings whose section holds no chart, no table cell and no paragraph of text (a .empty note is no content)
EMPTY_SECTIONS_JS = """() => [...document.querySelectorAll('h3')].filter(heading => {
    for (let node = heading.nextElementSibling; node && node.tagName !== 'H3'; node = node.nextElementSibling) {
        if (node.tagName === 'IMG' || node.querySelector('img, td')) return false;
        if (node.tagName === 'P' && !node.classList.contains('empty') && node.textContent.trim()) return false;
    }
    return true;
}).map(heading => heading.textContent)"""


def test_report_tab_on_the_dag_run_page_shows_that_runs_report(api, warehouse):
    from playwright.sync_api import sync_playwright

    # the run whose page we open, and a run of a later partition that is the newest when the page opens
    run = api.trigger(PIPELINE, {"partition_start": "2026-11-02"}, run_id="report_in_browser")
    newer = api.trigger(PIPELINE, {"partition_start": "2026-11-03"}, run_id="report_in_browser_newer")
    for run_id in (run["dag_run_id"], newer["dag_run_id"]):
        assert api.wait_for_run(PIPELINE, run_id, timeout_s=400)["state"] == "success"
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            # logged in as the admin (the UI reads the token from this cookie, as after its login form)
            page.context.add_cookies([{"name": "_token", "value": api.token(), "url": api.api_url}])
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{api.api_url}/dags/{PIPELINE}/runs/{run['dag_run_id']}", wait_until="networkidle")
            page.get_by_role("tab", name="LM insights report").or_(page.get_by_text("LM insights report")).first.click()
            # the UI's frame of the tab, and in it the report's own sandboxed frame
            report = page.frame_locator("iframe").first.frame_locator("iframe[sandbox]").first
            report.locator("h1", has_text="LM insights report").wait_for()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(ARTIFACTS / "report_on_dag_run_page.png"), full_page=True)
            assert report.locator("h2").all_inner_texts() == [f"{PIPELINE}, partition 2026-11-02"], \
                "the report of the run whose page it is on, not the newest partition (2026-11-03)"
            assert f"run {run['dag_run_id']}, partition 2026-11-02" in report.locator(".about").inner_text()
            for heading in SECTIONS:
                assert report.locator("h3", has_text=heading).count() >= 1, heading
            assert report.locator("body").evaluate(EMPTY_SECTIONS_JS) == [], "a section without content"
            images = report.locator('img[src^="data:image/png;base64,"]')
            assert images.count() >= 4  # segments, label mix, quality, clusters' map
            assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
                       for i in range(images.count())), "a plot did not render"
            assert report.locator("section h3:has-text('Clusters') + img").count() == 1, "the clusters' 2-D map"
            assert report.locator("mark").count() > 0, "no highlighted words"
            report.locator("section h3:has-text('Clusters') + img").screenshot(
                path=str(ARTIFACTS / "report_clusters_map.png"))
            report.locator("h3", has_text="Rules that reproduce the model").first.screenshot(
                path=str(ARTIFACTS / "report_rules_heading.png"))
        finally:
            browser.close()
    assert not errors, errors
