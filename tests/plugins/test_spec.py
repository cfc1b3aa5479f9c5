"""Pipeline specs: the shipped ones load; a broken one fails naming the file and the field."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from lm_insights import spec
from lm_insights.spec import SpecError, load_spec, load_specs

PRODUCT_SALES = spec.DEFAULT_PIPELINES_DIR / "product_sales.yaml"
CUSTOMER_REVIEWS = spec.DEFAULT_PIPELINES_DIR / "customer_reviews.yaml"


def test_shipped_specs_load():
    specs = {s.name: s for s in load_specs()}
    assert {"product_sales", "customer_reviews"} <= set(specs)

    sales = specs["product_sales"]
    assert sales.source.table == "retail.product_sales"
    assert (sales.source.schema_name, sales.source.table_name) == ("retail", "product_sales")
    assert sales.source.key == ["sale_id"] and sales.source.partition_column == "sale_date"
    assert sales.start_date == dt.date(2026, 11, 1) and sales.catchup is False and sales.schedule == "@daily"
    assert sales.lm.shards is None and sales.lm.chunk_size == 500
    assert sales.target == "units" and sales.insights.metrics == ["units", "revenue"]
    assert [s.name for s in sales.insights.segments] == ["tiers:price", "label:positioning"]
    assert sales.insights.segments[0].by_tiers.edges == [0, 150, 250, 100000]
    assert len(sales.expectations.rows) == 5 and len(sales.expectations.table) == 1

    reviews = specs["customer_reviews"]
    assert reviews.text.template is None and reviews.text.columns == ["product_name", "review_text"]
    assert set(reviews.lm.label_sets) == {"sentiment", "topic"}
    assert set(reviews.lm.label_sets["sentiment"].labels) == {"positive", "negative", "neutral"}
    assert set(reviews.lm.label_sets["topic"].labels) == {"quality", "delivery", "price"}
    assert [s.name for s in reviews.insights.segments] == ["label:sentiment", "label:learned_sentiment", "label:topic"]
    assert reviews.lm.heads["learned_sentiment"].target == "rating"
    assert reviews.target == "rating" and reviews.lm.shards is None and reviews.lm.chunk_size == 500


def test_product_sales_template_gives_the_articles_sentence():
    template = load_spec(PRODUCT_SALES).text.template
    text = template.format(product_name="A", category="Electronics", price=Decimal("100"), units=1000)
    assert text == "Product: A. Category: Electronics. Price: 100 yuan. Units sold: 1000."


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path


def _broken(tmp_path: Path, change) -> tuple[Path, str]:
    """Write product_sales.yaml with ``change`` applied; return the path and load_spec's error message."""
    raw = copy.deepcopy(yaml.safe_load(PRODUCT_SALES.read_text()))
    change(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    return path, str(error.value)


def test_unchanged_copy_loads(tmp_path):
    # the harness of the error cases below writes a valid spec when nothing is broken
    path = _write(tmp_path, yaml.safe_load(PRODUCT_SALES.read_text()))
    assert load_spec(path).model_dump() == load_spec(PRODUCT_SALES).model_dump()


def _set_expectation_with_two_keys(raw):
    raw["expectations"]["rows"][1] = {"expect_column_values_to_not_be_null": {"column": "price"},
                                      "expect_column_values_to_be_unique": {"column": "sale_id"}}


@pytest.mark.parametrize(
    ("change", "field", "detail"),
    [
        pytest.param(lambda raw: raw["source"].update(tabel="retail.sales"), "source.tabel",
                     "Extra inputs are not permitted", id="unknown-key"),
        pytest.param(lambda raw: raw["lm"].update(shards="many"), "lm.shards", "valid integer", id="wrong-type"),
        pytest.param(lambda raw: raw["lm"].update(shards=0), "lm.shards", "greater than or equal to 1",
                     id="out-of-range"),
        pytest.param(lambda raw: raw["lm"].update(precision="int4"), "lm.precision",
                     "Input should be 'fp32', 'bf16' or 'int8'", id="unknown-precision"),
        pytest.param(lambda raw: raw["text"]["columns"].__setitem__(1, "colour"), "text.columns[1]", "'colour'",
                     id="column-not-in-source"),
        pytest.param(lambda raw: raw["insights"]["segments"].__setitem__(1, {"by_label": "mood"}),
                     "insights.segments[1].by_label", "'mood' is not in lm.label_sets", id="unknown-label-set"),
        pytest.param(lambda raw: raw["source"].update(table="Retail.Product-Sales"), "source.table",
                     "'Retail.Product-Sales'", id="bad-table-name"),
        pytest.param(_set_expectation_with_two_keys, "expectations.rows", "entry [1]", id="two-keys-expectation"),
        pytest.param(lambda raw: raw["expectations"]["rows"].append({"column_is_nice": {"column": "price"}}),
                     "expectations.rows", "'column_is_nice' is not a Great Expectations", id="not-an-expectation"),
        pytest.param(lambda raw: raw["expectations"]["rows"].append(
            {"expect_column_values_to_not_be_null": {"column": "colour"}}), "expectations.rows[5].column",
            "'colour'", id="expectation-column-not-in-source"),
        pytest.param(lambda raw: raw["text"].update(template="Product: {product_name}. Colour: {colour}."),
                     "text.template", "'colour'", id="template-column-not-in-source"),
        pytest.param(lambda raw: raw["text"].update(template="Product: {product_name"), "text.template",
                     "expected '}'", id="template-malformed"),
        pytest.param(lambda raw: raw["source"]["columns"].remove("sale_date"), "source",
                     "'sale_date' must be listed in source.columns", id="partition-column-not-extracted"),
        pytest.param(lambda raw: raw["insights"]["segments"][0]["by_tiers"].update(edges=[0, 250, 150]),
                     "insights.segments[0].by_tiers.edges", "strictly ascending", id="edges-not-ascending"),
        pytest.param(lambda raw: raw["insights"]["segments"].__setitem__(0, {}), "insights.segments[0]",
                     "exactly one of by_label, by_tiers or by_column", id="segment-without-kind"),
        pytest.param(lambda raw: raw["insights"]["segments"].append({"by_column": "colour"}),
                     "insights.segments[2].by_column", "'colour' is not in source.columns", id="segment-column-unknown"),
        pytest.param(lambda raw: raw.pop("start_date"), "start_date", "Field required", id="missing-field"),
        pytest.param(lambda raw: raw["insights"].update(outcomes=["price"]), "outcomes[0]",
                     "'price' is not one of insights.metrics", id="outcome-not-a-metric"),
        pytest.param(lambda raw: raw["insights"].update(fdr=0), "insights.fdr", "greater than 0", id="fdr-zero"),
    ],
)
def test_invalid_spec_names_file_and_field(tmp_path, change, field, detail):
    path, message = _broken(tmp_path, change)
    assert str(path) in message
    assert field in message
    assert detail in message


def test_template_placeholders_are_columns_and_double_braces_are_literal(tmp_path):
    raw = yaml.safe_load(PRODUCT_SALES.read_text())
    raw["text"]["template"] = "{{sale}} Product: {product_name}. Price: {price:.2f} yuan. Units sold: {units}."
    assert load_spec(_write(tmp_path, raw)).text.template.startswith("{{sale}}")

    raw["text"]["template"] = "Product: {0}."
    _, message = _broken_raw(tmp_path, raw)
    assert "text.template" in message and "placeholders name a column" in message


def _broken_raw(tmp_path: Path, raw: dict) -> tuple[Path, str]:
    path = _write(tmp_path, raw)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    return path, str(error.value)


def test_not_a_mapping_and_not_yaml(tmp_path):
    listing = tmp_path / "listing.yaml"
    listing.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match=rf"{listing}: a pipeline spec is a YAML mapping, got list"):
        load_spec(listing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=rf"{broken}: not valid YAML"):
        load_spec(broken)


def test_two_specs_with_one_name_is_an_error(tmp_path):
    raw = yaml.safe_load(CUSTOMER_REVIEWS.read_text())
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"a.yaml: invalid pipeline spec\n  name: 'customer_reviews' is used by "
                                        r"\[.*b.yaml'\] too"):
        load_specs(tmp_path)


@pytest.mark.parametrize(
    ("change", "field", "detail"),
    [
        pytest.param(lambda raw: raw["source"]["columns"].append("text"), "source.columns[7]",
                     "'text' is reserved", id="column-named-text"),
        pytest.param(lambda raw: raw["source"]["columns"].append("n_tokens"), "source.columns[7]",
                     "'n_tokens' is reserved", id="column-named-n_tokens"),
        pytest.param(lambda raw: raw["source"]["columns"].append("truncated"), "source.columns[7]",
                     "'truncated' is reserved", id="column-named-truncated"),
        pytest.param(lambda raw: raw["source"]["columns"].append("positioning_label"), "source.columns[7]",
                     "'positioning_label' is reserved (a column of label set 'positioning')", id="column-named-set-label"),
        pytest.param(lambda raw: raw["source"]["columns"].append("price"), "source.columns",
                     "['price'] listed twice", id="duplicate-source-column"),
        pytest.param(lambda raw: raw["insights"]["metrics"].append("units"), "insights.metrics",
                     "['units'] listed twice", id="duplicate-metric"),
        pytest.param(lambda raw: raw["text"]["columns"].append("price"), "text.columns",
                     "['price'] listed twice", id="duplicate-text-column"),
        pytest.param(lambda raw: raw["lm"]["label_sets"]["positioning"]["labels"].update(uncertain="unsure"),
                     "lm.label_sets.positioning.labels", "'uncertain' is reserved", id="label-named-uncertain"),
        pytest.param(lambda raw: raw["text"].update(template="Price: {price:.2z} yuan."), "text.template",
                     "{price:.2z} formats no number, text or date", id="format-spec-fits-nothing"),
        pytest.param(lambda raw: raw["source"]["columns"].append("CustomerID"), "source.columns ['CustomerID']",
                     '"CustomerID" as customer_id', id="mixed-case-column"),
    ],
)
def test_checks_at_load_name_file_and_field(tmp_path, change, field, detail):
    path, message = _broken(tmp_path, change)
    assert str(path) in message
    assert field in message
    assert detail in message


def test_odd_identifiers_error_gives_a_view_that_works(tmp_path, warehouse_conninfo):
    """The SQL in the message, run as is, gives a view whose columns a spec accepts."""
    import psycopg

    raw = yaml.safe_load(PRODUCT_SALES.read_text())
    raw["source"].update(table="shop.Orders", key=["CustomerID"], partition_column="order date",
                         columns=["CustomerID", "order date", "price €", "units"])
    raw["text"] = {"columns": ["price €"]}
    _, message = _broken_raw(tmp_path, raw)
    assert "source.table 'shop.Orders', source.columns ['CustomerID', 'order date', 'price €']" in message
    statement = message[message.index("create view"):message.index(";") + 1]
    with psycopg.connect(warehouse_conninfo, autocommit=True) as conn:
        conn.execute('create schema shop; create table shop."Orders" ("CustomerID" int, "order date" date, '
                     '"price €" numeric, units int)')
        conn.execute('insert into shop."Orders" values (7, %s, 9.5, 2)', (dt.date(2026, 11, 1),))
        conn.execute(statement)
        assert conn.execute("select customer_id, order_date, price_eur, units from shop.orders_lm").fetchone() == (
            7, dt.date(2026, 11, 1), Decimal("9.5"), 2)
    raw["source"].update(table="shop.orders_lm", key=["customer_id"], partition_column="order_date",
                         columns=["customer_id", "order_date", "price_eur", "units"])
    raw["text"] = {"columns": ["price_eur"]}
    raw["expectations"] = {}
    raw["insights"] = {"metrics": ["units"], "segments": [{"by_label": "positioning"}]}
    assert load_spec(_write(tmp_path, raw)).source.table == "shop.orders_lm"


def test_load_specs_isolated_keeps_the_valid_ones(tmp_path):
    sales = yaml.safe_load(PRODUCT_SALES.read_text())
    (tmp_path / "a_reviews.yaml").write_text(CUSTOMER_REVIEWS.read_text())
    (tmp_path / "b_broken.yaml").write_text(yaml.safe_dump({**sales, "name": "broken", "retries": -1}))
    (tmp_path / "c_sales.yaml").write_text(PRODUCT_SALES.read_text())
    (tmp_path / "d_sales_again.yaml").write_text(PRODUCT_SALES.read_text())
    specs, errors = spec.load_specs_isolated(tmp_path)
    assert [s.name for s in specs] == ["customer_reviews"]
    assert [str(e).splitlines()[0] for e in errors] == [
        f"{tmp_path / 'b_broken.yaml'}: invalid pipeline spec", f"{tmp_path / 'c_sales.yaml'}: invalid pipeline spec",
        f"{tmp_path / 'd_sales_again.yaml'}: invalid pipeline spec"]
    assert "retries: Input should be greater than or equal to 0" in str(errors[0])
    assert "name: 'product_sales' is used by" in str(errors[1])
