"""Trained heads end to end on the embedded PostgreSQL with the real all-MiniLM-L6-v2: train from the ratings of
past demo reviews, promote only what beats the references, infer with the promoted head, measure every run."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
import torch
import yaml

from lm_insights.learn import heads, models, training
from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse, embedded_pg
from lm_insights.spec import PipelineSpec
from lm_insights.core.partition import Partition

SPEC_FILE = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "customer_reviews.yaml"
START = dt.date(2026, 11, 1)
HEAD = "learned_sentiment"
SCORE = "rating_score"  # a regression head on the same rows: the rating as a number


def reviews_spec(**head_changes) -> PipelineSpec:
    """customer_reviews without attributions (fewer texts to encode), with ``head_changes`` on its head and a
    regression head ``rating_score``."""
    raw = yaml.safe_load(SPEC_FILE.read_text())
    raw["lm"]["attributions"] = False
    raw["lm"]["heads"][HEAD] |= head_changes
    raw["lm"]["heads"][SCORE] = {"task": "regression", "target": "rating"}
    return PipelineSpec.model_validate(raw)


@pytest.fixture(scope="module")
def engine():
    from lm_engine import load_engine

    return load_engine("all-MiniLM-L6-v2")


def from_safetensors(data: bytes):
    from lm_engine.train import from_safetensors as load

    return load(data)


@pytest.fixture(scope="module")
def warehouse(pg_server, engine) -> str:
    """Four demo days of reviews; the pipeline has run on the first three (no head promoted yet)."""
    conninfo = embedded_pg.ensure_database(pg_server, "heads_module")
    demo_warehouse.create_schema(conninfo)
    demo_warehouse.generate(conninfo, start=START, days=4, sales_per_day=0, reviews_per_day=60)
    for offset in range(3):
        run_partition(reviews_spec(), conninfo, conninfo, Partition.day(START + dt.timedelta(days=offset)),
                      engine=engine)
    return conninfo


@pytest.fixture(scope="module")
def promoted(warehouse, engine) -> training.TrainResult:
    """The first training run of the head: it beats majority and zero-shot and is promoted as v1."""
    result = training.train_head(reviews_spec(), warehouse, HEAD, engine=engine)
    assert (result.decision, result.version) == ("promoted", 1), result.reason
    score = training.train_head(reviews_spec(), warehouse, SCORE, engine=engine)
    assert (score.decision, score.version) == ("promoted", 1), score.reason
    assert score.metrics["candidate"]["mae"] < score.metrics["best constant"]["mae"]
    return result


@pytest.fixture
def isolated(pg_server, warehouse, promoted) -> str:
    """A copy of the module's warehouse (head v1 promoted) for a test that loads day 4: the other tests train on
    days 1-3 and must not see its rows, whatever order the tests run in."""
    from psycopg import sql as psql

    name = f"heads_copy_{next(_copies)}"
    with psycopg.connect(embedded_pg.conninfo(pg_server, "postgres"), autocommit=True) as conn:
        # a template must have no other session: a training process killed by an earlier test may linger
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = 'heads_module'")
        conn.execute(psql.SQL("drop database if exists {}").format(psql.Identifier(name)))
        conn.execute(psql.SQL("create database {} template {}").format(psql.Identifier(name),
                                                                       psql.Identifier("heads_module")))
    return embedded_pg.conninfo(pg_server, name)


_copies = itertools.count()


def query(conninfo: str, statement: str, params=()) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(statement, params).fetchall()


def versions(conninfo: str, pipeline: str = "customer_reviews", head: str = HEAD) -> list[tuple]:
    return query(conninfo, "select version, decision, promoted from insights.models where pipeline = %s and "
                           "head = %s order by version", (pipeline, head))


def test_a_run_without_a_promoted_head_succeeds_and_says_so(warehouse):
    day = dt.datetime.combine(START, dt.time(0), dt.timezone.utc)
    labels = query(warehouse, f"select distinct {HEAD}_label, {HEAD}_probability from insights.customer_reviews_rows "
                              "where partition_start = %s", (day,))
    assert labels == [(None, None)]
    (summary,), = query(warehouse, "select summary from insights.customer_reviews_summaries where partition_start = %s",
                        (day,))
    assert f"{HEAD}: no trained head yet" in summary
    assert "lm-insights train customer_reviews" in summary
    models_measured = query(warehouse, "select head_version, model from insights.customer_reviews_quality "
                                       "where partition_start = %s and head is not null", (day,))
    assert models_measured == [(None, "zero_shot")]


def test_the_head_trains_deterministically_and_beats_majority_and_zero_shot(warehouse, engine, promoted):
    metrics = promoted.metrics
    for reference in ("best constant", "persistence", "zero-shot"):  # beyond noise, on the same backtest rows
        assert metrics["comparisons"][reference]["better"], reference
        assert metrics["candidate"]["accuracy"] > metrics[reference]["accuracy"]
    (card,), = query(warehouse, "select card from insights.models where pipeline = 'customer_reviews' and "
                                "head = %s and version = 1", (HEAD,))
    folds = card["backtest"]["folds"]
    assert [f["train_rows"] for f in folds] == sorted({f["train_rows"] for f in folds})  # rolling origins
    for fold, later in zip(folds, folds[1:]):
        assert fold["test_until"] <= later["test_from"] and later["train_rows"] == fold["train_rows"] + fold["test_rows"]
    assert card["backtest"]["rows"] == sum(f["test_rows"] for f in folds) == metrics["rows"]
    assert card["labels"] == ["negative", "neutral", "positive"] and card["encoder_key"] == engine.model_key

    unchanged = training.train_head(reviews_spec(), warehouse, HEAD, engine=engine)
    assert unchanged.decision == "skipped"  # same rows, same settings: nothing new to learn
    again = training.train_head(reviews_spec(), warehouse, HEAD, training.TrainOptions(force=True), engine=engine)
    # v1 was refit on every row of the window: no row is newer than its training, so nothing can show it worse
    assert again.decision == "rejected" and "could not compare with promoted v1" in again.reason
    assert "keeping it" in again.reason
    first, second = (from_safetensors(bytes(w)) for (w,) in query(
        warehouse, "select weights from insights.models where pipeline = 'customer_reviews' and head = %s and "
                   "version in (1, %s) order by version", (HEAD, again.version)))
    assert first.tensors.keys() == second.tensors.keys()
    for name, tensor in first.tensors.items():  # bit-identical weights (only the logged seconds differ)
        assert torch.equal(tensor, second.tensors[name]), name
    assert again.metrics["candidate"] == promoted.metrics["candidate"]
    assert versions(warehouse)[:2] == [(1, "promoted", True), (2, "rejected", False)]


def test_promotion_refuses_a_head_trained_on_shuffled_labels(warehouse, engine, promoted, monkeypatch):
    from lm_engine import train

    real_fit = train.fit_linear

    def fit_on_shuffled_labels(embeddings, targets, task, **kwargs):
        shuffled = list(np.random.default_rng(1).permutation(np.asarray(targets, dtype=object)))
        return real_fit(embeddings, shuffled, task, **kwargs)

    monkeypatch.setattr(train, "fit_linear", fit_on_shuffled_labels)
    spec = reviews_spec().model_copy(update={"name": "reviews_shuffled"})  # no promoted version to hide behind
    card = train_on_rows_of_customer_reviews(spec, warehouse, engine)
    assert card["decision"] == "rejected"
    assert not card["metrics"]["comparisons"]["best constant"]["better"]
    assert "is not better beyond noise than best constant" in card["reason"]
    assert models.promoted_versions(warehouse, spec) == {}


def test_a_failed_training_run_leaves_the_promoted_head_in_place(warehouse, engine, promoted, monkeypatch):
    from lm_engine import train

    def killed(*args, **kwargs):
        raise RuntimeError("worker killed while training")

    before = versions(warehouse)
    monkeypatch.setattr(train, "to_safetensors", killed)  # dies after training, before anything is stored
    with pytest.raises(RuntimeError, match="killed"):
        training.train_head(reviews_spec(), warehouse, HEAD, training.TrainOptions(force=True), engine=engine)
    assert versions(warehouse) == before
    assert models.promoted_versions(warehouse, reviews_spec())[HEAD] == 1


def test_a_training_process_killed_while_storing_leaves_the_promoted_head_in_place(warehouse, promoted, tmp_path):
    """SIGKILL right after the new version's insert, before its commit: PostgreSQL keeps the registry as it was."""
    code = (
        "import os, signal, sys, yaml\n"
        "from lm_insights.learn import models, training\n"
        "from lm_insights.spec import PipelineSpec\n"
        "real_save = models.save_version\n"
        "def save_then_die(*args, **kwargs):\n"
        "    real_save(*args, **kwargs)\n"
        "    print('inserted', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "models.save_version = save_then_die\n"
        "spec = PipelineSpec.model_validate_json(sys.argv[2])\n"
        "training.train_head(spec, sys.argv[1], sys.argv[3], training.TrainOptions(force=True))\n"
    )
    before = versions(warehouse)
    done = subprocess.run([sys.executable, "-c", code, warehouse, reviews_spec().model_dump_json(by_alias=True), HEAD],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9 and "inserted" in done.stdout, done.stderr[-2000:]
    assert versions(warehouse) == before
    assert models.promoted_versions(warehouse, reviews_spec())[HEAD] == 1


def test_uncertain_coverage_follows_min_precision_measured_on_rows_that_did_not_set_it(warehouse, engine):
    cards = {}
    for min_precision in (0.6, 0.97):
        spec = reviews_spec(min_precision=min_precision).model_copy(
            update={"name": f"reviews_p{int(min_precision * 100)}"})
        cards[min_precision] = train_on_rows_of_customer_reviews(spec, warehouse, engine)
    loose, strict = cards[0.6], cards[0.97]
    for min_precision, card in cards.items():
        published = card["metrics"]["candidate_published"]
        assert card["min_precision"] == min_precision
        # the first fold has no earlier rows to set its threshold: the published figures leave it out
        assert published["rows"] == card["backtest"]["rows"] - card["backtest"]["folds"][0]["test_rows"]
    assert loose["threshold"] <= (strict["threshold"] if strict["threshold"] is not None else 1.0)
    assert strict["metrics"]["candidate_published"]["coverage"] <= loose["metrics"]["candidate_published"]["coverage"]
    assert loose["metrics"]["candidate_published"]["coverage"] > 0


def train_on_rows_of_customer_reviews(spec: PipelineSpec, conninfo: str, engine,
                                      options: training.TrainOptions = training.TrainOptions()) -> dict:
    """Train ``spec``'s head on the rows customer_reviews loaded (the spec differs in name and settings)."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(f'create or replace view insights."{spec.name}_rows" as '
                     "select * from insights.customer_reviews_rows")
    result = training.train_head(spec, conninfo, HEAD, options, engine=engine)
    (card,), = query(conninfo, "select card from insights.models where pipeline = %s and version = %s",
                     (spec.name, result.version))
    return card


def test_a_worker_with_an_empty_filesystem_loads_the_promoted_head(warehouse, promoted, tmp_path):
    spec = reviews_spec()
    version = models.promoted_versions(warehouse, spec)[HEAD]
    vectors = np.random.default_rng(0).normal(size=(4, 384)).astype(np.float32)
    here = heads.classify_outputs(_probabilities(models.load_head(warehouse, spec, HEAD, version), vectors),
                                  ["negative", "neutral", "positive"], None)
    code = (
        "import json, sys, numpy as np, yaml\n"
        "from lm_insights.learn import models, heads\n"
        "from lm_insights.spec import PipelineSpec\n"
        "from lm_engine.train import predict_from_embeddings\n"
        "spec = PipelineSpec.model_validate(json.loads(sys.argv[2]))\n"
        "loaded = models.load_head(sys.argv[1], spec, sys.argv[3], int(sys.argv[4]))\n"
        "vectors = np.asarray(json.loads(sys.argv[5]), dtype=np.float32)\n"
        "print(json.dumps(heads.classify_outputs(predict_from_embeddings(loaded.head, vectors), loaded.card['labels'],"
        " None)))\n"
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code, warehouse, spec.model_dump_json(by_alias=True), HEAD,
                           str(version), json.dumps(vectors.tolist())], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == here
    assert list(tmp_path.iterdir()) == []  # it wrote nothing and read nothing but the database


def _probabilities(loaded, vectors):
    from lm_engine.train import predict_from_embeddings

    return predict_from_embeddings(loaded.head, vectors)


def test_a_run_with_the_promoted_head_labels_rows_and_measures_itself(isolated, engine, promoted):
    warehouse = isolated
    spec = reviews_spec()
    day = START + dt.timedelta(days=3)
    record = run_partition(spec, warehouse, warehouse, Partition.day(day), engine=engine)
    start = dt.datetime.combine(day, dt.time(0), dt.timezone.utc)
    rows = query(warehouse, f"select rating, {HEAD}_label, {HEAD}_probability, {HEAD}_margin, sentiment_label "
                            "from insights.customer_reviews_rows where partition_start = %s", (start,))
    assert rows and {label for _, label, _, _, _ in rows} <= {"negative", "neutral", "positive", "uncertain"}
    (card,), = query(warehouse, "select card from insights.models where pipeline = 'customer_reviews' and "
                                "head = %s and promoted", (HEAD,))
    threshold = card["threshold"]
    for _, label, probability, margin, _ in rows:
        assert 0 < probability <= 1 and 0 <= margin <= probability
        assert (label == "uncertain") == (threshold is None or probability < threshold)

    # the quality figures by hand, from the loaded rows
    classes = {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"}
    labelled = [(classes[r], label) for r, label, _, _, _ in rows if r in classes]
    answered = [(t, p) for t, p in labelled if p != "uncertain"]
    expected = {"rows": len(labelled), "answered": len(answered),
                "coverage": len(answered) / len(labelled),
                "accuracy": sum(t == p for t, p in answered) / len(answered) if answered else None}
    quality = query(warehouse, "select model, head_version, rows, answered, coverage, accuracy, macro_f1, confusion "
                               "from insights.customer_reviews_quality where partition_start = %s and head = %s "
                               "order by model", (start, HEAD))
    by_model = {model: rest for model, *rest in quality}
    assert set(by_model) == {"head", "majority", "zero_shot"}
    version, n, n_answered, coverage, accuracy, macro_f1, confusion = by_model["head"]
    assert version == 1
    assert (n, n_answered) == (expected["rows"], expected["answered"])
    assert coverage == pytest.approx(expected["coverage"]) and accuracy == pytest.approx(expected["accuracy"])
    assert sum(n for per_true in confusion.values() for n in per_true.values()) == n
    majority_right = sum(t == card["majority_class"] for t, _ in labelled) / len(labelled)
    assert by_model["majority"][4] == pytest.approx(majority_right)
    zero_shot = [(classes[r], z) for r, _, _, _, z in rows if r in classes and z != "uncertain"]
    assert by_model["zero_shot"][4] == pytest.approx(sum(t == z for t, z in zero_shot) / len(zero_shot))

    assert record.quality[HEAD]["version"] == 1
    assert record.quality[HEAD]["models"]["head"]["accuracy"] == pytest.approx(expected["accuracy"])
    (summary,), = query(warehouse, "select summary from insights.customer_reviews_summaries where "
                                   "partition_start = %s", (start,))
    assert f"{HEAD} (head v1): {expected['accuracy']:.0%} right on the {n_answered} of {n} rows with a rating" \
        in summary
    segments = query(warehouse, "select distinct segment from insights.customer_reviews_segments where "
                                "partition_start = %s", (start,))
    assert (f"label:{HEAD}",) in segments
    drivers = query(warehouse, "select field from insights.customer_reviews_drivers where partition_start = %s",
                    (start,))
    assert (f"{HEAD}_label",) not in drivers  # trained on the rating, it would "drive" the rating by construction
    from lm_insights.explain import report

    with psycopg.connect(warehouse) as conn:
        text = report.render_text(conn)
    assert f"{HEAD}  1        head" in text and f"{HEAD}  1        zero_shot" in text
    (runs_quality,), = query(warehouse, "select quality from insights.runs where run_id = %s", (record.run_id,))
    assert runs_quality[HEAD]["models"]["head"]["answered"] == n_answered


def test_a_regression_head_predicts_with_an_interval_and_is_measured(isolated, engine, promoted):
    warehouse = isolated
    start = dt.datetime.combine(START + dt.timedelta(days=3), dt.time(0), dt.timezone.utc)
    if not query(warehouse, "select 1 from insights.customer_reviews_rows where partition_start = %s", (start,)):
        run_partition(reviews_spec(), warehouse, warehouse, Partition.day(start.date()), engine=engine)
    rows = query(warehouse, f"select rating, {SCORE}_prediction, {SCORE}_prediction_low, {SCORE}_prediction_high "
                            "from insights.customer_reviews_rows where partition_start = %s", (start,))
    assert all(low <= prediction <= high for _, prediction, low, high in rows)
    pairs = [(float(r), p) for r, p, _, _ in rows if r is not None]
    mae = sum(abs(r - p) for r, p in pairs) / len(pairs)
    (card,), = query(warehouse, "select card from insights.models where pipeline = 'customer_reviews' and "
                                "head = %s and promoted", (SCORE,))
    mean_mae = sum(abs(r - card["train_mean"]) for r, _ in pairs) / len(pairs)
    quality = dict(query(warehouse, "select model, mae from insights.customer_reviews_quality where "
                                    "partition_start = %s and head = %s", (start, SCORE)))
    assert quality["head"] == pytest.approx(mae) and quality["mean"] == pytest.approx(mean_mae)
    (summary,), = query(warehouse, "select summary from insights.customer_reviews_summaries where "
                                   "partition_start = %s", (start,))
    assert f"{SCORE} (head v1): mean absolute error {mae:.2f}" in summary


def test_a_finetuned_head_stores_its_encoder_and_a_worker_loads_it(warehouse, engine, monkeypatch):
    """One small fine-tune (1 epoch, few rows) on CPU: the encoder travels through the table too."""
    spec = reviews_spec(min_rows=30, evaluation_share=0.3).model_copy(update={"name": "reviews_finetuned"})
    monkeypatch.setattr(training, "BACKTEST_FOLDS", 2)  # 3 fine-tunes: 2 folds and the refit on every row
    card = train_on_rows_of_customer_reviews(spec, warehouse, engine, training.TrainOptions(
        method="finetune", epochs=1, window_days=1))
    assert card["method"] == "finetune" and card["encoder_key"].startswith(f"{engine.name}+finetune@")
    assert len(card["backtest"]["folds"]) == 2 and card["training"]["n_train"] == card["train_rows"]
    models._LOADED.clear()  # as a fresh worker: everything from the table
    loaded = models.load_head(warehouse, spec, HEAD, card["version"])
    assert loaded.head.encoder_state is not None
    texts = ["The product name is Kettle. The review text is Broke after two days, very disappointed."]
    outputs = heads.predict_rows(loaded, engine, texts, engine.encode(texts).vectors)
    assert outputs[0]["best"] in card["labels"] and 0 < outputs[0]["probability"] <= 1
    assert loaded.engine_for(engine).model_key == card["encoder_key"]


def test_rollback_promotes_the_previous_version_and_then_none(warehouse, promoted):
    spec = reviews_spec().model_copy(update={"name": "reviews_rollback"})
    (weights, card), = query(warehouse, "select weights, card from insights.models where pipeline = "
                                        "'customer_reviews' and head = %s and version = 1", (HEAD,))
    with psycopg.connect(warehouse) as conn:
        for _ in range(2):
            models.save_version(conn, spec, HEAD, bytes(weights), card, "promoted", "copied for the test")
        models.save_version(conn, spec, HEAD, bytes(weights), card, "rejected", "copied for the test")
    assert models.promoted_versions(warehouse, spec) == {HEAD: 2}
    assert models.rollback(warehouse, spec, HEAD) == (2, 1)
    assert models.promoted_versions(warehouse, spec) == {HEAD: 1}
    assert models.rollback(warehouse, spec, HEAD) == (1, None)
    assert models.promoted_versions(warehouse, spec) == {}
    assert models.rollback(warehouse, spec, HEAD) == (None, None)


def test_a_head_trained_on_another_model_is_left_out_of_the_run():
    from types import SimpleNamespace

    from lm_insights.steps.infer import heads_for

    engine = SimpleNamespace(model_key="all-MiniLM-L6-v2@abc")
    mine = models.LoadedHead("mine", 1, {"base_model_key": "all-MiniLM-L6-v2@abc"}, head=None)
    other = models.LoadedHead("other", 3, {"base_model_key": "bge-small@def"}, head=None)
    assert heads_for(reviews_spec(), engine, {"mine": mine, "other": other}) == {"mine": mine}


def test_the_published_head_is_refit_on_every_labelled_row_of_the_window(warehouse, engine, promoted):
    from lm_engine import train

    spec = reviews_spec()
    with psycopg.connect(warehouse) as conn:
        rows = training.labelled_rows(spec, conn, HEAD, 365, engine.model_key)
        labelled = conn.execute("select count(*) from insights.customer_reviews_rows where rating between 1 and 5 "
                                "and partition_start < %s", (dt.datetime.combine(
                                    START + dt.timedelta(days=3), dt.time(0), dt.timezone.utc),)).fetchone()[0]
    (weights, card), = query(warehouse, "select weights, card from insights.models where pipeline = "
                                        "'customer_reviews' and head = %s and version = 1", (HEAD,))
    assert card["train_rows"] == len(rows) == labelled  # every labelled row of days 1-3, the newest included
    assert card["training"]["n_train"] == len(rows) and card["train_until"] == str(rows.times[-1])
    refit = train.fit_linear(training.fill_embeddings(rows, engine, print), rows.targets, train.CLASSIFICATION,
                             labels=card["labels"], hyper_parameters=card["backtest"]["hyper_parameters"])
    stored = from_safetensors(bytes(weights))
    for name, tensor in refit.tensors.items():
        assert torch.equal(tensor, stored.tensors[name]), name


def test_selection_calibration_and_promotion_use_the_heads_one_metric(warehouse, engine):
    spec = reviews_spec(metric="macro_f1").model_copy(update={"name": "reviews_macro_f1"})
    card = train_on_rows_of_customer_reviews(spec, warehouse, engine)
    assert card["metric"] == card["training"]["metric"] == card["metrics"]["objective"] == "macro_f1"
    chosen = max(card["training"]["search"], key=lambda r: (r["score"], -r["log_loss"]))
    assert {k: chosen[k] for k in ("C", "class_weight")} == card["backtest"]["hyper_parameters"]
    assert card["metrics"]["candidate"]["objective"] == pytest.approx(chosen["score"])
    assert card["metrics"]["candidate"]["objective"] == pytest.approx(card["metrics"]["candidate"]["macro_f1"])
    assert {c["metric"] for c in card["metrics"]["comparisons"].values()} == {"macro_f1"}
    assert card["reason"].startswith("backtest macro_f1 ")


def test_a_backfilled_training_day_is_not_reported_as_held_out(isolated, engine, promoted):
    warehouse = isolated
    day = START + dt.timedelta(days=2)  # v1 trained on days 1-3
    record = run_partition(reviews_spec(), warehouse, warehouse, Partition.day(day), engine=engine)
    start = dt.datetime.combine(day, dt.time(0), dt.timezone.utc)
    models_measured = {model for (model,) in query(
        warehouse, "select model from insights.customer_reviews_quality where partition_start = %s and head = %s",
        (start, HEAD))}
    assert models_measured == {"zero_shot"}  # the head's own figures would be on rows it learned from
    found = record.quality[HEAD]
    assert found["rows_in_training_window"] > 0 and found["rows"] == 0
    (summary,), = query(warehouse, "select summary from insights.customer_reviews_summaries where "
                                   "partition_start = %s", (start,))
    assert f"rows with a rating in this partition are inside its training window" in summary
