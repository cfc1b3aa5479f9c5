"""The report people look at: one self-contained HTML page (charts as inline PNG, no network) per report run.

Per pipeline, its latest partition: the summary, the target's mean per segment value with standard-deviation bars,
the label mix over the last partitions, the drivers, the rules (faithful or not), the clusters and a few explained
rows with their words highlighted (green pushes towards the label, red away).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable

from psycopg import sql

from lm_insights.runtime import db

HISTORY_PARTITIONS = 14  # partitions shown in the label-mix and quality charts
EXPLAINED_ROWS = 6  # explained rows shown per pipeline
MAP_ROWS = 3000  # rows drawn on the clusters' 2-D map (a seeded sample when the partition has more)


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
    plt = pyplot()
    names = list(dict.fromkeys(s[0] for s in segments))
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        rows = [s for s in segments if s[0] == name and s[2]]
        axis.bar([r[1] for r in rows], [r[3] for r in rows], yerr=[r[4] or 0 for r in rows], capsize=4,
                 color="#4c78a8")
        axis.set_title(f"{target} by {name.split(':', 1)[-1]}")
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    return figure_png(figure)


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
        axis.bar([p.strftime("%m-%d") for p in partitions], shares, bottom=bottom, label=label)
        bottom = [b + s for b, s in zip(bottom, shares)]
    axis.set_title(f"{label_set} label mix, last {partitions_text(len(partitions))}")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return figure_png(figure)


def quality_chart(series: dict[str, list[tuple]]) -> str:
    """One line per measure (abstention per label set, accuracy per head) over the partitions, shares 0..1."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3))
    for name, points in series.items():
        points = sorted(points)
        axis.plot([p.strftime("%m-%d") for p, _ in points], [v for _, v in points], marker="o", label=name)
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
        axis.scatter(points[chosen, 0], points[chosen, 1], s=14, alpha=0.8, label=f"{name} ({int(chosen.sum())})")
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
    parts = [f'<section class="pipeline"><h2>{html.escape(name)}, partition {partition.date()}</h2>',
             f'<h3>Summary</h3><p class="summary">{html.escape(summary)}</p>']
    segments = conn.execute(sql.SQL(
        "select segment, segment_value, row_count, mean, stddev from {} where partition_start = %s and metric = %s "
        "order by segment, segment_order, segment_value").format(q("segments")), (partition, target)).fetchall()
    if segments:
        parts.append(f'<h3>Segments</h3>{segment_chart(segments, target)}')
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
    drivers = conn.execute(sql.SQL("select field, importance, direction, method, n from {} where partition_start = %s "
                                   "order by importance desc limit 8").format(q("drivers")), (partition,)).fetchall()
    parts.append("<h3>Drivers</h3>" + html_table(["field", "importance", "direction", "method", "n"], drivers))
    if exists("rules"):
        rules = conn.execute(sql.SQL(
            "select explains, rule, case when faithful then 'yes' else 'no' end, fidelity, measure, depth, n from {} "
            "where partition_start = %s order by explains, rule_order").format(q("rules")), (partition,)).fetchall()
        parts.append("<h3>Rules that reproduce the model</h3>"
                     + html_table(["explains", "rule", "faithful", "fidelity", "measure", "depth", "rows fitted"],
                                  rules))
    if exists("clusters"):
        clusters = conn.execute(sql.SQL(
            "select name, rows, share, representative_key, representative_text from {} where partition_start = %s "
            "order by cluster").format(q("clusters")), (partition,)).fetchall()
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
                       f"<td>{highlighted(text, words)}</td></tr>" for k, s, label, sample, text, words in explained)
        budget = conn.execute(sql.SQL(
            "select timings ->> 'explain_words_explained', timings ->> 'explain_words_skipped_for_budget' from {} "
            "where pipeline = %s and partition_start = %s and timings ? 'explain_words_explained' "
            "order by recorded_at desc limit 1").format(db.qualified(schema, "runs")), (name, partition)).fetchone()
        counted = ""
        if budget:
            explained, skipped = budget
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
         "img{max-width:100%}.summary{max-width:70em}mark{padding:0 2px}")


LOADED_STATUSES = ("success", "released")  # a run with these published its partition's insight tables


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>LM insights report</h1>{body}</body></html>")


def render_html(conn, schema: str, partitions: dict[str, object] | None = None, about: str = "") -> str:
    """The whole page: one section per pipeline with a successful run, its latest partition, or the given
    ``{pipeline: partition_start}``; ``about`` is a line under the title (which run the page belongs to)."""
    from lm_insights.explain.report import pipelines

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
