"""Toxic and inconsistent rows (guard/toxicity.py, guard/inconsistent.py): flagged, kept out of findings, rejected,
gated, left out of training. Real PostgreSQL, the real model and alt-profanity-check, on the feedback table of
test_guard.py (days 1-2 loaded as the reference window, then day 3)."""

from __future__ import annotations

import numpy as np
import pytest
from psycopg import sql
from test_guard import DAYS, ITEMS, ROWS_PER_DAY, engine, feedback_spec, put_day, query, reviews, shop  # noqa: F401

from lm_insights.explain.html_report import render_html
from lm_insights.guard import toxicity
from lm_insights.guard.inconsistent import label_issues
from lm_insights.pipeline import run_partition
from lm_insights.runtime import db
from lm_insights.core.partition import Partition

TOXIC = ["You are a fucking idiot, this {item} is shit.", "What a piece of shit {item}, the seller is a moron.",
         "This {item} is fucking garbage and so are you, asshole."]
DAY3 = Partition.day(DAYS[2])
# Every row explained (leave-one-word-out is cheap): a toxic row is then among the report's explained rows unless
# it is kept out of the findings.
EXPLAIN_ALL = {"words": {"method": "ablation", "uncertain_rows": 100, "random_rows": 0, "max_infer_share": 10}}


def put_day3(conninfo: str, toxic: int) -> list[int]:
    """Day 3: the regular reviews and ``toxic`` offensive ones, whose keys sort first (the report shows the first
    explained rows); returns the offensive ones' keys."""
    first = DAYS[2].toordinal() * 1000 - 100
    planted = [(first + i, DAYS[2], TOXIC[i % len(TOXIC)].format(item=ITEMS[i % len(ITEMS)]), 1) for i in range(toxic)]
    put_day(conninfo, DAYS[2], reviews(DAYS[2], 0.2, seed=2) + planted)
    return [row[0] for row in planted]


def spec_with(toxicity_settings: dict | None = None, gate: str = "quarantine", **extra):
    spec = feedback_spec(guard={"flag_share": {"action": gate}, "toxicity": toxicity_settings or {}}, **extra)
    return spec.model_copy(update={"explain": spec.explain.model_validate(EXPLAIN_ALL)})


def flags_by_key(conninfo: str) -> dict[int, tuple[set, float]]:
    return {k: (set(f), t) for k, f, t in query(conninfo, "select feedback_id, quality_flags, toxicity from "
                                                          "insights.feedback_rows where feedback_day = %s", (DAYS[2],))}


def test_toxic_rows_are_flagged_counted_said_and_masked_in_the_report(shop):
    planted = put_day3(shop, 3)
    record = run_partition(spec_with(), shop, shop, DAY3)
    assert record.status == "success", "3 of 63 rows: a rise of 4.8 points, under the gate's 5"
    flags = flags_by_key(shop)
    assert all("toxic" in flags[k][0] and flags[k][1] >= 0.5 for k in planted)
    regular = [k for k in flags if k not in planted]
    assert not any("toxic" in flags[k][0] for k in regular) and max(flags[k][1] for k in regular) < 0.5
    (share, guard), = query(shop, "select toxic_share, guard from insights.runs where run_id = %s", (record.run_id,))
    assert share == pytest.approx(3 / 63) and guard["row_flags"]["toxic"] == 3
    (summary,), = query(shop, "select summary from insights.feedback_summaries where partition_start = %s",
                        (DAY3.start,))
    assert "3 of 63 rows (4.8%) have toxic text (toxicity >= 0.5)" in summary
    explained = {k for (k,) in query(shop, "select distinct split_part(row_key, '=', 2)::bigint from "
                                           "insights.feedback_explanations where partition_start = %s", (DAY3.start,))}
    assert set(planted) <= explained, "flag keeps toxic rows in the findings"
    with db.connect(shop) as conn:
        page = render_html(conn, "insights", {"feedback": DAY3.start})
    assert toxicity.MASK in page and not any(word in page.lower() for word in ("fucking", "shit", "asshole"))


def test_exclude_from_findings_loads_and_flags_toxic_rows_but_never_quotes_them_and_the_jump_trips_the_gate(shop):
    planted = put_day3(shop, 15)
    record = run_partition(spec_with({"action": "exclude_from_findings"}, gate="warn"), shop, shop, DAY3)
    assert record.status == "success" and record.loaded == ROWS_PER_DAY + 15
    assert all("toxic" in flags_by_key(shop)[k][0] for k in planted)
    (figure, details), = query(shop, "select figure, details from insights.feedback_quality where run_id = %s and "
                                     "\"check\" = 'flag_share' and subject = 'toxic' and passed = false",
                               (record.run_id,))
    assert figure == pytest.approx(15 / 75) and details["reference_share"] == 0 and details["fisher_p_value"] < 0.01
    explained = {k for (k,) in query(shop, "select distinct split_part(row_key, '=', 2)::bigint from "
                                           "insights.feedback_explanations where partition_start = %s", (DAY3.start,))}
    assert explained and not explained & set(planted)
    representatives = {k for (k,) in query(shop, "select split_part(representative_key, '=', 2)::bigint from "
                                                 "insights.feedback_clusters where partition_start = %s "
                                                 "and representative_key is not null", (DAY3.start,))}
    assert representatives and not representatives & set(planted)
    (summary,), = query(shop, "select summary from insights.feedback_summaries where partition_start = %s",
                        (DAY3.start,))
    assert "kept out of clusters, word explanations and rules" in summary


def test_reject_puts_toxic_rows_in_rejects_with_their_score(shop):
    planted = put_day3(shop, 3)
    record = run_partition(spec_with({"action": "reject", "threshold": 0.6}), shop, shop, DAY3)
    assert record.status == "success" and record.rejected == 3 and record.loaded == ROWS_PER_DAY
    rejects = query(shop, "select (row ->> 'feedback_id')::bigint, reason from insights.feedback_rejects "
                          "where partition_start = %s", (DAY3.start,))
    assert sorted(k for k, _ in rejects) == planted
    assert all(reason.startswith("toxicity ") and ">= guard.toxicity.threshold 0.6 (text columns review)" in reason
               for _, reason in rejects)
    assert not set(planted) & set(flags_by_key(shop))


CONTRADICTIONS = [("I love this {item}, it works perfectly and I would buy it again.", 1),
                  ("Excellent {item}, great quality and fast delivery, very happy.", 1),
                  ("Fantastic {item}, sturdy and well made, highly recommended.", 2),
                  ("Terrible {item}, it broke after two days, very disappointed.", 5),
                  ("Worst {item} ever, cheap materials, I am returning it.", 5)]
HEADS = {"liked": {"task": "classification", "target": "stars", "min_rows": 50,
                   "classes": {"negative": [1, 2], "positive": [4, 5]}},
         "liked_consistent": {"task": "classification", "target": "stars", "min_rows": 50,
                              "classes": {"negative": [1, 2], "positive": [4, 5]}, "exclude_inconsistent": True}}


def contradictions(day, first: int) -> list[tuple]:
    return [(first + i, day, text.format(item=ITEMS[i]), stars) for i, (text, stars) in enumerate(CONTRADICTIONS)]


def test_recorded_outcomes_the_head_contradicts_are_flagged_with_evidence_and_left_out_of_training(shop, engine):
    from lm_insights.learn import training

    spec = feedback_spec(heads=HEADS)
    # keys that sort first: the fit rows are the oldest (time, key), the latest of day 1 validate, day 2 evaluates
    planted_old = contradictions(DAYS[0], DAYS[0].toordinal() * 1000 - 500)
    put_day(shop, DAYS[0], reviews(DAYS[0], 0.2, seed=1) + planted_old)
    assert run_partition(spec, shop, shop, Partition.days(*DAYS[:2]), engine=engine).status == "success"
    for name in HEADS:
        assert training.train_head(spec, shop, name, engine=engine).decision == "promoted"
    cards = dict(query(shop, "select head, card from insights.models where pipeline = 'feedback'"))
    assert "inconsistent_excluded" not in cards["liked"]
    excluded = cards["liked_consistent"]["inconsistent_excluded"]
    assert len(planted_old) - 2 <= excluded <= len(planted_old) + 3, "most planted rows, and few others"
    assert cards["liked_consistent"]["training"]["n_train"] == cards["liked"]["training"]["n_train"] - excluded

    planted = contradictions(DAYS[2], DAYS[2].toordinal() * 1000 + 900)
    put_day(shop, DAYS[2], reviews(DAYS[2], 0.2, seed=2) + planted)
    record = run_partition(spec, shop, shop, DAY3, engine=engine)
    found = {k: (set(f), e) for k, f, e in query(shop, "select feedback_id, quality_flags, inconsistency from "
                                                       "insights.feedback_rows where feedback_day = %s", (DAYS[2],))}
    for key, _, _, stars in planted:
        flags, evidence = found[key]
        assert "inconsistent" in flags and evidence, key
        for head in evidence.values():  # per head that contradicts it
            assert head["recorded"] == str(stars) and head["predicted"] != head["recorded_class"]
            assert head["probability"] > head["recorded_class_probability"] and head["version"] == 1
    flagged_regular = [k for k, (f, _) in found.items() if "inconsistent" in f and k < planted[0][0]]
    assert len(flagged_regular) <= 2, "reviews whose stars agree with their words are rarely flagged"
    (share,), = query(shop, "select inconsistent_share from insights.runs where run_id = %s", (record.run_id,))
    n = len(planted) + len(flagged_regular)
    assert share == pytest.approx(n / (ROWS_PER_DAY + len(planted)))
    (summary,), = query(shop, "select summary from insights.feedback_summaries where partition_start = %s",
                        (DAY3.start,))
    assert f"{n} of {ROWS_PER_DAY + len(planted)} rows" in summary and "flagged inconsistent" in summary


def test_label_issues_find_planted_errors_and_never_a_row_the_model_agrees_with():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    logits = rng.normal(0, 1, (300, 3))
    logits[np.arange(300), labels] += 2.5
    labels[:15] = (labels[:15] + 1) % 3  # planted errors: the probabilities still follow the true class
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    issues = label_issues(labels, probabilities)
    assert issues[:15].sum() >= 12 and issues[15:].sum() <= 15
    assert not (issues & (probabilities.argmax(axis=1) == labels)).any()
    assert not label_issues(np.zeros(20, dtype=int), probabilities[:20]).any(), "one recorded class: no issue"


@pytest.mark.parametrize("action, fitted", [("flag", {1, 2, 3}), ("exclude_from_findings", {1, 3})])
def test_rules_are_fitted_without_the_toxic_rows_that_exclude_from_findings_keeps_out(warehouse_conninfo, action,
                                                                                      fitted):
    from lm_insights.core.partition import staging_table
    from lm_insights.explain.rules import read_rows

    spec = feedback_spec(guard={"toxicity": {"action": action}})
    with db.connect(warehouse_conninfo) as conn:
        conn.execute("create schema lm_staging")
        conn.execute(table_sql("create table {} (_row_number bigint, feedback_id bigint, feedback_day date, "
                                 "review text, stars integer, sentiment_label text)", staging_table(spec, DAY3, "rows")))
        conn.execute(table_sql("insert into {} values (1, 1, '2026-11-03', 'fine', 4, 'positive'), "
                                 "(2, 2, '2026-11-03', 'you idiot', 1, 'negative'), "
                                 "(3, 3, '2026-11-03', 'broken', 1, 'negative')", staging_table(spec, DAY3, "rows")))
        conn.execute(table_sql("create table {} (_row_number bigint, toxicity float8, toxic boolean)",
                                 staging_table(spec, DAY3, "toxicity")))
        conn.execute(table_sql("insert into {} values (1, 0.01, false), (2, 0.97, true), (3, 0.2, false)",
                                 staging_table(spec, DAY3, "toxicity")))
        assert set(read_rows(spec, conn, DAY3, 100)["_row_number"]) == fitted


def table_sql(statement: str, table) -> sql.Composed:
    return sql.SQL(statement).format(table)


def test_toxicity_is_off_by_default_and_its_columns_must_exist():
    assert feedback_spec().guard.toxicity is None and feedback_spec(guard=False).guard.toxicity is None
    assert feedback_spec(guard={"toxicity": {}}).guard.toxicity.action == "flag"
    with pytest.raises(ValueError, match=r"guard.toxicity.columns\[0\]: column 'comment' is not in source.columns"):
        feedback_spec(guard={"toxicity": {"columns": ["comment"]}})
