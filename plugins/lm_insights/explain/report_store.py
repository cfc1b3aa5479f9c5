"""The stored reports: after a pipeline lands, the text report and each pipeline's HTML page go into
``<schema>.reports`` (read by the report tab of the Airflow UI)."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import sql

from lm_insights.explain.html_report import LOADED_STATUSES, render_html, run_about
from lm_insights.explain.report import DEFAULT_SCHEMA, pipelines, render_text
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec


def store_report(conninfo: str, triggered_by: list[str], schema: str = DEFAULT_SCHEMA, dag_id: str | None = None,
                 run_id: str | None = None, source_runs: list[tuple[str, str]] = (),
                 names: list[str] | None = None) -> dict[str, object]:
    """Render the report of the pipelines of ``<schema>`` (``names``: only these) and keep it in ``<schema>.reports``
    under (``dag_id``, ``run_id``), the run that writes it: the text report in one row, each pipeline's HTML page in
    a row of its own (the report tab shows a viewer only the pipelines they may read); and for each (pipeline, run
    id) of ``source_runs`` whose run published a partition, that partition's page under the pipeline run. Return the
    report's id, its sizes and the pipeline runs stored."""
    reports = db.qualified(schema, "reports")
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, schema)
        published = [p for p in pipelines(conn, schema) if names is None or p in names]
        text = render_text(conn, schema)
        report_id = conn.execute(sql.SQL("insert into {} (triggered_by, report, dag_id, run_id) "
                                         "values (%s, %s, %s, %s) returning id").format(reports),
                                 (triggered_by, text, dag_id, run_id)).fetchone()[0]
        html_chars = 0
        for pipeline in published:
            page = render_html(conn, schema, {pipeline: None})
            conn.execute(sql.SQL("insert into {} (triggered_by, report, html, dag_id, run_id, pipeline) "
                                 "values (%s, %s, %s, %s, %s, %s)").format(reports),
                         (triggered_by, f"HTML report of {pipeline}", page, dag_id, run_id, pipeline))
            html_chars += len(page)
        stored_runs = []
        for pipeline, source_run in source_runs:
            run = conn.execute(sql.SQL("select partition_start from {} where pipeline = %s and run_id = %s "
                                       "and status = any(%s)").format(db.qualified(schema, "runs")),
                               (pipeline, source_run, list(LOADED_STATUSES))).fetchone()
            if run is None or pipeline not in published:
                continue
            run_page = render_html(conn, schema, {pipeline: run[0]}, run_about(pipeline, source_run, run[0]))
            conn.execute(sql.SQL("insert into {} (triggered_by, report, html, dag_id, run_id, pipeline, "
                                 "partition_start) values (%s, %s, %s, %s, %s, %s, %s)").format(reports),
                         (triggered_by, f"HTML report of {pipeline} run {source_run}", run_page, pipeline,
                          source_run, pipeline, run[0]))
            stored_runs.append(source_run)
    return {"report_id": report_id, "chars": len(text), "html_chars": html_chars, "pipelines": published,
            "triggered_by": triggered_by, "pipeline_runs": stored_runs}


def store_reports(specs: list[PipelineSpec], conninfo_of: Callable[[str], str], triggered_by: list[str],
                  dag_id: str, run_id: str, source_runs: list[tuple[str, str]]) -> list[dict[str, object]]:
    """:func:`store_report` in each sink of ``specs`` (``conninfo_of(sink.conn_id)``, ``sink.schema``) for the
    pipelines that load into it."""
    sinks: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        sinks.setdefault((spec.sink.conn_id, spec.sink.schema_), []).append(spec.name)
    return [store_report(conninfo_of(conn_id), triggered_by, schema, dag_id, run_id,
                         [r for r in source_runs if r[0] in names], names)
            for (conn_id, schema), names in sorted(sinks.items())]
