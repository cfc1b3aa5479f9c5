"""The report people look at: one self-contained HTML page (charts as inline PNG, no network) per report run.

Per pipeline, its latest partition: the summary, the target's mean per segment value with standard-deviation bars,
the label mix over the last partitions, the drivers, the rules (faithful or not), the clusters and a few explained
rows with their words highlighted (green pushes towards the label, red away).
"""

from __future__ import annotations

import base64
import html
import io

from psycopg import sql

from lm_insights.runtime import db

HISTORY_PARTITIONS = 14  # partitions shown in the label-mix chart
EXPLAINED_ROWS = 6  # explained rows shown per pipeline


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


def segment_chart(segments: list[tuple], target: str) -> str:
    """Bars of the target's mean per segment value, one panel per segment, standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(s[0] for s in segments))
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        rows = [s for s in segments if s[0] == name and s[2]]
        axis.bar([r[1] for r in rows], [r[3] for r in rows], yerr=[r[4] or 0 for r in rows], capsize=4,
                 color="#4c78a8")
        axis.set_title(f"{target} by {name.split(':', 1)[-1]}")
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    return figure_png(figure)


def mix_chart(history: list[tuple], label_set: str) -> str:
    """Stacked share of each label per partition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    partitions = sorted({h[0] for h in history})
    labels = sorted({h[1] for h in history})
    totals = {p: sum(h[2] for h in history if h[0] == p) or 1 for p in partitions}
    figure, axis = plt.subplots(figsize=(6, 3))
    bottom = [0.0] * len(partitions)
    for label in labels:
        shares = [sum(h[2] for h in history if h[0] == p and h[1] == label) / totals[p] for p in partitions]
        axis.bar([p.strftime("%m-%d") for p in partitions], shares, bottom=bottom, label=label)
        bottom = [b + s for b, s in zip(bottom, shares)]
    axis.set_title(f"{label_set} label mix")
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


def pipeline_section(conn, schema: str, name: str) -> str:
    def q(suffix: str) -> sql.Composed:
        return db.qualified(schema, f"{name}_{suffix}")

    def exists(suffix: str) -> bool:
        return db.table_exists(conn, schema, f"{name}_{suffix}")

    latest = conn.execute(sql.SQL("select max(partition_start) from {}").format(q("summaries"))).fetchone()[0]
    summary = conn.execute(sql.SQL("select summary from {} where partition_start = %s").format(q("summaries")),
                           (latest,)).fetchone()[0]
    target = conn.execute(sql.SQL("select target from {} where partition_start = %s limit 1").format(q("drivers")),
                          (latest,)).fetchone()
    target = target[0] if target else None
    parts = [f'<section class="pipeline"><h2>{html.escape(name)}, partition {latest.date()}</h2>',
             f'<h3>Summary</h3><p class="summary">{html.escape(summary)}</p>']
    segments = conn.execute(sql.SQL(
        "select segment, segment_value, row_count, mean, stddev from {} where partition_start = %s and metric = %s "
        "order by segment, segment_order, segment_value").format(q("segments")), (latest, target)).fetchall()
    if segments:
        parts.append(f'<h3>Segments</h3>{segment_chart(segments, target)}')
    label_segments = sorted({s[0] for s in segments if s[0].startswith("label:")})
    for segment in label_segments:
        history = conn.execute(sql.SQL(
            "select partition_start, segment_value, row_count from {} where segment = %s and metric = %s "
            "and partition_start in (select distinct partition_start from {} order by 1 desc limit %s)").format(
            q("segments"), q("segments")), (segment, target, HISTORY_PARTITIONS)).fetchall()
        parts.append(f'<h3>Label mix: {html.escape(segment.split(":", 1)[1])}</h3>'
                     f'{mix_chart(history, segment.split(":", 1)[1])}')
    drivers = conn.execute(sql.SQL("select field, importance, direction, method, n from {} where partition_start = %s "
                                   "order by importance desc limit 8").format(q("drivers")), (latest,)).fetchall()
    parts.append("<h3>Drivers</h3>" + html_table(["field", "importance", "direction", "method", "n"], drivers))
    if exists("rules"):
        rules = conn.execute(sql.SQL(
            "select explains, rule, case when faithful then 'yes' else 'no' end, fidelity, measure, depth from {} "
            "where partition_start = %s order by explains, rule_order").format(q("rules")), (latest,)).fetchall()
        parts.append("<h3>Rules that reproduce the model</h3>"
                     + html_table(["explains", "rule", "faithful", "fidelity", "measure", "depth"], rules))
    if exists("clusters"):
        clusters = conn.execute(sql.SQL(
            "select name, rows, share, representative_key, representative_text from {} where partition_start = %s "
            "order by cluster").format(q("clusters")), (latest,)).fetchall()
        parts.append("<h3>Clusters</h3>" + html_table(["cluster", "rows", "share", "representative row", "text"],
                                                      clusters))
    if exists("explanations"):
        explained = conn.execute(sql.SQL(
            "select e.row_key, e.label_set, e.label, e.sample, r.text, e.words from {e} as e join {r} as r "
            "on r._row_number = e._row_number and r.partition_start = e.partition_start "
            "where e.partition_start = %s order by e.label_set, e.sample desc, e._row_number limit %s").format(
            e=q("explanations"), r=q("rows")), (latest, EXPLAINED_ROWS)).fetchall()
        rows = "".join(f"<tr><td>{cell(k)}</td><td>{cell(s)}: {cell(label)}</td><td>{cell(sample)}</td>"
                       f"<td>{highlighted(text, words)}</td></tr>" for k, s, label, sample, text, words in explained)
        parts.append("<h3>Explained rows</h3><table><thead><tr><th>row</th><th>label</th><th>sample</th>"
                     f"<th>text</th></tr></thead><tbody>{rows}</tbody></table>")
    parts.append("</section>")
    return "".join(parts)


STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:left}th{background:#f0f0f0}"
         "img{max-width:100%}.summary{max-width:70em}mark{padding:0 2px}")


def render_html(conn, schema: str) -> str:
    """The whole page: one section per pipeline with a successful run."""
    from lm_insights.explain.report import pipelines

    names = pipelines(conn, schema)
    body = "".join(pipeline_section(conn, schema, name) for name in names) or \
        f"<p>No successful runs in {html.escape(schema)}.runs yet.</p>"
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>LM insights report</title>'
            f"<style>{STYLE}</style></head><body><h1>LM insights report</h1>{body}</body></html>")


def latest_html(conninfo: str, schema: str = "insights") -> str:
    """The newest stored HTML report, or the page rendered now when none is stored yet."""
    with db.connect(conninfo) as conn:
        if db.table_columns(conn, schema, "reports").get("html"):
            stored = conn.execute(sql.SQL("select html from {} where html is not null order by id desc limit 1")
                                  .format(db.qualified(schema, "reports"))).fetchone()
            if stored:
                return stored[0]
        return render_html(conn, schema)
