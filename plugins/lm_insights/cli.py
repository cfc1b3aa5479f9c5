"""``lm-insights``: the embedded default deployment from the command line.

    lm-insights demo [--days 3]     set up, fill the demo warehouse, run every demo pipeline through real DAG runs
    lm-insights up                  the Airflow UI (airflow standalone) on the same database
    lm-insights run NAME --date D   one partition of one pipeline without a scheduler
    lm-insights run NAME --start D --end D   the days D..D (inclusive) as one partition
    lm-insights release NAME --start D [--end D]   publish the partitions a drift gate held in quarantine
    lm-insights clean-staging [--older-than 1d]   drop staging tables that runs left behind
    lm-insights train NAME          train the pipeline's heads from its loaded rows (--rollback: previous version)
    lm-insights similar NAME "text or row key"   the loaded rows nearest in meaning (e.g. "sale_id=5")
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


def demo(days: int) -> None:
    from lm_insights.runtime import demo_warehouse
    from lm_insights.spec import load_specs

    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # task logs stay in the UI; keep stdout short
    server, _ = local_env.prepare()
    conninfo = local_env.warehouse_conninfo(server)
    say(f"filling the demo warehouse ({DEMO_WAREHOUSE_DAYS} days from {DEMO_START})")
    demo_warehouse.create_schema(conninfo)
    counts = demo_warehouse.generate(conninfo, start=DEMO_START, days=DEMO_WAREHOUSE_DAYS)
    say(f"warehouse rows: {counts}")
    for spec in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines"):
        for offset in range(days):
            day = DEMO_START + dt.timedelta(days=offset)
            say(f"DAG run {spec.name} for {day}: extract, validate, textualize, infer, insights, load")
            started = time.monotonic()
            run = run_dag(spec.name, day)
            if run.state != "success":
                raise SystemExit(f"{spec.name} {day}: DAG run ended {run.state}; rerun with "
                                 "AIRFLOW__LOGGING__LOGGING_LEVEL=INFO to see the task logs")
            say(f"  {run_counts(conninfo, run.run_id)} in {time.monotonic() - started:.0f}s")
    demo_heads(conninfo, DEMO_START + dt.timedelta(days=days))
    print_highlights(conninfo)
    info = server.get_postmaster_info()
    say("query the insight tables with:")
    print(f"  psql \"host={info.socket_dir} port={info.port} user=postgres dbname={local_env.WAREHOUSE_DB}\"")
    print("  tables: insights.<pipeline>_rows, _segments, _drivers, _summaries, _rejects; insights.runs")
    print("  Airflow UI: make up (http://localhost:8080)")


def demo_heads(conninfo: str, next_day: dt.date) -> None:
    """Train each pipeline's heads on the days run so far (a real run of <pipeline>__train), run the next day with
    the promoted head: the report then shows its measured accuracy next to zero-shot and the majority class."""
    from lm_insights.runtime import db
    from lm_insights.spec import load_specs

    for spec in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines"):
        if not spec.lm.heads:
            continue
        say(f"DAG run {spec.name}__train: heads {', '.join(spec.lm.heads)} from the rows loaded so far")
        run = run_dag(f"{spec.name}__train", next_day - dt.timedelta(days=1))
        if run.state != "success":
            raise SystemExit(f"{spec.name}__train: DAG run ended {run.state}; rerun with "
                             "AIRFLOW__LOGGING__LOGGING_LEVEL=INFO to see the task logs")
        with db.connect(conninfo) as conn:
            for name in spec.lm.heads:
                version, decision, reason = conn.execute(
                    "select version, decision, reason from insights.models where pipeline = %s and head = %s "
                    "order by version desc limit 1", (spec.name, name)).fetchone()
                say(f"  {name} v{version}: {decision} ({reason})")
        say(f"DAG run {spec.name} for {next_day} with the promoted head")
        run = run_dag(spec.name, next_day)
        if run.state != "success":
            raise SystemExit(f"{spec.name} {next_day}: DAG run ended {run.state}")
        say(f"  {run_counts(conninfo, run.run_id)}; the report below measures the head on {next_day}'s rows "
            f"next to zero-shot ({spec.sink.schema_}.{spec.name}_quality)")


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


def run_counts(conninfo: str, run_id: str) -> str:
    """The counts a DAG run recorded in insights.runs, as one line."""
    from lm_insights.runtime import db

    with db.connect(conninfo) as conn:
        row = conn.execute("select extracted, rejected, cached, computed, loaded from insights.runs "
                           "where run_id = %s", (run_id,)).fetchone()
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
    dropped = sweep(local_env.warehouse_conninfo(server), age)
    say(f"dropped {len(dropped)} staging tables older than {older_than}" + "".join(f"\n  {t}" for t in dropped))


def similar_rows(name: str, query: str, limit: int) -> None:
    """Print the rows of pipeline ``name`` nearest ``query`` (a text, or a row key such as ``sale_id=5``)."""
    from lm_insights.explain.report import table
    from lm_insights.explain.similar import RowNotFound, similar
    from lm_insights.spec import load_specs
    from lm_insights.steps.infer import cache_key

    server, _ = local_env.prepare()
    specs = {s.name: s for s in load_specs(local_env.PROJECT_DIR / "dags" / "pipelines")}
    if name not in specs:
        raise SystemExit(f"unknown pipeline {name!r}; known: {sorted(specs)}")
    try:
        found = similar(specs[name], local_env.warehouse_conninfo(server), query, cache_key(specs[name]), limit)
    except RowNotFound as exc:
        raise SystemExit(f"lm-insights similar: {exc}") from None
    if not found:
        raise SystemExit(f"lm-insights similar: no rows with embeddings in {name} yet; run the pipeline first")
    print(table(list(found[0]), [tuple(r.values()) for r in found]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lm-insights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the demo pipelines on the embedded default")
    demo_parser.add_argument("--days", type=int, default=3, help="daily partitions to run per pipeline")
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
    args = parser.parse_args(argv)

    if args.command == "demo":
        demo(args.days)
    elif args.command == "run":
        if args.date and args.end:
            parser.error("--end goes with --start, not with --date")
        run_one(args.pipeline, args.date or args.start, args.date or args.end or args.start, args.force_recompute)
    elif args.command == "release":
        release_one(args.pipeline, args.start, args.end or args.start)
    elif args.command == "similar":
        similar_rows(args.pipeline, args.query, args.limit)
    elif args.command == "clean-staging":
        clean_staging(args.older_than)
    elif args.command == "train":
        train(args.pipeline, args.head, args.method, args.window_days, args.epochs, args.force, args.rollback)
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
        for name, value in local_env.airflow_environment(server, local_env.PROJECT_DIR / ".local" / "airflow").items():
            print(f"export {name}={shlex.quote(value)}")
    elif args.command == "stop":
        say("embedded PostgreSQL stopped" if embedded_pg.stop() else "embedded PostgreSQL was not running")


if __name__ == "__main__":
    main()
