"""The Airflow-facing side: one DAG per pipeline spec, each task a thin call into a plain step module.

Heavy imports (torch, lm_engine, great_expectations, pandas) happen inside the tasks, never at parse time.
Data moves between tasks through staging tables; XCom carries only small dicts of counts and timings.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import DAG, Asset, BaseHook, Param, TriggerRule, get_current_context, task
from airflow.sdk import CronDataIntervalTimetable
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from lm_insights.core.partition import Partition
from lm_insights.spec import PipelineSpec

MAX_SHARDS = 64


def conninfo_for(conn_id: str) -> str:
    """libpq conninfo of an Airflow connection: host (may be a unix socket directory), port, database, login,
    password, and every extra that libpq understands (sslmode, sslrootcert, sslcert, sslkey, options,
    application_name, connect_timeout, ...); other extras (the Postgres provider's own) are left out."""
    from psycopg.conninfo import make_conninfo

    from lm_insights.runtime.db import libpq_keywords

    conn = BaseHook.get_connection(conn_id)
    keywords = libpq_keywords()
    extras = {k: str(v) for k, v in conn.extra_dejson.items() if k in keywords and v is not None}
    return make_conninfo(host=conn.host or None, port=conn.port or None, dbname=conn.schema or None,
                         user=conn.login or None, password=conn.password or None, **extras)


# SQLSTATE classes of errors that a retry meets again: bad data, a broken constraint, a missing or mistyped column or
# table, a missing privilege, an unsupported feature. Every other class (08 connection, 40 deadlock or serialization,
# 53 resources, 55 lock not available, 57 shutdown or cancel) may pass on a retry.
DETERMINISTIC_SQLSTATE_CLASSES = ("22", "23", "42", "0A")
# The same kinds as DB-API exception classes (psycopg, psycopg2 and SQLAlchemy share the names), for errors raised
# by the driver itself without a SQLSTATE (a NUL byte in a string, a wrong number of parameters).
DETERMINISTIC_DBAPI_ERRORS = ("DataError", "IntegrityError", "ProgrammingError", "NotSupportedError")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg (``sqlstate``) or psycopg2 via SQLAlchemy (``orig.pgcode``) error, if any."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return code
    return None


def is_deterministic(exc: BaseException) -> bool:
    """True when retrying cannot help: an invalid spec, bad data, a missing column, a type error."""
    code = sqlstate(exc)
    if code:
        return code[:2] in DETERMINISTIC_SQLSTATE_CLASSES
    if any(cls.__name__ in DETERMINISTIC_DBAPI_ERRORS for cls in type(exc).__mro__):
        return True
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, a full disk: the next try may pass
        return False
    # SpecError, SourceError, TableExpectationsFailed, CheckpointError are ValueErrors; UnknownModelError a LookupError
    return isinstance(exc, ValueError | TypeError | LookupError)


@contextmanager
def failing_fast(spec: PipelineSpec) -> Iterator[None]:
    """Around a task's work: a deterministic error ends the task without retry; a transient one retries."""
    try:
        yield
    except Exception as exc:
        if is_deterministic(exc):
            raise AirflowFailException(f"{spec.name}: {type(exc).__name__}: {exc}") from exc
        raise


def insight_asset(spec: PipelineSpec) -> Asset:
    """The Asset a pipeline's load updates: downstream DAGs schedule on it."""
    return Asset(name=f"{spec.sink.schema_}.{spec.name}", uri=f"lm-insights://{spec.sink.schema_}/{spec.name}",
                 group="lm_insights")


def pipeline_params(spec: PipelineSpec) -> dict[str, Param]:
    """Params of the trigger form; the JSON schema refuses a bad value before any task runs."""
    nullable_date = {"type": ["null", "string"], "format": "date"}
    return {
        "partition_start": Param(None, **nullable_date, title="Partition start (date)",
                                 description="Process this day instead of the run's data interval (UTC)."),
        "partition_end": Param(None, **nullable_date, title="Partition end (date, inclusive)",
                               description="With a start: process the range start..end as one partition."),
        "force_recompute": Param(False, type="boolean", title="Force recompute",
                                 description="Bypass the result cache and encode every text again."),
        "model": Param(spec.lm.model, type="string", minLength=1, pattern=r"^[\w./@-]+$", title="Model",
                       description="A model name of the lm_engine registry."),
        "shards": Param(None, type=["null", "integer"], minimum=1, maximum=MAX_SHARDS, title="Infer shards",
                        description="Parallel inference shards; empty = from the partition size."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Extract and validate, report counts, load nothing."),
        "release_quarantined": Param(False, type="boolean", title="Release quarantined",
                                     description="Publish the partitions a drift gate held in quarantine within "
                                                 "partition_start..partition_end, in one transaction; nothing "
                                                 "else runs."),
    }


def release_held(spec: PipelineSpec, params: dict[str, Any]) -> None:
    """The ``release_quarantined`` Param: publish the held partitions of the Params' days, then skip the rest."""
    from lm_insights.guard.gates import release

    if not params.get("partition_start"):
        raise ValueError("release_quarantined needs partition_start (and partition_end for a range of days)")
    first = dt.date.fromisoformat(params["partition_start"])
    last = dt.date.fromisoformat(params.get("partition_end") or params["partition_start"])
    released = sorted(release(spec, conninfo_for(spec.sink.conn_id), first, last))
    get_current_context()["ti"].xcom_push(key="released", value=released)
    raise AirflowSkipException(f"{spec.name}: released {released} from quarantine; nothing else runs")


def resolve_partition(params: dict[str, Any], interval_start: dt.datetime, interval_end: dt.datetime) -> Partition:
    """The Params' date range when given, else the run's data interval."""
    start, end = params.get("partition_start"), params.get("partition_end")
    if end and not start:
        raise ValueError("partition_end needs partition_start")
    if not start:
        return Partition(interval_start, interval_end)
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end or start)
    if last < first:
        raise ValueError(f"partition_end {last} is before partition_start {first}")
    return Partition(Partition.day(first).start, Partition.day(last).end)


def manual_interval(schedule: str, run_after: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The interval Airflow gives a manual run with a logical date at ``run_after``: the last complete one."""
    import pendulum
    from airflow.timetables.interval import CronDataIntervalTimetable as CoreTimetable

    timetable = CoreTimetable(schedule, timezone="UTC")
    interval = timetable.infer_manual_data_interval(run_after=pendulum.instance(run_after))
    return interval.start, interval.end


def doc_md(spec: PipelineSpec) -> str:
    tables = ", ".join(f"`{spec.sink.schema_}.{spec.name}_{t}`" for t in ("rows", "segments", "drivers",
                                                                         "summaries", "rejects", "rules"))
    return (f"# {spec.name}\n\n{spec.description}\n\n"
            f"Reads `{spec.source.table}` one `{spec.source.partition_column}` partition per run, validates it, "
            f"turns each row into text, runs `{spec.lm.model}`, builds the insights, explains them, guards them "
            f"and loads {tables}.\n\n"
            "Trigger with Params to pick a date range, force recompute, another model, the shard count or a dry run.")


def dag_arguments(spec: PipelineSpec) -> dict[str, Any]:
    """What the spec says about the DAG itself: id, schedule with real daily intervals, Params, retries."""
    return dict(
        dag_id=spec.name,
        description=spec.description.strip().splitlines()[0].lstrip("# ") if spec.description.strip() else None,
        doc_md=doc_md(spec),
        schedule=CronDataIntervalTimetable(spec.schedule, timezone="UTC"),
        start_date=dt.datetime.combine(spec.start_date, dt.time(0), dt.timezone.utc),
        catchup=spec.catchup,
        tags=["lm-insights", *spec.tags],
        params=pipeline_params(spec),
        max_active_runs=4,
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": dt.timedelta(seconds=30)},
    )


def build_dag(spec: PipelineSpec) -> DAG:
    """One DAG for one pipeline spec: plan_partition -> extract -> validate -> textualize -> plan_shards ->
    infer (one task per shard) -> insights -> explain -> guard -> load -> record_run."""
    with DAG(**dag_arguments(spec)) as dag:
        plan = plan_partition_task(spec)()
        extracted, validated = extract_task(spec)(plan), validate_task(spec)(plan)
        texts, shards = textualize_task(spec)(plan), plan_shards_task(spec)(plan)
        inferred = infer_task(spec).partial(plan=plan).expand(shard=shards)
        built = insights_task(spec)(plan, validated)
        explained, guarded = explain_task(spec)(plan), guard_task(spec)(plan)
        loaded = load_task(spec)(plan, guarded)
        extracted >> validated >> texts >> shards
        inferred >> built >> explained >> guarded >> loaded >> record_run_task(spec)()
    return dag


def plan_partition_task(spec: PipelineSpec):
    @task
    def plan_partition() -> dict[str, Any]:
        context = get_current_context()
        params = context["params"]
        from lm_engine import registry
        from lm_insights.steps.preflight import check_source

        with failing_fast(spec):
            if params.get("release_quarantined"):
                release_held(spec, params)
            interval = (context.get("data_interval_start"), context.get("data_interval_end"))
            if interval[0] is None:  # triggered without a logical date (REST/UI default): no data interval
                interval = manual_interval(spec.schedule, context["dag_run"].run_after)
            partition = resolve_partition(params, *interval)
            registry.resolve(params["model"])
            check_source(spec, conninfo_for(spec.source.conn_id))  # column types: before any row or model
        return {"start": partition.start.isoformat(), "end": partition.end.isoformat(),
                "run_id": context["run_id"], "model": params["model"], "shards": params["shards"],
                "force_recompute": params["force_recompute"], "dry_run": params["dry_run"],
                "heads": _promoted_heads(spec, spec.sink.conn_id)}

    return plan_partition


def extract_task(spec: PipelineSpec):
    @task
    def extract(plan: dict) -> dict:
        from lm_insights.steps.extract import extract_partition

        started = time.monotonic()
        with failing_fast(spec):
            rows = extract_partition(spec, conninfo_for(spec.source.conn_id), conninfo_for(spec.sink.conn_id),
                                     _partition(plan))
        return {"extracted": rows, "seconds": time.monotonic() - started}

    return extract


def validate_task(spec: PipelineSpec):
    @task
    def validate(plan: dict) -> dict:
        from lm_insights.steps.validate import validate_partition

        started = time.monotonic()
        with failing_fast(spec):  # a table expectation that fails is bad data: retrying cannot help
            summary = validate_partition(spec, conninfo_for(spec.sink.conn_id), _partition(plan))
        return {"checked": summary.checked, "rejected": summary.rejected, "seconds": time.monotonic() - started}

    return validate


def textualize_task(spec: PipelineSpec):
    @task
    def textualize(plan: dict) -> dict:
        from lm_insights.steps.textualize import textualize_partition

        if plan["dry_run"]:
            raise AirflowSkipException("dry run: extracted and validated only")
        started = time.monotonic()
        with failing_fast(spec):
            rows = textualize_partition(spec, conninfo_for(spec.sink.conn_id), _partition(plan))
        return {"texts": rows, "seconds": time.monotonic() - started}

    return textualize


def plan_shards_task(spec: PipelineSpec):
    @task
    def plan_shards(plan: dict) -> list[dict]:
        from lm_insights.core.texts import count_distinct_texts
        from lm_insights.steps.infer import plan_shards

        with failing_fast(spec):
            n = plan_shards(spec, count_distinct_texts(spec, conninfo_for(spec.sink.conn_id), _partition(plan)),
                            plan["shards"])
        return [{"shard": i, "shards": n} for i in range(n)]

    return plan_shards


def infer_task(spec: PipelineSpec):
    @task(queue=spec.lm.queue, pool=spec.lm.pool, map_index_template="shard {{ task.op_kwargs.shard.shard }}")
    def infer(plan: dict, shard: dict) -> dict:
        from lm_insights.steps.infer import infer_shard

        started = time.monotonic()
        with failing_fast(spec):
            summary = infer_shard(spec, conninfo_for(spec.sink.conn_id), _partition(plan), shard["shard"],
                                  shard["shards"], plan["model"], plan["force_recompute"], heads=plan["heads"])
        return summary.as_dict() | {"seconds": time.monotonic() - started}

    return infer


def insights_task(spec: PipelineSpec):
    @task
    def insights(plan: dict, validated: dict) -> dict:
        from lm_insights.core.cache import cache_key
        from lm_insights.steps.insights import build_insights

        started = time.monotonic()
        with failing_fast(spec):
            result = build_insights(spec, conninfo_for(spec.sink.conn_id), _partition(plan),
                                    cache_key(spec, plan["model"], plan["heads"]), validated["rejected"],
                                    plan["heads"])
        return {"rows": result["rows"], "quality": result["quality"], "timings": result["timings"],
                "seconds": time.monotonic() - started}

    return insights


def explain_task(spec: PipelineSpec):
    """Word-level explanations of a sample of rows: a retry here does not redo the insights."""
    @task
    def explain(plan: dict) -> dict:
        from lm_insights.core.cache import cache_key
        from lm_insights.explain.words import explain_partition

        started = time.monotonic()
        with failing_fast(spec):
            words = explain_partition(spec, conninfo_for(spec.sink.conn_id), _partition(plan),
                                      cache_key(spec, plan["model"], plan["heads"]), plan["model"])
        return {"timings": {"explain_words": words["seconds"]} | words["timings"],
                "seconds": time.monotonic() - started}

    return explain


def guard_task(spec: PipelineSpec):
    """Row flags, output expectations and drift gates; records them and decides how the partition is loaded."""
    @task
    def guard(plan: dict) -> dict:
        from lm_insights.core.cache import cache_key
        from lm_insights.guard.gates import guard_partition, record_verdict

        started = time.monotonic()
        with failing_fast(spec):  # a drift gate with action fail raises GuardFailed: no retry
            verdict = guard_partition(spec, conninfo_for(spec.sink.conn_id), _partition(plan),
                                      cache_key(spec, plan["model"], plan["heads"]), plan["heads"])
            record_verdict(spec, conninfo_for(spec.sink.conn_id), _partition(plan), plan["run_id"], verdict)
        return {"action": verdict.action, "status": verdict.status, "seconds": time.monotonic() - started}

    return guard


def load_task(spec: PipelineSpec):
    @task
    def load(plan: dict, guarded: dict) -> dict:
        from lm_insights.steps.load import load_partition

        started = time.monotonic()
        with failing_fast(spec):
            loaded = load_partition(spec, conninfo_for(spec.sink.conn_id), _partition(plan),
                                    held=guarded["action"] == "quarantine")
        return {"loaded": loaded["rows"], "rejects": loaded["rejects"], "status": guarded["status"],
                "seconds": time.monotonic() - started}

    return load


STEP_TASKS = ("extract", "validate", "textualize", "insights", "explain", "guard", "load")  # timed in runs


def record_run_task(spec: PipelineSpec):
    # The Asset event comes from record_run, not load: a consumer (insights_report) that runs on it then
    # finds the run in `runs` too, and a dry run (which loads nothing) emits none.
    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0, outlets=[insight_asset(spec)])
    def record_run() -> dict:
        from lm_insights.core.cache import cache_key
        from lm_insights.steps.load import drop_staging, record_run as write_run

        ti = get_current_context()["ti"]
        plan = ti.xcom_pull(task_ids="plan_partition")
        if plan is None and ti.xcom_pull(task_ids="plan_partition", key="released"):
            raise AirflowSkipException(f"{spec.name}: released from quarantine; no partition was processed")
        if plan is None:
            raise AirflowFailException(f"{spec.name}: the partition could not be planned; nothing was run")
        steps = {name: ti.xcom_pull(task_ids=name) for name in STEP_TASKS}
        inferred = ti.xcom_pull(task_ids="infer") if steps["load"] else None  # all map indexes
        inferred = [s for s in ([inferred] if isinstance(inferred, dict) else inferred or []) if s]
        record = run_record(spec, plan, steps, inferred, cache_key(spec, plan["model"], plan["heads"]))
        try:
            write_run(conninfo_for(spec.sink.conn_id), spec.sink.schema_, record)
        finally:  # this run's own tables, whatever its end
            drop_staging(spec, conninfo_for(spec.sink.conn_id), record.partition)
        if record.status == "failed":
            raise AirflowFailException(f"{spec.name} {record.partition}: run failed, recorded in runs")
        if record.status == "quarantined":
            raise AirflowSkipException(f"{spec.name} {record.partition}: held in quarantine by a drift gate; "
                                       f"release it with `lm-insights release {spec.name} --start DAY`")
        if record.status == "dry_run":
            raise AirflowSkipException(f"{spec.name} {record.partition}: dry run recorded in runs; nothing "
                                       "was loaded, so no Asset event")
        return {"status": record.status, "extracted": record.extracted, "rejected": record.rejected,
                "loaded": record.loaded, "cached": record.cached, "computed": record.computed}

    return record_run


def run_record(spec: PipelineSpec, plan: dict, steps: dict[str, dict | None], inferred: list[dict], key):
    """The ``runs`` row of a DAG run from its tasks' XComs (a step that did not finish has none)."""
    from lm_insights.steps.load import RunRecord

    extracted, validated, built, loaded = (steps[s] for s in ("extract", "validate", "insights", "load"))
    timings = {name: round(step["seconds"], 3) for name, step in steps.items() if step}
    if inferred:
        timings["infer"] = round(sum(s["seconds"] for s in inferred), 3)
    for step in ("insights", "explain"):
        timings |= (steps[step] or {}).get("timings", {})  # the explain_* parts of each
    status = loaded.get("status", "success") if loaded else (
        "dry_run" if plan["dry_run"] and validated else "failed")
    return RunRecord(
        run_id=plan["run_id"], pipeline=spec.name, partition=_partition(plan), status=status,
        extracted=(extracted or {}).get("extracted"), rejected=(validated or {}).get("rejected"),
        cached=sum(s["cached"] for s in inferred) if inferred else None,
        computed=sum(s["computed"] for s in inferred) if inferred else None,
        loaded=(loaded or {}).get("loaded"), model_key=key.model_key, template_version=key.template_version,
        head_version=key.head_version, timings=timings, quality=(built or {}).get("quality"),
        message=None if status != "failed" else "a task failed: see the task logs of this run")


def _promoted_heads(spec: PipelineSpec, conn_id: str) -> dict[str, int]:
    """The trained-head versions a pipeline run uses from its start to its end (``{}`` without heads)."""
    from lm_insights.learn.models import promoted_versions

    return promoted_versions(conninfo_for(conn_id), spec) if spec.lm.heads else {}


def train_params(spec: PipelineSpec) -> dict[str, Param]:
    """Params of a training run's trigger form; empty values keep each head's spec settings."""
    return {
        "heads": Param(None, type=["null", "array"], items={"type": "string", "enum": sorted(spec.lm.heads)},
                       title="Heads", description="Train (or roll back) only these heads; empty = all."),
        "window": Param(None, type=["null", "integer"], minimum=1, title="Training window (days)",
                        description="Labelled rows of the last N days; empty = train_window_days of the spec."),
        "method": Param(None, type=["null", "string"], enum=[None, "linear", "finetune"], title="Method",
                        description="linear: on cached embeddings; finetune: encoder and head; empty = the spec's."),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=100, title="Epochs (finetune)"),
        "force": Param(False, type="boolean", title="Force",
                       description="Train even when the rows and settings are those of the promoted version."),
        "rollback": Param(False, type="boolean", title="Roll back",
                          description="Train nothing: demote the promoted version, promote the one before it."),
    }


def build_train_dag(spec: PipelineSpec) -> DAG:
    """``<pipeline>__train``: weekly, one task per head; promotes a new version only when it beats the others."""
    with DAG(
        dag_id=f"{spec.name}__train",
        description=f"Train the heads of {spec.name} ({', '.join(spec.lm.heads)}) from the loaded insight rows",
        doc_md=(f"# {spec.name}__train\n\nTrains each head of `{spec.name}` on the labelled rows of "
                f"`{spec.sink.schema_}.{spec.name}_rows` (embeddings from the result cache), evaluates it on the "
                "latest rows against the promoted version, the majority / mean baseline and zero-shot, and stores it "
                f"in `{spec.sink.schema_}.models`, promoted only when it beats all of them. Trigger with Params to "
                "change the window, method or epochs, force a retrain, or roll back."),
        schedule="@weekly",
        start_date=dt.datetime.combine(spec.start_date, dt.time(0), dt.timezone.utc),
        catchup=False,
        tags=["lm-insights", "training", *spec.tags],
        params=train_params(spec),
        max_active_runs=1,
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": dt.timedelta(seconds=30)},
    ) as dag:
        for name in spec.lm.heads:
            @task(task_id=f"train_{name}", queue=spec.lm.queue, pool=spec.lm.pool)
            def train_head(head: str = name) -> dict:
                from lm_insights.learn import models, training

                params = get_current_context()["params"]
                if params["heads"] and head not in params["heads"]:
                    raise AirflowSkipException(f"{head} is not in the Param heads {params['heads']}")
                conninfo = conninfo_for(spec.sink.conn_id)
                if params["rollback"]:
                    before, after = models.rollback(conninfo, spec, head)
                    return {"head": head, "decision": "rolled_back", "from_version": before, "to_version": after}
                options = training.TrainOptions(window_days=params["window"], method=params["method"],
                                                epochs=params["epochs"], force=params["force"])
                with failing_fast(spec):  # TrainingError (too few rows, one class) is a ValueError: no retry
                    return training.train_head(spec, conninfo, head, options).as_dict()

            train_head()
    return dag


def _partition(plan: dict) -> Partition:
    return Partition(dt.datetime.fromisoformat(plan["start"]), dt.datetime.fromisoformat(plan["end"]),
                     run_id=plan["run_id"])
