"""Measure a scenario's regression head against its honest baselines, on the scenario's synthetic data.

The scenario's days are run through the pipeline (the same ``run_partition`` the DAG's tasks run, on a throw-away
embedded PostgreSQL), the spec's head is trained with the platform's trainer, and its mean absolute error on the
trainer's evaluation rows (the latest ``evaluation_share`` of the window, never trained on) is printed next to:

- the training mean (what the trainer itself compares against), and
- persistence, where the scenario has one: tomorrow's value is today's (``market_risk``: ``prior_volatility``),

all on the same evaluation rows. One Markdown table row per head::

    nice -n 10 python -m lm_insights.runtime.scenario_heads market_risk --days 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import tempfile
from pathlib import Path

import numpy as np
from psycopg import sql

from lm_insights.runtime import db, embedded_pg, scenarios

# scenario -> the column that holds the persistence forecast of the head's target (today's value of it)
PERSISTENCE_COLUMNS = {"market_risk": "prior_volatility"}


def persistence_mae(conn, spec, head_name: str, column: str, first: str, last: str) -> tuple[float, int]:
    """Mean absolute error of predicting the target by ``column`` on the loaded rows whose partition column lies
    in ``[first, last]`` (the trainer's evaluation rows), and their count."""
    head = spec.lm.heads[head_name]
    time_column = sql.Identifier(spec.source.partition_column)
    rows = conn.execute(sql.SQL(
        "select distinct on ({key}) {target}, {column} from {rows} where {target} is not null "
        "and {time} between %s and %s order by {key}, partition_start desc").format(
        key=sql.SQL(", ").join(map(sql.Identifier, spec.source.key)), target=sql.Identifier(head.target),
        column=sql.Identifier(column), rows=db.qualified(spec.sink.schema_, f"{spec.name}_rows"), time=time_column),
        (first, last)).fetchall()
    true, forecast = np.array([float(t) for t, _ in rows]), np.array([float(c) for _, c in rows])
    return float(np.abs(true - forecast).mean()), len(rows)


def measure(name: str, days: int, rows_per_day: int | None, seed: int) -> list[dict]:
    """Run ``days`` days of the scenario, train its heads, return one dict of figures per head."""
    from lm_engine import load_engine

    from lm_insights.core.partition import Partition
    from lm_insights.learn import training
    from lm_insights.pipeline import run_partition
    from lm_insights.spec import load_specs

    spec = next(s for s in load_specs() if s.name == name)
    start = dt.date(2026, 11, 1)
    with tempfile.TemporaryDirectory(prefix="scenario_heads_") as root:
        server = embedded_pg.start(Path(root) / "pgdata", keep_running=False)
        try:
            conninfo = embedded_pg.ensure_database(server, "warehouse")
            scenarios.generate(conninfo, name, start, days, rows_per_day, seed)
            engine = load_engine(spec.lm.model)
            for day in range(days):
                record = run_partition(spec, conninfo, conninfo, Partition.day(start + dt.timedelta(days=day)),
                                       engine=engine)
                logging.info("%s %s: %s, loaded %d", name, start + dt.timedelta(days=day), record.status,
                             record.loaded)
            figures = []
            for head_name in spec.lm.heads:
                result = training.train_head(spec, conninfo, head_name, training.TrainOptions(force=True), engine)
                with db.connect(conninfo) as conn:
                    card = conn.execute("select card from insights.models where pipeline = %s and head = %s "
                                        "and version = %s", (spec.name, head_name, result.version)).fetchone()[0]
                    split = card["evaluation_split"]
                    found = {"head": head_name, "decision": result.decision, "reason": result.reason,
                             "evaluation_rows": result.metrics["candidate"]["rows"], "split": split,
                             "head_mae": result.metrics["candidate"]["mae"], "head_r2": result.metrics["candidate"]["r2"],
                             "mean_mae": result.metrics["mean"]["mae"]}
                    if name in PERSISTENCE_COLUMNS:
                        found["persistence_mae"], rows = persistence_mae(
                            conn, spec, head_name, PERSISTENCE_COLUMNS[name], split["evaluation_from"],
                            split["evaluation_until"])
                        if rows != found["evaluation_rows"]:
                            raise RuntimeError(f"persistence measured on {rows} rows, the head on "
                                               f"{found['evaluation_rows']}: not the same evaluation rows")
                figures.append(found)
            return figures
        finally:
            server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_insights.runtime.scenario_heads",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=sorted(scenarios.SCENARIOS))
    parser.add_argument("--days", type=int, default=7, help="days to generate, run and train on (default 7)")
    parser.add_argument("--rows-per-day", type=int, help="instruments or shipments per day (default: the scenario's)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    figures = measure(args.scenario, args.days, args.rows_per_day, args.seed)
    print("| scenario | head | evaluation rows | head MAE (R²) | training mean MAE | persistence MAE | decision |")
    print("|---|---|---|---|---|---|---|")
    for f in figures:
        persistence = f"{f['persistence_mae']:.3f}" if "persistence_mae" in f else "n/a"
        r2 = f"{f['head_r2']:.2f}" if f["head_r2"] is not None else "n/a"
        print(f"| {args.scenario} | {f['head']} | {f['evaluation_rows']} ({f['split']['evaluation_from']} .. "
              f"{f['split']['evaluation_until']}) | {f['head_mae']:.3f} ({r2}) | {f['mean_mae']:.3f} | {persistence} "
              f"| {f['decision']} |")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
