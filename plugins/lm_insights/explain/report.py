"""A plain-text report of the insight tables: recent runs, then per pipeline its headline findings (the
significant ones of ``<pipeline>_findings`` by rank), its latest summary and segment table."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from lm_insights.runtime import db

DEFAULT_SCHEMA = "insights"
FINDING_FIELDS = ("kind", "subject", "target", "effect", "effect_measure", "ci_low", "ci_high", "p_value", "q_value",
                  "n", "significant", "rank", "sentence")
SIGNIFICANCE = ("Significant: the finding's q-value (its p-value adjusted for everything tested in the partition, "
                "Benjamini-Hochberg) is at most the spec's insights.fdr (default 0.05), its effect reaches "
                "insights.min_effect and each group compared has insights.min_group_rows rows; anything else could "
                "be chance. Change these in the pipeline's spec (docs/findings.md).")


@dataclass(frozen=True)
class Finding:
    """A row of ``<pipeline>_findings``."""
    kind: str
    subject: str
    target: str
    effect: float | None
    effect_measure: str
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    q_value: float | None
    n: int | None
    significant: bool
    rank: int | None
    sentence: str

    def interval(self) -> str:
        return interval_text(self.ci_low, self.ci_high)


def interval_text(low: float | None, high: float | None) -> str:
    """A 95% interval as "low to high" (empty when it was not measured)."""
    return "" if low is None or high is None else f"{low:.3g} to {high:.3g}"


def read_findings(conn, schema: str, name: str, partition) -> list[Finding] | None:
    """The partition's findings, significant ones first by rank, then by q-value; None when the pipeline has no
    findings table (runs from before findings were tested)."""
    if not db.table_exists(conn, schema, f"{name}_findings"):
        return None
    rows = conn.execute(sql.SQL(
        "select {} from {} where partition_start = %s order by significant desc nulls last, rank nulls last, "
        "q_value nulls last, p_value nulls last, kind, subject").format(
        db.columns_sql(list(FINDING_FIELDS)), db.qualified(schema, f"{name}_findings")), (partition,)).fetchall()
    return [Finding(*row[:10], bool(row[10]), *row[11:]) for row in rows]


def findings_text(findings: list[Finding] | None, schema: str, name: str, shown: int = 10) -> list[str]:
    """The headline lines of the text report: the significant findings by rank, or why there are none."""
    if findings is None:
        return [f"No findings table ({schema}.{name}_findings): this partition was analysed before findings were "
                "tested; its summary below is not checked for significance."]
    significant = [f for f in findings if f.significant]
    if not findings:
        return ["Nothing stands out: no figure was tested in this partition."]
    if not significant:
        return [f"Nothing stands out: none of the {len(findings)} figures tested is significant.", SIGNIFICANCE]
    # a numbered list, not a table: a sentence is too long for a column that every other row is padded to
    lines = [f"{f.rank}. [{f.kind}] {f.sentence} ({f.effect_measure}"
             + (f" {f.effect:.3g}" if f.effect is not None else "")
             + (f", 95% CI {f.interval()}" if f.interval() else "")
             + (f", q = {f.q_value:.2g}" if f.q_value is not None else "") + ")" for f in significant[:shown]]
    return ["Headline findings (significant, strongest first):", *lines,
            f"{len(findings) - len(significant)} other figures tested are not significant. {SIGNIFICANCE}"]


def table(headers: list[str], rows: list[tuple]) -> str:
    """Fixed-width text table."""
    cells = [headers] + [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def pipelines(conn, schema: str) -> list[str]:
    """The pipelines with a successful run and a summaries table, by name."""
    if not db.table_exists(conn, schema, "runs"):
        return []
    rows = conn.execute(sql.SQL("select distinct pipeline from {} where status = 'success' order by 1")
                        .format(db.qualified(schema, "runs"))).fetchall()
    return [p for (p,) in rows if db.table_exists(conn, schema, f"{p}_summaries")]


def render_text(conn, schema: str = DEFAULT_SCHEMA) -> str:
    """The report as text: runs, then per pipeline the latest partition's summary and segments."""
    names = pipelines(conn, schema)
    if not names:
        return f"No successful runs in {schema}.runs yet."
    runs = conn.execute(sql.SQL(
        "select pipeline, partition_start::date, status, extracted, rejected, cached, computed, loaded "
        "from {} order by recorded_at desc limit 12").format(db.qualified(schema, "runs"))).fetchall()
    parts = ["== Recent runs (insights.runs) ==",
             table(["pipeline", "partition", "status", "extracted", "rejected", "cached", "computed", "loaded"],
                   runs)]
    for name in names:
        latest = conn.execute(sql.SQL("select max(partition_start) from {}").format(
            db.qualified(schema, f"{name}_summaries"))).fetchone()[0]
        summary = conn.execute(sql.SQL("select summary from {} where partition_start = %s").format(
            db.qualified(schema, f"{name}_summaries")), (latest,)).fetchone()[0]
        segments = conn.execute(sql.SQL(
            "select segment, segment_value, metric, row_count, mean, variance, stddev from {} "
            "where partition_start = %s order by segment, segment_order, segment_value, metric").format(
            db.qualified(schema, f"{name}_segments")), (latest,)).fetchall()
        drivers = conn.execute(sql.SQL(
            "select field, importance, direction, method from {} where partition_start = %s "
            "order by importance desc limit 5").format(db.qualified(schema, f"{name}_drivers")), (latest,)).fetchall()
        parts += [f"\n== {name}, partition {latest.date()} ==",
                  *findings_text(read_findings(conn, schema, name, latest), schema, name), "", summary, "",
                  table(["segment", "value", "metric", "count", "mean", "variance", "stddev"], segments), "",
                  table(["driver", "importance", "direction", "method"], drivers)]
        # pipelines with trained heads (lm.heads); the guard's check rows share the table and have no head
        if "head" in db.table_columns(conn, schema, f"{name}_quality"):
            quality = conn.execute(sql.SQL(
                "select head, head_version, model, rows, coverage, accuracy, macro_f1, mae, r2 from {} "
                "where partition_start = %s and head is not null order by head, model <> 'head', model").format(
                db.qualified(schema, f"{name}_quality")), (latest,)).fetchall()
            parts += ["", table(["head", "version", "model", "rows", "coverage", "accuracy", "macro_f1", "mae", "r2"],
                                quality)]
    return "\n".join(parts)
