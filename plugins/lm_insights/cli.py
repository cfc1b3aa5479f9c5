"""``lm-insights``: the embedded default deployment from the command line.

    lm-insights demo [--days 3]     set up, fill the demo warehouse, backfill every demo pipeline through a scheduler
    lm-insights up                  the Airflow UI (airflow standalone) on the same database
    lm-insights run NAME --date D   one partition of one pipeline without a scheduler
    lm-insights run NAME --start D --end D   the days D..D (inclusive) as one partition
    lm-insights clean-staging [--older-than 1d]   drop staging tables that runs left behind
    lm-insights init-pipeline NAME --table schema.table [--conn CONN] [--key COL ...]
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
    """One real DAG run (``dag.test``) whose data interval is ``[day, day + 1)``; return the DagRun."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(local_env.PROJECT_DIR / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    logical_date = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), dt.timezone.utc)
    return bag.get_dag(dag_id).test(logical_date=logical_date, run_conf=conf or {})


def demo(days: int, sales_per_day: int, reviews_per_day: int) -> None:
    from lm_insights.runtime import demo_warehouse
    from lm_insights.spec import load_specs

    server, _ = local_env.prepare()
    conninfo = local_env.warehouse_conninfo(server)
    say(f"filling the demo warehouse ({DEMO_WAREHOUSE_DAYS} days from {DEMO_START})")
    demo_warehouse.create_schema(conninfo)
    counts = demo_warehouse.generate(conninfo, start=DEMO_START, days=DEMO_WAREHOUSE_DAYS,
                                     sales_per_day=sales_per_day, reviews_per_day=reviews_per_day)
    say(f"warehouse rows: {counts}")
    pipelines = [spec.name for spec in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines")]
    run_demo_backfills(conninfo, pipelines, DEMO_START, DEMO_START + dt.timedelta(days=days - 1))
    print_highlights(conninfo)
    info = server.get_postmaster_info()
    say("query the insight tables with:")
    print(f"  psql \"host={info.socket_dir} port={info.port} user=postgres dbname={local_env.WAREHOUSE_DB}\"")
    print("  tables: insights.<pipeline>_rows, _segments, _drivers, _summaries, _rejects; insights.runs")
    print("  Airflow UI: make up (http://localhost:8080): the runs of each pipeline and their task logs")


def run_demo_backfills(conninfo: str, pipelines: list[str], first: dt.date, last: dt.date,
                       timeout_s: float = 3600.0) -> list[dict]:
    """Backfill ``first..last`` of every pipeline through a scheduler (LocalExecutor), as the UI will show it.

    The DAGs are unpaused for the backfill and paused again after it (unpaused, `make up`'s scheduler would run
    the latest cron interval, which has no demo data). Returns the finished runs (REST API dicts).
    """
    from lm_insights.runtime.services import LocalStack

    # The whole environment (PATH, PYTHONPATH, ...): prepare() has put the Airflow settings into it.
    stack = LocalStack(dict(os.environ), local_env.default_airflow_home().parent / "demo_services")
    say(f"starting a scheduler (LocalExecutor), a dag-processor and an api-server; logs in {stack.run_dir}")
    started = time.monotonic()
    stack.start(dag_ids=pipelines, unpaused=pipelines)
    try:
        say(f"services up in {time.monotonic() - started:.0f}s; backfilling {first}..{last} of {', '.join(pipelines)}")
        for dag_id in pipelines:
            local_env.airflow("backfill", "create", "--dag-id", dag_id, "--from-date", first.isoformat(),
                              "--to-date", last.isoformat(), "--max-active-runs", "1",
                              "--reprocess-behavior", "completed")
        runs = wait_for_demo_runs(stack, conninfo, pipelines, first, last, timeout_s)
        # The scheduler closes a backfill a few seconds after its last run; until then the UI shows it in progress.
        stack.wait_until(lambda: all(b["completed_at"] for dag_id in pipelines for b in stack.request(
            "GET", f"/api/v2/backfills?dag_id={dag_id}")["backfills"]), "the backfills to be marked complete",
            time.monotonic() + 120, interval_s=2)
        return runs
    finally:
        try:
            for dag_id in pipelines:
                stack.set_paused(dag_id, True)
        finally:
            stack.stop()


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


def print_highlights(conninfo: str) -> None:
    """What a user came for: the summaries, the price-tier table and the runs."""
    from lm_insights.runtime import db
    from lm_insights.explain import report

    with db.connect(conninfo) as conn:
        print()
        print(report.render_text(conn))


def run_one(name: str, first: str, last: str, force: bool) -> None:
    from lm_insights.steps.partition import Partition
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
    from lm_insights.steps.partition import Partition

    try:
        first_day, last_day = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    except ValueError as exc:
        raise SystemExit(f"lm-insights run: {exc}; dates are YYYY-MM-DD") from None
    if last_day < first_day:
        raise SystemExit(f"lm-insights run: --end {last_day} is before --start {first_day}")
    return Partition.days(first_day, last_day)


def clean_staging(older_than: str) -> None:
    from lm_insights.steps.staging import clean_staging as sweep, parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise SystemExit(f"lm-insights clean-staging: --older-than {exc}") from None
    server, _ = local_env.prepare()
    dropped = sweep(local_env.warehouse_conninfo(server), age)
    say(f"dropped {len(dropped)} staging tables older than {older_than}" + "".join(f"\n  {t}" for t in dropped))


def init_pipeline_command(args: argparse.Namespace) -> None:
    """``init-pipeline``: resolve the connection, write the spec, print what was proposed and what to do next."""
    from lm_insights.init_pipeline import InitError, init_pipeline

    conninfo, conn_id = resolve_conn(args.conn, args.conn_id)
    try:
        result = init_pipeline(args.name, conninfo, args.table, conn_id=conn_id, key=args.key,
                               partition_column=args.partition_column, pipelines_dir=args.pipelines_dir,
                               force=args.force, create_view=args.create_view)
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
          f"{result.partition_column} ({result.partition_days} days), profiled {result.sample_rows} recent rows")
    print(f"  proposed   {result.expectations} expectations, text columns {result.text_columns}")
    print(f"  insights   metrics {result.metrics}, segments {result.segments}")
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
    parser.add_argument("--force", action="store_true", help="replace an existing spec file")
    parser.add_argument("--create-view", action="store_true",
                        help="create the generated view when a name must change (printed either way)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lm-insights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the demo pipelines on the embedded default")
    demo_parser.add_argument("--days", type=int, default=3, choices=range(1, DEMO_WAREHOUSE_DAYS + 1),
                             metavar="1..7", help="daily partitions to backfill per pipeline")
    demo_parser.add_argument("--sales-per-day", type=int, default=300, help="catalogue sales rows per demo day")
    demo_parser.add_argument("--reviews-per-day", type=int, default=100, help="reviews per demo day")
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
    clean_parser = commands.add_parser("clean-staging", help="drop staging tables that runs left behind")
    clean_parser.add_argument("--older-than", default="1d", help="age of the tables to drop: 30m, 12h, 1d (default)")
    add_init_pipeline_parser(commands)
    args = parser.parse_args(argv)

    if args.command == "demo":
        demo(args.days, args.sales_per_day, args.reviews_per_day)
    elif args.command == "run":
        if args.date and args.end:
            parser.error("--end goes with --start, not with --date")
        run_one(args.pipeline, args.date or args.start, args.date or args.end or args.start, args.force_recompute)
    elif args.command == "clean-staging":
        clean_staging(args.older_than)
    elif args.command == "init-pipeline":
        init_pipeline_command(args)
    elif args.command == "up":
        local_env.prepare()
        host = local_env.ui_host()
        say(f"starting airflow standalone on http://{host}:{local_env.UI_PORT} (Ctrl-C stops it; `make stop` stops "
            "the database)")
        if local_env.is_loopback(host):
            say("reachable from this machine only; LM_INSIGHTS_UI_HOST=0.0.0.0 make up exposes it (with logins)")
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
