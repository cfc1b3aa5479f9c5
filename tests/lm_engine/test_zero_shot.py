import numpy as np
import pytest

from lm_engine import classify_vectors, label_set_version
from lm_engine.zero_shot import UNCERTAIN, prototype_texts

LABELS = {
    "praise": "a happy customer praising the product's quality, value or performance",
    "defect": "a complaint that the product arrived broken, is faulty or stopped working",
    "delivery": "a complaint about slow shipping, late delivery, a lost or damaged package",
}
# 30 hand-written reviews and sales notes, 12 praise / 10 defect / 8 delivery: the majority baseline is 0.4
REVIEWS = [
    ("Absolutely love this rice cooker, the rice comes out perfect every time.", "praise"),
    ("Best headphones I have owned, the sound is crisp and the battery lasts for days.", "praise"),
    ("Great value for the price, works exactly as advertised.", "praise"),
    ("Product: yoga mat. Rating: 5/5. Customer note: excellent grip and very comfortable.", "praise"),
    ("My kids adore this toy and it has held up really well.", "praise"),
    ("Fantastic quality, feels sturdy and looks beautiful on my desk.", "praise"),
    ("Would happily buy again, five stars.", "praise"),
    ("The blender is powerful and easy to clean, very satisfied.", "praise"),
    ("Superb running shoes, comfortable from the first day.", "praise"),
    ("Excellent coffee grinder, consistent grind and quiet motor.", "praise"),
    ("This jacket is warm, well made and fits perfectly.", "praise"),
    ("Product: desk lamp. Rating: 5/5. Customer note: bright, elegant and great build quality.", "praise"),
    ("The screen cracked after one week of normal use.", "defect"),
    ("Stopped charging after two days, completely dead now.", "defect"),
    ("The zipper broke the first time I used the backpack.", "defect"),
    ("Product: electric kettle. Rating: 1/5. Customer note: leaks water from the bottom.", "defect"),
    ("The left earbud makes no sound at all, faulty unit.", "defect"),
    ("Power button does not work and the device will not turn on.", "defect"),
    ("The blades of the fan are loose and it rattles badly, poor manufacturing.", "defect"),
    ("After a month the smart watch freezes and reboots constantly.", "defect"),
    ("One of the chair legs snapped, the product is defective.", "defect"),
    ("The printer jams on every page and shows an error light.", "defect"),
    ("The package arrived three weeks late.", "delivery"),
    ("Shipping took forever and tracking never updated.", "delivery"),
    ("The courier left the parcel in the rain and the box was soaked.", "delivery"),
    ("Order status: delayed in transit for 20 days. Customer note: still waiting for my delivery.", "delivery"),
    ("My package was lost by the delivery company.", "delivery"),
    ("The box was crushed during shipping.", "delivery"),
    ("Delivery was postponed four times without explanation.", "delivery"),
    ("The parcel was delivered to the wrong address.", "delivery"),
]


def test_zero_shot_beats_the_majority_baseline(engine):
    texts, truth = zip(*REVIEWS)
    results = engine.classify(list(texts), LABELS, min_margin=0.0)
    accuracy = np.mean([r.label == t for r, t in zip(results, truth)])
    majority = max(truth.count(label) for label in LABELS) / len(truth)
    assert majority == 0.4
    assert accuracy > majority + 0.2, accuracy
    assert all(-1.0 <= r.score <= 1.0 and r.margin >= 0.0 for r in results)


def cosine_oracle(vectors, prototypes, labels, min_margin):
    """(label, score, margin) per vector, computed in float64 one label at a time: cos = u.p / (|u| |p|)."""
    results = []
    for v in np.asarray(vectors, dtype=np.float64):
        scores = sorted(((float(np.dot(v, p) / (np.linalg.norm(v) * np.linalg.norm(p))), label)
                         for label, p in zip(labels, np.asarray(prototypes, dtype=np.float64))), reverse=True)
        (best, label), (runner_up, _) = scores[0], scores[1]
        results.append((label if best - runner_up >= min_margin else UNCERTAIN, best, best - runner_up))
    return results


def test_classify_vectors_reuses_cached_embeddings(engine):
    """Embeddings read back from the cache (pgvector keeps float32, as a list) classify as the texts do."""
    texts = [text for text, _ in REVIEWS[::3]]
    stored = [[float(x) for x in np.float32(row)] for row in engine.encode(texts).vectors]
    prototypes = engine.prototypes(LABELS)
    cached = classify_vectors(stored, prototypes, list(LABELS), 0.02)
    expected = cosine_oracle(stored, prototypes, list(LABELS), 0.02)
    assert [c.label for c in cached] == [label for label, _, _ in expected]
    assert np.allclose([(c.score, c.margin) for c in cached], [(s, m) for _, s, m in expected], atol=1e-6)
    assert [c.label for c in engine.classify(texts, LABELS, min_margin=0.02)] == [c.label for c in cached]
    assert {label for label, _, _ in expected} == set(LABELS), "the reviews cover every label"


def test_uncertain_below_min_margin():
    prototypes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    vectors = np.array([[0.8, 0.6], [0.6, 0.8], [0.71, 0.70], [2.0, 0.0]])  # last one is not unit length
    results = classify_vectors(vectors, prototypes, ["a", "b", "c"], min_margin=0.05)
    assert [r.label for r in results] == ["a", "b", UNCERTAIN, "a"]
    assert results[0].score == pytest.approx(0.8) and results[0].margin == pytest.approx(0.2)
    assert results[2].margin == pytest.approx((0.71 - 0.70) / np.hypot(0.71, 0.70), abs=1e-6)
    assert results[3].score == pytest.approx(1.0)  # cosine, not dot product
    assert classify_vectors(vectors[2:3], prototypes, ["a", "b", "c"], min_margin=0.0)[0].label == "a"


def test_label_set_rules():
    with pytest.raises(ValueError, match="at least 2 labels"):
        prototype_texts({"only": "one label"})
    with pytest.raises(ValueError, match="reserved"):
        prototype_texts({"uncertain": "x", "b": "y"})
    assert prototype_texts({"a": "first", "b": "second"}) == ["a: first", "b: second"]


def test_label_set_version_is_canonical_and_changes_with_content():
    version = label_set_version(LABELS, 0.02)
    assert len(version) == 16 and all(c in "0123456789abcdef" for c in version)
    assert label_set_version(dict(reversed(list(LABELS.items()))), 0.02) == version
    assert label_set_version(LABELS, 0.05) != version
    assert label_set_version({**LABELS, "praise": "a satisfied customer"}, 0.02) != version
