"""Word-level explanations with captum on the real model: a planted word that decides the label is ranked first."""

from __future__ import annotations

import pytest

from lm_insights.explain.words import explain_words, margin_function
from lm_insights.spec import Words

LABELS = {"fruit": "a text about fruit: bananas, apples, oranges, grapes",
          "tools": "a text about tools: hammers, drills, saws, wrenches"}
TEXTS = {"fruit": ["Order 17 contains one banana and was shipped on Monday."],
         "tools": ["Order 42 contains one hammer and was shipped on Friday."]}
PLANTED = {"fruit": "banana", "tools": "hammer"}


@pytest.fixture(scope="module")
def engine():
    from lm_engine import load_engine

    return load_engine()


@pytest.mark.parametrize("method", ["kernel_shap", "ablation"])
def test_the_planted_word_that_decides_the_label_is_ranked_first(engine, method):
    prototypes = engine.prototypes(LABELS)
    settings = Words(method=method)
    for index, label in enumerate(LABELS):
        margins = margin_function(engine, prototypes, index)
        for text in TEXTS[label]:
            assert margins([text])[0] > 0, f"the model labels {text!r} as {label}"
            words = explain_words(text, margins, settings)
            assert words[0][0] == PLANTED[label] and words[0][1] > 0, words
            assert len(words) == settings.top_words
            assert all(abs(a[1]) >= abs(b[1]) for a, b in zip(words, words[1:]))


def additive_model(n_words: int, seed: int):
    """A text of ``n_words`` distinct words and a margin that is the sum of the kept words' weights (true
    attributions known: the weights), with its true top 5 by absolute weight."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n_words)]
    weights = dict(zip(words, rng.normal(0, 1, n_words)))

    def margins(texts: list[str]):
        return np.array([sum(weights[w] for w in text.split()) for text in texts], dtype="float32")

    return " ".join(words), margins, set(sorted(words, key=lambda w: -abs(weights[w]))[:5])


@pytest.mark.parametrize("n_words", [20, 100])
def test_kernel_shap_recovers_the_true_top_words_of_an_additive_model_at_any_length(n_words):
    """With 32 samples whatever the length, 100 words gave 0.2 of the true top 5 (20 words: 5/5); samples scaled
    to the length recover all 5 at both lengths, and the row's cost counts the samples it encoded."""
    from lm_insights.explain.words import explanation_cost

    settings = Words()
    recovered = []
    for seed in range(5):
        text, margins, true_top = additive_model(n_words, seed)
        calls = []
        counted = lambda texts: (calls.append(len(texts)), margins(texts))[1]  # noqa: E731
        found = {w for w, _ in explain_words(text, counted, settings, seed)}
        recovered.append(len(found & true_top))
        assert sum(calls) == explanation_cost(text, settings) == max(32, 2 * n_words + 1)
    print(f"\n{n_words} words: true top 5 recovered {sum(recovered) / len(recovered):.1f}/5 on average")
    assert recovered == [5] * 5


def test_every_setting_that_changes_an_explanation_is_in_its_cache_key():
    """Changing the seed or top_words served the old explanations from the cache: each setting now changes the key."""
    from lm_insights.explain.words import method_version

    base = Words()
    changed = [Words(seed=1), Words(top_words=3), Words(n_samples=64), Words(samples_per_word=4), Words(method="lime")]
    keys = [method_version(base), *map(method_version, changed)]
    assert len(set(keys)) == len(keys), keys
    assert method_version(Words(method="ablation")) != method_version(Words(method="ablation", top_words=3))
    assert method_version(Words(method="ablation", seed=1)) == method_version(Words(method="ablation"))
