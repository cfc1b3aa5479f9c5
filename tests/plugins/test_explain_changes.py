"""What changed: the second day's summary compares it with the first, every figure with its n, all true; the HTML
report of the two days is self-contained and has every section."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from lm_insights.explain.report import store_report
from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_spec
from lm_insights.steps.partition import Partition

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "product_sales.yaml")
FIRST, SECOND = Partition.day("2026-11-01"), Partition.day("2026-11-02")


def test_second_day_summary_says_what_changed_with_figures(warehouse_conninfo):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=FIRST.start.date(), days=2, sales_per_day=40, reviews_per_day=0)
    for day in (FIRST, SECOND):
        assert run_partition(SPEC, warehouse_conninfo, warehouse_conninfo, day).status == "success"
    with psycopg.connect(warehouse_conninfo) as conn:
        first, second = (r[0] for r in conn.execute(
            "select summary from insights.product_sales_summaries order by partition_start").fetchall())
        segments = {(p.date().isoformat(), s.split(":", 1)[-1], v): (m, n) for p, s, v, m, n in conn.execute(
            "select partition_start, segment, segment_value, mean, row_count from insights.product_sales_segments "
            "where metric = 'units'").fetchall()}
    assert "Since the partition" not in first
    assert "Since the partition of 2026-11-01:" in second
    changes = re.findall(r"units in (\S+) = (.+?): mean ([\d.]+) \(n = (\d+)\) against ([\d.]+) \(n = (\d+)\), "
                         r"([+-][\d.]+)%", second)
    assert changes
    for segment, value, mean, n, past_mean, past_n, change in changes:
        now_mean, now_n = segments[("2026-11-02", segment, value)]
        then_mean, then_n = segments[("2026-11-01", segment, value)]
        assert (float(mean), int(n), float(past_mean), int(past_n)) == (round(now_mean, 1), now_n,
                                                                      round(then_mean, 1), then_n)
        assert float(change) == round((now_mean - then_mean) / abs(then_mean) * 100, 1)
    assert re.search(r"The positioning mix over \d+ rows \(against \d+\): ", second)
    assert re.search(r"The strongest driver of units (is still|changed from) \w+", second)

    stored = store_report(warehouse_conninfo, ["test"])
    with psycopg.connect(warehouse_conninfo) as conn:
        page = conn.execute("select html from insights.reports where id = %s", (stored["report_id"],)).fetchone()[0]
    assert page.startswith("<!doctype html>") and stored["html_chars"] == len(page)
    assert page.count('<img alt="chart" src="data:image/png;base64,') == 2  # segments, positioning mix
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page loads nothing from the network"
    for heading in ("Summary", "Segments", "Label mix: positioning", "Drivers", "Rules that reproduce the model",
                    "Clusters", "Explained rows"):
        section = page.split(f"<h3>{heading}</h3>", 1)[1].split("<h3>", 1)[0]
        assert "<img" in section or "<tr><td>" in section or heading == "Summary" and len(section) > 100, heading
    assert "<mark style=" in page and "Since the partition of 2026-11-01:" in page
