"""Fuzz (hypothesis) of the spec loader and the text template renderer on hostile placeholders and names.

Whatever a spec author writes, the loader answers with a spec or a SpecError naming the file; whatever template
reaches the renderer (validated or not), it writes a text or raises TemplateError, and never looks an attribute or
an item up on a row's value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm_insights.spec import IDENTIFIER, RESERVED_NAME_ENDINGS, SpecError, TemplateError, load_spec
from lm_insights.steps.textualize import render_template

COLUMNS = ["sale_id", "sale_day", "note", "price"]
PIECES = st.sampled_from(["{", "}", "{{", "}}", "[", "]", ".", "!", ":", "r", "s", "a", "0", "1", "__class__",
                          "__init__", "__globals__", "os", "environ", "note", "price", "sale_id", "%Y", ".2f", ">10",
                          " ", "_", "é", "\n", "'", '"'])
TEMPLATES = st.one_of(st.lists(PIECES, max_size=12).map("".join), st.text(max_size=40))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Looked(Exception):
    """Raised by a trapped value when anything reads an attribute or an item of it."""


class TrappedText(str):
    """A row value that fails the test if rendering reaches into it (beyond its type, which format() uses)."""

    def __getattribute__(self, name: str):
        if name == "__class__":  # isinstance falls back to it
            return str.__getattribute__(self, name)
        raise Looked(name)

    def __getitem__(self, key):
        raise Looked(f"[{key!r}]")


class TrappedNumber(decimal.Decimal):
    def __getattribute__(self, name: str):
        if name == "__class__":
            return object.__getattribute__(self, name)
        raise Looked(name)


def trapped_row() -> dict[str, object]:
    return {"sale_id": TrappedNumber(7), "sale_day": dt.date(2026, 11, 1), "note": TrappedText("fine"),
            "price": TrappedNumber("12.5")}


@FUZZ
@given(TEMPLATES)
def test_rendering_any_template_writes_text_or_raises_template_error_and_never_reaches_into_a_value(template):
    try:
        text = render_template(template, trapped_row(), "row sale_id=7")
    except TemplateError as exc:
        assert str(exc).startswith("text.template")
        return
    assert isinstance(text, str)
    assert "__" not in text or "__" in template, "nothing but the template's own text and the values"


def spec_raw(template: str, name: str = "sales") -> dict:
    return {"name": name, "start_date": "2026-11-01",
            "source": {"table": "shop.sales", "key": ["sale_id"], "partition_column": "sale_day", "columns": COLUMNS},
            "text": {"template": template, "columns": ["note"]},
            "insights": {"metrics": ["price"], "segments": [{"by_column": "note"}]}}


def load_raw(raw: dict):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        return load_spec(path), str(path)


@FUZZ
@given(TEMPLATES)
def test_the_loader_accepts_only_templates_that_render_without_reaching_into_values(template):
    try:
        spec, _ = load_raw(spec_raw(template))
    except SpecError as exc:
        assert "fuzzed.yaml: invalid pipeline spec" in str(exc)
        return
    placeholders = re.findall(r"(?<!\{)\{([^{}]*)\}", template.replace("{{", "").replace("}}", ""))
    assert all(IDENTIFIER.match(p.partition(":")[0]) for p in placeholders)
    try:
        render_template(spec.text.template, trapped_row())
    except TemplateError:  # a format spec that does not fit this row's value: a clear error, no look-up
        pass


@FUZZ
@given(st.one_of(st.text(max_size=40), st.from_regex(r"[a-z_][a-z0-9_]{0,30}", fullmatch=True),
                 st.sampled_from(["x_quarantine", "x__train", "a__20261101", "quarantine", "rows_quarantine"])))
def test_the_loader_accepts_only_names_that_cannot_take_another_pipelines_tables(name):
    try:
        spec, _ = load_raw(spec_raw("{note}", name))
    except SpecError as exc:
        assert "fuzzed.yaml: invalid pipeline spec" in str(exc)
        return
    assert IDENTIFIER.match(spec.name) and len(spec.name) <= 32
    assert "__" not in spec.name and not spec.name.endswith(RESERVED_NAME_ENDINGS)
