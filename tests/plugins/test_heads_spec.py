"""``lm.heads`` in a spec: a bad head is refused with the file and the field, and a head never reads its answer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lm_insights.learn import heads
from lm_insights.spec import SpecError, load_spec

REVIEWS = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "customer_reviews.yaml"
HEAD = "learned_sentiment"


def _load_changed(tmp_path: Path, change) -> str:
    raw = copy.deepcopy(yaml.safe_load(REVIEWS.read_text()))
    change(raw)
    path = tmp_path / "customer_reviews.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert message.startswith(f"{path}: invalid pipeline spec")
    return message


def _rename_head(raw: dict, name: str) -> None:
    raw["lm"]["heads"][name] = raw["lm"]["heads"].pop(HEAD)
    raw["insights"]["segments"] = [s for s in raw["insights"]["segments"] if s.get("by_label") != HEAD]


def _head(raw: dict) -> dict:
    return raw["lm"]["heads"][HEAD]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda raw: raw["text"]["columns"].append("rating"),
     f"lm.heads.{HEAD}.target: column 'rating' is part of the text the model reads"),
    (lambda raw: raw["text"].update(template="{review_text} ({rating} stars)"),
     f"lm.heads.{HEAD}.target: column 'rating' is part of the text the model reads"),
    (lambda raw: _head(raw).update(target="stars"), f"lm.heads.{HEAD}.target: column 'stars' is not in source.columns"),
    (lambda raw: _head(raw).update(task="ranking"), f"lm.heads.{HEAD}.task: Input should be 'classification' or"),
    (lambda raw: _head(raw).update(method="boosting"), f"lm.heads.{HEAD}.method: Input should be 'linear' or"),
    (lambda raw: _head(raw).update(min_precision=1.5), f"lm.heads.{HEAD}.min_precision: Input should be less than"),
    (lambda raw: _head(raw).update(evaluation_share=0), f"lm.heads.{HEAD}.evaluation_share: Input should be greater"),
    (lambda raw: _head(raw).update(classes={"low": [1, 2], "high": [2, 5]}),
     "target value 2 is in both 'low' and 'high'"),
    (lambda raw: _head(raw).update(task="regression"), "classes is for classification heads"),
    (lambda raw: _head(raw).update(zero_shot="mood"), f"lm.heads.{HEAD}.zero_shot: 'mood' is not in lm.label_sets"),
    (lambda raw: _head(raw).update(classes={"bad": [1, 2, 3], "good": [4, 5]}),
     "label set 'sentiment' has the labels ['negative', 'neutral', 'positive']"),
    (lambda raw: _rename_head(raw, "sentiment"), "lm.heads.sentiment: a label set has this name too"),
    (lambda raw: _rename_head(raw, "Bad-Name"),
     "'Bad-Name' is not a lowercase identifier"),
    (lambda raw: raw["insights"]["segments"].append({"by_label": "churn"}), "'churn' is not in lm.label_sets or a"),
    (lambda raw: raw["source"]["columns"].append(f"{HEAD}_probability"),
     f"'{HEAD}_probability' is reserved (a column of head '{HEAD}')"),
    (lambda raw: raw["source"]["columns"].append("cluster_name"), "'cluster_name' is reserved (a column the platform"),
])
def test_invalid_heads_name_the_file_and_field(tmp_path, change, expected):
    assert expected in _load_changed(tmp_path, change)


def test_classes_map_target_values_and_leave_unknown_ones_out():
    head = load_spec(REVIEWS).lm.heads[HEAD]
    assert [heads.class_of(head, value) for value in (1, 2, 3, 4.0, 5, 0, None)] == [
        "negative", "negative", "neutral", "positive", "positive", None, None]
    assert head.precision_target == 0.9


def test_head_targets_are_kept_in_the_rows_table(tmp_path):
    raw = yaml.safe_load(REVIEWS.read_text())
    raw["insights"]["metrics"] = ["rating"]
    assert "category" in raw["source"]["columns"] and "category" not in raw["text"]["columns"]
    _head(raw).update(target="category", classes=None, zero_shot=None, min_precision=None)
    path = tmp_path / "customer_reviews.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(path)
    assert "category" in spec.row_columns and spec.lm.heads[HEAD].precision_target == 0.8


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "nope"], "unknown pipeline 'nope'; known: ['customer_reviews', 'market_risk', 'product_sales', 'shipments']"),
    (["train", "product_sales"], "product_sales declares no heads: add one under lm.heads in"),
    (["train", "customer_reviews", "--head", "mood"], "customer_reviews has no head mood; its heads: "
                                                      "['learned_sentiment']"),
])
def test_train_command_names_what_is_wrong_before_starting_anything(argv, expected):
    from lm_insights.cli import main

    with pytest.raises(SystemExit) as error:
        main(argv)
    assert str(error.value).startswith(expected)
