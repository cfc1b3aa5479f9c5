"""What changed against the previous partition: sentences built only from measured figures, each with its n.

The previous partition is the latest one in the insight tables that ends at or before this one's start. Compared:
the target metric's mean per segment value (the largest relative changes), each label set's mix, and the strongest
driver. Without a previous partition there is nothing to compare, and no sentence.
"""

from __future__ import annotations

from psycopg import sql

from lm_insights.core.partition import Partition, staging_table
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

MAX_SEGMENT_CHANGES = 3  # sentences about segment means (largest relative change first)


def previous_partition(spec: PipelineSpec, conn, partition: Partition):
    """The start of the latest loaded partition that ends at or before ``partition`` starts, or None."""
    summaries = f"{spec.name}_summaries"
    if not db.table_exists(conn, spec.sink.schema_, summaries):
        return None
    return conn.execute(sql.SQL(
        "select max(partition_start) from {} where coalesce(partition_end, partition_start + interval '1 day') "
        "<= %s").format(db.qualified(spec.sink.schema_, summaries)), (partition.start,)).fetchone()[0]


def segment_changes(spec: PipelineSpec, conn, partition: Partition, previous) -> list[str]:
    rows = conn.execute(sql.SQL(
        "select n.segment, n.segment_value, n.mean, n.row_count, p.mean, p.row_count from {now} as n "
        "join {past} as p using (segment, segment_value, metric) where n.metric = %s and p.partition_start = %s "
        "and n.row_count > 0 and p.row_count > 0 and p.mean <> 0 "
        "order by abs(n.mean - p.mean) / abs(p.mean) desc, n.segment, n.segment_value limit %s").format(
        now=staging_table(spec, partition, "segments"), past=db.qualified(spec.sink.schema_, f"{spec.name}_segments")),
        (spec.target, previous, MAX_SEGMENT_CHANGES)).fetchall()
    return [f"{spec.target} in {segment.split(':', 1)[-1]} = {value}: mean {mean:.1f} (n = {n}) against "
            f"{past_mean:.1f} (n = {past_n}), {(mean - past_mean) / abs(past_mean):+.1%}."
            for segment, value, mean, n, past_mean, past_n in rows]


def label_mix_changes(spec: PipelineSpec, conn, partition: Partition, previous) -> list[str]:
    sentences = []
    for name in spec.lm.label_sets:
        rows = conn.execute(sql.SQL(
            "with n as (select segment_value, row_count, sum(row_count) over () as total from {now} "
            "where segment = %(segment)s and metric = %(metric)s), "
            "p as (select segment_value, row_count, sum(row_count) over () as total from {past} "
            "where segment = %(segment)s and metric = %(metric)s and partition_start = %(previous)s) "
            "select coalesce(n.segment_value, p.segment_value), coalesce(n.row_count, 0), max(n.total) over (), "
            "coalesce(p.row_count, 0), max(p.total) over () from n full join p using (segment_value) order by 1").format(
            now=staging_table(spec, partition, "segments"),
            past=db.qualified(spec.sink.schema_, f"{spec.name}_segments")),
            {"segment": f"label:{name}", "metric": spec.target, "previous": previous}).fetchall()
        if not rows or not rows[0][2] or not rows[0][4]:
            continue
        mix = "; ".join(f"{label} {count / total:.0%} (against {past / past_total:.0%})"
                        for label, count, total, past, past_total in rows)
        sentences.append(f"The {name} mix over {rows[0][2]} rows (against {rows[0][4]}): {mix}.")
    return sentences


def driver_change(spec: PipelineSpec, conn, partition: Partition, previous) -> list[str]:
    query = "select field, method, n from {} where {} order by importance desc, field limit 1"
    now = conn.execute(sql.SQL(query).format(staging_table(spec, partition, "drivers"), sql.SQL("true"))).fetchone()
    past = conn.execute(sql.SQL(query).format(db.qualified(spec.sink.schema_, f"{spec.name}_drivers"),
                                              sql.SQL("partition_start = %s")), (previous,)).fetchone()
    if not now or not past:
        return []
    if now[0] == past[0]:
        return [f"The strongest driver of {spec.target} is still {now[0]} ({now[1]}, n = {now[2]}; before: "
                f"{past[1]}, n = {past[2]})."]
    return [f"The strongest driver of {spec.target} changed from {past[0]} ({past[1]}, n = {past[2]}) to {now[0]} "
            f"({now[1]}, n = {now[2]})."]


def changes_summary(spec: PipelineSpec, conn, partition: Partition) -> list[str]:
    """Sentences on what changed against the previous partition (staging figures against loaded ones)."""
    previous = previous_partition(spec, conn, partition)
    if previous is None:
        return []
    sentences = [*segment_changes(spec, conn, partition, previous), *label_mix_changes(spec, conn, partition, previous),
                 *driver_change(spec, conn, partition, previous)]
    return [f"Since the partition of {previous.date()}:", *sentences] if sentences else []
