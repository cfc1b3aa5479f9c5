"""The explain settings of a spec: a bad value is refused with the file and the field; the shipped ones load."""

from __future__ import annotations

import pytest

from lm_insights.spec import load_specs
from tests.plugins.test_spec import _broken


@pytest.mark.parametrize(("explain", "field", "detail"), [
    ({"rules": {"window_days": 0}}, "explain.rules.window_days", "greater than or equal to 1"),
    ({"rules": {"window_days": "a week"}}, "explain.rules.window_days", "valid integer"),
    ({"words": {"max_infer_share": -0.1}}, "explain.words.max_infer_share", "greater than or equal to 0"),
    ({"words": {"max_share": 0.1}}, "explain.words.max_share", "Extra inputs are not permitted"),
])
def test_bad_explain_settings_name_file_and_field(tmp_path, explain, field, detail):
    path, message = _broken(tmp_path, lambda raw: raw.update(explain=explain))
    assert str(path) in message and field in message and detail in message


def test_shipped_specs_cap_words_and_fit_rules_per_partition():
    for spec in load_specs():
        assert spec.explain.words.max_infer_share == 0.25
        assert spec.explain.rules.window_days is None
