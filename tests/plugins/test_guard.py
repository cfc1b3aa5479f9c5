"""Drift gates: planted shifts trip the right gate with its action; unshifted partitions trip none.

The end-to-end tests run the plain chain (``run_partition``, no scheduler) with the real all-MiniLM-L6-v2 model on a
small feedback table: two reference days of 60 reviews each (20% negative) loaded as one range, then day 3.
"""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import psycopg
import pytest

from lm_insights.guard import drift
from lm_insights.guard.gates import GuardFailed, NothingQuarantined, release
from lm_insights.pipeline import run_partition
from lm_insights.spec import PipelineSpec
from lm_insights.core.partition import Partition

DAYS = [dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
ROWS_PER_DAY = 60
ITEMS = ["kettle", "backpack", "desk lamp", "headphones", "blender", "umbrella", "running shoes", "coffee mug",
         "phone case", "office chair"]
POSITIVE = ["I love this {item}, it works perfectly and I would buy it again.",
            "Excellent {item}, great quality and fast delivery, very happy.",
            "The {item} is wonderful, exactly what I hoped for.",
            "Fantastic {item}, sturdy and well made, highly recommended."]
NEGATIVE = ["Terrible {item}, it broke after two days, very disappointed.",
            "The {item} is awful, poor quality and a waste of money.",
            "I hate this {item}, it stopped working and support never answered.",
            "Worst {item} ever, cheap materials, I am returning it."]
OUT_OF_DOMAIN = ["Heavy rain is expected over the northern coast on {day}, with winds of {n} km/h.",
                 "def handler_{n}(event): return json.dumps(event['body'])  # TODO retry",
                 "Pursuant to section {n} of the agreement, the lessee shall indemnify the lessor.",
                 "The enzyme catalyses hydrolysis at pH {n}, as the titration on {day} showed."]
PREFIX = "[exported from legacy CRM v2 | ticket body follows] "


def reviews(day: dt.date, negative_share: float, seed: int, n: int = ROWS_PER_DAY, prefix: str = "") -> list[tuple]:
    """``n`` reviews of ``day``: a share of negative ones (1-2 stars), the rest positive (4-5 stars)."""
    rng = random.Random(f"{seed}:{day}")
    rows = []
    for i in range(n):
        negative = rng.random() < negative_share
        template = rng.choice(NEGATIVE if negative else POSITIVE)
        stars = rng.choice([1, 2] if negative else [4, 5])
        rows.append((day.toordinal() * 1000 + i, day, prefix + template.format(item=rng.choice(ITEMS)), stars))
    return rows


def out_of_domain(day: dt.date, n: int = ROWS_PER_DAY) -> list[tuple]:
    rng = random.Random(f"ood:{day}")
    return [(day.toordinal() * 1000 + i, day, rng.choice(OUT_OF_DOMAIN).format(day=day, n=rng.randint(2, 90)),
             rng.randint(1, 5)) for i in range(n)]


def put_day(conninfo: str, day: dt.date, rows: list[tuple]) -> None:
    with psycopg.connect(conninfo) as conn:
        conn.execute("delete from shop.feedback where feedback_day = %s", (day,))
        with conn.cursor().copy("copy shop.feedback from stdin") as copy:
            for row in rows:
                copy.write_row(row)


def feedback_spec(label_mix="warn", metric_drift="warn", embedding_drift="warn", guard: dict | None = None,
                  min_margin: float = 0.02, heads: dict | None = None) -> PipelineSpec:
    """The feedback pipeline; ``guard`` is merged into its guard section (``False``: no guard section)."""
    section = {"label_mix": {"action": label_mix}, "metric_drift": {"action": metric_drift},
               "embedding_drift": {"action": embedding_drift}} | (guard or {})
    return PipelineSpec.model_validate({
        "name": "feedback", "start_date": "2026-11-01",
        "source": {"table": "shop.feedback", "key": ["feedback_id"], "partition_column": "feedback_day",
                   "columns": ["feedback_id", "feedback_day", "review", "stars"]},
        "text": {"template": "{review}", "columns": ["review"]},
        "lm": {"label_sets": {"sentiment": {"min_margin": min_margin, "labels": {
            "positive": "A happy customer who praises the product and would recommend it.",
            "negative": "An unhappy customer who complains about the product and is disappointed."}}},
            "heads": heads or {}},
        "insights": {"metrics": ["stars"], "segments": [{"by_label": "sentiment"}]},
        **({"guard": section} if guard is not False else {}),
    })


@pytest.fixture
def shop(warehouse_conninfo) -> str:
    """Days 1-2 (20% negative) loaded as one range: the reference window of day 3."""
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("create schema shop; create table shop.feedback (feedback_id bigint primary key, "
                     "feedback_day date not null, review text not null, stars integer not null)")
    for day in DAYS[:2]:
        put_day(warehouse_conninfo, day, reviews(day, 0.2, seed=1))
    record = run_partition(feedback_spec(), warehouse_conninfo, warehouse_conninfo, Partition.days(*DAYS[:2]))
    assert record.status == "success" and record.loaded == 2 * ROWS_PER_DAY
    return warehouse_conninfo


def query(conninfo: str, statement: str, params=()) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(statement, params).fetchall()


def day3_rows(conninfo: str, table: str = "feedback_rows") -> list[tuple]:
    return sorted(query(conninfo, f"select feedback_id, text, sentiment_label, partition_start from insights.{table} "
                                  "where feedback_day = %s", (DAYS[2],)))


def tripped(conninfo: str, run_id: str) -> dict[str, str]:
    return {check: action for check, action in query(
        conninfo, 'select "check", action from insights.feedback_quality where run_id = %s and passed = false',
        (run_id,))}


def test_label_mix_shift_is_quarantined_and_release_publishes_it_in_one_transaction(shop, monkeypatch):
    spec = feedback_spec(label_mix="quarantine")
    day3 = Partition.day(DAYS[2])
    put_day(shop, DAYS[2], reviews(DAYS[2], 0.2, seed=2))
    assert run_partition(spec, shop, shop, day3).status == "success"
    published = day3_rows(shop)
    assert len(published) == ROWS_PER_DAY

    put_day(shop, DAYS[2], reviews(DAYS[2], 0.7, seed=3))  # upstream now sends mostly complaints
    held = run_partition(spec, shop, shop, day3)
    assert held.status == "quarantined"
    assert tripped(shop, held.run_id)["label_mix"] == "quarantine"
    (figure, details), = query(shop, "select figure, details from insights.feedback_quality where run_id = %s "
                                     "and \"check\" = 'label_mix'", (held.run_id,))
    assert figure > 0.2 and details["chi2_p_value"] < 0.01
    assert day3_rows(shop) == published, "the published partition stays as it was"
    quarantined = day3_rows(shop, "feedback_quarantine_rows")
    assert len(quarantined) == ROWS_PER_DAY and quarantined != published
    (status, guard), = query(shop, "select status, guard from insights.runs where run_id = %s", (held.run_id,))
    assert status == "quarantined" and guard["action"] == "quarantine"

    from lm_insights.guard import gates

    real_replace = gates.replace_interval

    def fail_on_summaries(spec, conn, suffix, table, partition, keep=()):
        if suffix == "summaries":
            raise RuntimeError("connection lost half-way")
        return real_replace(spec, conn, suffix, table, partition, keep)

    monkeypatch.setattr(gates, "replace_interval", fail_on_summaries)
    with pytest.raises(RuntimeError, match="half-way"):
        release(spec, shop, DAYS[2])
    assert day3_rows(shop) == published and day3_rows(shop, "feedback_quarantine_rows") == quarantined
    monkeypatch.setattr(gates, "replace_interval", real_replace)

    released = release(spec, shop, DAYS[2])
    assert released[str(day3)]["rows"] == ROWS_PER_DAY
    assert day3_rows(shop) == quarantined and day3_rows(shop, "feedback_quarantine_rows") == []
    summaries = query(shop, "select summary from insights.feedback_summaries where partition_start = %s",
                      (day3.start,))
    assert len(summaries) == 1 and "Guard: label_mix of sentiment" in summaries[0][0]
    assert query(shop, "select status from insights.runs where run_id = %s", (held.run_id,)) == [("released",)]
    with pytest.raises(NothingQuarantined, match="no quarantined partition"):
        release(spec, shop, DAYS[2])


def test_a_new_prefix_on_every_text_trips_embedding_drift_and_fails_without_loading(shop):
    spec = feedback_spec(embedding_drift="fail")
    put_day(shop, DAYS[2], reviews(DAYS[2], 0.2, seed=2, prefix=PREFIX))
    with pytest.raises(GuardFailed, match="embedding_drift"):
        run_partition(spec, shop, shop, Partition.day(DAYS[2]), run_id="prefixed")
    assert tripped(shop, "prefixed")["embedding_drift"] == "fail"
    (auc,), = query(shop, "select figure from insights.feedback_quality where run_id = 'prefixed' "
                          "and \"check\" = 'embedding_drift'")
    assert auc > 0.9
    assert day3_rows(shop) == []
    assert query(shop, "select to_regclass('insights.feedback_quarantine_rows')") == [(None,)]
    assert query(shop, "select status from insights.runs where run_id = 'prefixed'") == [("failed",)]


def test_out_of_domain_text_trips_embedding_drift_and_warns(shop):
    put_day(shop, DAYS[2], out_of_domain(DAYS[2]))
    record = run_partition(feedback_spec(), shop, shop, Partition.day(DAYS[2]))
    assert record.status == "success" and record.loaded == ROWS_PER_DAY
    assert tripped(shop, record.run_id)["embedding_drift"] == "warn"
    (guard,), = query(shop, "select guard from insights.runs where run_id = %s", (record.run_id,))
    assert guard["action"] == "warn" and any("embedding_drift" in s for s in guard["tripped"])
    (summary,), = query(shop, "select summary from insights.feedback_summaries where partition_start = %s",
                        (Partition.day(DAYS[2]).start,))
    assert " Guard: " in summary and "embedding_drift of text" in summary
    ood_share, = query(shop, "select figure, passed, action from insights.feedback_quality where run_id = %s "
                             "and \"check\" = 'output_expectation' and subject = 'share ood <= 0.2'",
                       (record.run_id,))
    assert ood_share[0] > 0.5 and ood_share[1:] == (False, "warn"), "the output expectation on OOD rows fails"


PLANTED = {"empty": "<p>&nbsp;</p>", "too_short": "ok", "markup_or_digits": "4411 2290 7781 0032 1234",
           "ood": "Pursuant to section 12 of the agreement, the lessee shall indemnify the lessor."}


def test_an_unshifted_partition_trips_no_gate_and_planted_rows_carry_their_flags(shop):
    rows = reviews(DAYS[2], 0.2, seed=4)
    first_id = DAYS[2].toordinal() * 1000 + 900
    planted = [(first_id + i, DAYS[2], text, 3) for i, text in enumerate(PLANTED.values())]
    twin = (first_id + len(planted), DAYS[2], "A one-off review that appears twice in the batch.", 3)
    put_day(shop, DAYS[2], rows + planted + [twin, (twin[0] + 1, *twin[1:])])
    record = run_partition(feedback_spec(label_mix="fail", metric_drift="fail", embedding_drift="fail"),
                           shop, shop, Partition.day(DAYS[2]))
    assert record.status == "success"
    checks = query(shop, 'select "check", passed from insights.feedback_quality where run_id = %s '
                         "and \"check\" <> 'row_flags'", (record.run_id,))
    assert sorted(c for c in checks if c[0] != "output_expectation") == [
        ("embedding_drift", True), ("label_mix", True), ("metric_drift", True)]
    outputs = [passed for check, passed in checks if check == "output_expectation"]
    assert len(outputs) == 6 and all(outputs), ("labels, scores, margins, entropies in range; shares of uncertain, "
                                                "ood below")

    flags = {i: (set(f), ood) for i, f, ood in query(
        shop, "select feedback_id, quality_flags, ood from insights.feedback_rows where feedback_day = %s", (DAYS[2],))}
    for (feedback_id, *_), flag in zip(planted, PLANTED):
        assert (flag in flags[feedback_id][0]) if flag != "ood" else flags[feedback_id][1], (flag, flags[feedback_id])
    assert "duplicate" in flags[twin[0]][0] and "duplicate" in flags[twin[0] + 1][0]
    regular_ood = [ood for i, (_, ood) in flags.items() if i < first_id]
    assert sum(regular_ood) <= 0.05 * len(regular_ood), "regular reviews are rarely out of distribution"
    counted = dict(query(shop, "select subject, (details ->> 'rows')::int from insights.feedback_quality "
                               "where run_id = %s and \"check\" = 'row_flags'", (record.run_id,)))
    assert counted["empty"] >= 1 and counted["too_short"] >= 1 and counted["ood"] >= 1
    (guard,), = query(shop, "select guard from insights.runs where run_id = %s", (record.run_id,))
    assert guard["row_flags"]["ood"] == counted["ood"] and guard["row_flags"]["rows"] == len(flags)


NEUTRAL = ["The {item} is a {item}.", "It is a {item} that I received.", "This review is about the {item}.",
           "The {item} came in a box on Tuesday."]


def test_ambiguity_by_entropy_is_flagged_counted_and_output_expectations_run_without_a_guard_section(shop):
    """min_margin 0 leaves the margin nothing to flag: every ambiguous row is one whose label distribution is
    spread (normalized entropy above the default max_entropy 0.95), e.g. a review with no sentiment at all."""
    spec = feedback_spec(guard=False, min_margin=0)
    assert spec.guard.label_mix is None and spec.guard.outputs.action == "warn" and spec.guard.max_entropy == 0.95
    neutral = [(DAYS[2].toordinal() * 1000 + 900 + i, DAYS[2], text.format(item=ITEMS[i]), 3)
               for i, text in enumerate(NEUTRAL)]
    put_day(shop, DAYS[2], reviews(DAYS[2], 0.2, seed=5) + neutral)
    record = run_partition(spec, shop, shop, Partition.day(DAYS[2]))
    assert record.status == "success"
    rows = {i: (entropy, margin, ambiguous) for i, entropy, margin, ambiguous in query(
        shop, "select feedback_id, sentiment_entropy, sentiment_margin, ambiguous from insights.feedback_rows "
              "where feedback_day = %s", (DAYS[2],))}
    assert all(0 <= entropy <= 1 for entropy, _, _ in rows.values())
    assert all(ambiguous == (entropy > 0.95) for entropy, _, ambiguous in rows.values())
    high_entropy = sum(entropy > 0.95 for entropy, _, _ in rows.values())
    assert sum(rows[i][2] for i, *_ in neutral) >= 2, "reviews without a sentiment are ambiguous"
    assert high_entropy < len(rows) / 4, "clear reviews are not"
    counted = {subject: (int(n), figure, threshold) for subject, n, figure, threshold in query(
        shop, "select subject, details ->> 'rows', figure, threshold from insights.feedback_quality "
              "where run_id = %s and \"check\" = 'row_flags'", (record.run_id,))}
    assert counted["ambiguous"][0] == counted["high_entropy"][0] == high_entropy and counted["low_margin"][0] == 0
    assert counted["high_entropy"][1:] == (pytest.approx(high_entropy / len(rows)), 0.95)
    (guard,), = query(shop, "select guard from insights.runs where run_id = %s", (record.run_id,))
    assert guard["row_flags"]["high_entropy"] == high_entropy and guard["row_flags"]["ambiguous"] == high_entropy
    checks = query(shop, 'select "check", subject, passed from insights.feedback_quality where run_id = %s '
                         "and \"check\" <> 'row_flags'", (record.run_id,))
    assert {check for check, _, _ in checks} == {"output_expectation"}, "no guard section: no drift gates"
    assert ("output_expectation", "sentiment_entropy in [0, 1]", True) in checks


def test_entropy_is_normalized_over_the_labels():
    from lm_insights.core.uncertainty import normalized_entropy
    from lm_insights.guard.flags import zero_shot_entropy
    from lm_insights.learn.heads import classify_outputs

    assert normalized_entropy(np.array([[1.0, 0.0], [0.5, 0.5], [0.6, 0.4]])) == pytest.approx([0, 1, 0.971], abs=1e-3)
    assert normalized_entropy(np.array([[1 / 3] * 3, [0.5, 0.25, 0.25]])) == pytest.approx([1, 0.946], abs=1e-3)
    assert zero_shot_entropy(np.array([[0.4, 0.4, 0.4], [0.9, 0.1, 0.1]])) == pytest.approx([1, 0], abs=1e-4)
    out = classify_outputs(np.array([[0.5, 0.25, 0.25]]), ["a", "b", "c"], threshold=0.4)
    assert out[0]["entropy"] == pytest.approx(0.946, abs=1e-3) and out[0]["label"] == "a"


FAR_DAY = dt.date(2026, 12, 1)  # no loaded row in the 7 days before it: the window gives no reference
HEADS = {"liked": {"task": "classification", "target": "stars", "min_rows": 50,
                   "classes": {"negative": [1, 2], "positive": [4, 5]}},
         "stars_hat": {"task": "regression", "target": "stars", "min_rows": 50}}


def test_the_ood_reference_is_the_promoted_heads_training_rows_and_regression_predictions_have_a_range(
        shop, engine):
    from lm_insights.learn import training

    spec = feedback_spec(heads=HEADS, guard={"outputs": {"max_ood_share": 0.5}})
    for name in HEADS:
        result = training.train_head(spec, shop, name, engine=engine)
        assert (result.decision, result.version) == ("promoted", 1), result.reason
    cards = dict(query(shop, "select head, card from insights.models where pipeline = 'feedback'"))
    stored = cards["liked"]["ood_reference"]
    assert stored["rows"] == stored["of"] == cards["liked"]["train_rows"] and stored["threshold"] > 0
    assert cards["stars_hat"]["prediction_range"] == pytest.approx(
        {"min": 0.6, "max": 5.4, "margin": 0.1, "train_min": 1, "train_max": 5})

    in_domain = reviews(FAR_DAY, 0.2, seed=6, n=40)
    foreign = out_of_domain(FAR_DAY, n=50)[40:]
    put_day(shop, FAR_DAY, in_domain + foreign)
    record = run_partition(spec, shop, shop, Partition.day(FAR_DAY), engine=engine)
    assert record.status == "success"
    ood = dict(query(shop, "select feedback_id, ood from insights.feedback_rows where feedback_day = %s", (FAR_DAY,)))
    assert all(ood[i] for i, *_ in foreign), "out-of-domain text is out of the head's training distribution"
    assert sum(ood[i] for i, *_ in in_domain) <= 0.1 * len(in_domain), "reviews like the training rows are not"
    (guard,), = query(shop, "select guard from insights.runs where run_id = %s", (record.run_id,))
    assert guard["ood_reference"] | {"threshold": None} == {
        "source": "head", "head": "liked", "version": 1, "rows": stored["rows"], "training_rows": stored["of"],
        "quantile": 0.99, "threshold": None}
    assert guard["ood_reference"]["threshold"] == pytest.approx(stored["threshold"])
    (reference,), = query(shop, "select details -> 'reference' from insights.feedback_quality where run_id = %s "
                                "and \"check\" = 'row_flags' and subject = 'ood'", (record.run_id,))
    assert reference["source"] == "head" and reference["head"] == "liked"
    (passed, threshold, source), = query(
        shop, "select passed, threshold, details ->> 'range_from' from insights.feedback_quality where run_id = %s "
              "and subject = 'stars_hat_prediction in [0.6, 5.4]'", (record.run_id,))
    assert passed and source.startswith("training targets of v1")
    assert ("output_expectation", True) in query(
        shop, "select \"check\", passed from insights.feedback_quality where run_id = %s and subject = "
              "'liked_probability in [0, 1]'", (record.run_id,))

    declared = feedback_spec(heads=HEADS, guard={"outputs": {"action": "fail", "max_ood_share": 0.5,
                                                             "prediction_ranges": {"stars_hat": {"min": 4.5,
                                                                                                 "max": 5}}}})
    with pytest.raises(GuardFailed, match=r"stars_hat_prediction in \[4.5, 5\]"):
        run_partition(declared, shop, shop, Partition.day(FAR_DAY), engine=engine, run_id="declared_range")
    (figure, source), = query(shop, "select figure, details ->> 'range_from' from insights.feedback_quality where "
                                    "run_id = 'declared_range' and subject like 'stars_hat_prediction%%'")
    assert figure > 0.5 and source == "spec guard.outputs.prediction_ranges"


@pytest.fixture(scope="module")
def engine():
    from lm_engine import load_engine

    return load_engine("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def encoder(engine):
    cache: dict[str, np.ndarray] = {}

    def embed(texts: list[str]) -> np.ndarray:
        missing = sorted(set(texts) - cache.keys())
        if missing:
            cache.update(zip(missing, engine.encode(missing).vectors))
        return np.array([cache[t] for t in texts])

    return embed


def sample_gates(reference: list[tuple], current: list[tuple], embed) -> list[drift.Check]:
    """The three gates on two samples, labels and segments from the true sentiment (figure-level)."""
    def counts(rows):
        labels = ["negative" if stars <= 2 else "positive" for *_, stars in rows]
        return {label: labels.count(label) for label in set(labels)}

    def moments(rows):
        by = {}
        for *_, stars in rows:
            by.setdefault("negative" if stars <= 2 else "positive", []).append(stars)
        return {k: drift.Moments(len(v), float(np.mean(v)), float(np.std(v, ddof=1))) for k, v in by.items()}

    return [drift.label_mix("sentiment", counts(reference), counts(current), 0.2, 0.01, "fail"),
            drift.metric_drift("stars", moments(reference), moments(current), 0.5, 0.01, "fail"),
            drift.embedding_drift(embed([r[2] for r in reference]), embed([r[2] for r in current]), 0.55, 0.01,
                                  "fail")]


def test_false_alarm_rate_of_unshifted_samples_is_zero_and_planted_shifts_trip(encoder):
    alarms = []
    for seed in range(20):
        reference = [r for day in DAYS[:2] for r in reviews(day, 0.2, seed=100 + seed)]
        current = reviews(DAYS[2], 0.2, seed=200 + seed)
        alarms += [(seed, c.check, c.figure) for c in sample_gates(reference, current, encoder) if c.tripped]
    print(f"\nfalse alarms: {len(alarms)} of 60 gate checks (20 samples x 3 gates) = {len(alarms) / 60:.1%}: {alarms}")
    assert alarms == []

    reference = [r for day in DAYS[:2] for r in reviews(day, 0.2, seed=1)]
    shifted = {"label mix 20% -> 70%": reviews(DAYS[2], 0.7, seed=2),
               "prefix": reviews(DAYS[2], 0.2, seed=2, prefix=PREFIX),
               "out of domain": out_of_domain(DAYS[2])}
    trips = {name: {c.check for c in sample_gates(reference, rows, encoder) if c.tripped}
             for name, rows in shifted.items()}
    print(f"planted shifts trip: {trips}")
    assert "label_mix" in trips["label mix 20% -> 70%"]
    assert "embedding_drift" in trips["prefix"] and "embedding_drift" in trips["out of domain"]


def test_metric_drift_trips_on_a_segment_whose_mean_moves():
    reference = {"sentiment=positive": drift.Moments(80, 4.5, 0.5), "sentiment=negative": drift.Moments(20, 1.5, 0.5)}
    moved = {"sentiment=positive": drift.Moments(40, 3.2, 0.6), "sentiment=negative": drift.Moments(10, 1.5, 0.5)}
    check = drift.metric_drift("stars", reference, moved, 0.5, 0.01, "warn")
    assert check.tripped and check.details["worst_segment"] == "sentiment=positive" and check.figure > 2
    assert not drift.metric_drift("stars", reference, reference, 0.5, 0.01, "warn").tripped


def test_a_bad_guard_section_names_the_file_and_the_field(tmp_path):
    import yaml

    from lm_insights.spec import SpecError, load_spec

    raw = feedback_spec().model_dump(by_alias=True, mode="json", exclude_none=True)
    path = tmp_path / "feedback.yaml"
    path.write_text(yaml.safe_dump(raw | {"guard": {"embedding_drift": {"action": "stop", "roc_auc": 0.4}}}))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(path) in str(error.value)
    assert "guard.embedding_drift.action" in str(error.value) and "guard.embedding_drift.roc_auc" in str(error.value)
    path.write_text(yaml.safe_dump(raw | {"lm": raw["lm"] | {"embeddings": False}}))
    with pytest.raises(SpecError, match="guard.embedding_drift: needs lm.embeddings: true"):
        load_spec(path)
    path.write_text(yaml.safe_dump(raw | {"guard": {"outputs": None, "max_entropy": 1.5}}))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert "guard.outputs: the output expectations run in every run and cannot be switched off" in str(error.value)
    assert "guard.max_entropy: Input should be less than or equal to 1" in str(error.value)
    ranges = {"outputs": {"prediction_ranges": {"liked": {"min": 0, "max": 5}, "stars_hat": {"min": 5, "max": 1}}}}
    raw_heads = feedback_spec(heads=HEADS).model_dump(by_alias=True, mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump(raw_heads | {"guard": ranges}))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(path) in str(error.value)
    assert "guard.outputs.prediction_ranges.stars_hat: min 5 must be below max 1" in str(error.value)
    ranges["outputs"]["prediction_ranges"].pop("stars_hat")
    path.write_text(yaml.safe_dump(raw_heads | {"guard": ranges}))
    with pytest.raises(SpecError, match=r"guard.outputs.prediction_ranges.liked: not a regression head of lm.heads "
                                        r"\['stars_hat'\]"):
        load_spec(path)


def test_guard_errors_fail_the_task_without_retry():
    from lm_insights.airflow_dag import is_deterministic

    assert is_deterministic(GuardFailed("feedback: a drift gate with action fail tripped"))
    assert is_deterministic(NothingQuarantined("feedback: no quarantined partition"))
