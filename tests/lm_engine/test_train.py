"""lm_engine.train: linear heads, fine-tuning, thresholds and the safetensors format, on small real data."""

import json

import numpy as np
import pytest
import torch

from lm_engine import train

POSITIVE = ["I love this, it works great.", "Excellent quality, I am very happy with it.",
            "Fantastic purchase, highly recommend it.", "The best thing I bought this year.",
            "Fast delivery and a wonderful product.", "Sturdy, well made and easy to use.",
            "Exceeded my expectations, five stars.", "My family loves it, we use it every day.",
            "Great value for the money.", "Comfortable, quiet and looks beautiful."]
NEGATIVE = ["Terrible, it broke after one day.", "Awful quality, I want a refund.",
            "Worst purchase ever, do not buy.", "It stopped working and I am very disappointed.",
            "Cheap junk, a complete waste of money.", "The seller never answered my complaint.",
            "Arrived damaged and smells of plastic.", "Flimsy, noisy and hard to use.",
            "Not worth the price at all.", "Returned it after a week, useless."]
FINETUNE_TEXTS = POSITIVE * 2 + NEGATIVE * 2  # 40 texts: one epoch stays a few seconds on 2 CPU cores
FINETUNE_TARGETS = ["positive"] * 20 + ["negative"] * 20


def synthetic_classes(n, seed, dim=16, n_classes=3, signal=1.5):
    """Unit-ish vectors whose class shifts the mean along one axis per class: learnable, not separable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    x = rng.normal(size=(n, dim))
    x[np.arange(n), y] += signal
    return x.astype(np.float32), [f"class{c}" for c in y]


def accuracy(head, x, targets):
    predicted = predict_labels(head, x)
    return float(np.mean([p == t for p, t in zip(predicted, targets)]))


def predict_labels(head, x):
    return [head.labels[i] for i in train.predict_from_embeddings(head, x).argmax(axis=1)]


@pytest.fixture(scope="module")
def finetuned(engine):
    return train.finetune(engine, FINETUNE_TEXTS, FINETUNE_TARGETS, train.CLASSIFICATION, epochs=1, seed=3,
                          validation=(POSITIVE[:3] + NEGATIVE[:3], ["positive"] * 3 + ["negative"] * 3))


def test_fit_linear_is_deterministic_and_picks_c_on_validation():
    x, y = synthetic_classes(300, seed=0)
    val_x, val_y = synthetic_classes(100, seed=1)
    first = train.fit_linear(x, y, train.CLASSIFICATION, validation=(val_x, val_y), seed=0)
    second = train.fit_linear(x, y, train.CLASSIFICATION, validation=(val_x, val_y), seed=0)
    assert first.labels == ["class0", "class1", "class2"] and first.method == "linear"
    assert first.tensors["weight"].shape == (3, 16) and first.tensors["bias"].shape == (3,)
    for name in first.tensors:
        assert torch.equal(first.tensors[name], second.tensors[name])
    assert len(first.info["search"]) == len(train.LOGISTIC_C_GRID) * len(train.CLASS_WEIGHTS)
    assert first.info["hyper_parameters"]["C"] in train.LOGISTIC_C_GRID
    assert first.info["hyper_parameters"]["class_weight"] in train.CLASS_WEIGHTS and first.info["metric"] == "accuracy"
    probabilities = train.predict_from_embeddings(first, val_x)
    assert probabilities.shape == (100, 3) and np.allclose(probabilities.sum(axis=1), 1)


def test_head_on_shuffled_labels_scores_chance_while_the_real_head_learns():
    x, y = synthetic_classes(600, seed=0)
    test_x, test_y = synthetic_classes(1000, seed=2)
    shuffled = list(np.random.default_rng(0).permutation(y))
    real = accuracy(train.fit_linear(x, y, train.CLASSIFICATION), test_x, test_y)
    noise = accuracy(train.fit_linear(x, shuffled, train.CLASSIFICATION), test_x, test_y)
    # chance is 1/3; a head fitted to noise lands within a few standard errors of it (seeds vary it by ~.05)
    assert abs(noise - 1 / 3) < 0.12
    assert real > 0.7 and real - noise > 0.3


def test_binary_logistic_becomes_a_two_row_softmax():
    x, y = synthetic_classes(200, seed=0, n_classes=2)
    head = train.fit_linear(x, y, train.CLASSIFICATION)
    from sklearn.linear_model import LogisticRegression

    reference = LogisticRegression(C=1.0, max_iter=5000).fit(x.astype(np.float64), y)
    assert head.tensors["weight"].shape == (2, 16)
    assert np.allclose(train.predict_from_embeddings(head, x), reference.predict_proba(x), atol=1e-5)


def test_ridge_head_predicts_in_target_units():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = 1000 + 50 * x[:, 0] - 20 * x[:, 3] + rng.normal(scale=1, size=200)
    head = train.fit_linear(x[:150], list(y[:150]), train.REGRESSION, validation=(x[150:], list(y[150:])))
    predicted = train.predict_from_embeddings(head, x[150:])
    assert predicted.shape == (50,) and head.labels is None
    assert np.mean(np.abs(predicted - y[150:])) < 3  # target spread is ~54: the head learned the units


def test_bad_targets_name_the_row():
    x, _ = synthetic_classes(4, seed=0)
    with pytest.raises(ValueError, match="row 2: target 'maybe' is not one of the labels"):
        train.fit_linear(x, ["a", "b", "maybe", "a"], train.CLASSIFICATION, labels=["a", "b"])
    with pytest.raises(ValueError, match="without rows: \\['c'\\]"):
        train.fit_linear(x, ["a", "b", "a", "a"], train.CLASSIFICATION, labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="task 'ranking' is not supported"):
        train.fit_linear(x, [1, 2, 3, 4], "ranking")


def test_threshold_for_precision_matches_a_hand_computation():
    # max-prob and correctness, sorted by confidence: .95 ok, .9 ok, .8 wrong, .7 ok, .6 ok, .55 wrong
    probabilities = np.array([[0.95, 0.05], [0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]])
    truth = np.array([0, 1, 1, 1, 0, 0])
    # cumulative precision: 1/1, 2/2, 2/3, 3/4, 4/5, 4/6
    assert train.threshold_for_precision(probabilities, truth, 1.0, z=0) == 0.9
    assert train.threshold_for_precision(probabilities, truth, 0.8, z=0) == 0.6
    assert train.threshold_for_precision(probabilities, truth, 0.75, z=0) == 0.6
    assert train.threshold_for_precision(probabilities, truth, 0.5, z=0) == 0.55
    assert train.threshold_for_precision(probabilities[[2]], truth[[2]], 0.5, z=0) is None
    # Wilson lower bounds at z=1: 1/1 .500, 2/2 .667, 2/3 .386, 3/4 .500, 4/5 .579, 4/6 < .5: only 2/2 reaches .6
    assert train.threshold_for_precision(probabilities, truth, 0.6, z=0) == 0.55
    assert train.threshold_for_precision(probabilities, truth, 0.6, z=1) == 0.9
    assert train.wilson_lower_bound(4, 5, 1.0) == pytest.approx(0.5792, abs=1e-4)
    # a tie at .8 cannot be split: both rows are kept or both dropped (1/2 < .9)
    tied = np.array([[0.8, 0.2], [0.2, 0.8]])
    assert train.threshold_for_precision(tied, np.array([0, 0]), 0.9, z=0) is None


def test_safetensors_round_trip_is_exact_for_linear_heads():
    x, y = synthetic_classes(100, seed=0)
    head = train.fit_linear(x, y, train.CLASSIFICATION, validation=synthetic_classes(50, seed=1))
    data = train.to_safetensors(head)
    assert b"pickle" not in data[:2000]
    back = train.from_safetensors(data)
    assert (back.task, back.method, back.labels, back.info, back.encoder_state) == (
        head.task, head.method, head.labels, head.info, None)
    assert back.tensors.keys() == head.tensors.keys()
    for name in head.tensors:
        assert torch.equal(back.tensors[name], head.tensors[name]) and back.tensors[name].dtype == head.tensors[
            name].dtype
    with pytest.raises(ValueError, match="not a trained head"):
        from safetensors.torch import save

        train.from_safetensors(save({"x": torch.zeros(1)}))


def test_finetune_is_deterministic_and_leaves_the_engine_alone(engine, finetuned):
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    again = train.finetune(engine, FINETUNE_TEXTS, FINETUNE_TARGETS, train.CLASSIFICATION, epochs=1, seed=3,
                           validation=(POSITIVE[:3] + NEGATIVE[:3], ["positive"] * 3 + ["negative"] * 3))
    for name in finetuned.tensors:
        assert torch.equal(again.tensors[name], finetuned.tensors[name])
    assert finetuned.encoder_state.keys() == again.encoder_state.keys()
    for name in finetuned.encoder_state:
        assert torch.equal(again.encoder_state[name], finetuned.encoder_state[name]), name
    for name, tensor in engine.model.state_dict().items():
        assert torch.equal(tensor, before[name]), f"finetune changed the base engine's {name}"
    assert not engine.model.training
    history = finetuned.info["history"]
    assert [h["epoch"] for h in history] == [1] and np.isfinite(history[0]["loss"])
    assert "validation_accuracy" in history[0] and finetuned.info["device"] == "cpu"


def test_finetune_moves_the_encoder_and_head_engine_serves_it(engine, finetuned):
    tuned = train.head_engine(engine, finetuned)
    assert tuned.model_key != engine.model_key and tuned.model_key.startswith("all-MiniLM-L6-v2+finetune@")
    assert train.head_engine(engine, finetuned).model_key == tuned.model_key  # a function of the weights
    probe = ["It is fine, I guess.", "Broke on day two."]
    base_vectors, tuned_vectors = engine.encode(probe).vectors, tuned.encode(probe).vectors
    assert not np.allclose(base_vectors, tuned_vectors, atol=1e-4)
    probabilities = train.predict_from_embeddings(finetuned, tuned.encode(POSITIVE[3:] + NEGATIVE[3:]).vectors)
    assert probabilities.shape == (14, 2) and np.allclose(probabilities.sum(axis=1), 1)
    predicted = [finetuned.labels[i] for i in probabilities.argmax(axis=1)]
    assert predicted == ["positive"] * 7 + ["negative"] * 7
    linear = train.fit_linear(engine.encode(FINETUNE_TEXTS).vectors, FINETUNE_TARGETS, train.CLASSIFICATION)
    assert train.head_engine(engine, linear) is engine


def test_safetensors_round_trip_is_exact_for_finetuned_heads(engine, finetuned):
    back = train.from_safetensors(train.to_safetensors(finetuned))
    assert back.info == json.loads(json.dumps(finetuned.info)) and back.labels == finetuned.labels
    for name in finetuned.encoder_state:
        assert torch.equal(back.encoder_state[name], finetuned.encoder_state[name])
    assert train.head_engine(engine, back).model_key == train.head_engine(engine, finetuned).model_key


def test_dropout_acts_only_in_training(engine):
    model = train._trainable_copy(engine, torch.device("cpu"))
    ids, mask = train._padded(engine.tokenize(["Dropout is only for training."])[0], torch.device("cpu"))
    model.eval()
    assert torch.equal(model.sentence_embedding(ids, mask), engine.model.sentence_embedding(ids, mask))
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model.sentence_embedding(ids, mask), engine.model.sentence_embedding(ids, mask))
