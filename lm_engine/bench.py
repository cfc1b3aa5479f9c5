"""
Benchmark: lm_engine against the reference sentence-transformers on the same texts, in the same process.

    python -m lm_engine bench [--n 2000] [--json out.json] [--device cpu] [--repeats 3]

The corpus is deterministic: serialized warehouse rows and product reviews of 1 to ~60 sentences, some longer
than max_seq_length, some CJK/emoji/HTML entities. Both engines are warmed up, then timed in turns for
--repeats rounds (the order alternates each round); the best round of each counts, the least noisy estimate on
a shared machine. Peak RSS is sampled while each engine encodes (both models are loaded throughout).
"""

import json
import random
import resource
import threading
import time

import numpy as np

PRODUCTS = ["wireless earbuds", "rice cooker", "running shoes", "desk lamp", "yoga mat", "phone case",
            "air purifier", "coffee grinder", "backpack", "smart watch", "electric kettle", "office chair"]
REGIONS = ["North", "South", "East", "West", "Central", "华东", "华南"]
REVIEW_SENTENCES = [
    "The battery lasts all day and charges quickly.", "Shipping took almost three weeks, which was annoying.",
    "Build quality feels cheap &amp; the buttons rattle.", "Exactly as described, I would buy it again!",
    "Customer service replaced the broken unit without any questions.", "质量很好，物流也很快。",
    "It stopped working after two months 😞", "Great value for the price 👍", "The colour is slightly off.",
    "Setup was confusing and the manual is poorly translated.", "My kids love it and use it every day.",
    "Returned it: too loud &lt;really&gt; and it smells of plastic.", "Five stars, no complaints at all.",
]


def build_corpus(n, seed=0):
    """n deterministic texts of varied length: ~40% serialized table rows, ~60% reviews, ~5% over 256 tokens."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        if rng.random() < 0.4:
            texts.append(f"Product: {rng.choice(PRODUCTS)}. Price: {rng.randint(5, 3000)} yuan. "
                         f"Units sold: {rng.randint(0, 50000)}. Region: {rng.choice(REGIONS)}. "
                         f"Rating: {rng.randint(1, 5)}/5. Returned: {rng.choice(['yes', 'no'])}.")
        else:
            n_sentences = rng.randint(25, 60) if rng.random() < 0.05 else rng.randint(1, 8)
            texts.append(" ".join(rng.choice(REVIEW_SENTENCES) for _ in range(n_sentences)))
    return texts


class PeakRss:
    """Context manager sampling this process's RSS every 10 ms; .peak_mb is the highest value seen."""

    def __init__(self):
        import psutil  # benchmark-only dependency, like sentence-transformers

        self.peak_mb, self._stop = 0.0, threading.Event()
        self._process = psutil.Process()

    def _sample(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)
            self._stop.wait(0.01)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def add_arguments(parser):
    parser.add_argument("--n", type=int, default=2000, help="number of texts")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: $LM_DEVICE, else auto)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per engine")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="registry name or absolute model directory")


def run(args):
    from sentence_transformers import SentenceTransformer  # the reference; a benchmark-only dependency

    from lm_engine.engine import load_engine

    texts = build_corpus(args.n)
    engine = load_engine(args.model, args.device)
    reference = SentenceTransformer(str(engine.model_dir), device=str(engine.device))
    encoders = {
        "lm_engine": lambda t: engine.encode(t).vectors,
        "sentence-transformers": lambda t: reference.encode(t, batch_size=32, show_progress_bar=False),
    }
    for encode in encoders.values():  # warm-up: allocator, thread pools, kernel selection
        encode(texts[:64])

    best_s, peak_mb, vectors = {}, {}, {}
    for round_ in range(args.repeats):
        names = list(encoders) if round_ % 2 == 0 else list(reversed(encoders))
        for name in names:
            with PeakRss() as rss:
                start = time.perf_counter()
                vectors[name] = encoders[name](texts)
                elapsed = time.perf_counter() - start
            best_s[name] = min(best_s.get(name, float("inf")), elapsed)
            peak_mb[name] = max(peak_mb.get(name, 0.0), rss.peak_mb)

    n_tokens = sum(len(ids) for ids in engine.tokenize(texts)[0])  # after truncation, the same for both engines
    a, b = vectors["lm_engine"].astype(np.float64), vectors["sentence-transformers"].astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    figures = {
        "device": str(engine.device), "model_key": engine.model_key, "n_texts": len(texts), "n_tokens": n_tokens,
        "repeats": args.repeats,
        "tokens_per_s": {name: n_tokens / s for name, s in best_s.items()},
        "best_s": best_s, "peak_rss_mb_while_encoding": peak_mb,
        "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ratio": best_s["sentence-transformers"] / best_s["lm_engine"],
        "worst_cosine": float(cosine.min()),
    }
    print_table(figures)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


def print_table(figures):
    print(f"\n{figures['n_texts']} texts, {figures['n_tokens']} tokens, device {figures['device']}, "
          f"best of {figures['repeats']} rounds, {figures['model_key']}")
    print(f"{'engine':<24}{'best s':>10}{'tokens/s':>12}{'peak RSS MB':>14}")
    for name, seconds in figures["best_s"].items():
        print(f"{name:<24}{seconds:>10.2f}{figures['tokens_per_s'][name]:>12.0f}"
              f"{figures['peak_rss_mb_while_encoding'][name]:>14.0f}")
    print(f"ratio lm_engine / reference tokens/s: {figures['ratio']:.2f}")
    print(f"worst cosine lm_engine vs reference:  {figures['worst_cosine']:.8f}")
    print(f"process max RSS MB (both models):     {figures['process_max_rss_mb']:.0f}")
