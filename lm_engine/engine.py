"""
Batched inference: text -> token ids -> length-sorted token-budget batches -> sentence vectors in input order.

Rules for inputs: every row must be a str. None raises ValueError naming the row index (a missing value is the
caller's decision, not ours). "" is encoded as the empty sequence [CLS] [SEP], exactly as sentence-transformers
does. Texts longer than max_seq_length tokens are truncated and flagged.

Determinism: batches depend only on the token lengths (stable sort), so the same inputs give bit-identical
outputs. Padding changes matmul shapes, so the same text among other texts may differ from the text alone by
rounding (~1e-7), well under the 1e-6 the tests allow.
"""

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from lm_engine import checkpoint, registry, zero_shot

logger = logging.getLogger(__name__)

TOKEN_BUDGET = 16384  # padded tokens per batch: big enough to keep matmuls efficient, small enough for memory
# padded positions are computed and thrown away: when sorted texts get shorter, start a new batch instead
MAX_PADDING = 0.05
PROGRESS_INTERVAL_S = 10.0  # seconds between progress log lines of a long encode


@dataclass
class EncodeResult:
    vectors: np.ndarray  # float32 (n, dim), row i is texts[i]
    n_tokens: np.ndarray  # int32 (n,), tokens the model saw, [CLS] and [SEP] included
    truncated: np.ndarray  # bool (n,), True when the text had more than max_seq_length tokens


def pick_device(device=None):
    """The device argument, else $LM_DEVICE (cpu, cuda, cuda:N), else cuda when available, else cpu."""
    device = device or os.environ.get("LM_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; use cpu, cuda or cuda:N")
    return device


def token_budget_batches(lengths, token_budget=TOKEN_BUDGET, max_padding=MAX_PADDING):
    """Row indices grouped into batches, longest first; a batch closes before (rows x longest) exceeds
    token_budget or its padding exceeds max_padding of its padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep input order
    batches, batch, real = [], [], 0
    for i in order:
        padded = lengths[batch[0]] * (len(batch) + 1) if batch else 0
        if batch and (padded > token_budget or padded - real - lengths[i] > max_padding * padded):
            batches.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        batches.append(batch)
    return batches


def run_splitting_on_oom(run, rows):
    """run(rows) -> array with one row per row; on CUDA out-of-memory, run each half instead, recursively."""
    try:
        return run(rows)
    except torch.OutOfMemoryError:
        if len(rows) == 1:
            raise
    # retried outside the except block, so the traceback no longer holds the failed attempt's tensors
    torch.cuda.empty_cache()
    half = len(rows) // 2
    logger.warning("out of memory on a batch of %d rows; retrying as two batches of %d and %d",
                   len(rows), half, len(rows) - half)
    return np.concatenate([run_splitting_on_oom(run, rows[:half]), run_splitting_on_oom(run, rows[half:])])


class Progress:
    """Logs rows done / total, rows/s and ETA at most every interval_s seconds."""

    def __init__(self, total, interval_s=PROGRESS_INTERVAL_S):
        self.total, self.interval_s = total, interval_s
        self.start = self.last_log = time.monotonic()

    def update(self, done):
        now = time.monotonic()
        if now - self.last_log < self.interval_s:
            return
        self.last_log = now
        rate = done / max(now - self.start, 1e-9)
        logger.info("encoded %d/%d rows (%.0f rows/s, ETA %.0f s)", done, self.total, rate,
                    (self.total - done) / max(rate, 1e-9))


class Engine:
    """A loaded model with its tokenizer on one device. Build it with load_engine()."""

    def __init__(self, name, model_dir, device, precision=None):
        precision = precision or default_precision(device)
        # the precision changes the vectors, so it is part of the key that result caches use
        self._setup(name, model_dir, device, checkpoint.load_model(model_dir),
                    registry.model_key(name, model_dir, precision), precision)

    @classmethod
    def from_model(cls, name, model_dir, device, model, model_key, precision=None):
        """An Engine around a BertModel already built (e.g. fine-tuned weights), with model_dir's tokenizer;
        model_key must identify those weights and the precision (the cache key of everything encoded with them)."""
        engine = cls.__new__(cls)
        engine._setup(name, model_dir, device, model, model_key, precision or default_precision(device))
        return engine

    def _setup(self, name, model_dir, device, model, model_key, precision):
        self.name, self.model_dir, self.device, self.model_key = name, model_dir, device, model_key
        self.precision = precision
        self.dim = model.config.hidden_size
        self.max_seq_length = checkpoint.read_max_seq_length(model_dir, model.config)
        self.tokenizer = checkpoint.load_tokenizer(model_dir, self.max_seq_length)
        if precision == "int8":
            if device.type != "cpu":
                raise ValueError(f"precision int8 runs on the CPU only, not on {device}; use fp32 or bf16 there")
            from lm_engine.int8 import Int8Encoder  # imported on demand: it pulls in onnxruntime

            # self.model keeps the fp32 weights (fine-tuning starts from them); encode() runs the int8 copy
            self.model = model.float().eval()
            self.encoder = Int8Encoder(self.model, self.tokenize(Int8Encoder.calibration_texts)[0])
        else:
            # bf16 halves memory traffic on GPU; pooling and normalisation still run in fp32 (sentence_embedding)
            self.model = self.encoder = model.to(device=device, dtype=DTYPES[precision]).eval()

    def tokenize(self, texts):
        """Token id lists (truncated to max_seq_length) and a truncated flag per text."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
        for i, text in enumerate(texts):
            if text is None:
                raise ValueError(f"row {i} is None; pass a string (\"\" encodes as the empty sequence)")
            if not isinstance(text, str):
                raise TypeError(f"row {i} is {type(text).__name__}, not str")
        encodings = self.tokenizer.encode_batch(list(texts))
        return [e.ids for e in encodings], np.array([bool(e.overflowing) for e in encodings], dtype=bool)

    def encode(self, texts, token_budget=TOKEN_BUDGET):
        """EncodeResult for texts, rows in input order."""
        ids, truncated = self.tokenize(texts)
        n_tokens = np.array([len(row) for row in ids], dtype=np.int32)
        vectors = np.empty((len(ids), self.dim), dtype=np.float32)
        progress = Progress(len(ids))
        done = 0
        for batch in token_budget_batches(n_tokens, token_budget):
            vectors[batch] = run_splitting_on_oom(lambda rows: self._embed([ids[i] for i in rows]), batch)
            done += len(batch)
            progress.update(done)
        return EncodeResult(vectors=vectors, n_tokens=n_tokens, truncated=truncated)

    def _embed(self, ids):
        """Sentence vectors (n, dim) float32 for one batch of token id lists, padded to the longest."""
        T = max(len(row) for row in ids)
        input_ids = np.zeros((len(ids), T), dtype=np.int64)  # pad id 0; padded positions are masked anyway
        attention_mask = np.zeros((len(ids), T), dtype=np.int64)
        for r, row in enumerate(ids):
            input_ids[r, :len(row)] = row
            attention_mask[r, :len(row)] = 1
        with torch.inference_mode():
            input_ids = torch.from_numpy(input_ids).to(self.device)
            attention_mask = torch.from_numpy(attention_mask).to(self.device)
            return self.encoder.sentence_embedding(input_ids, attention_mask).cpu().numpy()

    def prototypes(self, labels):
        """Prototype vectors (k, dim) for {label: description}, in the dict's order."""
        return self.encode(zero_shot.prototype_texts(labels)).vectors

    def classify(self, texts, labels, min_margin=0.02):
        """A Classification (label, score, margin) per text against the label set {label: description}."""
        return zero_shot.classify_vectors(self.encode(texts).vectors, self.prototypes(labels), list(labels),
                                          min_margin)


_engines = {}
_engines_lock = threading.Lock()
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # torch dtypes of the precisions other than int8


def default_precision(device):
    """bf16 on a GPU, fp32 elsewhere."""
    return "bf16" if device.type == "cuda" else "fp32"


def load_engine(name=registry.DEFAULT_MODEL, device=None, precision=None):
    """The Engine for a model name on a device (see pick_device) in a precision (default: default_precision),
    loaded once per process and reused."""
    device = pick_device(device)
    precision = precision or default_precision(device)
    if precision not in registry.PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {registry.PRECISIONS}")
    with _engines_lock:
        if (name, str(device), precision) not in _engines:
            _engines[(name, str(device), precision)] = Engine(name, registry.resolve(name), device, precision)
        return _engines[(name, str(device), precision)]
