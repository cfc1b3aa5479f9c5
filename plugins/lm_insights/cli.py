"""``lm-insights``: the embedded default deployment from the command line.

    lm-insights demo [--days 3]     set up, fill the demo warehouse, backfill every demo pipeline through a scheduler
    lm-insights demo --scenario market_risk|shipments   the same for one synthetic scenario (docs/scenarios.md)
    lm-insights up                  the Airflow UI (airflow standalone) on the same database
    lm-insights run NAME --date D   one partition of one pipeline without a scheduler
    lm-insights run NAME --start D --end D   the days D..D (inclusive) as one partition
    lm-insights release NAME --start D [--end D]   publish the partitions a drift gate held in quarantine
    lm-insights clean-staging [--older-than 1d]   drop staging tables that runs left behind
    lm-insights train NAME          train the pipeline's heads from its loaded rows (--rollback: previous version)
    lm-insights similar NAME "text or row key" [--conn CONN]   the loaded rows nearest in meaning (e.g. "sale_id=5")
    lm-insights init-pipeline NAME --table schema.table [--conn CONN] [--key COL ...] [--days N] [--sample N]
                                    write dags/pipelines/NAME.yaml proposed from a live table
    lm-insights env                 shell exports for the airflow CLI against the embedded database
    lm-insights stop                stop the embedded PostgreSQL
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time

from lm_insights.runtime import embedded_pg, local_env
from lm_insights.runtime.local_env import say

DEMO_START = dt.date(2026, 11, 1)
DEMO_WAREHOUSE_DAYS = 7


def run_dag(dag_id: str, day: dt.date, conf: dict | None = None):
    """One real DAG run (``dag.test``) whose data interval is ``[day, day + 1)``; return the DagRun.

    A deadlock in Airflow's metadata database (``dag.test``'s loop and the in-process task API both update
    ``dag_run``; PostgreSQL aborts one of them) is transient: the aborted attempt's staging tables are dropped (its
    ``record_run`` never ran) and the DAG runs once more under a new run id, which ``dag.test`` puts in place of the
    aborted run (the partition's load is idempotent)."""
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag
    from psycopg2.errors import DeadlockDetected
    from sqlalchemy.exc import DBAPIError

    bag = DagBag(dag_folder=str(local_env.PROJECT_DIR / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    logical_date = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), dt.timezone.utc)
    for attempt in (1, 2):
        try:
            return bag.get_dag(dag_id).test(logical_date=logical_date, run_conf=conf or {})
        except DBAPIError as exc:
            if attempt == 2 or not isinstance(exc.orig, DeadlockDetected):
                raise
            settings.Session.remove()  # the aborted transaction's session: the next run gets a fresh one
            say(f"{dag_id}: deadlock in the Airflow metadata database ({str(exc.orig).splitlines()[0]}); "
                "running it once more")
            drop_staging_of_aborted_runs(dag_id, logical_date, conf or {})


def drop_staging_of_aborted_runs(dag_id: str, logical_date: dt.datetime, conf: dict) -> list[str]:
    """Drop the staging tables of the unfinished runs of pipeline ``dag_id`` at ``logical_date``; return their run
    ids. Only for ``run_dag``, whose attempts run one at a time."""
    import dataclasses

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    from lm_insights.airflow_dag import conninfo_for, resolve_partition
    from lm_insights.spec import load_specs
    from lm_insights.steps.load import drop_staging

    specs = {s.name: s for s in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines")}
    if dag_id not in specs:  # a train or maintenance DAG stages nothing
        return []
    spec = specs[dag_id]
    with create_session() as session:
        runs = session.scalars(select(DagRun).where(
            DagRun.dag_id == dag_id, DagRun.logical_date == logical_date,
            DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))).all()
        for run in runs:
            partition = resolve_partition(conf, run.data_interval_start, run.data_interval_end)
            drop_staging(spec, conninfo_for(spec.sink.conn_id), dataclasses.replace(partition, run_id=run.run_id))
        return [run.run_id for run in runs]


def demo(days: int, sales_per_day: int, reviews_per_day: int, heads: bool = True, scenario: str | None = None) -> None:
    """The retail demo pipelines, or with ``scenario`` that scenario's synthetic table and pipeline alone."""
    from lm_insights.runtime import demo_warehouse, scenarios
    from lm_insights.spec import load_specs

    server, _ = local_env.prepare()
    conninfo = local_env.warehouse_conninfo(server)
    specs = load_specs(local_env.PROJECT_DIR / "dags" / "pipelines")
    if scenario:
        say(f"filling scenario {scenario} ({DEMO_WAREHOUSE_DAYS} days from {DEMO_START}; synthetic, "
            "docs/scenarios.md)")
        say(f"warehouse rows: {scenarios.generate(conninfo, scenario, DEMO_START, DEMO_WAREHOUSE_DAYS)}")
        specs = [spec for spec in specs if spec.name == scenario]
    else:
        say(f"filling the demo warehouse ({DEMO_WAREHOUSE_DAYS} days from {DEMO_START})")
        demo_warehouse.create_schema(conninfo)
        counts = demo_warehouse.generate(conninfo, start=DEMO_START, days=DEMO_WAREHOUSE_DAYS,
                                         sales_per_day=sales_per_day, reviews_per_day=reviews_per_day)
        say(f"warehouse rows: {counts}")
        specs = [spec for spec in specs if spec.name not in scenarios.SCENARIOS]  # each has its own demo
    run_demo_backfills(conninfo, [spec.name for spec in specs], DEMO_START, DEMO_START + dt.timedelta(days=days - 1),
                       with_heads=[spec for spec in specs if spec.lm.heads] if heads else [])
    print_highlights(conninfo)
    info = server.get_postmaster_info()
    say("query the insight tables with:")
    print(f"  psql \"host={info.socket_dir} port={info.port} user=postgres dbname={local_env.WAREHOUSE_DB}\"")
    print("  tables: insights.<pipeline>_rows, _segments, _drivers, _summaries, _rejects; insights.runs")
    print("  Airflow UI: make up (http://localhost:8080): the runs of each pipeline and their task logs")


def run_demo_backfills(conninfo: str, pipelines: list[str], first: dt.date, last: dt.date,
                       timeout_s: float = 3600.0, with_heads: list | None = None) -> list[dict]:
    """Backfill ``first..last`` of every pipeline through a scheduler (LocalExecutor), as the UI will show it.

    The DAGs are unpaused for the backfill and paused again after it (unpaused, `make up`'s scheduler would run
    the latest cron interval, which has no demo data). Returns the finished runs (REST API dicts).
    ``with_heads``: specs whose heads then train on those days (a run of ``<pipeline>__train``), and whose next day
    is backfilled with the promoted head (demo_heads).
    """
    from lm_insights.runtime.services import LocalStack

    # The whole environment (PATH, PYTHONPATH, ...): prepare() has put the Airflow settings into it.
    stack = LocalStack(dict(os.environ), local_env.default_airflow_home().parent / "demo_services")
    say(f"starting a scheduler (LocalExecutor), a dag-processor and an api-server; logs in {stack.run_dir}")
    started = time.monotonic()
    trainers = [f"{spec.name}__train" for spec in with_heads or []]
    stack.start(dag_ids=pipelines + trainers, unpaused=pipelines + trainers)
    try:
        say(f"services up in {time.monotonic() - started:.0f}s; backfilling {first}..{last} of {', '.join(pipelines)}")
        for dag_id in pipelines:
            local_env.airflow("backfill", "create", "--dag-id", dag_id, "--from-date", first.isoformat(),
                              "--to-date", last.isoformat(), "--max-active-runs", "1",
                              "--reprocess-behavior", "completed")
        runs = wait_for_demo_runs(stack, conninfo, pipelines, first, last, timeout_s)
        for spec in with_heads or []:
            runs += demo_heads(stack, conninfo, spec, last + dt.timedelta(days=1), timeout_s)
        # The scheduler closes a backfill a few seconds after its last run; until then the UI shows it in progress.
        stack.wait_until(lambda: all(b["completed_at"] for dag_id in pipelines for b in stack.request(
            "GET", f"/api/v2/backfills?dag_id={dag_id}")["backfills"]), "the backfills to be marked complete",
            time.monotonic() + 120, interval_s=2)
        return runs
    finally:
        try:
            for dag_id in pipelines + trainers:
                stack.set_paused(dag_id, True)
        finally:
            stack.stop()


def demo_heads(stack, conninfo: str, spec, next_day: dt.date, timeout_s: float) -> list[dict]:
    """Train ``spec``'s heads on the days loaded so far (a run of <pipeline>__train through the scheduler), then
    backfill the next day with the promoted head: its quality table measures the head next to zero-shot."""
    from lm_insights.runtime import db

    train_id = f"{spec.name}__train"
    say(f"{train_id}: training {', '.join(spec.lm.heads)} on the rows loaded so far")
    run = stack.wait_for_run(train_id, stack.trigger(train_id, {})["dag_run_id"], timeout_s)
    if run["state"] != "success":
        raise SystemExit(f"{train_id} run {run['dag_run_id']} failed: see its task logs in the UI (make up) or under "
                         f"{stack.base_env['AIRFLOW_HOME']}/logs")
    with db.connect(conninfo) as conn:
        for name in spec.lm.heads:
            version, decision, reason = conn.execute(
                "select version, decision, reason from insights.models where pipeline = %s and head = %s "
                "order by version desc limit 1", (spec.name, name)).fetchone()
            say(f"  {name} v{version}: {decision} ({reason})")
    say(f"backfilling {spec.name} {next_day} with the promoted head")
    local_env.airflow("backfill", "create", "--dag-id", spec.name, "--from-date", next_day.isoformat(),
                      "--to-date", next_day.isoformat(), "--max-active-runs", "1", "--reprocess-behavior", "completed")
    runs = wait_for_demo_runs(stack, conninfo, [spec.name], next_day, next_day, timeout_s)
    say(f"  the head's accuracy on {next_day}'s rows, next to zero-shot: {spec.sink.schema_}.{spec.name}_quality")
    return runs


def wait_for_demo_runs(stack, conninfo: str, pipelines: list[str], first: dt.date, last: dt.date,
                       timeout_s: float) -> list[dict]:
    """Print each backfill run as it finishes (counts from insights.runs); fail naming the first failed run."""
    deadline = time.monotonic() + timeout_s
    days = (last - first).days + 1
    # The runs of these days, whatever made them first: a backfill that reprocesses a day clears its old run.
    query = f"logical_date_gte={first}T00:00:00Z&logical_date_lte={last}T00:00:00Z&limit=100"
    done: dict[tuple[str, str], dict] = {}  # (dag_id, run_id): backfill run ids repeat across DAGs
    while len(done) < days * len(pipelines):
        stack.check_running()
        if time.monotonic() > deadline:
            raise SystemExit(f"demo backfills not done after {timeout_s:.0f}s; service logs in {stack.run_dir}")
        for dag_id in pipelines:
            runs = stack.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}")["dag_runs"]
            for run in runs:
                if run["state"] not in ("success", "failed") or (dag_id, run["dag_run_id"]) in done:
                    continue
                done[dag_id, run["dag_run_id"]] = run
                seconds = (_utc(run["end_date"]) - _utc(run["start_date"])).total_seconds()
                say(f"{dag_id} {run['data_interval_start'][:10]}: {run['state']} in {seconds:.0f}s, "
                    f"{run_counts(conninfo, dag_id, run['dag_run_id'])}")
                if run["state"] == "failed":
                    raise SystemExit(f"{dag_id} run {run['dag_run_id']} failed: see its task logs in the UI "
                                     f"(make up) or under {stack.base_env['AIRFLOW_HOME']}/logs")
        time.sleep(2)
    return list(done.values())


def _utc(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def run_counts(conninfo: str, pipeline: str, run_id: str) -> str:
    """The counts a DAG run recorded in insights.runs, as one line."""
    from lm_insights.runtime import db

    with db.connect(conninfo) as conn:
        row = conn.execute("select extracted, rejected, cached, computed, loaded from insights.runs "
                           "where pipeline = %s and run_id = %s", (pipeline, run_id)).fetchone()
    names = ("extracted", "rejected", "cached", "computed", "loaded")
    return ", ".join(f"{n} {v}" for n, v in zip(names, row)) if row else "no runs row recorded"


def train(name: str, only: list[str] | None, method: str | None, window_days: int | None, epochs: int | None,
          force: bool, rollback: bool) -> None:
    """Train (or roll back) the heads of one pipeline on the embedded default, without a scheduler."""
    import logging

    from lm_insights.learn import models, training
    from lm_insights.spec import load_specs

    specs = {s.name: s for s in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines")}
    if name not in specs:
        raise SystemExit(f"unknown pipeline {name!r}; known: {sorted(specs)}")
    spec = specs[name]
    unknown = sorted(set(only or []) - set(spec.lm.heads))
    if not spec.lm.heads:
        raise SystemExit(f"{name} declares no heads: add one under lm.heads in {spec.origin}")
    if unknown:
        raise SystemExit(f"{name} has no head {', '.join(unknown)}; its heads: {sorted(spec.lm.heads)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    server, _ = local_env.prepare()
    conninfo = local_env.warehouse_conninfo(server)
    for head in only or list(spec.lm.heads):
        if rollback:
            before, after = models.rollback(conninfo, spec, head)
            say(f"{name}.{head}: " + ("no promoted version to roll back" if before is None else
                                      f"v{before} demoted; " + (f"v{after} promoted" if after else
                                                                "no earlier version left: the head is off")))
            continue
        options = training.TrainOptions(window_days=window_days, method=method, epochs=epochs, force=force)
        try:
            result = training.train_head(spec, conninfo, head, options)
        except training.TrainingError as exc:
            raise SystemExit(str(exc)) from None
        say(f"{name}.{head}: {result.decision}" + (f" as v{result.version}" if result.version else "")
            + f" ({result.reason})")


def print_highlights(conninfo: str) -> None:
    """What a user came for: the summaries, the price-tier table and the runs."""
    from lm_insights.runtime import db
    from lm_insights.explain import report

    with db.connect(conninfo) as conn:
        print()
        print(report.render_text(conn))


def run_one(name: str, first: str, last: str, force: bool) -> None:
    from lm_insights.core.partition import Partition
    from lm_insights.pipeline import run_partition
    from lm_insights.spec import load_specs

    partition = cli_partition(first, last)
    server, _ = local_env.prepare()
    specs = {s.name: s for s in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines")}
    if name not in specs:
        raise SystemExit(f"unknown pipeline {name!r}; known: {sorted(specs)}")
    conninfo = local_env.warehouse_conninfo(server)
    record = run_partition(specs[name], conninfo, conninfo, partition, force_recompute=force)
    say(f"{name} {partition}: {record.status}, extracted {record.extracted}, rejected {record.rejected}, "
        f"cached {record.cached}, computed {record.computed}, loaded {record.loaded}, timings {record.timings}")


def cli_partition(first: str, last: str):
    """The days ``first`` .. ``last`` (inclusive); a bad date or order exits with the reason."""
    from lm_insights.core.partition import Partition

    try:
        first_day, last_day = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    except ValueError as exc:
        raise SystemExit(f"lm-insights run: {exc}; dates are YYYY-MM-DD") from None
    if last_day < first_day:
        raise SystemExit(f"lm-insights run: --end {last_day} is before --start {first_day}")
    return Partition.days(first_day, last_day)


def release_one(name: str, first: str, last: str) -> None:
    from lm_insights.guard.gates import NothingQuarantined, release
    from lm_insights.spec import load_specs

    partition = cli_partition(first, last)
    server, _ = local_env.prepare()
    specs = {s.name: s for s in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines")}
    if name not in specs:
        raise SystemExit(f"unknown pipeline {name!r}; known: {sorted(specs)}")
    try:
        released = release(specs[name], local_env.warehouse_conninfo(server), partition.start.date(),
                           (partition.end - dt.timedelta(days=1)).date())
    except NothingQuarantined as exc:
        raise SystemExit(f"lm-insights release: {exc}") from None
    for held, moved in released.items():
        say(f"{name} {held}: published from quarantine, rows per table {moved}")


def clean_staging(older_than: str) -> None:
    from lm_insights.steps.staging import clean_staging as sweep, parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise SystemExit(f"lm-insights clean-staging: --older-than {exc}") from None
    server, _ = local_env.prepare()
    try:
        dropped = sweep(local_env.warehouse_conninfo(server), age, dag_run_is_live)
    except ValueError as exc:
        raise SystemExit(f"lm-insights clean-staging: --older-than {exc}") from None
    say(f"dropped {len(dropped)} staging tables older than {older_than}" + "".join(f"\n  {t}" for t in dropped))


def dag_run_is_live(dag_id: str, run_id: str) -> bool:
    """Whether Airflow's metadata database calls the DAG run queued or running."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(DagRun).where(
            DagRun.dag_id == dag_id, DagRun.run_id == run_id,
            DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))) > 0


def similar_rows(name: str, query: str, limit: int, conn: str = "warehouse") -> None:
    """Print the rows of pipeline ``name`` nearest ``query`` (a text, or a row key such as ``sale_id=5``) in the
    database of ``conn`` (a connection id, or a conninfo; default: the warehouse, embedded unless configured)."""
    from lm_insights.explain.report import table
    from lm_insights.explain.similar import RowNotFound, similar
    from lm_insights.spec import load_specs
    from lm_insights.core.cache import cache_key

    specs = {s.name: s for s in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines")}
    if name not in specs:
        raise SystemExit(f"lm-insights similar: unknown pipeline {name!r}; known: {sorted(specs)}")
    conninfo, _ = resolve_conn(conn, None)
    try:
        found = similar(specs[name], conninfo, query, cache_key(specs[name]), limit)
    except RowNotFound as exc:
        raise SystemExit(f"lm-insights similar: {exc}") from None
    if not found:
        raise SystemExit(f"lm-insights similar: no rows with embeddings in {name} yet; run the pipeline first")
    print(table(list(found[0]), [tuple(r.values()) for r in found]))
def init_pipeline_command(args: argparse.Namespace) -> None:
    """``init-pipeline``: resolve the connection, write the spec, print what was proposed and what to do next."""
    from lm_insights.init_pipeline import InitError, init_pipeline

    conninfo, conn_id = resolve_conn(args.conn, args.conn_id)
    try:
        result = init_pipeline(args.name, conninfo, args.table, conn_id=conn_id, key=args.key,
                               partition_column=args.partition_column, pipelines_dir=args.pipelines_dir,
                               force=args.force, create_view=args.create_view, sample_days=args.days,
                               sample_rows=args.sample, max_reject_share=args.max_reject_share,
                               outcomes=args.outcomes)
    except InitError as exc:
        raise SystemExit(f"init-pipeline: {exc}") from None
    if result.view_sql:
        say("some names cannot go into a spec as they are; the spec reads this view:")
        print(result.view_sql)
        say("view created" if result.view_created else
            "view NOT created: run the SQL above, or rerun with --create-view")
    path = result.path.resolve()
    say(f"wrote {path.relative_to(local_env.PROJECT_DIR) if path.is_relative_to(local_env.PROJECT_DIR) else path}")
    print(f"  source     {result.table}, key {result.key} ({result.key_source}), partition column "
          f"{result.partition_column} ({result.partition_days} days, {result.first_day}..{result.last_day})")
    print(f"  profiled   {result.sample_rows} rows spread over the history and the newest {args.days} days; "
          f"checked on {result.check_rows} other rows")
    width = max(len(c.label) for c in result.checks)
    for check in result.checks:
        share = f"{check.share:6.1%}" if check.checked else "     - "
        print(f"    {check.label:<{width}}  rejects {share}" + ("" if check.proposed else f"  NOT proposed: "
                                                                 f"{check.why_not}"))
    print(f"  proposed   {result.expectations} expectations (row expectations together reject "
          f"{result.reject_share:.1%} of the check rows), text columns {result.text_columns}")
    print(f"  insights   metrics {result.metrics}, outcomes {result.outcomes}, segments {result.segments}")
    day = result.last_day or "YYYY-MM-DD"
    print(f"  next       review the file, then: lm-insights run {args.name} --date {day}   "
          f"(or trigger the DAG {args.name} in the UI: make up)")


def resolve_conn(conn: str, conn_id: str | None) -> tuple[str, str]:
    """(libpq conninfo, Airflow connection id for the spec) of ``--conn``: a conninfo/URL, or a connection id."""
    if "=" in conn or "://" in conn:
        return conn, conn_id or "warehouse"
    if conn == "warehouse" and "AIRFLOW_CONN_WAREHOUSE" not in os.environ:  # the embedded default
        return local_env.warehouse_conninfo(embedded_pg.start()), conn
    from lm_insights.airflow_dag import conninfo_for

    return conninfo_for(conn), conn_id or conn


def add_init_pipeline_parser(commands) -> None:
    parser = commands.add_parser("init-pipeline", help="write dags/pipelines/NAME.yaml proposed from a live table")
    parser.add_argument("name", help="pipeline name (dag_id): lowercase letters, digits, '_'")
    parser.add_argument("--table", required=True, help="schema.table (or a view) to read")
    parser.add_argument("--conn", default="warehouse",
                        help="Airflow connection id, or a libpq conninfo / postgresql:// URL (default: warehouse, "
                             "the embedded database)")
    parser.add_argument("--conn-id", help="connection id the spec names when --conn is a conninfo (default warehouse)")
    parser.add_argument("--key", nargs="+", help="columns that identify a row (default: primary key / unique index)")
    parser.add_argument("--partition-column", help="date/timestamp column (default: the one with most distinct days)")
    parser.add_argument("--pipelines-dir", default=str(local_env.PROJECT_DIR / "dags" / "pipelines"))
    parser.add_argument("--days", type=int, default=7, help="newest days sampled besides the history (default 7)")
    parser.add_argument("--sample", type=int, default=10_000,
                        help="rows profiled, spread over the history, and as many again checked (default 10000)")
    parser.add_argument("--max-reject-share", type=float, default=0.01,
                        help="leave out a row expectation that rejects more of the check rows (default 0.01)")
    parser.add_argument("--outcomes", nargs="+", default=[],
                        help="metrics that are outcomes, not drivers (besides products, sums and money names)")
    parser.add_argument("--force", action="store_true", help="replace an existing spec file")
    parser.add_argument("--create-view", action="store_true",
                        help="create the generated view when a name must change (printed either way)")


def main(argv: list[str] | None = None) -> None:
    from lm_insights.runtime.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(prog="lm-insights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the demo pipelines on the embedded default")
    demo_parser.add_argument("--days", type=int, default=3, choices=range(1, DEMO_WAREHOUSE_DAYS + 1),
                             metavar="1..7", help="daily partitions to backfill per pipeline")
    demo_parser.add_argument("--sales-per-day", type=int, default=300, help="catalogue sales rows per demo day")
    demo_parser.add_argument("--reviews-per-day", type=int, default=100, help="reviews per demo day")
    demo_parser.add_argument("--no-heads", action="store_true",
                             help="skip training the heads and the day after (small data has too few labelled rows)")
    demo_parser.add_argument("--scenario", choices=sorted(SCENARIOS),
                             help="instead of the retail demo: fill this synthetic scenario's table and run its "
                                  "pipeline (docs/scenarios.md)")
    commands.add_parser("up", help="start the Airflow UI (airflow standalone)")
    commands.add_parser("env", help="print shell exports for the airflow CLI")
    commands.add_parser("stop", help="stop the embedded PostgreSQL")
    run_parser = commands.add_parser("run", help="run one partition without a scheduler")
    run_parser.add_argument("pipeline")
    days = run_parser.add_mutually_exclusive_group(required=True)
    days.add_argument("--date", help="the day to process, YYYY-MM-DD")
    days.add_argument("--start", help="the first day of a range, YYYY-MM-DD (with --end: one partition)")
    run_parser.add_argument("--end", help="the last day of the range (inclusive), YYYY-MM-DD; default: --start")
    run_parser.add_argument("--force-recompute", action="store_true")
    release_parser = commands.add_parser("release", help="publish partitions held in quarantine by a drift gate")
    release_parser.add_argument("pipeline")
    release_parser.add_argument("--start", required=True, help="the first day, YYYY-MM-DD")
    release_parser.add_argument("--end", help="the last day (inclusive), YYYY-MM-DD; default: --start")
    clean_parser = commands.add_parser("clean-staging", help="drop staging tables that runs left behind")
    clean_parser.add_argument("--older-than", default="1d", help="age of the tables to drop: 30m, 12h, 1d (default)")
    train_parser = commands.add_parser("train", help="train a pipeline's heads from its loaded rows")
    train_parser.add_argument("pipeline")
    train_parser.add_argument("--head", action="append", help="only this head (repeat for more)")
    train_parser.add_argument("--method", choices=["linear", "finetune"], help="instead of the spec's")
    train_parser.add_argument("--window-days", type=int, help="instead of train_window_days")
    train_parser.add_argument("--epochs", type=int, help="finetune epochs instead of the spec's")
    train_parser.add_argument("--force", action="store_true", help="train even if nothing changed")
    train_parser.add_argument("--rollback", action="store_true",
                              help="train nothing: demote the promoted version, promote the one before")
    similar_parser = commands.add_parser("similar", help="the rows nearest in meaning to a text or a row")
    similar_parser.add_argument("pipeline")
    similar_parser.add_argument("query", help='any text, or a row key such as "sale_id=5"')
    similar_parser.add_argument("--limit", type=int, default=5)
    similar_parser.add_argument("--conn", default="warehouse",
                                help="Airflow connection id, or a libpq conninfo / postgresql:// URL of the database "
                                     "with the insight tables (default: warehouse, the embedded database)")
    add_init_pipeline_parser(commands)
    args = parser.parse_args(argv)

    if args.command == "demo":
        demo(args.days, args.sales_per_day, args.reviews_per_day, heads=not args.no_heads, scenario=args.scenario)
    elif args.command == "run":
        if args.date and args.end:
            parser.error("--end goes with --start, not with --date")
        run_one(args.pipeline, args.date or args.start, args.date or args.end or args.start, args.force_recompute)
    elif args.command == "release":
        release_one(args.pipeline, args.start, args.end or args.start)
    elif args.command == "similar":
        similar_rows(args.pipeline, args.query, args.limit, args.conn)
    elif args.command == "clean-staging":
        clean_staging(args.older_than)
    elif args.command == "train":
        train(args.pipeline, args.head, args.method, args.window_days, args.epochs, args.force, args.rollback)
    elif args.command == "init-pipeline":
        init_pipeline_command(args)
    elif args.command == "up":
        _, env = local_env.prepare()
        host = local_env.ui_host()
        say(f"starting airflow standalone on http://{host}:{local_env.UI_PORT} (Ctrl-C stops it; `make stop` stops "
            "the database)")
        say(f"log in as {local_env.ADMIN_USER} with the password in "
            f"{env['AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE']} (readable by you only)")
        if local_env.is_loopback(host):
            say("reachable from this machine only; LM_INSIGHTS_UI_HOST=0.0.0.0 make up exposes it (plain HTTP: "
                "see docs/security.md)")
        venv_bin = os.path.dirname(sys.executable)
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"  # standalone spawns `airflow`
        os.execve(os.path.join(venv_bin, "airflow"), ["airflow", "standalone"], os.environ)
    elif args.command == "env":
        server = embedded_pg.start()
        for name, value in local_env.airflow_environment(server, local_env.default_airflow_home()).items():
            print(f"export {name}={shlex.quote(value)}")
    elif args.command == "stop":
        say("embedded PostgreSQL stopped" if embedded_pg.stop() else "embedded PostgreSQL was not running")


if __name__ == "__main__":
    main()
