"""Parity with sentence-transformers, batch invariance, order, determinism and the input rules of Engine.encode."""

import logging
import random

import numpy as np
import pytest
import torch

from lm_engine import engine as engine_module
from lm_engine import load_engine
from lm_engine.engine import Progress, pick_device, run_splitting_on_oom, token_budget_batches


def random_texts(n, seed):
    """Texts of many lengths: mostly 1-30 words, every 50th one past max_seq_length."""
    rng = random.Random(seed)
    words = ("price yuan units sold review great terrible shipping quality battery screen refund the a was and "
             "非常 好 😀 &amp; café").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(300, 400) if i % 50 == 0 else rng.randint(0, 30)))
            for i in range(n)]


@pytest.fixture(scope="module")
def parity_result(engine, parity_texts):
    return engine.encode(parity_texts)


def test_vectors_match_sentence_transformers(parity_result, reference, parity_texts):
    expected = reference.encode(parity_texts, batch_size=32, convert_to_numpy=True)
    got = parity_result.vectors
    assert got.dtype == np.float32 and got.shape == (len(parity_texts), 384)
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= 0.99999
    assert np.abs(got - expected).max() <= 1e-5


def test_token_counts_and_truncation_match_the_reference_tokenizer(parity_result, reference, engine, parity_texts):
    assert engine.max_seq_length == reference.max_seq_length == 256
    full = reference.tokenizer(parity_texts, truncation=False)["input_ids"]
    cut = reference.tokenizer(parity_texts, truncation=True, max_length=256)["input_ids"]
    assert parity_result.n_tokens.dtype == np.int32 and parity_result.truncated.dtype == bool
    assert parity_result.n_tokens.tolist() == [len(ids) for ids in cut]
    assert parity_result.truncated.tolist() == [len(ids) > 256 for ids in full]
    # the corpus really exercises both sides of the limit: "word " * 254 is exactly 256 tokens, * 255 is 257
    assert parity_result.truncated.sum() == 5 and not parity_result.truncated[parity_texts.index("word " * 254)]


def test_empty_string_is_cls_sep_like_the_reference(parity_result, reference):
    assert parity_result.n_tokens[0] == 2 and not parity_result.truncated[0]
    assert reference.tokenizer([""])["input_ids"] == [[101, 102]]
    np.testing.assert_array_equal(parity_result.vectors[0], parity_result.vectors[1])  # whitespace only, the same


def test_none_names_the_row(engine):
    with pytest.raises(ValueError, match="row 2 is None"):
        engine.encode(["a", "b", None])
    with pytest.raises(TypeError, match="row 1 is int"):
        engine.encode(["a", 5])
    with pytest.raises(TypeError, match="not one string"):
        engine.encode("a single string")


def test_empty_input_gives_empty_arrays(engine):
    result = engine.encode([])
    assert result.vectors.shape == (0, 384) and result.n_tokens.shape == (0,) and result.truncated.shape == (0,)


def test_batch_invariance(engine):
    # Each probe text among 10,000 others whose lengths span 2..256 tokens: it is batched with different
    # neighbours and padding than when it is encoded alone.
    texts = random_texts(10_000, seed=1)
    crowd = engine.encode(texts)
    assert len(set(crowd.n_tokens.tolist())) > 40
    for i in list(range(0, 10_000, 487)) + [50, 9950]:
        alone = engine.encode([texts[i]]).vectors[0]
        assert np.abs(alone - crowd.vectors[i]).max() <= 1e-6, i


def test_determinism(engine):
    texts = random_texts(400, seed=2)
    first = engine.encode(texts)
    assert np.array_equal(engine.encode(texts).vectors, first.vectors)  # bit-identical run after run


def test_results_come_back_in_input_order(engine, parity_result, parity_texts):
    order = list(reversed(range(len(parity_texts))))
    shuffled = engine.encode([parity_texts[i] for i in order])
    assert np.abs(shuffled.vectors - parity_result.vectors[order]).max() <= 1e-6
    assert shuffled.n_tokens.tolist() == parity_result.n_tokens[order].tolist()
    assert shuffled.truncated.tolist() == parity_result.truncated[order].tolist()


def test_token_budget_batches_sort_fill_and_cover_every_row():
    lengths = [5, 256, 3, 3, 100, 256, 7]
    batches = token_budget_batches(lengths, token_budget=600, max_padding=1.0)  # only the budget limits
    assert batches == [[1, 5], [4, 6, 0, 2, 3]]  # longest first, stable among equal lengths
    assert all(lengths[b[0]] * len(b) <= 600 for b in batches)
    # with at most 5% padding, 7 does not join 100, 5 does not join 7, but the two 3s go together
    assert token_budget_batches(lengths, token_budget=600) == [[1, 5], [4], [6], [0], [2, 3]]
    assert token_budget_batches([300], token_budget=100) == [[0]]  # a row longer than the budget still runs
    rows = sorted(i for b in token_budget_batches(list(range(1, 500)) * 3) for i in b)
    assert rows == list(range(1497))


def test_oom_splits_the_batch_until_it_fits():
    """A mock of the GPU: run() raises torch.OutOfMemoryError for batches over 3 rows, as CUDA would."""
    calls = []

    def run(rows):
        calls.append(len(rows))
        if len(rows) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return np.array([[r, r * 10] for r in rows], dtype=np.float32)

    out = run_splitting_on_oom(run, list(range(10)))
    assert out[:, 0].tolist() == list(range(10))  # no row dropped, order kept
    assert calls == [10, 5, 2, 3, 5, 2, 3]


def test_oom_on_a_single_row_is_raised():
    """A mock of the GPU: even one row does not fit, so there is nothing left to split."""
    def run(rows):
        raise torch.OutOfMemoryError("CUDA out of memory (fake)")

    with pytest.raises(torch.OutOfMemoryError):
        run_splitting_on_oom(run, [0, 1])


def test_progress_logs_rows_rate_and_eta(caplog):
    progress = Progress(total=100, interval_s=0.0)
    with caplog.at_level(logging.INFO, logger=engine_module.__name__):
        progress.update(40)
    assert caplog.records and "encoded 40/100 rows" in caplog.text and "rows/s" in caplog.text
    assert "ETA" in caplog.text
    quiet = Progress(total=100, interval_s=3600)
    caplog.clear()
    quiet.update(50)
    assert not caplog.records


def test_device_choice(monkeypatch):
    monkeypatch.setenv("LM_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda", 1)  # the argument wins over LM_DEVICE
    with pytest.raises(ValueError, match="use cpu, cuda or cuda:N"):
        pick_device("mps")


def test_engines_are_cached_per_name_and_device(engine):
    assert load_engine("all-MiniLM-L6-v2", "cpu") is engine
    assert engine.dim == 384 and engine.max_seq_length == 256
