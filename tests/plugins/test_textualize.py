"""Row -> text: the TabLLM default, custom templates, value cleaning and the template version."""

from __future__ import annotations

import datetime as dt
import decimal
from decimal import Decimal

import pytest
from pydantic import ValidationError

from lm_insights.core.values import format_value, template_version
from lm_insights.spec import PipelineSpec, TemplateError, Text
from lm_insights.steps.textualize import render


def make_spec(template: str | None = None, columns=("product_name", "price", "units")) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "sales", "start_date": "2026-11-01",
        "source": {"table": "retail.product_sales", "key": ["sale_id"], "partition_column": "sale_date",
                   "columns": ["sale_id", "sale_date", "product_name", "price", "units"]},
        "text": {"template": template, "columns": list(columns)},
        "insights": {"metrics": ["units"], "segments": [{"by_tiers": {"column": "price", "edges": [0, 150, 1000]}}]},
    })


ROW = {"sale_id": 1, "sale_date": dt.date(2026, 11, 1), "product_name": "A", "price": decimal.Decimal("100.00"),
       "units": 1000}


def test_default_template_is_tabllm_list_serialisation():
    assert render(make_spec(), ROW) == "The product name is A. The price is 100. The units is 1000."


def test_custom_template_as_in_the_article():
    spec = make_spec("Product: {product_name}, price: {price} yuan, units sold: {units}")
    assert render(spec, ROW) == "Product: A, price: 100 yuan, units sold: 1000"


def test_values_are_cleaned():
    assert format_value(None) == "unknown"
    assert format_value("  Fish &amp; chips\n\n&lt;b&gt;hot&lt;/b&gt; ") == "Fish & chips <b>hot</b>"
    assert format_value(decimal.Decimal("19.90")) == "19.9"
    assert format_value(decimal.Decimal("1E+2")) == "100"
    assert format_value(2.50) == "2.5"
    assert format_value(dt.date(2026, 11, 1)) == "2026-11-01"
    assert format_value("质量很好 😍") == "质量很好 😍"
    assert format_value("   ") == "unknown"


def test_template_version_changes_with_template_and_columns_only():
    base = template_version(make_spec())
    assert base == template_version(make_spec())
    assert base != template_version(make_spec("Product: {product_name}"))
    assert base != template_version(make_spec(columns=("product_name", "price")))


def test_numbers_keep_their_meaning_in_text():
    """No exponent for ordinary magnitudes, no rounding: distinct values never share a text (or a cache entry)."""
    assert format_value(1234567.0) == "1234567"
    assert format_value(19.999999) == "19.999999" != format_value(20.0) == "20"
    assert format_value(0.1) == "0.1" and format_value(-3.25) == "-3.25"
    assert format_value(123456789012345.6) == "123456789012345.6"
    assert format_value(0.000001) == "0.000001"
    assert format_value(decimal.Decimal("1234567.00")) == "1234567"
    assert format_value(float("nan")) == format_value(decimal.Decimal("NaN")) == "unknown"
    assert format_value(float("inf")) == "infinity" and format_value(float("-inf")) == "minus infinity"
    assert format_value(-0.0) == format_value(0.0) == "0"


ARTICLE_TEXTS = {  # the article's example, as the shipped product_sales template writes it
    "A": "Product: A. Category: Electronics. Price: 100 yuan. Units sold: 1000.",
    "B": "Product: B. Category: Electronics. Price: 200 yuan. Units sold: 800.",
    "C": "Product: C. Category: Electronics. Price: 300 yuan. Units sold: 600.",
}


def test_the_article_rows_as_the_shipped_template_writes_them():
    """Prices as PostgreSQL numeric hands them over (any scale or exponent), units as int."""
    from pathlib import Path

    from lm_insights.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "product_sales.yaml")
    prices = {"A": ["100", "100.00", "1E+2"], "B": ["200", "200.0"], "C": ["300", "300.000", "3E+2"]}
    units = {"A": 1000, "B": 800, "C": 600}
    for product, written in prices.items():
        for price in written:
            row = {"sale_id": 7, "sale_date": dt.date(2026, 11, 2), "product_name": product,
                   "category": "Electronics", "price": decimal.Decimal(price), "units": units[product],
                   "revenue": decimal.Decimal(price) * units[product]}
            assert render(spec, row) == ARTICLE_TEXTS[product], price
    assert [format_value(v) for v in (decimal.Decimal("100.00"), 1000, 800, 600)] == ["100", "1000", "800", "600"]


SECRET = "fernet-key-that-must-stay-on-the-worker"
HOSTILE_TEMPLATES = ["{product_name.__init__.__globals__[os].environ[LM_TEST_SECRET]}",
                     "{price.__class__.__mro__[1].__subclasses__}", "{units[0]}", "{product_name!r}",
                     "{price:{units}}", "{0}", "{}", "{product_name"]


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES)
def test_a_placeholder_beyond_a_column_name_is_refused_at_validation(template):
    with pytest.raises(ValidationError, match="text.template"):
        make_spec(template)


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES)
def test_rendering_never_reads_an_attribute_even_when_validation_was_bypassed(template, monkeypatch):
    monkeypatch.setenv("LM_TEST_SECRET", SECRET)
    spec = make_spec()
    bypassed = spec.model_copy(update={"text": Text.model_construct(template=template, columns=["product_name"])})
    with pytest.raises(TemplateError, match="text.template"):
        render(bypassed, {"product_name": "A", "price": Decimal("1"), "units": 3})


def test_a_value_that_does_not_fit_the_format_spec_names_the_row_and_column():
    spec = make_spec("Product: {product_name}. Price: {price:.2f}.")
    assert render(spec, {"product_name": "A", "price": Decimal("100.5")}) == "Product: A. Price: 100.50."
    with pytest.raises(TemplateError, match=r"\{price:\.2f\} cannot format str value 'cheap' of sales row sale_id=7"):
        render(spec, {"sale_id": 7, "product_name": "A", "price": "cheap"})
