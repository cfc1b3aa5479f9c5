"""What only the live table can tell is checked when a run plans its partition, before any row is extracted."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from lm_insights.spec import DEFAULT_PIPELINES_DIR, PipelineSpec, SpecError, load_spec
from lm_insights.steps.preflight import check_source
from lm_insights.steps.textualize import render

SALES_COLUMNS = {"sale_id": "int", "sale_date": "date", "product_name": "text", "category": "text",
                 "price": "numeric", "units": "int", "revenue": "numeric"}


def sales_spec(**changes) -> PipelineSpec:
    spec = load_spec(DEFAULT_PIPELINES_DIR / "product_sales.yaml")
    raw = spec.model_dump(by_alias=True)
    for path, value in changes.items():
        section, field = path.split("__")
        raw[section][field] = value
    return PipelineSpec.model_validate(raw)


def sales_table(conninfo: str, **types: str) -> None:
    columns = ", ".join(f"{c} {types.get(c, t)}" for c, t in SALES_COLUMNS.items())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"create schema retail; create table retail.product_sales ({columns})")


def test_a_format_spec_formats_the_raw_number_and_null_reads_unknown():
    spec = sales_spec(text__template="{product_name}: {price:.2f} yuan, {units:,} sold on {sale_date:%d %b %Y}.")
    row = {"sale_id": 1, "sale_date": dt.date(2026, 11, 2), "product_name": "A", "category": "x",
           "price": Decimal("1234.5"), "units": 1000, "revenue": None}
    assert render(spec, row) == "A: 1234.50 yuan, 1,000 sold on 02 Nov 2026."
    assert render(spec, row | {"price": None}) == "A: unknown yuan, 1,000 sold on 02 Nov 2026."


def test_the_shipped_spec_passes_on_the_demo_types(warehouse_conninfo):
    sales_table(warehouse_conninfo)
    assert check_source(sales_spec(), warehouse_conninfo)["units"] == "integer"


@pytest.mark.parametrize(("types", "changes", "message"), [
    ({"units": "text"}, {}, "insights.metrics[0]: column 'units' of retail.product_sales is text, not a number"),
    ({"price": "varchar(20)"}, {}, "insights.segments[0].by_tiers.column: column 'price' of retail.product_sales "
                                   "is character varying(20), not a number"),
    ({}, {"text__template": "Product: {product_name:.2f}."}, "text.template: cannot render the columns' types "
                                                             "(product_name text"),
], ids=["text-metric", "varchar-tier-column", "float-format-on-text"])
def test_live_types_that_cannot_work_fail_before_extract(warehouse_conninfo, types, changes, message):
    sales_table(warehouse_conninfo, **types)
    with pytest.raises(SpecError, match="product_sales") as error:
        check_source(sales_spec(**changes), warehouse_conninfo)
    assert message in str(error.value)
