"""The demo retail warehouse on a real PostgreSQL: deterministic, idempotent, the article's example, the mess."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from lm_insights.runtime import db, demo_warehouse
from lm_insights.core.partition import Partition
from lm_insights.spec import DEFAULT_PIPELINES_DIR, load_spec

START = dt.date(2026, 11, 1)
DAYS = 7
SALES_PER_DAY = 300 + 3 + sum(demo_warehouse.MESSY_SALES.values())  # catalogue + article rows + mess
REVIEWS_PER_DAY = 100 + sum(demo_warehouse.MESSY_REVIEWS.values())
TABLES = ("products", "daily_sales", "reviews")


def _fingerprints(conninfo: str, where: dict[str, str] | None = None) -> dict[str, str]:
    """md5 of every retail table's rows as text, in a total order (duplicate rows included)."""
    where = where or {}
    with db.connect(conninfo) as conn:
        return {
            table: conn.execute(
                f"select md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) "
                f"from retail.{table} as t where {where.get(table, 'true')}"
            ).fetchone()[0]
            for table in TABLES
        }


@pytest.fixture
def warehouse(warehouse_conninfo) -> str:
    """A database holding the default demo warehouse."""
    demo_warehouse.generate(warehouse_conninfo)
    return warehouse_conninfo


def test_generate_is_deterministic_and_idempotent(warehouse_conninfo):
    counts = demo_warehouse.generate(warehouse_conninfo)
    assert counts == {"products": len(demo_warehouse.PRODUCTS), "daily_sales": DAYS * SALES_PER_DAY,
                      "reviews": DAYS * REVIEWS_PER_DAY}
    first = _fingerprints(warehouse_conninfo)

    assert demo_warehouse.generate(warehouse_conninfo) == counts
    assert _fingerprints(warehouse_conninfo) == first  # replaced, not appended
    with db.connect(warehouse_conninfo) as conn:
        assert conn.execute("select count(*) from retail.daily_sales").fetchone()[0] == counts["daily_sales"]

    # the fingerprint does see the content: another seed gives other rows
    demo_warehouse.generate(warehouse_conninfo, seed=8)
    other = _fingerprints(warehouse_conninfo)
    assert other["daily_sales"] != first["daily_sales"] and other["reviews"] != first["reviews"]
    assert other["products"] == first["products"]


def test_a_day_does_not_depend_on_the_range_around_it(warehouse_conninfo):
    day = "sale_date = '2026-11-03'"
    review_day = "review_date = '2026-11-03'"
    demo_warehouse.generate(warehouse_conninfo, start=dt.date(2026, 11, 3), days=1)
    alone = _fingerprints(warehouse_conninfo, {"daily_sales": day, "reviews": review_day})
    demo_warehouse.generate(warehouse_conninfo, start=START, days=DAYS)
    assert _fingerprints(warehouse_conninfo, {"daily_sales": day, "reviews": review_day}) == alone


def test_create_schema_is_idempotent(warehouse_conninfo):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.create_schema(warehouse_conninfo)
    with db.connect(warehouse_conninfo) as conn:
        assert list(db.table_columns(conn, "retail", "product_sales")) == [
            "sale_id", "sale_date", "product_name", "category", "price", "units", "revenue"]
        assert list(db.table_columns(conn, "retail", "customer_reviews")) == [
            "review_id", "review_date", "product_name", "category", "rating", "review_text"]
        indexes = {row[0] for row in conn.execute("select indexname from pg_indexes where schemaname = 'retail'")}
    assert {"daily_sales_sale_date_idx", "reviews_review_date_idx", "products_pkey"} <= indexes


def test_articles_example(warehouse):
    with db.connect(warehouse) as conn:
        prices = dict(conn.execute(
            "select name, price from retail.products where name in ('A', 'B', 'C')").fetchall())
        units = conn.execute(
            """
            select sale_date, product_name, sum(units), count(*)
            from retail.product_sales
            where product_name in ('A', 'B', 'C')
            group by sale_date, product_name
            order by sale_date, product_name
            """
        ).fetchall()
        row = conn.execute(
            "select product_name, category, price, units from retail.product_sales "
            "where product_name = 'A' and sale_date = '2026-11-02'").fetchone()
    assert prices == {"A": Decimal("100"), "B": Decimal("200"), "C": Decimal("300")}
    expected = [(START + dt.timedelta(days=d), name, total, 1)
                for d in range(DAYS) for name, total in (("A", 1000), ("B", 800), ("C", 600))]
    assert units == expected

    # the article's sentence, word for word, from the shipped spec's template
    template = load_spec(DEFAULT_PIPELINES_DIR / "product_sales.yaml").text.template
    text = template.format(**dict(zip(("product_name", "category", "price", "units"), row)))
    assert text == "Product: A. Category: Electronics. Price: 100 yuan. Units sold: 1000."


def test_units_fall_as_the_price_rises(warehouse):
    with db.connect(warehouse) as conn:
        tiers = conn.execute(
            """
            select width_bucket(price, array[0, 150, 250]::numeric[]) as tier, avg(units), count(*)
            from retail.product_sales
            where price >= 0 and units is not null
            group by tier
            order by tier
            """
        ).fetchall()
    assert [tier for tier, _, _ in tiers] == [1, 2, 3]
    means = [mean for _, mean, _ in tiers]
    assert means[0] > means[1] > means[2], means
    assert all(count >= 50 for _, _, count in tiers)


def test_sales_mess(warehouse):
    with db.connect(warehouse) as conn:
        counts = conn.execute(
            """
            select
                count(*) filter (where price is null),
                count(*) filter (where price < 0),
                count(*) filter (where units is null),
                count(*) filter (where product_name like '%&amp;%' or product_name like '%&quot;%')
            from retail.product_sales
            """
        ).fetchone()
        duplicated_ids = conn.execute(
            "select count(*) from (select sale_id from retail.daily_sales group by sale_id having count(*) > 1) d"
        ).fetchone()[0]
        distinct_duplicates = conn.execute(
            "select count(*) from (select distinct * from retail.daily_sales) d").fetchone()[0]
        descriptions = conn.execute(
            "select count(*) from retail.products where description like '%&lt;b&gt;%'").fetchone()[0]
    mess = demo_warehouse.MESSY_SALES
    assert counts[:3] == (DAYS * mess["null_price"], DAYS * mess["negative_price"], DAYS * mess["null_units"])
    assert counts[3] > 0
    assert duplicated_ids == DAYS * mess["duplicates"]
    assert distinct_duplicates == DAYS * (SALES_PER_DAY - mess["duplicates"])  # duplicates are exact copies
    assert descriptions >= 1


def test_reviews_mess(warehouse):
    with db.connect(warehouse) as conn:
        counts = conn.execute(
            """
            select
                count(*) filter (where review_text ~ %(cjk)s),
                count(*) filter (where review_text ~ %(emoji)s),
                count(*) filter (where review_text ~ '&(amp|quot|lt|gt);'),
                count(*) filter (where length(review_text) > 2000
                                   and array_length(regexp_split_to_array(review_text, '\\s+'), 1) > 400),
                count(*) filter (where review_text is null),
                count(*) filter (where rating not between 1 and 5)
            from retail.customer_reviews
            """,
            {"cjk": "[\u4e00-\u9fff]", "emoji": "[\U0001F300-\U0001FAFF]"},
        ).fetchone()
        duplicated_ids = conn.execute(
            "select count(*) from (select review_id from retail.reviews group by review_id having count(*) > 1) d"
        ).fetchone()[0]
        example = conn.execute(
            "select count(*) from retail.reviews where review_text in ('质量很好，物流很快', 'Love it 😍👍')"
        ).fetchone()[0]
    mess = demo_warehouse.MESSY_REVIEWS
    cjk, emoji, html, long, null_text, bad_rating = counts
    assert (cjk, emoji, long, null_text, bad_rating) == (
        DAYS * mess["chinese"], DAYS * mess["emoji"], DAYS * mess["long"], DAYS * mess["null_text"],
        DAYS * mess["rating_out_of_range"])
    assert html >= DAYS * mess["html"]  # more: regular reviews name products such as "Tom &amp; Jerry Coffee Mug"
    assert duplicated_ids == DAYS * mess["duplicates"]
    assert example >= 1


def test_review_text_agrees_with_rating(warehouse):
    """Zero-shot labels need signal: positive words go with high ratings, complaints with low ones."""
    with db.connect(warehouse) as conn:
        rows = conn.execute(
            """
            select rating, avg(case when review_text ~* 'excellent|great value|highly recommend|fast delivery'
                                    then 1.0 else 0.0 end),
                           avg(case when review_text ~* 'broke|late|damaged|overpriced|terrible|rip-off'
                                    then 1.0 else 0.0 end)
            from retail.reviews
            where rating between 1 and 5 and length(review_text) < 400
            group by rating
            """
        ).fetchall()
    share = {rating: (positive, negative) for rating, positive, negative in rows}
    assert set(share) == {1, 2, 3, 4, 5}
    assert share[5][0] > 0.2 and share[5][1] < 0.1
    assert share[1][1] > 0.2 and share[1][0] < 0.1


def test_views_return_one_partition_through_the_date_index(warehouse):
    partition = Partition.day("2026-11-03")
    with db.connect(warehouse) as conn:
        sales = conn.execute(
            "select count(*), min(sale_date), max(sale_date) from retail.product_sales "
            "where sale_date >= %s and sale_date < %s", (partition.start, partition.end)).fetchone()
        reviews = conn.execute(
            "select count(*), min(review_date), max(review_date) from retail.customer_reviews "
            "where review_date >= %s and review_date < %s", (partition.start, partition.end)).fetchone()
        conn.execute("set local enable_seqscan = off")  # the tables are small; ask whether the index *can* serve
        plans = {
            view: "\n".join(r[0] for r in conn.execute(
                f"explain select * from retail.{view} where {column} >= %s and {column} < %s",
                (partition.start, partition.end)).fetchall())
            for view, column in (("product_sales", "sale_date"), ("customer_reviews", "review_date"))
        }
    day = dt.date(2026, 11, 3)
    assert sales == (SALES_PER_DAY, day, day)
    assert reviews == (REVIEWS_PER_DAY, day, day)
    assert "daily_sales_sale_date_idx" in plans["product_sales"], plans["product_sales"]
    assert "reviews_review_date_idx" in plans["customer_reviews"], plans["customer_reviews"]


def test_cli_prints_counts(warehouse_conninfo, capsys):
    assert demo_warehouse.main(["--conninfo", warehouse_conninfo, "--days", "2", "--start", "2026-12-01",
                                "--scale", "0.1"]) == 0
    out = capsys.readouterr().out
    assert f"retail.daily_sales: {2 * (30 + 3 + sum(demo_warehouse.MESSY_SALES.values()))} rows" in out
    assert f"retail.reviews: {2 * (10 + sum(demo_warehouse.MESSY_REVIEWS.values()))} rows" in out
    with db.connect(warehouse_conninfo) as conn:
        assert conn.execute("select min(sale_date), max(sale_date) from retail.daily_sales").fetchone() == (
            dt.date(2026, 12, 1), dt.date(2026, 12, 2))


def test_bad_arguments_are_refused(warehouse_conninfo):
    with pytest.raises(ValueError, match="days must be at least 1"):
        demo_warehouse.generate(warehouse_conninfo, days=0)
    with pytest.raises(ValueError, match="sales_per_day and reviews_per_day"):
        demo_warehouse.generate(warehouse_conninfo, sales_per_day=-1)


def test_review_wording_varies_beyond_the_templates():
    """A head must learn sentiment, not recognise templates: across 3 days, almost no regular review text repeats,
    and the rating, product and topic draws are unchanged by the wording's own random stream."""
    days = [START + dt.timedelta(days=d) for d in range(3)]
    rows = [r for day in days for r in demo_warehouse.reviews_of_day(day, 100, seed=7)]
    regular = [text for _, _, _, _, text in rows[:100]] + [text for _, _, _, _, text in rows[len(rows) // 3:][:100]]
    assert len(set(regular)) >= 0.9 * len(regular)
    templates = {t.split("{product}")[0] for by_topic in demo_warehouse.REVIEW_TEMPLATES.values()
                 for texts in by_topic.values() for t in texts}
    verbatim = [text for text in regular if any(text.startswith(t) and t for t in templates)]
    assert len(verbatim) < 0.5 * len(regular)  # most texts open or read differently from any template
    import random

    reworded = demo_warehouse._regular_review(random.Random(1), "Kettle", random.Random(2))
    plain = demo_warehouse._regular_review(random.Random(1), "Kettle", random.Random(3))
    assert reworded[0] == plain[0]  # the rating comes from the review stream, not from the wording
