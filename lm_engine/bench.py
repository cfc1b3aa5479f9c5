"""
Benchmark: lm_engine's precisions against sentence-transformers' CPU backends, on the same texts, in one process.

    python -m lm_engine bench [--n 1000] [--repeats 3] [--json out.json] [--precisions fp32,int8,bf16]

Engines:
- lm_engine fp32 / int8 / bf16: Engine.encode (length-sorted token-budget batches).
- sentence-transformers torch: SentenceTransformer.encode(batch_size=32), the library itself.
- sentence-transformers ONNX / ONNX int8 (stand-ins): sentence-transformers' own ONNX backend needs optimum-onnx,
  whose only release pins transformers < 4.58 (we pin 5.24), and a separately exported transformers BertModel
  traced wrong padding masks here. So these stand-ins run what that backend runs: the same weights (the parity
  test proves our graph computes the same function) exported with torch.onnx, ONNX Runtime, its batching (texts
  sorted by character length, batches of 32 padded to the longest) and, for int8, its quantization
  (optimum's dynamic defaults: weights int8 per channel, activations uint8 per tensor, every MatMul).

The corpus is deterministic: serialized warehouse rows and product reviews of 1 to ~60 sentences, some longer
than max_seq_length, some CJK/emoji/HTML entities. Every engine is warmed up, then timed in rounds whose order
alternates (forward, reversed, ...), so contention on a shared machine hits every engine alike; the best round
of each counts. Also printed: tokens per CPU-second of this process (less sensitive to other processes), peak RSS
while encoding (all models stay loaded), worst and mean cosine to lm_engine fp32, and zero-shot labels against
lm_engine fp32's: agreement where fp32's label is confident (margin >= MIN_MARGIN), agreement of the nearest label
on every row (near-ties may flip), and hard flips (one confident label turned into another).
"""

import json
import os
import random
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from lm_engine import zero_shot

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
# the zero-shot label set whose agreement with fp32 the bench reports
BENCH_LABELS = {"positive": "a happy customer who likes the product", "negative": "an unhappy customer with a complaint",
                "logistics": "delivery, shipping or packaging", "listing": "a product listing with price and sales figures"}
MIN_MARGIN = 0.02  # the platform's default: below it a label is published as "uncertain"
REFERENCE = "lm_engine fp32"
ST_BATCH_SIZE = 32  # SentenceTransformer.encode's default


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


class OnnxStandIn:
    """sentence-transformers' ONNX backend as it runs: an ONNX graph of the encoder in ONNX Runtime, texts sorted
    by character length in batches of 32 padded to the longest, mean pooling and normalisation."""

    def __init__(self, engine, onnx_path):
        import onnxruntime

        self.engine = engine
        self.session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def encode(self, texts):
        ids = self.engine.tokenize(texts)[0]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        vectors = np.empty((len(texts), self.engine.dim), dtype=np.float32)
        for start in range(0, len(order), ST_BATCH_SIZE):
            rows = order[start:start + ST_BATCH_SIZE]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, :len(ids[i])], mask[r, :len(ids[i])] = ids[i], 1
            hidden = self.session.run(["hidden"], {"input_ids": input_ids, "attention_mask": mask})[0]
            pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
            vectors[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return vectors


def onnx_stand_ins(engine, directory):
    """{name: encode} of the sentence-transformers ONNX and ONNX-int8 stand-ins, their graphs under directory."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lm_engine.int8 import export_onnx

    fp32_path, int8_path = Path(directory) / "st.onnx", Path(directory) / "st.int8.onnx"
    export_onnx(engine.model, fp32_path)
    quantize_dynamic(str(fp32_path), str(int8_path), per_channel=True, weight_type=QuantType.QInt8)
    return {"sentence-transformers onnx*": OnnxStandIn(engine, fp32_path).encode,
            "sentence-transformers onnx-int8*": OnnxStandIn(engine, int8_path).encode}


def add_arguments(parser):
    parser.add_argument("--n", type=int, default=1000, help="number of texts")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (ONNX engines run on the CPU only)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per engine")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="registry name or absolute model directory")
    parser.add_argument("--precisions", default="fp32,int8,bf16", help="lm_engine precisions to time")


def label_agreement(reference, other):
    """(share of confident reference labels kept, share of nearest labels equal, hard flips)."""
    confident = [a.label == b.best for a, b in zip(reference, other) if a.label != zero_shot.UNCERTAIN]
    nearest = np.mean([a.best == b.best for a, b in zip(reference, other)])
    flips = sum(a.label != b.label and zero_shot.UNCERTAIN not in (a.label, b.label) for a, b in zip(reference, other))
    return float(np.mean(confident)) if confident else float("nan"), float(nearest), int(flips)


def time_rounds(encoders, texts, repeats):
    """Best wall and CPU seconds, peak RSS and the vectors of each encoder, rounds in alternating order."""
    best_s, best_cpu_s, peak_mb, vectors = {}, {}, {}, {}
    for round_ in range(repeats):
        for name in (list(encoders) if round_ % 2 == 0 else list(reversed(encoders))):
            with PeakRss() as rss:
                start, start_cpu = time.perf_counter(), time.process_time()
                vectors[name] = encoders[name](texts)
                elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            best_s[name] = min(best_s.get(name, float("inf")), elapsed)
            best_cpu_s[name] = min(best_cpu_s.get(name, float("inf")), cpu)
            peak_mb[name] = max(peak_mb.get(name, 0.0), rss.peak_mb)
    return best_s, best_cpu_s, peak_mb, vectors


def run(args):
    from sentence_transformers import SentenceTransformer  # the reference; a benchmark-only dependency

    from lm_engine.engine import load_engine

    load_before = os.getloadavg()
    texts = build_corpus(args.n)
    engines = {f"lm_engine {p}": load_engine(args.model, args.device, p) for p in args.precisions.split(",")}
    fp32 = load_engine(args.model, args.device, "fp32")
    reference = SentenceTransformer(str(fp32.model_dir), device=str(fp32.device))
    encoders = {name: (lambda t, e=e: e.encode(t).vectors) for name, e in engines.items()}
    encoders["sentence-transformers torch"] = lambda t: reference.encode(t, batch_size=ST_BATCH_SIZE,
                                                                         show_progress_bar=False)
    with tempfile.TemporaryDirectory(prefix="lm_bench_") as tmp:
        encoders.update(onnx_stand_ins(fp32, tmp))
        for encode in encoders.values():  # warm-up: allocator, thread pools, kernel selection
            encode(texts[:64])
        best_s, best_cpu_s, peak_mb, vectors = time_rounds(encoders, texts, args.repeats)
        prototypes = {name: encode(zero_shot.prototype_texts(BENCH_LABELS)) for name, encode in encoders.items()}

    n_tokens = sum(len(ids) for ids in fp32.tokenize(texts)[0])  # after truncation, the same for every engine
    ref = vectors.get(REFERENCE)
    if ref is None:
        ref = fp32.encode(texts).vectors
    ref_labels = zero_shot.classify_vectors(ref, fp32.prototypes(BENCH_LABELS), BENCH_LABELS, MIN_MARGIN)
    figures = {"device": str(fp32.device), "model": fp32.model_key.rsplit("/", 1)[0], "n_texts": len(texts),
               "n_tokens": n_tokens, "repeats": args.repeats, "load_average_before": load_before,
               "load_average_after": os.getloadavg(), "cpu_count": os.cpu_count(),
               "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "engines": {}}
    for name, v in vectors.items():
        cosine = (v * ref).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
        labels = zero_shot.classify_vectors(v, prototypes[name], BENCH_LABELS, MIN_MARGIN)
        confident, nearest, flips = label_agreement(ref_labels, labels)
        figures["engines"][name] = {
            "best_s": best_s[name], "tokens_per_s": n_tokens / best_s[name],
            "tokens_per_cpu_s": n_tokens / best_cpu_s[name], "peak_rss_mb": peak_mb[name],
            "worst_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
            "confident_labels_kept": confident, "nearest_label_agreement": nearest, "hard_flips": flips}
    print_table(figures)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


def print_table(figures):
    engines = figures["engines"]
    print(f"\n{figures['n_texts']} texts, {figures['n_tokens']} tokens, device {figures['device']}, "
          f"best of {figures['repeats']} alternating rounds, {figures['model']}; load average "
          f"{figures['load_average_before'][0]:.1f} before, {figures['load_average_after'][0]:.1f} after, "
          f"{figures['cpu_count']} CPUs")
    print(f"{'engine':<34}{'tokens/s':>9}{'x fp32':>8}{'tok/cpu-s':>10}{'RSS MB':>8}{'worst cos':>11}"
          f"{'mean cos':>10}{'kept':>8}{'nearest':>9}{'flips':>6}")
    base = engines.get(REFERENCE, {}).get("tokens_per_s")
    for name, e in engines.items():
        ratio = e["tokens_per_s"] / base if base else float("nan")
        print(f"{name:<34}{e['tokens_per_s']:>9.0f}{ratio:>8.2f}{e['tokens_per_cpu_s']:>10.0f}{e['peak_rss_mb']:>8.0f}"
              f"{e['worst_cosine']:>11.5f}{e['mean_cosine']:>10.5f}{e['confident_labels_kept']:>8.2%}"
              f"{e['nearest_label_agreement']:>9.2%}{e['hard_flips']:>6}")
    st = {n: e["tokens_per_s"] for n, e in engines.items() if n.startswith("sentence-transformers")}
    if st and "lm_engine int8" in engines:
        fastest = max(st, key=st.get)
        print(f"lm_engine int8 / fastest sentence-transformers backend ({fastest}): "
              f"{engines['lm_engine int8']['tokens_per_s'] / st[fastest]:.2f}")
    print("* stand-in: ONNX Runtime running sentence-transformers' ONNX backend's batching and quantization on a "
          "torch.onnx export of the same weights (see lm_engine/bench.py)")
    print(f"kept: fp32's confident labels (margin >= {MIN_MARGIN}) that the engine also gives; nearest: the nearest "
          f"label on every row; flips: a confident label turned into another")
