"""Drift gates in a run: measure the staged partition against the loaded rows of a trailing window, record every
figure in ``<pipeline>_quality`` and ``runs.guard``, then load, flag, hold or refuse the partition.

A held partition sits in ``<pipeline>_quarantine_<table>`` (same shape as the insight tables) while the published
tables keep what they had; :func:`release` moves it over in one transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

import numpy as np
from psycopg import sql

from lm_insights.core.cache import CacheKey
from lm_insights.core.insight_tables import (HELD_TABLES, forget_replaced, held_intervals, insight_table,
                                             quarantine_table, replace_interval, replaced_within, widen_columns)
from lm_insights.core.sql_expressions import finite, segment_expressions
from lm_insights.guard import drift, flags
from lm_insights.guard.drift import Check
from lm_insights.guard.outputs import check_outputs
from lm_insights.learn import models
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec
from lm_insights.core.partition import Partition, staging_table

log = logging.getLogger(__name__)

QUALITY_COLUMNS = ("run_id", "partition_start", "partition_end", "check", "subject", "figure", "threshold",
                   "action", "passed", "details")
GATES = ("label_mix", "metric_drift", "embedding_drift", "flag_share")
FLAGS_WITH_SHARES = ("toxic", "inconsistent")  # their share of the rows: in runs, the summary and the flag_share gate
CHECKS = (*GATES, "row_flags", "output_expectation")


class GuardFailed(ValueError):
    """A gate with action ``fail`` tripped: nothing was loaded, and a retry would trip it again."""


class NothingQuarantined(ValueError):
    """``release`` found no held partition in the days asked for."""


@dataclasses.dataclass
class Verdict:
    action: str  # load | warn | quarantine | fail
    checks: list[Check]
    row_flags: dict[str, int] = dataclasses.field(default_factory=dict)  # rows per flag, and "rows"
    ood_reference: dict | None = None  # what the ood flag was measured against (flags.OodReference.describe)

    def share(self, flag: str) -> float | None:
        """The share of the partition's rows flagged ``flag`` (None without rows)."""
        rows = self.row_flags.get("rows")
        return self.row_flags.get(flag, 0) / rows if rows else None

    @property
    def status(self) -> str:
        """What ``runs.status`` says once the partition is handled."""
        return "quarantined" if self.action == "quarantine" else "success"

    def flags(self) -> dict:
        """What ``runs.guard`` keeps: the action, each tripped gate in a sentence, the row flags' counts and the
        OOD reference."""
        return {"action": self.action, "checks": len(self.checks), "row_flags": self.row_flags,
                "ood_reference": self.ood_reference,
                "tripped": [c.sentence() for c in self.checks if c.tripped],
                "skipped": [c.check for c in self.checks if c.passed is None and c.check != "row_flags"]}


def sha256_of(column: str) -> sql.Composable:
    """The ``lm_cache.text_sha256`` of a text column, computed in SQL."""
    return sql.SQL("encode(sha256(convert_to({}, 'UTF8')), 'hex')").format(sql.Identifier(column))


def reference_filter(spec: PipelineSpec, partition: Partition) -> tuple[sql.Composable, dict]:
    """Published rows whose partition-column value lies in the ``window_days`` before the partition."""
    where = sql.SQL("{part} >= %(ref_start)s and {part} < %(ref_end)s").format(
        part=sql.Identifier(spec.source.partition_column))
    return where, {"ref_start": partition.start - dt.timedelta(days=spec.guard.window_days),
                   "ref_end": partition.start}


def label_counts(conn, table: sql.Composable, where: sql.Composable, params: dict, label_set: str) -> dict[str, int]:
    rows = conn.execute(sql.SQL("select coalesce({c}, 'unknown'), count(*) from {t} where {w} group by 1").format(
        c=sql.Identifier(f"{label_set}_label"), t=table, w=where), params).fetchall()
    return {label: n for label, n in rows}


def segment_moments(spec: PipelineSpec, conn, table: sql.Composable, where: sql.Composable, params: dict,
                    metric: str) -> dict[str, drift.Moments]:
    """Per segment of every ``insights.segments`` entry: rows, mean and sd of ``metric`` (finite values)."""
    value = finite(sql.Identifier(metric))
    moments = {}
    for segment in spec.insights.segments:
        name = segment_expressions(segment)[0]
        for key, n, mean, sd in conn.execute(sql.SQL(
                "select {name}, count({v}), avg({v})::float8, stddev_samp({v})::float8 from {t} where {w} group by 1"
        ).format(name=name, v=value, t=table, w=where), params):
            moments[f"{segment.name}={key}"] = drift.Moments(n, mean, sd)
    return moments


def embeddings(spec: PipelineSpec, conn, table: sql.Composable, where: sql.Composable, params: dict,
               model_key: str) -> np.ndarray:
    """The cached embeddings of the distinct texts of ``table`` (up to ``max_sample_rows``, in hash order)."""
    rows = conn.execute(sql.SQL(
        "select distinct on (c.text_sha256) c.embedding::real[] from "
        "(select distinct {sha} as text_sha256 from {t} where {w} order by 1 limit %(limit)s) as t "
        "join {cache} as c using (text_sha256) where c.model_key = %(model_key)s and c.embedding is not null "
        "order by c.text_sha256").format(sha=sha256_of("text"), t=table, w=where,
                                         cache=db.qualified(spec.sink.schema_, "lm_cache")),
        {**params, "limit": spec.guard.max_sample_rows, "model_key": model_key}).fetchall()
    return np.array([r[0] for r in rows], dtype=np.float32).reshape(len(rows), -1)


def reference_rows(spec: PipelineSpec, conn, partition: Partition) -> int:
    """How many loaded rows the reference window holds."""
    if not db.table_exists(conn, spec.sink.schema_, f"{spec.name}_rows"):
        return 0
    where, params = reference_filter(spec, partition)
    return conn.execute(sql.SQL("select count(*) from {} where ").format(insight_table(spec, "rows")) + where,
                        params).fetchone()[0]


def reference_embeddings(spec: PipelineSpec, conn, partition: Partition, model_key: str) -> np.ndarray:
    """The reference window's embeddings (none without a reference or without kept embeddings)."""
    if not spec.lm.embeddings or reference_rows(spec, conn, partition) < spec.guard.min_reference_rows:
        return np.empty((0, 0), dtype=np.float32)
    where, params = reference_filter(spec, partition)
    return embeddings(spec, conn, insight_table(spec, "rows"), where, params, model_key)


def head_reference(spec: PipelineSpec, conn, heads: dict[str, int], cards: dict[str, dict],
                   model_key: str) -> flags.OodReference | None:
    """The training-embedding sample of the first head (by name) of the run's versions ``heads`` (``cards``: theirs)
    that stored one from this run's encoder; None when no head has one."""
    for name in sorted(cards):
        stored = cards[name].get("ood_reference") or {}
        if stored.get("encoder") != model_key:
            continue
        vectors = models.ood_reference(conn, spec, name, heads[name])
        if vectors is None or len(vectors) < 2:
            continue
        threshold = (stored["threshold"] if stored.get("quantile") == spec.guard.ood_quantile
                     else flags.self_distance_threshold(vectors, spec.guard.ood_quantile))
        return flags.OodReference("head", vectors, threshold,
                                  {"head": name, "version": heads[name], "training_rows": stored.get("of"),
                                   "quantile": spec.guard.ood_quantile})
    return None


def measure(spec: PipelineSpec, conn, partition: Partition, model_key: str, reference: np.ndarray) -> list[Check]:
    """Every enabled gate's check of the staged partition against the reference window (``reference``: its
    embeddings), the family-wise error rate held over all of them (:func:`drift.control_family`)."""
    guard = spec.guard
    published = insight_table(spec, "rows")
    staged, everything = staging_table(spec, partition, "rows"), sql.SQL("true")
    where, params = reference_filter(spec, partition)
    reference_count = reference_rows(spec, conn, partition)
    gates = [(name, getattr(guard, name)) for name in GATES if getattr(guard, name)]
    if reference_count < guard.min_reference_rows:
        reason = (f"{reference_count} loaded rows in the {guard.window_days} days before the partition; the gates "
                  f"need {guard.min_reference_rows}")
        return [Check(name, "reference", None, _threshold(gate), gate.action, None, {"skipped": reason})
                for name, gate in gates]
    checks = []
    if guard.label_mix:
        for name in spec.lm.label_sets:
            checks.append(drift.label_mix(name, label_counts(conn, published, where, params, name),
                                          label_counts(conn, staged, everything, {}, name),
                                          guard.label_mix.psi, guard.label_mix.p_value, guard.label_mix.action))
    if guard.metric_drift:
        for metric in spec.insights.metrics:
            checks.append(drift.metric_drift(
                metric, segment_moments(spec, conn, published, where, params, metric),
                segment_moments(spec, conn, staged, everything, {}, metric),
                guard.metric_drift.effect_size, guard.metric_drift.p_value, guard.metric_drift.action))
    if guard.embedding_drift:
        gate = guard.embedding_drift
        checks.append(drift.embedding_drift(reference, embeddings(spec, conn, staged, everything, {}, model_key),
                                            gate.roc_auc, gate.p_value, gate.action))
    if guard.flag_share:
        for flag in measured_share_flags(spec):
            checks.append(drift.flag_share(flag, flagged_rows(conn, published, where, params, flag),
                                           flagged_rows(conn, staged, everything, {}, flag),
                                           guard.flag_share.increase, guard.flag_share.p_value, guard.flag_share.action))
    return drift.control_family(checks)


def measured_share_flags(spec: PipelineSpec) -> list[str]:
    """The flags of FLAGS_WITH_SHARES the spec measures: ``toxic`` with ``guard.toxicity``, ``inconsistent`` with a
    classification head."""
    measured = {"toxic": spec.guard.toxicity is not None,
                "inconsistent": any(h.task == "classification" for h in spec.lm.heads.values())}
    return [flag for flag in FLAGS_WITH_SHARES if measured[flag]]


def flagged_rows(conn, table: sql.Composable, where: sql.Composable, params: dict, flag: str) -> tuple[int, int]:
    """(rows with ``flag`` in their quality_flags, rows) of ``table`` where ``where``."""
    flagged, total = conn.execute(sql.SQL("select count(*) filter (where %(flag)s = any(quality_flags)), count(*) "
                                          "from {} where {}").format(table, where), {**params, "flag": flag}).fetchone()
    return flagged, total


def _threshold(gate) -> float:
    return (getattr(gate, "psi", None) or getattr(gate, "effect_size", None) or getattr(gate, "increase", None)
            or gate.roc_auc)


def row_flag_checks(spec: PipelineSpec, found: dict) -> list[Check]:
    """Per-partition counts of the row flags: rows of ``<pipeline>_quality`` that inform (passed is NULL).
    ``ambiguous`` counts rows with ``low_margin`` or ``high_entropy`` (a row may have both)."""
    counts = found["counts"]
    total = max(counts["rows"], 1)
    thresholds = {"ood": found["ood_threshold"], "high_entropy": spec.guard.max_entropy}
    extra = {"ood": {"reference": found["ood_reference"]}}
    return [Check("row_flags", flag, counts[flag] / total, thresholds.get(flag), "count", None,
                  {"rows": counts[flag], "of": counts["rows"], **extra.get(flag, {})})
            for flag in ("ambiguous", "low_margin", "high_entropy", "ood", *flags.QUALITY_FLAGS)]


def flag_sentences(spec: PipelineSpec, counts: dict[str, int]) -> list[str]:
    """The summary's sentence on toxic and inconsistent rows, when there are any."""
    rows = counts["rows"]
    parts = []
    if counts.get("toxic") and spec.guard.toxicity:
        kept_out = ", kept out of clusters, word explanations and rules" if (
            spec.guard.toxicity.action == "exclude_from_findings") else ""
        parts.append(f"{counts['toxic']} of {rows} rows ({counts['toxic'] / rows:.1%}) have toxic text (toxicity >= "
                     f"{spec.guard.toxicity.threshold:g}{kept_out})")
    if counts.get("inconsistent"):
        targets = ", ".join(sorted({h.target for h in spec.lm.heads.values() if h.task == "classification"}))
        parts.append(f"{counts['inconsistent']} of {rows} rows ({counts['inconsistent'] / rows:.1%}) have a recorded "
                     f"{targets} that the promoted head contradicts with high confidence (flagged inconsistent)")
    return [f"Flags: {'; '.join(parts)}."] if parts else []


def guard_partition(spec: PipelineSpec, conninfo: str, partition: Partition, key: CacheKey,
                    heads: dict[str, int] | None = None) -> Verdict:
    """Flag the staged rows, run the output expectations and the drift gates; a tripped check's sentence goes
    into the staged summary. ``heads``: the promoted head versions the run used (their training rows are the OOD
    reference, their cards give the regression prediction ranges)."""
    heads = heads or {}
    with db.connect(conninfo) as conn:  # commits the flag columns before Great Expectations reads them
        conn.execute("set local time zone 'UTC'")  # a date partition column compares as midnight UTC
        reference = reference_embeddings(spec, conn, partition, key.model_key)
        cards = models.cards(conn, spec, heads)
        ood_reference = (head_reference(spec, conn, heads, cards, key.model_key) if spec.lm.embeddings else None
                         ) or flags.window_reference(spec, reference)
        found = flags.flag_rows(spec, conn, partition, ood_reference, key, conninfo, heads)
        checks = measure(spec, conn, partition, key.model_key, reference)
    checks += check_outputs(spec, conninfo, partition, cards)
    verdict = Verdict(drift.decide(checks), checks + row_flag_checks(spec, found), found["counts"],
                      found["ood_reference"])
    tripped = [c.sentence() for c in checks if c.tripped]
    added = flag_sentences(spec, found["counts"]) + ([f"Guard: {'; '.join(tripped)}."] if tripped else [])
    if added and verdict.action != "fail":
        with db.connect(conninfo) as conn:
            conn.execute(sql.SQL("update {} set summary = summary || %s").format(
                staging_table(spec, partition, "summary")), (" " + " ".join(added),))
    log.info("%s %s guard: %s", spec.name, partition, verdict.flags())
    return verdict


def ensure_quality_table(conn, spec: PipelineSpec) -> sql.Composable:
    """``<pipeline>_quality``: one row per partition x check, shared with other checks (heads' accuracy):
    columns the gates do not write are left nullable."""
    table = insight_table(spec, "quality")
    conn.execute(sql.SQL(
        "create table if not exists {} (run_id text, partition_start timestamptz not null, "
        "partition_end timestamptz, \"check\" text, subject text, figure double precision, "
        "threshold double precision, action text, passed boolean, details jsonb, "
        "recorded_at timestamptz not null default now())").format(table))
    existing = db.table_columns(conn, spec.sink.schema_, f"{spec.name}_quality")
    for column, type_name in (("run_id", "text"), ("partition_end", "timestamptz"), ("check", "text"),
                              ("subject", "text"), ("figure", "double precision"),
                              ("threshold", "double precision"), ("action", "text"), ("passed", "boolean"),
                              ("details", "jsonb")):
        if column not in existing:
            conn.execute(sql.SQL("alter table {} add column {} {}").format(table, sql.Identifier(column),
                                                                         sql.SQL(type_name)))
    for column in set(existing) - set(QUALITY_COLUMNS) - {"recorded_at"}:
        conn.execute(sql.SQL("alter table {} alter column {} drop not null").format(table, sql.Identifier(column)))
    return table


def record_checks(spec: PipelineSpec, conninfo: str, partition: Partition, run_id: str, verdict: Verdict) -> None:
    """Replace the partition's gate rows in ``<pipeline>_quality`` and flag the run in ``runs.guard``."""
    schema = spec.sink.schema_
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, schema)  # also takes the DDL lock until commit
        table = ensure_quality_table(conn, spec)
        conn.execute(sql.SQL("delete from {} where partition_start = %s and partition_end = %s "
                             "and \"check\" = any(%s)").format(table),
                     (partition.start, partition.end, list(CHECKS)))
        db.copy_rows(conn, table, QUALITY_COLUMNS, (
            (run_id, partition.start, partition.end, c.check, c.subject, c.figure, c.threshold, c.action, c.passed,
             json.dumps(c.details, default=str)) for c in verdict.checks))
        conn.execute(sql.SQL(
            "insert into {runs} (run_id, pipeline, partition_start, partition_end, status, guard, toxic_share, "
            "inconsistent_share) values (%s, %s, %s, %s, 'running', %s, %s, %s) on conflict (pipeline, run_id) do "
            "update set guard = excluded.guard, toxic_share = excluded.toxic_share, "
            "inconsistent_share = excluded.inconsistent_share").format(runs=db.qualified(schema, "runs")),
            (run_id, spec.name, partition.start, partition.end, json.dumps(verdict.flags()),
             *(verdict.share(flag) for flag in FLAGS_WITH_SHARES)))


def record_verdict(spec: PipelineSpec, conninfo: str, partition: Partition, run_id: str, verdict: Verdict) -> None:
    """Record the checks; refuse the partition (:class:`GuardFailed`) when a gate with action ``fail`` tripped."""
    record_checks(spec, conninfo, partition, run_id, verdict)
    if verdict.action == "fail":
        raise GuardFailed(f"{spec.name} {partition}: a drift gate with action fail tripped, nothing was loaded: "
                          + "; ".join(verdict.flags()["tripped"])
                          + f". See {spec.sink.schema_}.{spec.name}_quality; fix the source or the spec's guard")


def held_partitions(conn, spec: PipelineSpec, first: dt.date, last: dt.date) -> list[Partition]:
    """The quarantined partitions that lie within the days ``first`` .. ``last``."""
    window = Partition.days(first, last)
    return held_intervals(conn, spec, window.start, window.end, within=True)


def release(spec: PipelineSpec, conninfo: str, first: dt.date, last: dt.date | None = None) -> dict[str, dict]:
    """Publish the quarantined partitions within ``first`` .. ``last`` in one transaction: each replaces its
    interval in the insight tables, except the parts a later run published (they stay), and leaves the quarantine;
    runs that held it are marked ``released``."""
    last = last or first
    released = {}
    with db.connect(conninfo) as conn:
        conn.execute("set local time zone 'UTC'")
        db.lock_ddl(conn)
        held = held_partitions(conn, spec, first, last)
        if not held:
            raise NothingQuarantined(f"{spec.name}: no quarantined partition between {first} and {last}; "
                                     f"see {spec.sink.schema_}.runs where status = 'quarantined'")
        for partition in held:
            keep = replaced_within(spec, conn, partition)
            if keep:
                log.warning("%s %s: later runs published %s; their rows and aggregates stay. The held aggregates "
                            "described the replaced rows too and were dropped: rerun the other days to recompute "
                            "them", spec.name, partition, ", ".join(k.describe() for k in keep))
            released[str(partition)] = {suffix: publish_held(spec, conn, suffix, partition, keep)
                                        for suffix in HELD_TABLES}
            forget_replaced(spec, conn, partition)
            conn.execute(sql.SQL("update {} set status = 'released', message = %s where pipeline = %s and "
                                 "status = 'quarantined' and partition_start = %s and partition_end = %s").format(
                db.qualified(spec.sink.schema_, "runs")),
                (f"released at {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", spec.name, partition.start,
                 partition.end))
    log.info("%s released %s", spec.name, released)
    return released


def publish_held(spec: PipelineSpec, conn, suffix: str, partition: Partition, keep: list[Partition]) -> int:
    """Move one held partition's rows of one table into the published table, leaving what later runs published in
    ``keep``; return how many moved."""
    schema, name = spec.sink.schema_, f"{spec.name}_quarantine_{suffix}"
    if not db.table_exists(conn, schema, name):
        return 0
    held, published = quarantine_table(spec, suffix), insight_table(spec, suffix)
    columns = db.table_columns(conn, schema, name)
    if not db.table_exists(conn, schema, f"{spec.name}_{suffix}"):
        conn.execute(sql.SQL("create table {} (like {})").format(published, held))
        conn.execute(sql.SQL("create index on {} (partition_start)").format(published))
    existing = db.table_columns(conn, schema, f"{spec.name}_{suffix}")
    widen_columns(conn, published, existing, columns, f"{schema}.{spec.name}_{suffix}")
    for column in columns.keys() - existing.keys():
        conn.execute(sql.SQL("alter table {} add column {} {}").format(published, sql.Identifier(column),
                                                                      sql.SQL(columns[column])))
    replace_interval(spec, conn, suffix, published, partition, keep)
    interval = (partition.start, partition.end)
    moved = conn.execute(sql.SQL("insert into {} ({cols}) select {cols} from {} where partition_start = %s and "
                                 "partition_end = %s").format(published, held, cols=db.columns_sql(list(columns))),
                         interval).rowcount
    conn.execute(sql.SQL("delete from {} where partition_start = %s and partition_end = %s").format(held), interval)
    return moved
