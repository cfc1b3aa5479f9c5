"""Insights: join what the LM said back onto the source rows, then measure segments, drivers and a summary.

Everything is computed inside PostgreSQL from the staging tables (memory does not grow with the partition);
the summary is a paragraph assembled from those figures only, with no text generation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from psycopg import sql

from lm_insights.core.cache import CacheKey, cache_table
from lm_insights.core.partition import (STAGING_SCHEMA, Partition, replace_staging_table, staging_name,
                                        staging_table)
from lm_insights.core.sql_expressions import UNKNOWN_SEGMENT, finite, is_numeric, segment_expressions
from lm_insights.core.texts import lm_texts
from lm_insights.explain.changes import changes_summary
from lm_insights.explain.clusters import CLUSTER_SEGMENT, build_clusters, clusters_summary
from lm_insights.explain.rules import build_rules, rules_summary
from lm_insights.explain.similar import ensure_similarity_index
from lm_insights.explain.words import create_explanations_table
from lm_insights.learn import quality as head_quality
from lm_insights.learn.heads import head_columns, output_suffixes
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

MAX_CATEGORIES = 20  # a text column with more distinct values is free text, not a categorical driver
MIN_GROUP_ROWS = 5  # a categorical value needs this many rows to be named as the one with the highest target


class InferenceIncomplete(RuntimeError):
    """Some texts have no cached LM result: an infer shard did not finish."""


@dataclass(frozen=True)
class Driver:
    field: str
    importance: float  # |Pearson r| for numeric fields, eta squared for categorical ones
    direction: str  # how the target moves as the field grows, or which value has the highest target mean
    method: str
    n: int


def label_columns(spec: PipelineSpec) -> list[sql.Composable]:
    """``<set>_label``, ``<set>_score``, ``<set>_margin``, ``<set>_entropy`` for every label set, read from the
    cached JSON."""
    parts = []
    for name in spec.lm.label_sets:
        for field, cast in (("label", "text"), ("score", "double precision"), ("margin", "double precision"),
                            ("entropy", "double precision")):
            parts.append(sql.SQL("(c.labels -> {} ->> {})::{} as {}").format(
                sql.Literal(name), sql.Literal(field), sql.SQL(cast), sql.Identifier(f"{name}_{field}")))
    return parts


def build_rows(spec: PipelineSpec, conn, partition: Partition, key: CacheKey) -> int:
    """Staging ``rows``: one row per valid source row with its text, LM labels, scores and truncation flag."""
    target = staging_table(spec, partition, "rows")
    texts = staging_table(spec, partition, "texts")
    missing = conn.execute(
        sql.SQL("select count(*) from ({texts}) as t where not exists (select from {cache} as c "
                "where c.model_key = %s and c.head_version = %s and c.template_version = %s "
                "and c.text_sha256 = t.text_sha256)").format(texts=lm_texts(spec, partition), cache=cache_table(spec)),
        (key.model_key, key.head_version, key.template_version),
    ).fetchone()[0]
    if missing:
        raise InferenceIncomplete(
            f"{spec.name} {partition}: {missing} texts have no LM result for model {key.model_key}; "
            "rerun the infer shards of this run"
        )
    selected = [sql.SQL("%(partition_start)s::timestamptz as partition_start"), sql.SQL("e._row_number")]
    selected += [sql.Identifier("e", c) for c in spec.row_columns]
    selected += [sql.SQL("t.text"), sql.SQL("t.text_sha256"), *label_columns(spec), *head_columns(spec),
                 sql.SQL("c.n_tokens"), sql.SQL("c.truncated")]
    attributions = []
    if spec.lm.attributions:
        build_attributions(spec, conn, partition, key)
        attributions = attribution_joins(spec, partition)
    selected += [sql.SQL("{}.field as {}, {}.effect as {}").format(
        sql.Identifier(f"a_{name}"), sql.Identifier(f"{name}_top_field"),
        sql.Identifier(f"a_{name}"), sql.Identifier(f"{name}_top_effect")) for name, _ in attributions]
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    conn.execute(
        sql.SQL(
            "create table {target} as select {selected} from {extracted} as e "
            "join {texts} as t using (_row_number) "
            "join {cache} as c on c.text_sha256 = t.text_sha256 and c.model_key = %(model_key)s "
            "and c.head_version = %(head_version)s and c.template_version = %(template_version)s "
            "{attributions} order by e._row_number"
        ).format(target=target, selected=sql.SQL(", ").join(selected),
                 extracted=staging_table(spec, partition, "extracted"), texts=texts, cache=cache_table(spec),
                 attributions=sql.SQL(" ").join(join for _, join in attributions)),
        {"partition_start": partition.start, **vars(key)},
    )
    return conn.execute(sql.SQL("select count(*) from {}").format(target)).fetchone()[0]


def build_attributions(spec: PipelineSpec, conn, partition: Partition, key: CacheKey) -> None:
    """Staging ``attributions``: per row and label set, the text column whose occlusion lowers its best label most.

    effect = cosine of the row's text to its best label's prototype minus the same cosine with the column's value
    replaced by "unknown": how much that column's value supports the label. Set-based (hash joins), so it stays
    linear in the partition size.
    """
    target = replace_staging_table(conn, spec, partition, "attributions", sql.SQL(
        "as select distinct on (o._row_number, s.name) o._row_number, s.name as label_set, o.field, "
        "(rc.labels -> s.name -> 'scores' ->> (rc.labels -> s.name ->> 'best'))::float8 "
        "- (oc.labels -> s.name -> 'scores' ->> (rc.labels -> s.name ->> 'best'))::float8 as effect "
        "from {occlusions} as o join {texts} as t using (_row_number) "
        "join {cache} as rc on rc.text_sha256 = t.text_sha256 and rc.model_key = %(model_key)s "
        "and rc.head_version = %(head_version)s and rc.template_version = %(template_version)s "
        "join {cache} as oc on oc.text_sha256 = o.text_sha256 and oc.model_key = %(model_key)s "
        "and oc.head_version = %(head_version)s and oc.template_version = %(template_version)s "
        "cross join unnest(%(label_sets)s::text[]) as s(name) "
        "order by o._row_number, s.name, effect desc, o.field"
    ).format(occlusions=staging_table(spec, partition, "occlusions"), texts=staging_table(spec, partition, "texts"),
             cache=cache_table(spec)), {**vars(key), "label_sets": list(spec.lm.label_sets)})
    conn.execute(sql.SQL("alter table {} add primary key (_row_number, label_set)").format(target))


def attribution_joins(spec: PipelineSpec, partition: Partition) -> list[tuple[str, sql.Composable]]:
    """Per label set, a join of the row's entry in staging ``attributions``."""
    return [(name, sql.SQL("left join {table} as {alias} on {alias}._row_number = e._row_number "
                           "and {alias}.label_set = {name}").format(
        table=staging_table(spec, partition, "attributions"), alias=sql.Identifier(f"a_{name}"),
        name=sql.Literal(name))) for name in spec.lm.label_sets]


def build_segments(spec: PipelineSpec, conn, partition: Partition, clustered: bool = False) -> None:
    """Staging ``segments``: count, mean, variance, stddev, min, max of every metric per segment value
    (with ``clustered``, also per discovered cluster)."""
    target = staging_table(spec, partition, "segments")
    rows = staging_table(spec, partition, "rows")
    selects = []
    segments = [(s.name, *segment_expressions(s)) for s in spec.insights.segments]
    if clustered:
        segments.append((CLUSTER_SEGMENT, sql.SQL("coalesce(cluster_name, {})").format(sql.Literal(UNKNOWN_SEGMENT)),
                         sql.SQL("coalesce(cluster, 0)")))
    for name, value, order in segments:
        for metric in spec.insights.metrics:
            m = finite(sql.Identifier(metric))
            selects.append(sql.SQL(
                "select {segment} as segment, {value} as segment_value, min({order}) as segment_order, "
                "{metric_name} as metric, count({m}) as row_count, avg({m})::float8 as mean, "
                "var_samp({m})::float8 as variance, stddev_samp({m})::float8 as stddev, "
                "min({m})::float8 as min, max({m})::float8 as max from {rows} group by 2"
            ).format(segment=sql.Literal(name), value=value, order=order,
                     metric_name=sql.Literal(metric), m=m, rows=rows))
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    conn.execute(sql.SQL(
        "create table {target} as select %(partition_start)s::timestamptz as partition_start, s.* "
        "from ({union}) as s order by segment, segment_order, segment_value, metric"
    ).format(target=target, union=sql.SQL(" union all ").join(selects)), {"partition_start": partition.start})


def numeric_driver(conn, rows: sql.Composable, field: str, target: str) -> Driver | None:
    r, n = conn.execute(sql.SQL("select corr({x}, {y}), count(*) filter (where {x} is not null and {y} is not null) "
                                "from {rows}").format(x=finite(sql.Identifier(field)), y=finite(sql.Identifier(target)),
                                                      rows=rows)).fetchone()
    if r is None or not math.isfinite(r):
        return None
    direction = f"{target} rises as {field} rises" if r > 0 else f"{target} falls as {field} rises"
    return Driver(field, abs(r), direction, f"pearson r = {r:+.3f}", n)


def categorical_driver(conn, rows: sql.Composable, field: str, target: str) -> Driver | None:
    """Correlation ratio (eta squared): the share of the target's variance explained by the field's values."""
    eta2, top, n, groups = conn.execute(sql.SQL(
        "with g as (select {x} as v, count(*) as n, avg({y})::float8 as m from {rows} "
        "where {x} is not null and {y} is not null group by 1), "
        "t as (select avg({y})::float8 as m, var_pop({y})::float8 * count({y}) as ss from {rows} "
        "where {x} is not null and {y} is not null) "
        "select sum(g.n * (g.m - t.m) ^ 2) / nullif(t.ss, 0), "
        "(select v::text from g where n >= %(min_rows)s order by m desc limit 1), "
        "sum(g.n), count(*) from g, t group by t.ss"
    ).format(x=sql.Identifier(field), y=finite(sql.Identifier(target)), rows=rows),
        {"min_rows": MIN_GROUP_ROWS}).fetchone() or (None, None, 0, 0)
    if eta2 is None or top is None or groups < 2 or groups > MAX_CATEGORIES or groups > n / 2:
        return None
    return Driver(field, float(eta2), f"highest {target} when {field} = {top}", "eta squared", int(n))


def measure_drivers(spec: PipelineSpec, conn, partition: Partition) -> list[Driver]:
    """Importance and direction of each source column and LM label for the spec's target metric."""
    rows = staging_table(spec, partition, "rows")
    types = db.table_columns(conn, STAGING_SCHEMA, staging_name(spec, partition, "rows"))
    # Other metrics are outcomes like the target (revenue = price x units), not factors that drive it.
    skip = {*spec.source.key, spec.source.partition_column, *spec.insights.metrics, "_row_number",
            "partition_start", "text", "text_sha256", "n_tokens", "cluster"}
    # A head trained to predict the target explains it by construction: it is measured in <pipeline>_quality.
    skip |= {f"{name}_label" for name, head in spec.lm.heads.items() if head.target == spec.target}
    drivers = []
    for field, type_name in types.items():
        if (field in skip or type_name == "boolean"
                or field.endswith(("_score", "_margin", "_entropy", "_top_field", "_top_effect", *output_suffixes()))):
            continue
        measure = numeric_driver if is_numeric(type_name) else categorical_driver
        driver = measure(conn, rows, field, spec.target)
        if driver:
            drivers.append(driver)
    return sorted(drivers, key=lambda d: d.importance, reverse=True)


def build_drivers(spec: PipelineSpec, conn, partition: Partition) -> list[Driver]:
    drivers = measure_drivers(spec, conn, partition)
    target = staging_table(spec, partition, "drivers")
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    conn.execute(sql.SQL(
        "create table {} (partition_start timestamptz not null, target text not null, field text not null, "
        "importance double precision not null, direction text not null, method text not null, n bigint not null)"
    ).format(target))
    db.copy_rows(conn, target, ["partition_start", "target", "field", "importance", "direction", "method", "n"],
                 ((partition.start, spec.target, d.field, d.importance, d.direction, d.method, d.n) for d in drivers))
    return drivers


def summarize(spec: PipelineSpec, conn, partition: Partition, drivers: list[Driver], rejected: int) -> str:
    """One paragraph of plain language built from the partition's figures."""
    rows = staging_table(spec, partition, "rows")
    analysed, truncated = conn.execute(
        sql.SQL("select count(*), count(*) filter (where truncated) from {}").format(rows)).fetchone()
    parts = [f"{spec.name} for {partition.describe()}: {analysed} rows analysed, {rejected} rejected by validation"
             + (f", {truncated} {'text' if truncated == 1 else 'texts'} truncated to the model's maximum length."
                if truncated else ".")]
    segments = conn.execute(sql.SQL(
        "select segment, segment_value, row_count, mean, variance from {} where metric = %s "
        "order by segment, segment_order, segment_value").format(staging_table(spec, partition, "segments")),
        (spec.target,)).fetchall()
    by_segment: dict[str, list[str]] = {}
    for segment, value, count, mean, variance in segments:
        if count:
            spread = f", variance {variance:.1f}" if variance is not None else ""
            by_segment.setdefault(segment, []).append(
                f"{value}: {count} {'row' if count == 1 else 'rows'}, mean {mean:.1f}{spread}")
    for segment, items in by_segment.items():
        parts.append(f"{spec.target} by {segment.split(':', 1)[-1]} — " + "; ".join(items) + ".")
    if spec.lm.attributions:
        for name in spec.lm.label_sets:
            field, share = conn.execute(sql.SQL(
                "select {f}, count(*)::float8 / sum(count(*)) over () from {rows} where {f} is not null "
                "group by 1 order by 2 desc, 1 limit 1").format(f=sql.Identifier(f"{name}_top_field"), rows=rows)
            ).fetchone() or (None, 0.0)
            if field:
                parts.append(f"The {name} label rests mostly on {field} (the most influential field in "
                             f"{share:.0%} of rows).")
    if drivers:
        top = drivers[0]
        parts.append(f"Strongest driver of {spec.target}: {top.field} ({top.method}, n = {top.n}); {top.direction}.")
        numeric = [d for d in drivers[1:] if d.method.startswith("pearson")][:2]
        for d in numeric:
            parts.append(f"Also {d.direction} ({d.method}).")
    return " ".join(parts)


def build_insights(spec: PipelineSpec, conninfo: str, partition: Partition, key: CacheKey,
                   rejected: int, heads: dict[str, int] | None = None) -> dict[str, object]:
    """Build staging ``rows``, ``clusters``, ``segments``, ``drivers``, ``rules``, ``summary`` (and ``quality``
    when the spec has trained heads, ``heads`` being the versions the run used); return counts, the summary, the
    quality figures and the seconds of the explain parts (part of the insights step's time)."""
    quality = None
    with db.connect(conninfo) as conn:
        analysed = build_rows(spec, conn, partition, key)
        started = time.monotonic()
        discovery = build_clusters(spec, conn, partition, key)
        ensure_similarity_index(spec, conn, key)
        timings = {"explain_clusters": round(time.monotonic() - started, 3)}
        build_segments(spec, conn, partition, clustered=discovery is not None)
        drivers = build_drivers(spec, conn, partition)
        started = time.monotonic()
        rule_sets = build_rules(spec, conn, partition)
        timings["explain_rules"] = round(time.monotonic() - started, 3)
        create_explanations_table(spec, conn, partition)  # filled by explain.words.explain_partition
        summary = " ".join([summarize(spec, conn, partition, drivers, rejected),
                            *changes_summary(spec, conn, partition),
                            *clusters_summary(discovery, analysed),
                            *rules_summary(rule_sets, spec.explain.rules.min_fidelity)])
        if spec.lm.heads:
            measured = head_quality.build_quality(spec, conn, partition, heads or {})
            summary = " ".join([summary, *head_quality.sentences(spec, measured)])
            quality = head_quality.run_figures(measured)
        target = staging_table(spec, partition, "summary")
        conn.execute(sql.SQL("drop table if exists {}").format(target))
        conn.execute(sql.SQL("create table {} (partition_start timestamptz not null, summary text not null)")
                     .format(target))
        conn.execute(sql.SQL("insert into {} values (%s, %s)").format(target), (partition.start, summary))
    log.info("%s", summary)
    return {"rows": analysed, "drivers": len(drivers), "rules": sum(len(r.rules) for r in rule_sets),
            "summary": summary, "quality": quality, "timings": timings}
