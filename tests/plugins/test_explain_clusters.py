"""Discovery finds planted groups in real embeddings (all-MiniLM-L6-v2) and names them by their words."""

from __future__ import annotations

import random

import pytest

from lm_insights.explain.clusters import discover
from lm_insights.spec import Clusters
from lm_insights.core.values import text_sha256

GROUPS = {
    "battery": ["battery", "charger", "cable", "voltage", "charging"],
    "pasta": ["pasta", "garlic", "tomato", "basil", "sauce"],
    "tent": ["tent", "hiking", "trail", "backpack", "camping"],
}


def planted_texts(per_group: int = 20, seed: int = 3) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, truth = [], []
    for group, (name, words) in enumerate(GROUPS.items()):
        for _ in range(per_group):
            texts.append(f"Review: the {', the '.join(rng.sample(words, 3))}.")
            truth.append(group)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [truth[i] for i in order]


@pytest.fixture(scope="module")
def engine():
    from lm_engine import load_engine

    return load_engine()


def test_three_planted_groups_are_found_and_named_by_their_words(engine):
    from sklearn.metrics import adjusted_rand_score

    texts, truth = planted_texts()
    vectors = engine.encode(texts).vectors
    found = discover(vectors, texts, [text_sha256(t) for t in texts], Clusters())
    assert len(found.clusters) == 3 and found.silhouette > 0
    assert adjusted_rand_score(truth, found.assignments) >= 0.9
    for cluster in found.clusters:
        members = [truth[i] for i, a in enumerate(found.assignments) if a == cluster.cluster]
        planted_words = list(GROUPS.values())[max(set(members), key=members.count)]
        assert cluster.terms and set(cluster.terms) <= set(planted_words), (cluster.terms, planted_words)
        assert found.assignments[cluster.representative] == cluster.cluster

    # the same data in another order: the same clusters under the same ids
    reordered = list(reversed(range(len(texts))))
    again = discover(vectors[reordered], [texts[i] for i in reordered], [text_sha256(texts[i]) for i in reordered],
                     Clusters())
    assert [c.name for c in again.clusters] == [c.name for c in found.clusters]
    assert [again.assignments[reordered.index(i)] for i in range(len(texts))] == found.assignments


def test_too_few_rows_give_no_clusters():
    import numpy as np

    assert discover(np.eye(4, dtype="float32"), ["a"] * 4, ["h"] * 4, Clusters()) is None
