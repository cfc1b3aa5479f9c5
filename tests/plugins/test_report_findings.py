"""The report starts with the headline findings of <pipeline>_findings (significant by rank, with interval bars),
marks the others not significant, falls back to the summary without a findings table, keeps axis labels apart,
draws category names such as $\\foo$ and escapes the budget line (on a real PostgreSQL, tables written here)."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import psycopg
import pytest

from lm_insights.explain import html_report, report
from lm_insights.explain.report import Finding
from lm_insights.runtime import db

DAY = dt.datetime(2026, 10, 2, tzinfo=dt.timezone.utc)
LONG = "Home, garden and outdoor living (seasonal clearance, regional warehouse north-east)"
FINDINGS = [  # kind, subject, target, effect, measure, ci_low, ci_high, p, q, n, significant, rank, sentence
    ("driver", "price", "units", 0.30, "share of variance", 0.22, 0.38, 1e-9, 1e-8, 400, True, 1,
     "price explains 30% of units (95% CI 22-38%, n = 400)."),
    ("segment", "region = north", "amount", 0.31, "relative difference of means", 0.22, 0.40, 1e-6, 1e-5, 79, True,
     2, "amount is 31% higher in north (95% CI 22-40%, n = 79)."),
    ("segment", "channel = store", "amount", 0.02, "relative difference of means", -0.05, 0.09, 0.41, 0.62, 120,
     False, None, "uncertain: amount is 2% higher in store (95% CI -5-9%, n = 120)."),
    ("rule", "category = Toys", "demand", 0.08, "held-out accuracy minus the majority label's", 0.05, 0.11, 1e-9,
     2e-8, 400, True, 3, "Rules reproduce the demand label (held-out accuracy 100% against 92%)."),
]


def create_pipeline(conninfo: str, name: str, findings: bool, timings: dict) -> None:
    """The tables a published partition of ``name`` has, as the load step writes them, with a few rows."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        db.ensure_insight_schema(conn, "insights")
        conn.execute(f"create table insights.{name}_summaries (partition_start timestamptz, summary text)")
        conn.execute(f"insert into insights.{name}_summaries values (%s, 'The summary as written.')", (DAY,))
        conn.execute(f"create table insights.{name}_segments (partition_start timestamptz, segment text, "
                     "segment_value text, metric text, row_count bigint, mean float8, variance float8, "
                     "stddev float8, segment_order int)")
        values = [r"$\foo$", "price $5 - $10", LONG, *(f"{LONG} {i}" for i in range(9))]
        for i, value in enumerate(values):
            conn.execute(f"insert into insights.{name}_segments values (%s, 'category', %s, 'amount', %s, %s, 1, 1, "
                         "%s)", (DAY, value, 10 + i, 100.0 + i, i))
        conn.execute(f"create table insights.{name}_drivers (partition_start timestamptz, field text, "
                     "importance float8, direction text, method text, n bigint, target text"
                     + (", ci_low float8, ci_high float8, p_value float8, q_value float8, significant boolean)"
                        if findings else ")"))
        drivers = [("price", 0.3, "falls", 0.22, 0.38, 1e-9, 1e-8, True),
                   ("channel", 0.004, "store", 0.0, 0.02, 0.3, 0.5, False)]
        for field, importance, direction, *tested in drivers:
            conn.execute(f"insert into insights.{name}_drivers (partition_start, field, importance, direction, "
                         "method, n, target" + (", ci_low, ci_high, p_value, q_value, significant) values "
                                                "(%s, %s, %s, %s, 'r2', 400, 'amount', %s, %s, %s, %s, %s)"
                                                if findings else ") values (%s, %s, %s, %s, 'r2', 400, 'amount')"),
                         (DAY, field, importance, direction, *(tested if findings else ())))
        conn.execute(f"create table insights.{name}_rules (partition_start timestamptz, explains text, "
                     "rule_order int, rule text, faithful boolean, fidelity float8, measure text, depth int, n bigint"
                     + (", baseline float8, p_value float8)" if findings else ")"))
        for order, (rule, faithful) in enumerate([("price <= 150 -> high", True), ("price > 150 -> low", True)]):
            conn.execute(f"insert into insights.{name}_rules (partition_start, explains, rule_order, rule, faithful, "
                         "fidelity, measure, depth, n) values (%s, 'demand', %s, %s, %s, 0.95, 'accuracy', 1, 400)",
                         (DAY, order, rule, faithful))
        conn.execute(f"create table insights.{name}_rows (partition_start timestamptz, _row_number bigint, "
                     "text text)")
        conn.execute(f"create table insights.{name}_explanations (partition_start timestamptz, "
                     "_row_number bigint, row_key text, label_set text, label text, sample text, words jsonb)")
        conn.execute("insert into insights.runs (run_id, pipeline, partition_start, partition_end, status, timings) "
                     "values (%s, %s, %s, %s, 'success', %s)",
                     (f"run-{name}", name, DAY, DAY + dt.timedelta(days=1), json.dumps(timings)))
        if findings:
            conn.execute(f"create table insights.{name}_findings (partition_start timestamptz, "
                         "partition_end timestamptz, kind text, subject text, target text, effect double precision, "
                         "effect_measure text, ci_low double precision, ci_high double precision, "
                         "p_value double precision, q_value double precision, n bigint, significant boolean, "
                         "rank integer, sentence text)")
            for row in FINDINGS:
                conn.execute(f"insert into insights.{name}_findings values (%s, %s, {', '.join(['%s'] * 13)})",
                             (DAY, DAY + dt.timedelta(days=1), *row))


def test_the_report_starts_with_the_significant_findings_by_rank_and_marks_the_others(warehouse_conninfo):
    budget = {"explain_words_explained": "<script>alert(1)</script>", "explain_words_skipped_for_budget": "0"}
    create_pipeline(warehouse_conninfo, "shop", findings=True, timings=budget)
    with psycopg.connect(warehouse_conninfo) as conn:
        page = html_report.render_html(conn, "insights", {"shop": DAY})
        text = report.render_text(conn)
    headline, summary = page.index("<h3>Headline findings</h3>"), page.index("<h3>Summary</h3>")
    assert headline < summary
    significant = [page.index(row[-1].split(" (")[0]) for row in FINDINGS if row[10]]
    assert headline < significant[0] < significant[1] < significant[2] < summary, "by rank, before the summary"
    assert page.count("<img", headline, summary) == 1, "the interval bars"
    assert "insights.fdr" in page[headline:summary] and "Benjamini-Hochberg" in page[headline:summary]
    noise = page.index("uncertain: amount is 2% higher in store")
    assert page.rindex('<tr class="not-significant"><td>not significant</td>', 0, noise) > significant[-1]
    assert "1 figures chance can explain (not significant)" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; sampled rows explained" in page
    drivers = page[page.index("<h3>Drivers</h3>"):page.index("<h3>Rules")]
    assert ('<tr class="significant"><td>significant</td><td>price</td><td>0.300</td><td>0.22 to 0.38</td>'
            in drivers)
    assert '<tr class="not-significant"><td>not significant</td><td>channel</td>' in drivers
    assert "<th>held-out fidelity</th><th>majority rule</th><th>p</th>" in page

    lines = text.splitlines()
    first = lines.index("Headline findings (significant, strongest first):")
    assert first < lines.index("The summary as written.")
    ranked = [i for i, line in enumerate(lines) for row in FINDINGS if row[10] and row[-1][:30] in line]
    assert len(ranked) == 3 and first < min(ranked) and ranked == sorted(ranked)
    assert not any("uncertain: amount is 2%" in line for line in lines[first:lines.index("The summary as written.")])


def test_without_a_findings_table_the_report_says_so_and_shows_the_summary(warehouse_conninfo):
    create_pipeline(warehouse_conninfo, "legacy", findings=False, timings={})
    with psycopg.connect(warehouse_conninfo) as conn:
        page = html_report.render_html(conn, "insights", {"legacy": DAY})
        text = report.render_text(conn)
    assert "This pipeline has no findings table (insights.legacy_findings)" in page
    assert page.index("no findings table") < page.index("The summary as written.")
    assert "No findings table (insights.legacy_findings)" in text and "The summary as written." in text
    drivers = page[page.index("<h3>Drivers</h3>"):page.index("<h3>Rules")]
    assert "<td>price</td><td>0.300</td><td>falls</td>" in drivers and "significant" not in drivers
    assert '<tr class="significant"><td>faithful</td><td>demand</td><td>price &lt;= 150 -&gt; high</td>' in page


def test_nothing_stands_out_when_no_finding_is_significant():
    html = html_report.findings_section([Finding(*row[:10], False, None, row[12]) for row in FINDINGS], "s", "p")
    assert "Nothing stands out: none of the 4 figures tested in this partition is significant." in html
    assert "<img" not in html and html.count('class="not-significant"') == 4
    assert "no figure was tested in this partition" in html_report.findings_section([], "s", "p")
    assert report.findings_text([], "s", "p") == ["Nothing stands out: no figure was tested in this partition."]


def overlapping_labels(figure) -> list[tuple[str, str]]:
    """Pairs of tick labels (both axes of every panel) whose drawn boxes overlap."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    pairs = []
    for axis in figure.axes:
        for ticks in (axis.get_yticklabels(), axis.get_xticklabels()):
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in ticks if t.get_text()]
            pairs += [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    return pairs


def test_long_category_names_are_wrapped_apart_and_dollar_signs_drawn_as_text(tmp_path):
    """A category value $\\foo$ made matplotlib's math text raise; long names overlapped on a rotated x axis."""
    import matplotlib
    import matplotlib.pyplot as plt

    values = [r"$\foo$", "price $5 - $10", LONG, *(f"{LONG} {i}" for i in range(12))]
    segments = [("category", v, 10 + i, 100.0 + i, 1.0) for i, v in enumerate(values)]
    figure = html_report.segment_figure(segments, "amount")
    figure.savefig(tmp_path / "segments.png", dpi=90)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels[0] == r"\$\foo\$" and labels[1] == r"price \$5 - \$10"
    assert all(len(line) <= html_report.LABEL_WIDTH for label in labels for line in label.split("\n"))
    assert "\u2026" in labels[2] and labels[2].count("\n") == html_report.LABEL_LINES - 1
    assert labels[3].startswith("Home, garden") and labels[3].endswith("north-east) 0"), "start and end kept"
    assert len(set(labels)) == len(labels)
    assert overlapping_labels(figure) == []
    plt.close(figure)

    tested = [Finding("segment", f"category = {values[2]}", "amount", 0.2, "relative difference of means", 0.1, 0.3,
                      1e-4, 1e-3, 12, True, 1, "s"),
              Finding("segment", f"category = {values[3]}", "amount", 0.01, "relative difference of means", -0.1, 0.1,
                      0.8, 0.9, 13, False, None, "s")]
    figure = html_report.segment_figure(segments, "amount", tested)
    figure.savefig(tmp_path / "segments-marked.png", dpi=90)
    colours = [bar.get_facecolor() for bar in figure.axes[0].patches]
    significant, other = (matplotlib.colors.to_rgba(c) for c in (html_report.SIGNIFICANT_COLOUR,
                                                                  html_report.OTHER_COLOUR))
    assert colours[2] == significant and colours.count(significant) == 1 and colours.count(other) == len(values) - 1
    assert overlapping_labels(figure) == []
    plt.close(figure)

    findings = [Finding(*row[:10], True, i + 1, row[12]) for i, row in enumerate(FINDINGS)]
    findings += [Finding("segment", f"category = {v}", "amount", 0.1, "relative difference of means", 0.05, 0.15,
                         0.001, 0.01, 40, True, 5 + i, "s") for i, v in enumerate(values[:6])]
    figure = html_report.findings_figure(findings)
    figure.savefig(tmp_path / "findings.png", dpi=90)
    assert overlapping_labels(figure) == []
    assert len(figure.axes) == 3, "one panel per effect measure"
    plt.close(figure)


@pytest.mark.parametrize("value", [r"$\foo$", "$", "a $b$ c", "$$"])
def test_chart_text_never_leaves_math_text_for_matplotlib(value):
    import matplotlib.pyplot as plt

    figure, axis = html_report.pyplot().subplots()
    axis.set_title(html_report.chart_text(value))
    html_report.figure_png(figure)  # draws it: raised ValueError for $\foo$ before
    assert not plt.get_fignums() or figure.number not in plt.get_fignums()
