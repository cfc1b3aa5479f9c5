"""What changed: the second day's changes are tested like every finding (recomputed with scipy from the loaded
rows) and the summary claims only the significant ones; the HTML
report of the two days is self-contained and has every section."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from lm_insights.explain.html_report import cluster_map, project_2d, report_for_run
from lm_insights.explain.report_store import store_report
from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_spec
from lm_insights.core.partition import Partition
from tests.oracles import check_changes, check_findings, insight_frame

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "product_sales.yaml")
FIRST, SECOND = Partition.day("2026-11-01"), Partition.day("2026-11-02")


def test_second_day_changes_are_tested_and_told_only_when_significant(warehouse_conninfo):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=FIRST.start.date(), days=2, sales_per_day=40, reviews_per_day=0)
    runs = [run_partition(SPEC, warehouse_conninfo, warehouse_conninfo, day) for day in (FIRST, SECOND)]
    assert [r.status for r in runs] == ["success", "success"]
    with psycopg.connect(warehouse_conninfo) as conn:
        first, second = (r[0] for r in conn.execute(
            "select summary from insights.product_sales_summaries order by partition_start").fetchall())
    assert "since 2026-10-31" not in first and "since 2026-11-01" in second
    now, before = (insight_frame(warehouse_conninfo, SPEC, "rows", day) for day in (SECOND, FIRST))
    findings = insight_frame(warehouse_conninfo, SPEC, "findings", SECOND)
    check_findings(SPEC, now, findings, insight_frame(warehouse_conninfo, SPEC, "drivers", SECOND))
    check_changes(SPEC, now, before, findings)  # every change recomputed from the two days' rows
    changes = findings[findings["kind"].isin(["change", "label_mix"])]
    assert {"all rows", "positioning mix", "driver price"} <= set(changes["subject"]), set(changes["subject"])
    assert any(" = " in subject for subject in changes["subject"]), "a segment value's change is compared too"
    if changes["significant"].any():
        assert "Significant changes since 2026-11-01: " in second
    else:
        assert "No significant change since 2026-11-01." in second
    assert all(s.startswith("uncertain: ") for s in changes[~changes["significant"].astype(bool)]["sentence"])

    stored = store_report(warehouse_conninfo, ["test"], dag_id="insights_report", run_id="report_1",
                          source_runs=[("product_sales", runs[0].run_id), ("product_sales", "no_such_run")])
    assert stored["pipeline_runs"] == [runs[0].run_id] and stored["pipelines"] == ["product_sales"]
    with psycopg.connect(warehouse_conninfo) as conn:  # one page per pipeline: the tab shows those a viewer may read
        page, = conn.execute("select html from insights.reports where dag_id = 'insights_report' and run_id = "
                             "'report_1' and pipeline = 'product_sales'").fetchone()
    assert page.startswith("<!doctype html>") and stored["html_chars"] == len(page)
    # segments, the positioning mix, quality over the partitions, the clusters' 2-D map, and the headline findings'
    # intervals when a finding of the day is significant
    significant = bool(findings["significant"].any())
    assert page.count('<img alt="chart" src="data:image/png;base64,') == 4 + significant
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page loads nothing from the network"
    for heading in ("Summary", "Segments", "Label mix: positioning", "Quality over the last 2 partitions", "Drivers",
                    "Rules that reproduce the model", "Clusters", "Explained rows"):
        section = page.split(f"<h3>{heading}</h3>", 1)[1].split("<h3>", 1)[0]
        rows = "<tr><td>" in section or '<tr class="' in section  # drivers' rows are marked significant or not
        assert "<img" in section or rows or heading == "Summary" and len(section) > 100, heading
    assert "<mark style=" in page and "since 2026-11-01" in page
    assert page.split("<h3>Clusters</h3>", 1)[1].split("<h3>", 1)[0].count("<img") == 1, "the clusters' map"
    assert "partition 2026-11-02" in page and "partition 2026-11-01" not in page

    # the DAG run page's tab: each run's own partition (stored by insights_report, or rendered now), never the newest
    assert report_for_run(warehouse_conninfo, "insights_report", "report_1") == (200, [page])
    first_status, [first_page] = report_for_run(warehouse_conninfo, "product_sales", runs[0].run_id)
    assert first_status == 200 and f"run {runs[0].run_id}, partition 2026-11-01" in first_page
    assert "product_sales, partition 2026-11-01</h2>" in first_page and "partition 2026-11-02" not in first_page
    second_status, [second_page] = report_for_run(warehouse_conninfo, "product_sales", runs[1].run_id)
    assert second_status == 200 and "product_sales, partition 2026-11-02</h2>" in second_page
    assert "<h3>Quality over the last 2 partitions</h3>" in second_page
    assert "<h3>Quality over the last partition</h3>" in first_page, "history up to the run's own partition"
    status, [missing] = report_for_run(warehouse_conninfo, "product_sales", "manual__not_run_yet")
    assert status == 404 and "No report for run manual__not_run_yet of DAG product_sales" in missing
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("update insights.runs set status = 'quarantined' where run_id = %s", (runs[1].run_id,))
    status, [held] = report_for_run(warehouse_conninfo, "product_sales", runs[1].run_id)
    assert status == 404 and "ended with status quarantined for partition 2026-11-02" in held


def test_clusters_map_is_the_same_for_the_same_rows_and_separates_planted_groups():
    import numpy as np

    rng = np.random.default_rng(5)
    centres = np.eye(3, 16) * 5
    vectors = np.vstack([c + rng.normal(scale=0.1, size=(20, 16)) for c in centres])
    first, again = project_2d(vectors), project_2d(vectors.copy())
    assert first.shape == (60, 2) and np.array_equal(first, again)
    means = [first[i * 20:(i + 1) * 20].mean(axis=0) for i in range(3)]
    spread = max(np.linalg.norm(first[i * 20:(i + 1) * 20] - means[i], axis=1).max() for i in range(3))
    assert min(np.linalg.norm(a - b) for i, a in enumerate(means) for b in means[i + 1:]) > 4 * spread
    assert cluster_map(first, [f"{i // 20 + 1}: group" for i in range(60)]).startswith('<img alt="chart"')


def test_segment_means_carry_their_standard_deviation_as_error_bars(monkeypatch):
    from lm_insights.explain import html_report

    drawn = []
    monkeypatch.setattr(html_report, "figure_png", lambda figure: drawn.append(figure) or "<img>")
    html_report.segment_chart([("tier:price", "[0, 150)", 10, 1000.0, 120.0), ("tier:price", "[150, 250)", 8, 700.0,
                                                                               50.0), ("label:positioning", "budget", 5,
                                                                                       900.0, 0.0)], "units")
    [figure] = drawn
    by_title = {axis.get_title(): axis for axis in figure.axes}
    from matplotlib.container import BarContainer

    [bars] = [c for c in by_title["units by price"].containers if isinstance(c, BarContainer)]
    assert [b.get_width() for b in bars.patches] == [1000.0, 700.0]  # horizontal bars: the mean is the width
    [segments] = bars.errorbar.lines[2]  # the horizontal error segments: mean - sd .. mean + sd
    assert [tuple(s[:, 0]) for s in segments.get_segments()] == [(880.0, 1120.0), (650.0, 750.0)]
    assert set(by_title) == {"units by price", "units by positioning"}
