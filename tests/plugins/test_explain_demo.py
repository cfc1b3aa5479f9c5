"""Explain on a real run of the demo: <pipeline>_rules name price with the right direction; clusters are joined back
to the rows and measured as a segment; word-level explanations of the sample are stored and cached."""

from __future__ import annotations

from pathlib import Path

import psycopg

from lm_insights.explain import words as words_module
from lm_insights.explain.html_report import render_html
from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import load_spec
from lm_insights.core.partition import Partition
from tests.plugins.test_explain_rules import bounds

SHIPPED = load_spec(Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "product_sales.yaml")


def with_words_budget(spec, max_infer_share: float):
    """``spec`` with that budget, every row's explanation costing ``n_samples`` encodes whatever its length."""
    words = spec.explain.words.model_copy(update={"max_infer_share": max_infer_share, "samples_per_word": 0})
    return spec.model_copy(update={"explain": spec.explain.model_copy(update={"words": words})})


SPEC = with_words_budget(SHIPPED, 10.0)  # a budget every sampled row fits in: the cap is tested below
DAY, NEXT_DAY = Partition.day("2026-11-01"), Partition.day("2026-11-02")


def test_demo_rules_clusters_and_explanations(warehouse_conninfo, monkeypatch):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=DAY.start.date(), days=2, sales_per_day=80, reviews_per_day=0)
    assert run_partition(SPEC, warehouse_conninfo, warehouse_conninfo, DAY).status == "success"
    with psycopg.connect(warehouse_conninfo) as conn:
        rules = conn.execute("select explains, conditions, prediction, rows, fidelity, depth, n, faithful, rule "
                             "from insights.product_sales_rules order by explains, rule_order").fetchall()
        summary = conn.execute("select summary from insights.product_sales_summaries").fetchone()[0]
    units = [r for r in rules if r[0] == "units"]
    assert units and all(r[5] <= SPEC.explain.rules.max_depth and r[6] == 80 for r in units)
    highest, lowest = max(units, key=lambda r: float(r[2])), min(units, key=lambda r: float(r[2]))
    assert "price" in highest[1] and "price" in lowest[1]
    assert bounds(highest[1], "price")[1] <= bounds(lowest[1], "price")[0], "more units at the lower price"
    assert sum(r[3] for r in units) == 80
    positioning = [r for r in rules if r[0] == "positioning"]
    premium_prices = [bounds(r[1], "price")[0] for r in positioning if r[2] == "premium" and "price >" in r[1]]
    budget_prices = [bounds(r[1], "price")[1] for r in positioning if r[2] == "budget" and "price <=" in r[1]]
    assert premium_prices and budget_prices and min(premium_prices) >= max(budget_prices)
    for explains, what in (("units", "units"), ("positioning", "the positioning label")):
        largest = next(r for r in rules if r[0] == explains)  # rule_order 1: the summary quotes it when faithful
        assert (largest[8] in summary) == largest[7]
        assert (f"No shallow rules reproduce {what} faithfully" in summary) != largest[7]

    with psycopg.connect(warehouse_conninfo) as conn:
        clusters = conn.execute("select cluster, name, rows, k, silhouette from insights.product_sales_clusters "
                                "order by cluster").fetchall()
        joined = conn.execute("select cluster, cluster_name, count(*) from insights.product_sales_rows "
                              "group by 1, 2 order by 1").fetchall()
        segment = conn.execute("select segment_value, row_count from insights.product_sales_segments "
                               "where segment = 'cluster' and metric = 'units' order by segment_order").fetchall()
    assert 2 <= len(clusters) <= SPEC.explain.clusters.max_clusters and all(c[3] == len(clusters) for c in clusters)
    assert [(c[0], c[1], c[2]) for c in clusters] == joined
    assert [(c[1], c[2]) for c in clusters] == segment
    separated = clusters[0][4] >= SPEC.explain.clusters.min_silhouette
    told = (f"Discovery found {len(clusters)} separated groups of similar rows among 80 (silhouette "
            f"{clusters[0][4]:.2f}, at least" if separated else
            f"No clear groups among 80 rows: the best split into {len(clusters)} has silhouette {clusters[0][4]:.2f}, "
            f"below {SPEC.explain.clusters.min_silhouette:.2f}.")
    assert told in summary, summary

    with psycopg.connect(warehouse_conninfo) as conn:
        explained = conn.execute("select _row_number, label_set, label, sample, top_word, words "
                                 "from insights.product_sales_explanations order by sample, _row_number").fetchall()
        texts = dict(conn.execute("select _row_number, text from insights.product_sales_rows").fetchall())
        cached = conn.execute("select count(*) from insights.explanation_cache").fetchone()[0]
    settings = SPEC.explain.words
    assert [e[3] for e in explained] == ["random"] * settings.random_rows + ["uncertain"] * settings.uncertain_rows
    assert len({e[0] for e in explained}) == len(explained) == cached
    for number, label_set, label, _, top_word, words in explained:
        assert label_set == "positioning" and label in SPEC.lm.label_sets["positioning"].labels
        assert len(words) == settings.top_words and all(w["word"] in texts[number].split() for w in words)
        assert top_word == max(words, key=lambda w: w["weight"])["word"]

    def no_explaining(*args, **kwargs):
        raise AssertionError("a rerun of the same rows must be served from the explanation cache")

    monkeypatch.setattr(words_module, "explain_words", no_explaining)
    rerun = run_partition(SPEC, warehouse_conninfo, warehouse_conninfo, DAY)
    assert rerun.computed == 0 and "explain_words" in rerun.timings
    with psycopg.connect(warehouse_conninfo) as conn:
        assert conn.execute("select count(*) from insights.explanation_cache").fetchone()[0] == cached
        assert conn.execute("select _row_number, label_set, label, sample, top_word, words from "
                            "insights.product_sales_explanations order by sample, _row_number").fetchall() == explained

    zero_budget = with_words_budget(SHIPPED, 0.0)
    rerun = run_partition(zero_budget, warehouse_conninfo, warehouse_conninfo, DAY)
    assert (rerun.timings["explain_words_explained"], rerun.timings["explain_words_skipped_for_budget"],
            rerun.timings["explain_words_budget_texts"], rerun.timings["explain_words_encoded"]) == (
        len(explained), 0, 0, 0), "cached explanations cost nothing"
    monkeypatch.undo()

    # A budget of two and a half rows' encodes (n_samples each): the two uncertain rows come first and fit, a third
    # would not, so the random rows are skipped. The budget is a share of the texts a cold infer of the partition
    # encodes (its texts and their occluded variants), the same on a warm rerun whose infer encodes nothing.
    per_row = SHIPPED.explain.words.n_samples
    whole = run_partition(with_words_budget(SHIPPED, 1.0), warehouse_conninfo, warehouse_conninfo, NEXT_DAY)
    n_texts = whole.timings["explain_words_budget_texts"]  # share 1: the partition's texts, some cached already
    assert whole.computed <= n_texts and whole.timings["explain_words_encoded"] == 4 * per_row <= n_texts
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("delete from insights.explanation_cache")
    share = 2.5 * per_row / n_texts
    capped = run_partition(with_words_budget(SHIPPED, share), warehouse_conninfo, warehouse_conninfo, NEXT_DAY)
    assert capped.computed == 0, "served from the result cache"
    with psycopg.connect(warehouse_conninfo) as conn:
        samples = [r[0] for r in conn.execute("select sample from insights.product_sales_explanations "
                                              "where partition_start = %s", (NEXT_DAY.start,)).fetchall()]
        recorded = conn.execute("select timings from insights.runs where run_id = %s", (capped.run_id,)).fetchone()[0]
    assert {k: capped.timings[k] for k in ("explain_words_explained", "explain_words_skipped_for_budget",
                                           "explain_words_budget_texts", "explain_words_encoded")} == {
        "explain_words_explained": 2, "explain_words_skipped_for_budget": 2,
        "explain_words_budget_texts": int(share * n_texts), "explain_words_encoded": 2 * per_row}
    assert samples == ["uncertain", "uncertain"]
    assert recorded["explain_words_skipped_for_budget"] == 2 and recorded["explain_words_explained"] == 2
    with psycopg.connect(warehouse_conninfo) as conn:  # the report says what the budget left out
        page = render_html(conn, "insights", {"product_sales": NEXT_DAY.start})
    assert ('<p class="budget">2 sampled rows explained, 2 skipped: the word-explanation budget '
            "(explain.words.max_infer_share) was spent.</p>") in page

    # rules over a window of two days: fitted, and their fidelity measured, on both days' 160 rows
    rules = SPEC.explain.rules.model_copy(update={"window_days": 2})
    windowed = SPEC.model_copy(update={"explain": SPEC.explain.model_copy(update={"rules": rules})})
    assert run_partition(windowed, warehouse_conninfo, warehouse_conninfo, NEXT_DAY).status == "success"
    with psycopg.connect(warehouse_conninfo) as conn:
        fitted = conn.execute("select distinct explains, n, window_start, partitions, fidelity, faithful from "
                              "insights.product_sales_rules where partition_start = %s", (NEXT_DAY.start,)).fetchall()
        loaded = conn.execute("select count(*) from insights.product_sales_rows where partition_start between %s "
                              "and %s", (DAY.start, NEXT_DAY.start)).fetchone()[0]
        summary = conn.execute("select summary from insights.product_sales_summaries where partition_start = %s",
                               (NEXT_DAY.start,)).fetchone()[0]
        day_rules = conn.execute("select distinct n, partitions from insights.product_sales_rules "
                                 "where partition_start = %s", (DAY.start,)).fetchall()
    assert loaded == 160 and {(f[1], f[2], f[3]) for f in fitted} == {(160, DAY.start, 2)}
    assert day_rules == [(80, 1)], "per partition by default"
    for explains, _, _, _, fidelity, faithful in fitted:
        assert not faithful or fidelity >= SPEC.explain.rules.min_fidelity
    assert "on 160 rows of 2 partitions (2026-11-01 to 2026-11-02)" in summary


def test_words_budget_counts_encoded_texts_and_stops_before_a_row_that_would_not_fit():
    budget = words_module.WordsBudget(80)
    assert budget.allows(32)
    budget.spend(32)
    assert budget.allows(32)  # 64 <= 80
    budget.spend(32)
    assert not budget.allows(32) and budget.allows(16)  # 96 > 80 >= 80
    assert (budget.encoded, budget.computed) == (64, 2)
    assert not words_module.WordsBudget(0).allows(1)
    kernel_shap = SHIPPED.explain.words
    ablation = kernel_shap.model_copy(update={"method": "ablation"})
    assert words_module.explanation_cost("a b c", kernel_shap) == kernel_shap.n_samples
    assert words_module.explanation_cost(" ".join(["word"] * 40), kernel_shap) == 2 * 40 + 1  # samples_per_word 2
    assert words_module.explanation_cost("a b c", ablation) == 4  # each word left out, and the text itself


def test_uncertain_rows_of_every_label_set_come_before_the_random_ones():
    def row(number, sample):
        return (number, f"k={number}", "text", "hash", "label", sample)

    samples = {"a": [row(1, "uncertain"), row(2, "random")], "b": [row(3, "uncertain"), row(4, "random")]}
    assert [(name, r[0]) for name, r in words_module.priority_order(samples)] == [
        ("a", 1), ("b", 3), ("a", 2), ("b", 4)]
