"""What changed against the previous partition: candidate findings, tested like every other claim.

The previous partition is the latest one in the insight tables that ends at or before this one's start. Candidates:
the target's mean over all rows (Welch), each segment value's change against the other rows' change (a
difference of relative changes), each label set's mix (chi-square, Fisher for a
small 2 x 2) and the strongest numeric driver's correlation (Fisher z). They join the partition's other candidates
in one Benjamini-Hochberg family (lm_insights.explain.findings); the summary tells only the significant ones, and
otherwise says "no significant change since <day>". Without a previous partition there is nothing to compare.
"""

from __future__ import annotations

from psycopg import sql

from lm_insights.core.partition import Partition, staging_table
from lm_insights.core.statistics import Groups
from lm_insights.explain import findings
from lm_insights.explain.clusters import CLUSTER_SEGMENT
from lm_insights.explain.findings import ALL_ROWS, Finding
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec


def previous_partition(spec: PipelineSpec, conn, partition: Partition):
    """The start of the latest loaded partition that ends at or before ``partition`` starts, or None."""
    summaries = f"{spec.name}_summaries"
    if not db.table_exists(conn, spec.sink.schema_, summaries):
        return None
    return conn.execute(sql.SQL(
        "select max(partition_start) from {} where coalesce(partition_end, partition_start + interval '1 day') "
        "<= %s").format(db.qualified(spec.sink.schema_, summaries)), (partition.start,)).fetchone()[0]


def _aggregate(conn, rows: sql.Composable, target: str, where: sql.Composable, params=()) -> tuple | None:
    n, mean, variance = conn.execute(sql.SQL(
        "select count(y), avg(y)::float8, coalesce(var_samp(y)::float8, 0) from (select "
        "(case when {t}::float8 in ('NaN', 'Infinity', '-Infinity') then null else {t} end) as y from {rows} "
        "where {where}) as r").format(t=sql.Identifier(target), rows=rows, where=where), params).fetchone()
    return (n, mean, variance) if n else None


def overall_change(spec: PipelineSpec, conn, partition: Partition, previous, day: str) -> list[Finding]:
    now = _aggregate(conn, staging_table(spec, partition, "rows"), spec.target, sql.SQL("true"))
    before = _aggregate(conn, db.qualified(spec.sink.schema_, f"{spec.name}_rows"), spec.target,
                        sql.SQL("partition_start = %s"), (previous,))
    if not now or not before:
        return []
    change = findings.mean_change(ALL_ROWS, spec.target, now, before, day, spec.insights.min_group_rows)
    return [change] if change else []


def segment_groups(conn, table: sql.Composable, target: str, where: sql.Composable = sql.SQL("true"),
                   params=()) -> dict:
    """segment -> ({value: index}, Groups) of the target's per-value aggregates in a segments table (values with
    rows only)."""
    found = conn.execute(sql.SQL(
        "select segment, segment_value, row_count, mean, coalesce(variance, 0) from {} where metric = %s "
        "and row_count > 0 and {} order by segment, segment_order, segment_value").format(table, where),
        (target, *params)).fetchall()
    by_segment: dict[str, list[tuple]] = {}
    for segment, *figures in found:
        by_segment.setdefault(segment, []).append(figures)
    return {segment: ({v[0]: i for i, v in enumerate(values)},
                      Groups([v[1] for v in values], [v[2] for v in values], [v[3] for v in values]))
            for segment, values in by_segment.items()}


def segment_changes(spec: PipelineSpec, conn, partition: Partition, previous, day: str) -> list[Finding]:
    """Per segment value: did the target's mean move more than in the other rows?"""
    now = segment_groups(conn, staging_table(spec, partition, "segments"), spec.target)
    before = segment_groups(conn, db.qualified(spec.sink.schema_, f"{spec.name}_segments"), spec.target,
                             sql.SQL("partition_start = %s"), (previous,))
    changes = []
    for segment in sorted(set(now) & set(before) - {CLUSTER_SEGMENT}):  # a day's clusters are its own
        changes += findings.segment_changes(segment.split(":", 1)[-1], spec.target, *now[segment], *before[segment],
                                            day, spec.insights.min_group_rows)
    return changes


def label_mix_changes(spec: PipelineSpec, conn, partition: Partition, previous, day: str) -> list[Finding]:
    changes = []
    for name in spec.lm.label_sets:
        rows = conn.execute(sql.SQL(
            "with n as (select segment_value, row_count from {now} where segment = %(segment)s "
            "and metric = %(metric)s), "
            "p as (select segment_value, row_count from {past} where segment = %(segment)s and metric = %(metric)s "
            "and partition_start = %(previous)s) "
            "select coalesce(n.segment_value, p.segment_value), coalesce(n.row_count, 0), coalesce(p.row_count, 0) "
            "from n full join p using (segment_value) order by 1").format(
            now=staging_table(spec, partition, "segments"),
            past=db.qualified(spec.sink.schema_, f"{spec.name}_segments")),
            {"segment": f"label:{name}", "metric": spec.target, "previous": previous}).fetchall()
        change = findings.label_mix_change(name, spec.target, [r[0] for r in rows], [r[1] for r in rows],
                                           [r[2] for r in rows], day, spec.insights.min_group_rows)
        changes += [change] if change else []
    return changes


def driver_change(spec: PipelineSpec, conn, previous, drivers: list[Finding], day: str) -> list[Finding]:
    """The strongest numeric driver's r against its r in the previous partition (drivers tables older than the
    ``correlation`` column give nothing to compare)."""
    numeric = sorted((d for d in drivers if d.correlation is not None and " | " not in d.subject),
                     key=lambda d: -d.estimate.variance_share)
    table = f"{spec.name}_drivers"
    if not numeric or "correlation" not in db.table_columns(conn, spec.sink.schema_, table):
        return []
    top = numeric[0]
    past = conn.execute(sql.SQL("select correlation, n from {} where partition_start = %s and field = %s "
                                "and correlation is not null").format(db.qualified(spec.sink.schema_, table)),
                        (previous, top.subject)).fetchone()
    if not past or past[1] <= 3 or top.estimate.n <= 3:
        return []
    return [findings.driver_change(top.subject, spec.target, top.correlation, top.estimate.n, past[0], past[1], day)]


def change_candidates(spec: PipelineSpec, conn, partition: Partition, drivers: list[Finding]):
    """The previous partition's start (or None) and the candidate changes against it."""
    previous = previous_partition(spec, conn, partition)
    if previous is None:
        return None, []
    day = str(previous.date())
    return previous, [*overall_change(spec, conn, partition, previous, day),
                      *segment_changes(spec, conn, partition, previous, day),
                      *label_mix_changes(spec, conn, partition, previous, day),
                      *driver_change(spec, conn, previous, drivers, day)]


def changes_summary(previous, decided: list[Finding]) -> list[str]:
    """"No significant change since <day>." when no change passed; the significant ones are in the headline or
    the findings table."""
    if previous is None:
        return []
    changed = [f for f in decided if f.kind in ("change", "label_mix") and f.significant]
    if not changed:
        return [f"No significant change since {previous.date()}."]
    told = ", ".join(f.subject for f in sorted(changed, key=lambda f: f.rank))
    return [f"Significant changes since {previous.date()}: {told} (figures in the findings table)."]
