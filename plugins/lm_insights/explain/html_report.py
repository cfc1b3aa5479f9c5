"""The report people look at: one self-contained HTML page (charts as inline PNG, no network) per report run.

Per pipeline, its latest partition: the headline findings first (the significant ones of ``<pipeline>_findings`` by
rank, each with its 95% interval as a bar, then those chance can explain, marked not significant), the summary, the
target's mean per segment value with standard-deviation bars, the label mix over the last partitions, the drivers,
the rules (faithful or not), the clusters and a few explained rows with their words highlighted (green pushes
towards the label, red away). Text from the data reaches charts through :func:`chart_text` (matplotlib would read
``$...$`` as math) and pages through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Callable

from psycopg import sql

from lm_insights.explain.report import SIGNIFICANCE, Finding, interval_text, pipelines, read_findings
from lm_insights.guard.toxicity import masked
from lm_insights.runtime import db

HISTORY_PARTITIONS = 14  # partitions shown in the label-mix and quality charts
EXPLAINED_ROWS = 6  # explained rows shown per pipeline
MAP_ROWS = 3000  # rows drawn on the clusters' 2-D map (a seeded sample when the partition has more)
SHOWN_FINDINGS = 10  # significant findings drawn, and not significant ones listed, per pipeline
LABEL_WIDTH, LABEL_LINES = 24, 2  # an axis label: wrapped at this many characters, on at most this many lines
ROW_INCHES = 0.42  # height per bar of a horizontal bar chart: two lines of 7-point labels fit without overlap


def chart_text(value: object, width: int = LABEL_WIDTH, lines: int = LABEL_LINES) -> str:
    """A value from the data as matplotlib text: wrapped at ``width`` characters on at most ``lines`` lines (a longer
    one keeps its start and its end around an ellipsis, so values that differ at the end stay apart), and with ``$``
    escaped (matplotlib reads ``$...$`` as math text, and a value such as ``$\\foo$`` made it raise)."""
    text = " ".join(str(value).split())
    wrapped = textwrap.wrap(text, width, break_on_hyphens=False) or [""]
    if len(wrapped) > lines:
        room = width * lines - 1
        text = text[:room - room // 3] + "\u2026" + text[-(room // 3):]
        wrapped = textwrap.wrap(text, width, break_on_hyphens=False)
        if len(wrapped) > lines:  # word breaks made it longer: cut in fixed-width pieces
            wrapped = [text[i:i + width] for i in range(0, len(text), width)]
    return "\n".join(wrapped).replace("$", r"\$")


def figure_png(figure) -> str:
    """An <img> with the figure as an inline base64 PNG."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def html_table(headers: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return html.escape(str(value))


def segment_chart(segments: list[tuple], target: str, findings: list[Finding] | None = None) -> str:
    return figure_png(segment_figure(segments, target, findings))


SIGNIFICANT_COLOUR, OTHER_COLOUR = "#2f6fb0", "#b8b8b8"


def segment_figure(segments: list[tuple], target: str, findings: list[Finding] | None = None):
    """Horizontal bars of the target's mean per segment value (one row each, so long names never overlap), one
    panel per segment, standard deviation as error bars and each value's rows at its bar. With the partition's
    ``findings``, a value whose difference from the other rows is a significant segment finding is drawn in colour
    and every other value in grey (not significant, or not tested)."""
    plt = pyplot()
    significant = {f.subject for f in findings or () if f.kind == "segment" and f.target == target and f.significant}
    names = list(dict.fromkeys(s[0] for s in segments))
    most = max(sum(1 for s in segments if s[0] == name and s[2]) for name in names)
    figure, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 0.9 + ROW_INCHES * max(most, 2)),
                                squeeze=False)
    for axis, name in zip(axes[0], names):
        rows = [s for s in segments if s[0] == name and s[2]]
        positions = list(range(len(rows)))[::-1]  # the first value on top
        colours = [SIGNIFICANT_COLOUR if findings is None or f"{name.split(':', 1)[-1]} = {r[1]}" in significant
                   else OTHER_COLOUR for r in rows]
        axis.barh(positions, [r[3] or 0 for r in rows], xerr=[r[4] or 0 for r in rows], capsize=3, color=colours)
        axis.set_yticks(positions, [chart_text(r[1]) for r in rows], fontsize=7)
        for position, row, colour in zip(positions, rows, colours):
            axis.annotate(f"n = {row[2]}", (0, position), xytext=(3, 0), textcoords="offset points",
                          va="center", fontsize=6, color="white" if colour == SIGNIFICANT_COLOUR else "#222")
        axis.set_title(chart_text(f"{target} by {name.split(':', 1)[-1]}", 40, 1), fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
        axis.set_ylim(-0.6, max(most, 2) - 0.4)
    if findings is not None:
        from matplotlib.patches import Patch

        figure.legend(handles=[Patch(color=SIGNIFICANT_COLOUR, label="differs from the other rows (significant)"),
                               Patch(color=OTHER_COLOUR, label="not significant, or too few rows to test")],
                      loc="lower center", ncol=2 if len(names) > 1 else 1, fontsize=7, frameon=False)
        figure.tight_layout(rect=(0, 0.1 if len(names) == 1 else 0.06, 1, 1))
    else:
        figure.tight_layout()
    return figure


def null_effect(measure: str) -> float:
    """The effect that means no effect: 1 for a ratio, 0 otherwise."""
    return 1.0 if "ratio" in measure else 0.0


def findings_chart(findings: list[Finding]) -> str:
    return figure_png(findings_figure(findings))


def findings_figure(findings: list[Finding]):
    """Each significant finding's effect and 95% interval as a bar (a forest plot), one panel per effect measure
    (their scales differ), the line of no effect dashed, by rank from the top."""
    plt = pyplot()
    measures = list(dict.fromkeys(f.effect_measure for f in findings))
    counts = [sum(f.effect_measure == m for f in findings) for m in measures]
    figure, axes = plt.subplots(len(measures), 1, squeeze=False, figsize=(7.5, 0.8 * len(measures) + ROW_INCHES *
                                                                          sum(max(c, 1) for c in counts)),
                                gridspec_kw={"height_ratios": [max(c, 1) for c in counts]})
    for axis, measure in zip(axes[:, 0], measures):
        shown = [f for f in findings if f.effect_measure == measure]
        positions = list(range(len(shown)))[::-1]
        effects = [f.effect or 0.0 for f in shown]
        below = [max(e - (f.ci_low if f.ci_low is not None else e), 0) for e, f in zip(effects, shown)]
        above = [max((f.ci_high if f.ci_high is not None else e) - e, 0) for e, f in zip(effects, shown)]
        axis.errorbar(effects, positions, xerr=[below, above], fmt="o", color="#1f6f3f", ecolor="#1f6f3f",
                      elinewidth=3, capsize=4)
        axis.axvline(null_effect(measure), color="#888", linestyle="--", linewidth=1)
        axis.set_yticks(positions, [chart_text(f"{f.rank or ''}. {f.subject} ({f.target}), n = {f.n}", 40)
                                    for f in shown], fontsize=7)
        axis.set_ylim(-0.6, len(shown) - 0.4)
        axis.set_xlabel(chart_text(f"{measure} (95% interval)", 60, 1), fontsize=8)
        axis.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_title("headline findings: effect and 95% interval", fontsize=9)
    figure.tight_layout()
    return figure


def findings_section(findings: list[Finding] | None, schema: str, name: str) -> str:
    """The section the page starts with: the significant findings by rank (chart and table), then the others
    marked not significant; or that nothing stands out; or, without a findings table, that the summary below is
    not tested."""
    if findings is None:
        return (f'<h3>Headline findings</h3><p class="no-findings">This pipeline has no findings table '
                f"({html.escape(schema)}.{html.escape(name)}_findings): the partition was analysed before findings "
                "were tested. The summary below is shown as written, without significance tests.</p>")
    significant = [f for f in findings if f.significant]
    others = [f for f in findings if not f.significant]
    parts = ["<h3>Headline findings</h3>", f'<p class="significance">{html.escape(SIGNIFICANCE)}</p>']
    if significant:
        parts.append(findings_chart(significant[:SHOWN_FINDINGS]) + html_table(
            ["rank", "finding", "effect", "measure", "95% CI", "q", "n"],
            [(f.rank, f.sentence, f.effect, f.effect_measure, f.interval(), f.q_value, f.n)
             for f in significant[:SHOWN_FINDINGS]]))
    elif findings:
        parts.append(f'<p class="nothing">Nothing stands out: none of the {len(findings)} figures tested in this '
                     "partition is significant.</p>")
    else:
        parts.append('<p class="nothing">Nothing stands out: no figure was tested in this partition.</p>')
    if others:
        rows = "".join(
            f'<tr class="not-significant"><td>not significant</td><td>{cell(f.kind)}</td><td>{cell(f.sentence)}</td>'
            f"<td>{cell(f.effect)}</td><td>{cell(f.interval())}</td><td>{cell(f.p_value)}</td>"
            f"<td>{cell(f.q_value)}</td><td>{cell(f.n)}</td></tr>" for f in others[:SHOWN_FINDINGS])
        parts.append(f"<details><summary>{len(others)} figures chance can explain (not significant)</summary>"
                     "<table><thead><tr><th></th><th>kind</th><th>figure</th><th>effect</th><th>95% CI</th>"
                     f"<th>p</th><th>q</th><th>n</th></tr></thead><tbody>{rows}</tbody></table></details>")
    return "".join(parts)


def partitions_text(count: int) -> str:
    return "partition" if count == 1 else f"{count} partitions"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mix_chart(history: list[tuple], label_set: str) -> str:
    """Stacked share of each label per partition."""
    plt = pyplot()
    partitions = sorted({h[0] for h in history})
    labels = sorted({h[1] for h in history})
    totals = {p: sum(h[2] for h in history if h[0] == p) or 1 for p in partitions}
    figure, axis = plt.subplots(figsize=(6, 3))
    bottom = [0.0] * len(partitions)
    for label in labels:
        shares = [sum(h[2] for h in history if h[0] == p and h[1] == label) / totals[p] for p in partitions]
        axis.bar([p.strftime("%m-%d") for p in partitions], shares, bottom=bottom, label=chart_text(label))
        bottom = [b + s for b, s in zip(bottom, shares)]
    axis.set_title(chart_text(f"{label_set} label mix, last {partitions_text(len(partitions))}", 60, 1))
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return figure_png(figure)


def quality_chart(series: dict[str, list[tuple]]) -> str:
    """One line per measure (abstention per label set, accuracy per head) over the partitions, shares 0..1."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3))
    for name, points in series.items():
        points = sorted(points)
        axis.plot([p.strftime("%m-%d") for p, _ in points], [v for _, v in points], marker="o",
                  label=chart_text(name))
    axis.set_ylim(-0.02, 1.02)
    axis.set_title("quality per partition")
    axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return figure_png(figure)


def project_2d(vectors):
    """The rows' embeddings on their first two principal components (full SVD: the same map for the same rows)."""
    import numpy as np
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, dtype="float64")
    return PCA(n_components=2, svd_solver="full").fit_transform(vectors - vectors.mean(axis=0))


def cluster_map(points, names: list[str]) -> str:
    """Scatter of the rows on the 2-D map, one colour per cluster, the clusters' names in the legend."""
    import numpy as np

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    names_array = np.asarray(names)
    for name in sorted(set(names), key=lambda n: (int(n.split(":", 1)[0]) if n.split(":", 1)[0].isdigit() else 0, n)):
        chosen = names_array == name
        axis.scatter(points[chosen, 0], points[chosen, 1], s=14, alpha=0.8,
                     label=chart_text(f"{name} ({int(chosen.sum())})", 40))
    axis.set_title("clusters on a 2-D map (PCA of the embeddings)")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return figure_png(figure)


def highlighted(text: str, words: list[dict]) -> str:
    """The text with each explained word coloured by its sign and size."""
    weights = {w["word"]: w["weight"] for w in words}
    top = max((abs(v) for v in weights.values()), default=1) or 1
    parts = []
    for word in text.split():
        weight = weights.get(word)
        if weight is None:
            parts.append(html.escape(word))
        else:
            colour = "0,150,60" if weight > 0 else "200,40,40"
            parts.append(f'<mark style="background: rgba({colour},{0.15 + 0.6 * abs(weight) / top:.2f})" '
                         f'title="{weight:+.4f}">{html.escape(word)}</mark>')
    return " ".join(parts)


def recent_partitions(conn, schema: str, name: str, partition, count: int) -> list:
    """The ``count`` partitions with a summary up to and including ``partition``, oldest first."""
    rows = conn.execute(sql.SQL("select partition_start from {} where partition_start <= %s "
                                "order by partition_start desc limit %s").format(
        db.qualified(schema, f"{name}_summaries")), (partition, count)).fetchall()
    return sorted(r[0] for r in rows)


def quality_series(conn, schema: str, name: str, partitions: list, label_segments: list[str], target: str
                   ) -> dict[str, list[tuple]]:
    """Per partition: each label set's abstention (share of rows labelled uncertain) and each head's accuracy
    (``<pipeline>_quality``, rows that carry the head's target)."""
    series: dict[str, list[tuple]] = {}
    for segment in label_segments:
        rows = conn.execute(sql.SQL(
            "select partition_start, coalesce(sum(row_count) filter (where segment_value = 'uncertain'), 0)::float "
            "/ sum(row_count) from {} where segment = %s and metric = %s and partition_start = any(%s) "
            "group by 1 having sum(row_count) > 0").format(db.qualified(schema, f"{name}_segments")),
            (segment, target, partitions)).fetchall()
        series[f"{segment.split(':', 1)[1]} abstention"] = rows
    if "head" in db.table_columns(conn, schema, f"{name}_quality"):
        rows = conn.execute(sql.SQL(
            "select head, partition_start, accuracy from {} where head is not null and model = 'head' "
            "and accuracy is not null and partition_start = any(%s)").format(
            db.qualified(schema, f"{name}_quality")), (partitions,)).fetchall()
        for head, partition, accuracy in rows:
            series.setdefault(f"{head} accuracy", []).append((partition, accuracy))
    return series


def cluster_points(conn, schema: str, name: str, partition) -> tuple[object, list[str]] | None:
    """The partition's rows with a cluster on the 2-D map, and their cluster names; None without clusters or
    cached embeddings (the run's model, head and template versions key the cache)."""
    import numpy as np

    if "cluster_name" not in db.table_columns(conn, schema, f"{name}_rows"):
        return None
    rows = conn.execute(sql.SQL(
        "with run as (select model_key, head_version, template_version from {runs} where pipeline = %(name)s "
        "and partition_start = %(partition)s and model_key is not null order by recorded_at desc limit 1) "
        "select r.cluster_name, c.embedding::real[] from {rows} as r cross join run join {cache} as c "
        "on c.text_sha256 = r.text_sha256 and c.model_key = run.model_key and c.head_version = run.head_version "
        "and c.template_version = run.template_version where r.partition_start = %(partition)s "
        "and r.cluster_name is not null and c.embedding is not null "
        "order by hashtext(r._row_number::text), r._row_number limit %(limit)s").format(
        runs=db.qualified(schema, "runs"), rows=db.qualified(schema, f"{name}_rows"),
        cache=db.qualified(schema, "lm_cache")), {"name": name, "partition": partition, "limit": MAP_ROWS}).fetchall()
    if len(rows) < 3:
        return None
    return project_2d(np.array([r[1] for r in rows], dtype="float32")), [r[0] for r in rows]


def significance_mark(significant: bool | None) -> str:
    return {True: "significant", False: "not significant"}.get(significant, "not tested")


def drivers_table(conn, schema: str, name: str, partition) -> str:
    """The strongest drivers; where the table has the findings' figures (interval, q, significant), each row says
    whether it is significant, and the ones that are not are greyed."""
    table = db.qualified(schema, f"{name}_drivers")
    tested = "significant" in db.table_columns(conn, schema, f"{name}_drivers")
    if not tested:
        rows = conn.execute(sql.SQL("select field, importance, direction, method, n from {} where partition_start = %s "
                                    "order by importance desc limit 8").format(table), (partition,)).fetchall()
        return html_table(["field", "importance", "direction", "method", "n"], rows)
    rows = conn.execute(sql.SQL(
        "select significant, field, importance, ci_low, ci_high, q_value, direction, method, n from {} "
        "where partition_start = %s order by significant desc nulls last, importance desc limit 8").format(table),
        (partition,)).fetchall()
    body = "".join(
        f'<tr class="{"significant" if r[0] else "not-significant"}"><td>{significance_mark(r[0])}</td>'
        + "".join(f"<td>{cell(v)}</td>" for v in (r[1], r[2]))
        + f"<td>{cell(interval_text(r[3], r[4]))}</td>"
        + "".join(f"<td>{cell(v)}</td>" for v in r[5:]) + "</tr>" for r in rows)
    head = "".join(f"<th>{h}</th>" for h in ("", "field", "importance", "95% CI", "q", "direction", "method", "n"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def rules_table(conn, schema: str, name: str, partition) -> str:
    """Every rule with its rule set's held-out fidelity, the majority rule's and the test's p-value (older tables:
    the fidelity alone); rules of a rule set that is not faithful are greyed."""
    table = db.qualified(schema, f"{name}_rules")
    held_out = "baseline" in db.table_columns(conn, schema, f"{name}_rules")
    figures = sql.SQL("baseline, p_value" if held_out else "null::float8, null::float8")
    rows = conn.execute(sql.SQL(
        "select faithful, explains, rule, fidelity, {figures}, measure, depth, n from {table} "
        "where partition_start = %s order by explains, rule_order").format(figures=figures, table=table),
        (partition,)).fetchall()
    body = "".join(
        f'<tr class="{"significant" if r[0] else "not-significant"}">'
        f'<td>{"faithful" if r[0] else "not faithful"}</td>' + "".join(f"<td>{cell(v)}</td>" for v in r[1:]) + "</tr>"
        for r in rows)
    head = "".join(f"<th>{h}</th>" for h in ("", "explains", "rule", "held-out fidelity", "majority rule", "p",
                                              "measure", "depth", "rows"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pipeline_section(conn, schema: str, name: str, partition=None) -> str:
    """One pipeline's section for ``partition`` (default: its latest with a summary)."""
    def q(suffix: str) -> sql.Composed:
        return db.qualified(schema, f"{name}_{suffix}")

    def exists(suffix: str) -> bool:
        return db.table_exists(conn, schema, f"{name}_{suffix}")

    if partition is None:
        partition = conn.execute(sql.SQL("select max(partition_start) from {}").format(q("summaries"))).fetchone()[0]
    found = conn.execute(sql.SQL("select summary from {} where partition_start = %s").format(q("summaries")),
                         (partition,)).fetchone()
    if found is None:
        return (f'<section class="pipeline"><h2>{html.escape(name)}, partition {partition.date()}</h2>'
                f'<p class="empty">No insights are loaded for this partition.</p></section>')
    summary = found[0]
    target = conn.execute(sql.SQL("select target from {} where partition_start = %s limit 1").format(q("drivers")),
                          (partition,)).fetchone()
    target = target[0] if target else None
    findings = read_findings(conn, schema, name, partition)
    parts = [f'<section class="pipeline"><h2>{html.escape(name)}, partition {partition.date()}</h2>',
             findings_section(findings, schema, name),
             f'<h3>Summary</h3><p class="summary">{html.escape(summary)}</p>']
    segments = conn.execute(sql.SQL(
        "select segment, segment_value, row_count, mean, stddev from {} where partition_start = %s and metric = %s "
        "order by segment, segment_order, segment_value").format(q("segments")), (partition, target)).fetchall()
    if segments:
        parts.append(f'<h3>Segments</h3>{segment_chart(segments, target, findings)}')
    history = recent_partitions(conn, schema, name, partition, HISTORY_PARTITIONS)
    label_segments = sorted({s[0] for s in segments if s[0].startswith("label:")})
    for segment in label_segments:
        mix = conn.execute(sql.SQL(
            "select partition_start, segment_value, row_count from {} where segment = %s and metric = %s "
            "and partition_start = any(%s)").format(q("segments")), (segment, target, history)).fetchall()
        parts.append(f'<h3>Label mix: {html.escape(segment.split(":", 1)[1])}</h3>'
                     f'{mix_chart(mix, segment.split(":", 1)[1])}')
    series = quality_series(conn, schema, name, history, label_segments, target)
    if any(series.values()):
        parts.append(f"<h3>Quality over the last {partitions_text(len(history))}</h3>{quality_chart(series)}")
    parts.append("<h3>Drivers</h3>" + drivers_table(conn, schema, name, partition))
    if exists("rules"):
        parts.append("<h3>Rules that reproduce the model</h3>" + rules_table(conn, schema, name, partition))
    if exists("clusters"):
        clusters = conn.execute(sql.SQL(
            "select name, rows, share, representative_key, representative_text from {} where partition_start = %s "
            "order by cluster").format(q("clusters")), (partition,)).fetchall()
        clusters = [(*c[:4], masked(c[4])) for c in clusters]  # a representative row may be a toxic one
        mapped = cluster_points(conn, schema, name, partition) if clusters else None
        parts.append("<h3>Clusters</h3>" + (cluster_map(*mapped) if mapped else "")
                     + html_table(["cluster", "rows", "share", "representative row", "text"], clusters))
    if exists("explanations"):
        explained = conn.execute(sql.SQL(
            "select e.row_key, e.label_set, e.label, e.sample, r.text, e.words from {e} as e join {r} as r "
            "on r._row_number = e._row_number and r.partition_start = e.partition_start "
            "where e.partition_start = %s order by e.label_set, e.sample desc, e._row_number limit %s").format(
            e=q("explanations"), r=q("rows")), (partition, EXPLAINED_ROWS)).fetchall()
        rows = "".join(f"<tr><td>{cell(k)}</td><td>{cell(s)}: {cell(label)}</td><td>{cell(sample)}</td>"
                       f"<td>{highlighted(masked(text), words)}</td></tr>"
                       for k, s, label, sample, text, words in explained)
        budget = conn.execute(sql.SQL(
            "select timings ->> 'explain_words_explained', timings ->> 'explain_words_skipped_for_budget' from {} "
            "where pipeline = %s and partition_start = %s and timings ? 'explain_words_explained' "
            "order by recorded_at desc limit 1").format(db.qualified(schema, "runs")), (name, partition)).fetchone()
        counted = ""
        if budget:
            explained, skipped = (html.escape(str(v)) for v in budget)  # runs.timings is JSON anyone may write
            spent = (f", {skipped} skipped: the word-explanation budget (explain.words.max_infer_share) was spent"
                     if skipped != "0" else "")
            counted = f'<p class="budget">{explained} sampled rows explained{spent}.</p>'
        parts.append(f"<h3>Explained rows</h3>{counted}" + (
            "<table><thead><tr><th>row</th><th>label</th><th>sample</th>"
            f"<th>text</th></tr></thead><tbody>{rows}</tbody></table>" if rows else
            '<p class="empty">No row of this partition was explained.</p>'))
    parts.append("</section>")
    return "".join(parts)


STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:left}th{background:#f0f0f0}"
         "img{max-width:100%}.summary{max-width:70em}mark{padding:0 2px}"
         ".not-significant{color:#777}.not-significant td:first-child{font-style:italic}")


LOADED_STATUSES = ("success", "released")  # a run with these published its partition's insight tables


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>LM insights report</h1>{body}</body></html>")


def render_html(conn, schema: str, partitions: dict[str, object] | None = None, about: str = "") -> str:
    """The whole page: one section per pipeline with a successful run, its latest partition, or the given
    ``{pipeline: partition_start}``; ``about`` is a line under the title (which run the page belongs to)."""
    names = pipelines(conn, schema) if partitions is None else list(partitions)
    body = "".join(pipeline_section(conn, schema, name, (partitions or {}).get(name)) for name in names) or \
        f"<p>No successful runs in {html.escape(schema)}.runs yet.</p>"
    about = f'<p class="about">{html.escape(about)}</p>' if about else ""
    return page("LM insights report", about + body)


def run_about(dag_id: str, run_id: str, partition) -> str:
    return f"DAG {dag_id}, run {run_id}, partition {partition.date()}"


def no_report_page(dag_id: str, run_id: str, reason: str) -> str:
    return page("LM insights report: none for this run",
                f'<p class="no-report">No report for run {html.escape(run_id)} of DAG {html.escape(dag_id)}: '
                f"{html.escape(reason)}</p>")


def report_for_run(conninfo: str, dag_id: str, run_id: str, schema: str = "insights",
                   may_read: Callable[[str], bool] = lambda pipeline: True) -> tuple[int, list[str]]:
    """(HTTP status, pages) of the report of one DAG run, one page per pipeline that ``may_read(pipeline)``: those
    stored for it in ``<schema>.reports`` (written by the insights_report DAG for its own runs and for the pipeline
    runs that triggered it); for a pipeline run with none stored yet, its partition rendered now from the insight
    tables; else one page that says why there is none."""
    with db.connect(conninfo) as conn:
        if "pipeline" in db.table_columns(conn, schema, "reports"):
            stored = conn.execute(sql.SQL(
                "select distinct on (pipeline) pipeline, html from {} where dag_id = %s and run_id = %s "
                "and pipeline is not null and html is not null order by pipeline, id desc").format(
                db.qualified(schema, "reports")), (dag_id, run_id)).fetchall()
            if stored:
                readable = [page for pipeline, page in stored if may_read(pipeline)]
                if readable:
                    return 200, readable
                return 403, [no_report_page(dag_id, run_id, f"it shows {len(stored)} pipelines and your role may "
                                            "read none of them; ask an admin for read access to their DAGs.")]
        run = None
        if db.table_exists(conn, schema, "runs"):
            run = conn.execute(sql.SQL("select partition_start, status from {} where pipeline = %s and run_id = %s")
                               .format(db.qualified(schema, "runs")), (dag_id, run_id)).fetchone()
        if run is None or not may_read(dag_id):
            return 404, [no_report_page(dag_id, run_id, "it has not recorded a partition in "
                                        f"{schema}.runs yet (a pipeline run does when it ends; the insights_report "
                                        "DAG stores its report after). Reload this page once the run has finished.")]
        partition, status = run
        if status not in LOADED_STATUSES:
            return 404, [no_report_page(dag_id, run_id, f"it ended with status {status} for partition "
                                        f"{partition.date()}, so it published no insights (see {schema}.runs).")]
        return 200, [render_html(conn, schema, {dag_id: partition}, run_about(dag_id, run_id, partition))]
