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
