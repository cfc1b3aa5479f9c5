"""Insights: join what the LM said back onto the source rows, then measure segments, drivers, findings and a summary.

Aggregates are computed inside PostgreSQL from the staging tables (memory does not grow with the partition); the
statistics on top of them (lm_insights.core.statistics) and the decision which findings are significant
(lm_insights.explain.findings) run on those aggregates. The summary is assembled from the findings only, with no
text generation.
"""

from __future__ import annotations

import logging
import math
import time

from psycopg import sql

from lm_insights.core.cache import CacheKey, cache_table
from lm_insights.core.partition import (STAGING_SCHEMA, Partition, replace_staging_table, staging_name,
                                        staging_table)
from lm_insights.core.sql_expressions import UNKNOWN_SEGMENT, finite, is_numeric, segment_expressions
from lm_insights.core.statistics import Groups
from lm_insights.core.texts import lm_texts
from lm_insights.explain import findings
from lm_insights.explain.changes import change_candidates, changes_summary, segment_groups
from lm_insights.explain.clusters import CLUSTER_SEGMENT, build_clusters, cluster_candidates
from lm_insights.explain.findings import Finding
from lm_insights.explain.rules import build_rules, rule_findings, rules_summary
from lm_insights.explain.similar import ensure_similarity_index
from lm_insights.explain.words import create_explanations_table
from lm_insights.learn import quality as head_quality
from lm_insights.learn.heads import head_columns
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

log = logging.getLogger(__name__)

MAX_CATEGORIES = 20  # a text column with more distinct values is free text, not a categorical driver


class InferenceIncomplete(RuntimeError):
    """Some texts have no cached LM result: an infer shard did not finish."""




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


DRIVER_COLUMNS = ("partition_start", "target", "field", "importance", "direction", "method", "n", "correlation",
                  "ci_low", "ci_high", "p_value", "q_value", "significant")


def driver_fields(spec: PipelineSpec, conn, partition: Partition) -> dict[str, str]:
    """Candidate drivers of the target and their types: the source columns in staging ``rows`` but the key, the
    partition column, the target and the spec's outcomes.

    What the model derived from a row (labels, heads, clusters, attributions) is not a driver: it is computed from
    the row's own text, and a label set's relation to the target is tested as segment findings instead, each value
    against the rest with its own interval (eight clusters over forty rows "explain" 18% of any target by chance).
    """
    types = db.table_columns(conn, STAGING_SCHEMA, staging_name(spec, partition, "rows"))
    skip = {*spec.source.key, spec.source.partition_column, spec.target, *spec.insights.outcomes}
    return {f: types[f] for f in spec.row_columns if f in types and f not in skip and types[f] != "boolean"}


def numeric_driver(conn, rows: sql.Composable, field: str, target: str) -> Finding | None:
    r, n = conn.execute(sql.SQL("select corr({x}, {y}), count(*) filter (where {x} is not null and {y} is not null) "
                                "from {rows}").format(x=finite(sql.Identifier(field)), y=finite(sql.Identifier(target)),
                                                      rows=rows)).fetchone()
    if r is None or not math.isfinite(r) or n < 3:
        return None
    return findings.numeric_driver(field, target, float(r), int(n))


def target_groups(conn, rows: sql.Composable, value: sql.Composable, target: str) -> tuple[list[str], Groups]:
    """Per value of ``value`` (rows where it and the target are present): count, mean and sample variance."""
    found = conn.execute(sql.SQL(
        "select {v}::text, count(*), avg({y})::float8, coalesce(var_samp({y})::float8, 0) from {rows} "
        "where {v} is not null and {y} is not null group by 1 order by 1"
    ).format(v=value, y=finite(sql.Identifier(target)), rows=rows)).fetchall()
    return [f[0] for f in found], Groups([f[1] for f in found], [f[2] for f in found], [f[3] for f in found])


def categorical_driver(conn, rows: sql.Composable, field: str, target: str, min_group_rows: int) -> Finding | None:
    values, groups = target_groups(conn, rows, sql.Identifier(field), target)
    if len(values) > MAX_CATEGORIES or len(values) > groups.n / 2:  # free text, or nearly one row per value
        return None
    return findings.categorical_driver(field, target, values, groups, min_group_rows)


def correlations(conn, rows: sql.Composable, columns: list[str]) -> tuple[dict[tuple[str, str], float], int]:
    """Pairwise Pearson r of ``columns`` over the rows where all of them are present, and that n."""
    present = sql.SQL(" and ").join(sql.SQL("{} is not null").format(finite(sql.Identifier(c))) for c in columns)
    pairs = [(a, b) for i, a in enumerate(columns) for b in columns[i + 1:]]
    found = conn.execute(sql.SQL("select count(*), {corrs} from {rows} where {present}").format(
        corrs=sql.SQL(", ").join(sql.SQL("corr({}, {})").format(finite(sql.Identifier(a)), finite(sql.Identifier(b)))
                                 for a, b in pairs), rows=rows, present=present)).fetchone()
    return {pair: r for pair, r in zip(pairs, found[1:])}, found[0]


def controlled_drivers(spec: PipelineSpec, conn, rows: sql.Composable, drivers: list[Finding]) -> list[Finding]:
    """For the two strongest numeric drivers, when holding one fixed can change what the other says (see
    ``findings.worth_controlling``): does each still explain the target with the other held fixed?"""
    numeric = sorted((d for d in drivers if d.estimate.effect_measure == "r squared"),
                     key=lambda d: -d.estimate.variance_share)[:2]
    if len(numeric) < 2:
        return []
    x, z = numeric[0].subject, numeric[1].subject
    r, n = correlations(conn, rows, [x, z, spec.target])
    r_xy, r_xz, r_zy = r[(x, spec.target)], r[(x, z)], r[(z, spec.target)]
    if None in (r_xy, r_xz, r_zy) or n < 5 or abs(r_xz) >= 1 - 1e-12:
        return []
    if not findings.worth_controlling(numeric[0], numeric[1], r_xz, n, spec.insights.fdr):
        return []
    return [findings.controlled_driver(x, z, spec.target, r_xy, r_xz, r_zy, n),
            findings.controlled_driver(z, x, spec.target, r_zy, r_xz, r_xy, n)]


def driver_candidates(spec: PipelineSpec, conn, partition: Partition) -> list[Finding]:
    """Every source column's effect on the target (r squared or omega squared), and the top numeric pair each
    with the other held fixed."""
    rows = staging_table(spec, partition, "rows")
    drivers = []
    for field, type_name in driver_fields(spec, conn, partition).items():
        if is_numeric(type_name):
            driver = numeric_driver(conn, rows, field, spec.target)
        else:
            driver = categorical_driver(conn, rows, field, spec.target, spec.insights.min_group_rows)
        if driver:
            drivers.append(driver)
    return drivers + controlled_drivers(spec, conn, rows, drivers)


def segment_candidates(spec: PipelineSpec, conn, partition: Partition) -> list[Finding]:
    """Each segment value's target mean against the other rows', from staging ``segments``. A head trained to
    predict the target splits it by construction: how well it does is measured in ``<pipeline>_quality``, not
    published as a finding."""
    candidates = []
    by_construction = {f"label:{name}" for name, head in spec.lm.heads.items() if head.target == spec.target}
    for segment, (values, groups) in segment_groups(conn, staging_table(spec, partition, "segments"),
                                                     spec.target).items():
        if segment == CLUSTER_SEGMENT:  # clusters are told as separated groups or not at all (cluster_candidates)
            continue
        if segment in by_construction:
            continue
        candidates += findings.segment_findings(segment.split(":", 1)[-1], spec.target, list(values), groups,
                                                spec.insights.min_group_rows)
    return candidates


def build_drivers(spec: PipelineSpec, conn, partition: Partition, decided: list[Finding]) -> list[Finding]:
    """Staging ``drivers``: each source column's decided driver finding (controlled pairs stay in findings)."""
    drivers = sorted((f for f in decided if f.kind == "driver" and " | " not in f.subject),
                     key=lambda f: (-f.estimate.variance_share, f.subject))
    stage_rows(spec, conn, partition, "drivers", (
        "partition_start timestamptz not null, target text not null, field text not null, "
        "importance double precision not null, direction text not null, method text not null, n bigint not null, "
        "correlation double precision, ci_low double precision, ci_high double precision, "
        "p_value double precision, q_value double precision, significant boolean not null"), DRIVER_COLUMNS, (
        (partition.start, spec.target, d.subject, d.estimate.variance_share, d.direction, driver_method(d),
         d.estimate.n, d.correlation, d.estimate.ci_low, d.estimate.ci_high, d.estimate.p_value, d.q_value,
         d.significant) for d in drivers))
    return drivers


def stage_rows(spec: PipelineSpec, conn, partition: Partition, step: str, columns_ddl: str, columns, rows) -> None:
    """Staging ``step`` created afresh with ``columns_ddl`` and filled with ``rows`` by COPY."""
    target = staging_table(spec, partition, step)
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    conn.execute(sql.SQL("create table {} ({})").format(target, sql.SQL(columns_ddl)))
    db.copy_rows(conn, target, list(columns), rows)


def driver_method(driver: Finding) -> str:
    if driver.correlation is not None:
        return f"pearson r = {driver.correlation:+.3f}"
    return driver.estimate.effect_measure


def build_findings(spec: PipelineSpec, conn, partition: Partition, decided: list[Finding]) -> None:
    """Staging ``findings``: every candidate with its figures, q-value, significance and rank."""
    stage_rows(spec, conn, partition, "findings", (
        "partition_start timestamptz not null, kind text not null, subject text not null, "
        "target text not null, effect double precision, effect_measure text not null, "
        "ci_low double precision, ci_high double precision, p_value double precision, q_value double precision, "
        "n bigint not null, significant boolean not null, rank integer, sentence text not null"),
        findings.FINDING_COLUMNS, findings.finding_rows(partition.start, decided))


def summarize(spec: PipelineSpec, conn, partition: Partition, decided: list[Finding], rejected: int) -> list[str]:
    """The summary's opening: rows analysed, the headline findings (or "nothing stands out"), and what each label
    set's labels rest on."""
    rows = staging_table(spec, partition, "rows")
    analysed, truncated = conn.execute(
        sql.SQL("select count(*), count(*) filter (where truncated) from {}").format(rows)).fetchone()
    parts = [f"{spec.name} for {partition.describe()}: {analysed} rows analysed, {rejected} rejected by validation"
             + (f", {truncated} {'text' if truncated == 1 else 'texts'} truncated to the model's maximum length."
                if truncated else ".")]
    tested = sum(1 for f in decided if f.tested and f.q_value is not None)
    parts += findings.headline([f for f in decided if f.kind not in ("cluster", "rule")], tested, spec.insights.fdr,
                               spec.insights.min_group_rows)
    if spec.lm.attributions:
        for name in spec.lm.label_sets:
            field, share = conn.execute(sql.SQL(
                "select {f}, count(*)::float8 / sum(count(*)) over () from {rows} where {f} is not null "
                "group by 1 order by 2 desc, 1 limit 1").format(f=sql.Identifier(f"{name}_top_field"), rows=rows)
            ).fetchone() or (None, 0.0)
            if field:
                parts.append(f"The {name} label rests mostly on {field} (the most influential field in "
                             f"{share:.0%} of rows).")
    return parts


def decide_findings(spec: PipelineSpec, conn, partition: Partition, discovery, analysed: int,
                    rules: list[Finding] = ()):
    """Every candidate of the partition (drivers, segments, changes, clusters, the rule sets' ``rules``) decided in
    one family; returns the previous partition's start (or None) and the decided findings."""
    drivers = driver_candidates(spec, conn, partition)
    previous, changes = change_candidates(spec, conn, partition, drivers)
    candidates = [*drivers, *segment_candidates(spec, conn, partition), *changes, *rules,
                  *cluster_candidates(spec, discovery, analysed)]
    minimum = spec.insights.min_effect
    thresholds = findings.Thresholds(spec.insights.fdr, minimum.variance_share, minimum.relative_difference,
                                     minimum.proportion_difference)
    return previous, findings.decide(candidates, thresholds)


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
        started = time.monotonic()
        rule_sets = build_rules(spec, conn, partition)
        timings["explain_rules"] = round(time.monotonic() - started, 3)
        rules = [findings.rule_finding(row) for row in rule_findings(rule_sets, partition)]
        previous, decided = decide_findings(spec, conn, partition, discovery, analysed, rules)
        drivers = build_drivers(spec, conn, partition, decided)
        build_findings(spec, conn, partition, decided)
        create_explanations_table(spec, conn, partition)  # filled by explain.words.explain_partition
        summary = " ".join([*summarize(spec, conn, partition, decided, rejected),
                            *changes_summary(previous, decided),
                            *(f.sentence for f in decided if f.kind == "cluster"),
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
    return {"rows": analysed, "drivers": len(drivers), "findings": sum(f.significant for f in decided),
            "rules": sum(len(r.rules) for r in rule_sets),
            "summary": summary, "quality": quality, "timings": timings}
