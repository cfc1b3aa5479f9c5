"""The benchmark script's smallest mode runs end to end and reports every figure (its numbers are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_quick_bench_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "lm_insights.bench", "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())

    assert report["args"]["quick"] is True
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch_threads"] >= 1
    assert report["timestamp"]
    cold, rerun, incremental = report["cold"], report["rerun"], report["incremental"]
    assert cold["extracted"] > 300 and cold["computed"] > 0 and cold["encode_texts_per_s"] > 0
    assert set(cold["timings_s"]) == {"extract", "validate", "textualize", "infer", "insights", "guard", "load",
                                      "explain_rules", "explain_clusters", "explain_words"}
    assert all(share > 0 for share in cold["explain_shares"].values())
    words = cold["words_budget"]  # the budget: max_infer_share of the texts a cold infer encodes
    assert words["explain_words_budget_texts"] == int(0.25 * cold["computed"])
    assert words["explain_words_encoded"] <= words["explain_words_budget_texts"]
    assert words["explain_words_explained"] + words["explain_words_skipped_for_budget"] == 4  # 2 + 2 sampled
    assert cold["explain_shares"]["explain_rules"] + cold["explain_shares"]["explain_clusters"] \
        < cold["shares"]["insights"]
    # The re-run is served from the cache; the next day encodes exactly the texts of its changed rows.
    assert rerun["computed"] == 0 and rerun["encoded_texts"] == 0 and rerun["cached"] == cold["computed"]
    assert incremental["changed_rows"] > 0
    assert incremental["computed"] == incremental["new_distinct_texts"] > 0
    assert report["load"]["copy_rows_per_s"] > 0 and report["load"]["to_sql_rows_per_s"] > 0
    memory = report["memory"]
    assert memory["encoder"] == "stub encoder (deterministic hash vectors, no model)"
    for step in ("extract", "infer"):
        assert set(memory[step]) == {"1000", "3000"}
        assert all(run["peak_kib"] > 0 for run in memory[step].values())
        assert memory["rss_ratio"][step] > 0
    assert memory["extract"]["3000"]["rows"] == 3012  # 3000 catalogue rows + the article's 3 + 9 messy ones
    assert memory["infer"]["3000"]["computed"] == memory["infer"]["3000"]["texts"] > 0

    names = [f["figure"] for f in report["figures"]]
    assert any(n.startswith("re-run: time / cold") for n in names)
    assert any(n.startswith("load: COPY / to_sql") for n in names)
    assert any(n.startswith("next day: guard (flags, output expectations, drift gates) / cold run") for n in names)
    assert report["targets_total"] == 9
    assert "stub encoder (deterministic hash vectors, no model)" in done.stdout
    assert "figure" in done.stdout and "target" in done.stdout
