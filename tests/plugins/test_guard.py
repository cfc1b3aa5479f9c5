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
from lm_insights.steps.partition import Partition

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


def feedback_spec(label_mix="warn", metric_drift="warn", embedding_drift="warn") -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "feedback", "start_date": "2026-11-01",
        "source": {"table": "shop.feedback", "key": ["feedback_id"], "partition_column": "feedback_day",
                   "columns": ["feedback_id", "feedback_day", "review", "stars"]},
        "text": {"template": "{review}", "columns": ["review"]},
        "lm": {"label_sets": {"sentiment": {"labels": {
            "positive": "A happy customer who praises the product and would recommend it.",
            "negative": "An unhappy customer who complains about the product and is disappointed."}}}},
        "insights": {"metrics": ["stars"], "segments": [{"by_label": "sentiment"}]},
        "guard": {"label_mix": {"action": label_mix}, "metric_drift": {"action": metric_drift},
                  "embedding_drift": {"action": embedding_drift}},
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

    def fail_on_summaries(spec, conn, suffix, table, partition):
        if suffix == "summaries":
            raise RuntimeError("connection lost half-way")
        return real_replace(spec, conn, suffix, table, partition)

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
    assert len(outputs) == 5 and all(outputs), "labels, scores, margins in range; shares of uncertain, ood below"

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


@pytest.fixture(scope="module")
def encoder():
    from lm_engine import load_engine

    engine = load_engine("all-MiniLM-L6-v2")
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


def test_guard_errors_fail_the_task_without_retry():
    from lm_insights.airflow_dag import is_deterministic

    assert is_deterministic(GuardFailed("feedback: a drift gate with action fail tripped"))
    assert is_deterministic(NothingQuarantined("feedback: no quarantined partition"))
