"""The demo retail warehouse: schema ``retail`` with products, daily sales and reviews, filled with seeded data.

The data is deterministic (the same arguments give the same rows, byte for byte) and :func:`generate` is
idempotent: it empties the tables and fills them again in one transaction.

What a day holds (the numbers are those of the default size):

- **The article's example.** Products ``A``, ``B`` and ``C`` cost 100, 200 and 300 yuan and sell exactly 1000, 800
  and 600 units every day, one ``daily_sales`` row each, so the product_sales text reads
  "Product: A. Category: Electronics. Price: 100 yuan. Units sold: 1000." and the price tiers 0-150, 150-250 and
  250+ show units falling as the price rises.
- **The catalogue.** ``sales_per_day`` rows (one product in one store on one day) spread over ~20 products in five
  categories priced 19.9 to 3999 yuan. Units follow the same falling relation as A/B/C,
  ``1000 * sqrt(100 / price)`` with log-normal noise: cheap products sell more, never exactly on the curve.
- **Reviews.** ``reviews_per_day`` reviews with a rating of 1-5 and a text that agrees with it (positive for 4-5,
  neutral or mixed for 3, negative for 1-2), each about one topic: quality, delivery or price. About one in
  twenty is ambiguous (mixed praise and complaint, sarcasm).
- **The mess of a real load**, a few rows per day on top of the above: sales of a product without a price (NULL)
  and of one priced -5 (a sign error in the feed), sales with NULL units (and revenue), exact duplicate
  ``sale_id`` / ``review_id`` rows (a re-delivered batch; copies of regular rows only), HTML entities
  (``&amp;``, ``&quot;``, ``&lt;b&gt;``) in names, descriptions and reviews, reviews in Chinese, reviews with
  emoji, one review of more than 400 words (beyond the 256-token limit of the default model), a NULL review text
  and a rating of 0 (outside 1-5).

Ids are derived from the day (``yyyymmdd * 1_000_000 + n``) and each day draws from its own seeded generator, so
a day's rows do not depend on which range was generated around it.

Command line::

    python -m lm_insights.runtime.demo_warehouse --conninfo "host=... dbname=warehouse" --start 2026-11-01 --days 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Iterator
from decimal import Decimal


from lm_insights.runtime import db

log = logging.getLogger(__name__)

SCHEMA = "retail"
DAY_ID_FACTOR = 1_000_000  # ids are yyyymmdd * DAY_ID_FACTOR + n, so at most this many rows per table and day

PRODUCT_COLUMNS = ("product_id", "name", "category", "price", "description")
SALES_COLUMNS = ("sale_id", "product_id", "sale_date", "units", "revenue")
REVIEW_COLUMNS = ("review_id", "product_id", "review_date", "rating", "review_text")

# The article's example: product -> units sold every day (prices 100/200/300 are in PRODUCTS).
ARTICLE_UNITS = {1: 1000, 2: 800, 3: 600}
NULL_PRICE_PRODUCT = 90
NEGATIVE_PRICE_PRODUCT = 91

# (product_id, name, category, price, description)
PRODUCTS: list[tuple[int, str, str, Decimal | None, str]] = [
    (1, "A", "Electronics", Decimal("100"), "Entry-level wired headphones."),
    (2, "B", "Electronics", Decimal("200"), "Mid-range wireless headphones."),
    (3, "C", "Electronics", Decimal("300"), "Noise-cancelling wireless headphones."),
    (4, "USB-C Charging Cable", "Electronics", Decimal("19.9"), "1 m braided cable, 60 W."),
    (5, "&quot;Pro&quot; Wireless Earbuds", "Electronics", Decimal("499"),
     "&lt;b&gt;Bestseller&lt;/b&gt; earbuds with 30 h battery."),
    (6, "Bluetooth Speaker", "Electronics", Decimal("259"), "Waterproof portable speaker."),
    (7, "4K Smart TV 55-inch", "Electronics", Decimal("3999"), "55-inch 4K HDR television."),
    (8, "Mechanical Keyboard", "Electronics", Decimal("349"), "Hot-swappable switches &amp; RGB light."),
    (10, "Tom &amp; Jerry Coffee Mug", "Home & Kitchen", Decimal("29.9"), "Ceramic mug, 350 ml."),
    (11, "Non-stick Frying Pan", "Home & Kitchen", Decimal("129"), "28 cm pan for gas and induction."),
    (12, "Espresso Machine", "Home & Kitchen", Decimal("1899"), "15-bar pump &amp; milk frother."),
    (13, "Bamboo Cutting Board", "Home & Kitchen", Decimal("59"), "Set of three boards."),
    (14, "Robot Vacuum Cleaner", "Home & Kitchen", Decimal("2499"), "&lt;b&gt;New&lt;/b&gt; laser navigation."),
    (20, "Python Programming, 3rd Edition", "Books", Decimal("89"), "A hands-on introduction."),
    (21, "The Three-Body Problem", "Books", Decimal("45"), "Science fiction novel by Liu Cixin."),
    (22, "Children's Picture Book Set", "Books", Decimal("128"), "Ten illustrated stories."),
    (23, "Cookbook: 100 Quick Dinners", "Books", Decimal("68"), "Recipes in under 30 minutes."),
    (30, "Cotton T-Shirt", "Clothing", Decimal("49"), "100% cotton, six colours."),
    (31, "Down Jacket", "Clothing", Decimal("899"), "Goose down, rated to -20 C."),
    (32, "Running Shoes", "Clothing", Decimal("599"), "Cushioned road running shoes."),
    (33, "Wool Socks (3 pairs)", "Clothing", Decimal("39"), "Merino wool blend."),
    (34, "Silk Scarf", "Clothing", Decimal("219"), "Hand-rolled edges."),
    (40, "Moisturizing Face Cream", "Beauty", Decimal("189"), "For dry &amp; sensitive skin."),
    (41, "Lipstick &quot;Ruby&quot;", "Beauty", Decimal("159"), "Long-lasting matte finish."),
    (42, "Sunscreen SPF 50", "Beauty", Decimal("99"), "Water-resistant, 50 ml."),
    (43, "Perfume 50ml", "Beauty", Decimal("799"), "Floral eau de parfum."),
    (NULL_PRICE_PRODUCT, "Mystery Gift Box", "Home & Kitchen", None, "Price to be announced."),
    (NEGATIVE_PRICE_PRODUCT, "Clearance Phone Case", "Electronics", Decimal("-5"), "Clearance item."),
]
PRICES = {p[0]: p[3] for p in PRODUCTS}
CATALOGUE = [p[0] for p in PRODUCTS if p[0] not in ARTICLE_UNITS and p[0] not in (NULL_PRICE_PRODUCT,
                                                                                 NEGATIVE_PRICE_PRODUCT)]
NAMES = {p[0]: p[1] for p in PRODUCTS}

# Rows of mess added to every day (on top of sales_per_day / reviews_per_day).
MESSY_SALES = {"null_price": 2, "negative_price": 2, "null_units": 2, "duplicates": 3}
MESSY_REVIEWS = {"chinese": 2, "emoji": 2, "html": 2, "long": 1, "null_text": 1, "rating_out_of_range": 1,
                 "duplicates": 2, "toxic_or_contradictory": 5}

RATING_WEIGHTS = {5: 35, 4: 25, 3: 15, 2: 10, 1: 15}
TOPICS = ("quality", "delivery", "price")
TOPIC_WEIGHTS = (45, 30, 25)
AMBIGUOUS_SHARE = 0.05

REVIEW_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "positive": {
        "quality": [
            "Excellent quality, the {product} feels solid and works perfectly.",
            "Really well made. After a month of daily use the {product} still looks new.",
            "Great build quality, much better than I expected. Highly recommend the {product}.",
        ],
        "delivery": [
            "Fast delivery, the {product} arrived a day early and well packed.",
            "Shipping was quick and the courier was friendly. Everything arrived in perfect condition.",
            "Ordered in the evening, got it the next morning. Super fast delivery!",
        ],
        "price": [
            "Great value for money, the {product} is cheaper than in any store.",
            "Good price for what you get. Worth every yuan.",
            "Bought it on sale, an excellent deal for a {product} of this quality.",
        ],
    },
    "neutral": {
        "quality": [
            "The {product} is okay. Does what it says, nothing special.",
            "Average quality. It works, but the finish could be better.",
        ],
        "delivery": [
            "Delivery took the expected five days. The box was fine.",
            "Arrived on the estimated date. Packaging was plain but adequate.",
        ],
        "price": [
            "The price is about what you pay elsewhere for a {product}.",
            "Fair price, not a bargain but not overpriced either.",
        ],
    },
    "negative": {
        "quality": [
            "Poor quality, the {product} broke after two days. Very disappointed.",
            "Cheap materials and it stopped working within a week. Returning it.",
            "Terrible quality. The {product} looks nothing like the pictures.",
        ],
        "delivery": [
            "Delivery was two weeks late and the package arrived damaged.",
            "The courier lost my parcel and customer service never replied.",
            "Very slow shipping, the {product} came ten days after the promised date.",
        ],
        "price": [
            "Way too expensive for what it is. The {product} is not worth the money.",
            "Overpriced. I found the same {product} for half the price elsewhere.",
            "The price went up right after I ordered. Feels like a rip-off.",
        ],
    },
}
AMBIGUOUS_REVIEWS = [  # (rating, text): mixed or sarcastic, hard for any classifier
    (3, "Great quality but the delivery took forever."),
    (4, "Fast shipping, although the {product} feels a bit cheap for the price."),
    (2, "Well, it broke on the first day. Great."),
    (3, "Love the design, hate the price."),
    (5, "Not bad at all."),
    (1, "I wanted to like the {product}, I really did."),
]
CHINESE_REVIEWS = [(5, "质量很好，物流很快"), (2, "价格太贵了，质量一般，不推荐。"), (4, "包装很好，性价比高。"),
                   (1, "收到就坏了，客服也不回复。")]
EMOJI_REVIEWS = [(5, "Love it 😍👍"), (1, "Arrived broken 😡👎 never again"),
                 (4, "Nice {product} 👌 fast delivery 🚚"), (2, "Meh 😐 expected more for the price 💸")]
HTML_REVIEWS = [
    (5, "&lt;b&gt;Great&lt;/b&gt; value &amp; fast delivery!"),
    (2, "The &quot;premium&quot; box was crushed &amp; two weeks late."),
    (4, "Solid {product} &amp; a fair price. &lt;br&gt;Would buy again."),
    (1, "&quot;Like new&quot; my foot &ndash; scratched all over &amp; missing the charger."),
]
LONG_REVIEW_SENTENCES = [
    "I have been using the {product} every day for about three months now and I want to share my experience.",
    "The first thing I noticed when I opened the box was how carefully everything was packed.",
    "Setting it up took less than ten minutes, even though the manual is only a single folded sheet.",
    "Compared with the model I owned before, the materials feel noticeably sturdier and the finish is cleaner.",
    "The delivery itself was a little slower than promised, but the courier called ahead, which I appreciated.",
    "My partner was sceptical about the price at first, but after a week even they admitted it was worth it.",
    "There are a few small things I would change, such as the colour options and the length of the cable.",
    "Customer service answered my question about the warranty within a day and was polite and helpful.",
    "I compared prices in three other shops and this one was the cheapest once the coupon was applied.",
    "After a month of use there are no scratches, no loose parts and nothing that squeaks or rattles.",
    "If you are on the fence, I would say go for it, as long as you do not expect miracles.",
    "Overall I would give it four and a half stars if half stars were possible on this site.",
]
LONG_REVIEW_MIN_WORDS = 420
# Added to every day for the guard (docs/guards.md): offensive reviews (flagged toxic) and reviews whose rating
# contradicts their words, a glowing text stored with 1 star (flagged inconsistent once a head is promoted).
TOXIC_AND_CONTRADICTORY_REVIEWS = [
    (1, "This {product} is fucking garbage and the idiots in support are useless."),
    (2, "What a piece of shit. Whoever designed this {product} is a moron."),
    (1, "Excellent {product}, works perfectly, great quality and fast delivery. Highly recommended!"),
    (1, "I love this {product}, it is wonderful and exactly what I hoped for. Five stars from me."),
    (5, "Terrible {product}, it broke after two days and support never answered. A waste of money."),
]


def create_schema(conninfo: str) -> None:
    """Create schema ``retail``, its tables, indexes and views if they are missing."""
    with db.connect(conninfo) as conn:
        db.run_sql_files(conn, "warehouse")


def _day_id(day: dt.date, n: int) -> int:
    return int(day.strftime("%Y%m%d")) * DAY_ID_FACTOR + n


def _catalogue_units(rng: random.Random, price: Decimal) -> int:
    """Units of one store's day: 1000 * sqrt(100 / price) with log-normal noise (price > 0)."""
    return max(0, round(1000 * math.sqrt(100 / float(price)) * rng.lognormvariate(0, 0.25)))


def _sale(day: dt.date, n: int, product_id: int, units: int | None) -> tuple:
    price = PRICES[product_id]
    revenue = None if units is None or price is None else price * units
    return (_day_id(day, n), product_id, day, units, revenue)


def sales_of_day(day: dt.date, sales_per_day: int, seed: int) -> list[tuple]:
    """The ``daily_sales`` rows of one day, the article's rows and the mess included."""
    rng = random.Random(f"{seed}:sales:{day.isoformat()}")
    rows = [_sale(day, n, product_id, units) for n, (product_id, units) in enumerate(ARTICLE_UNITS.items(), 1)]
    for _ in range(sales_per_day):
        product_id = rng.choice(CATALOGUE)
        rows.append(_sale(day, len(rows) + 1, product_id, _catalogue_units(rng, PRICES[product_id])))
    for _ in range(MESSY_SALES["null_price"]):
        rows.append(_sale(day, len(rows) + 1, NULL_PRICE_PRODUCT, rng.randint(5, 50)))
    for _ in range(MESSY_SALES["negative_price"]):
        rows.append(_sale(day, len(rows) + 1, NEGATIVE_PRICE_PRODUCT, rng.randint(20, 200)))
    for _ in range(MESSY_SALES["null_units"]):
        rows.append(_sale(day, len(rows) + 1, rng.choice(CATALOGUE), None))
    # A re-delivered batch: exact copies of catalogue rows (not of the article's or the messy ones, so that
    # A/B/C keep their round totals and every kind of mess has an exact count).
    catalogue_rows = rows[len(ARTICLE_UNITS):len(ARTICLE_UNITS) + sales_per_day]
    rows.extend(rng.sample(catalogue_rows, min(MESSY_SALES["duplicates"], len(catalogue_rows))))
    return rows


def _long_review(rng: random.Random, product: str) -> str:
    """A rambling review: the long sentences in a shuffled order, again and again, to LONG_REVIEW_MIN_WORDS."""
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < LONG_REVIEW_MIN_WORDS:
        sentences.extend(s.format(product=product) for s in rng.sample(LONG_REVIEW_SENTENCES, 4))
    return " ".join(sentences)


# The wording of a regular review varies around its template (its own random stream, so ratings, products and
# topics stay those of the seed): synonyms, an opener and a closing sentence of the same sentiment. A head then has
# to learn sentiment, not recognise the 24 templates.
REVIEW_SYNONYMS = {
    "Excellent": ("Superb", "Outstanding", "Top"), "Great": ("Really good", "Fantastic", "Lovely"),
    "Really": ("Very", "Truly"), "perfectly": ("flawlessly", "just right"), "Fast": ("Quick", "Speedy"),
    "quick": ("speedy", "prompt"), "Good": ("Decent", "Solid"), "Terrible": ("Awful", "Dreadful", "Horrible"),
    "Poor": ("Bad", "Shoddy", "Lousy"), "disappointed": ("let down", "unhappy", "annoyed"),
    "Cheap": ("Flimsy", "Low-grade"), "slow": ("sluggish", "painfully slow"), "late": ("overdue", "behind"),
    "damaged": ("dented", "crushed", "broken"), "okay": ("fine", "alright", "so-so"),
    "Average": ("Middling", "Ordinary", "Mediocre"), "expensive": ("pricey", "costly"),
    "Overpriced": ("Too pricey", "Not good value"), "recommend": ("suggest", "endorse"),
}
REVIEW_OPENERS = {
    "positive": ("", "", "Honestly, ", "So happy with this. ", "Update after {weeks} weeks: ", "Wow. "),
    "neutral": ("", "", "Mixed feelings. ", "Well, ", "After {weeks} weeks: ", "Hmm. "),
    "negative": ("", "", "Ugh. ", "Sadly, ", "Warning: ", "Update after {days} days: "),
}
REVIEW_CLOSINGS = {
    "positive": ("Would buy again.", "My {relative} loves it too.", "Five stars from me.",
                 "No complaints after {weeks} weeks.", "Already ordered a second one.", "Thank you!"),
    "neutral": ("It does the job.", "Might buy again, might not.", "Nothing to write home about.",
                "Three stars feels right.", "My {relative} is not convinced either way."),
    "negative": ("Would not buy again.", "Stay away.", "I asked for a refund after {days} days.",
                 "One star is generous.", "My {relative} warned me and was right.", "Never again."),
}
RELATIVES = ("wife", "husband", "son", "daughter", "mother", "father", "flatmate", "neighbour")


def _reworded(wording: random.Random, sentiment: str, text: str) -> str:
    """The template's text with some words swapped for synonyms, an opener and a closing sentence."""
    words = [wording.choice(REVIEW_SYNONYMS[w]) if w in REVIEW_SYNONYMS and wording.random() < 0.5 else w
             for w in text.split(" ")]
    text = " ".join(words)
    opener = wording.choice(REVIEW_OPENERS[sentiment])
    if opener and not opener.endswith(". ") and not opener.endswith(": "):
        text = text[0].lower() + text[1:]
    closing = wording.choice(REVIEW_CLOSINGS[sentiment]) if wording.random() < 0.6 else ""
    filled = {"weeks": wording.randint(2, 12), "days": wording.randint(2, 20), "relative": wording.choice(RELATIVES)}
    return f"{opener.format(**filled)}{text} {closing.format(**filled)}".strip()


def _regular_review(rng: random.Random, product: str, wording: random.Random) -> tuple[int, str]:
    if rng.random() < AMBIGUOUS_SHARE:
        rating, text = rng.choice(AMBIGUOUS_REVIEWS)
        return rating, text.format(product=product)
    rating = rng.choices(list(RATING_WEIGHTS), weights=list(RATING_WEIGHTS.values()))[0]
    sentiment = "positive" if rating >= 4 else "negative" if rating <= 2 else "neutral"
    topic = rng.choices(TOPICS, weights=TOPIC_WEIGHTS)[0]
    template = rng.choice(REVIEW_TEMPLATES[sentiment][topic]).format(product=product)
    return rating, _reworded(wording, sentiment, template)


def reviews_of_day(day: dt.date, reviews_per_day: int, seed: int) -> list[tuple]:
    """The ``reviews`` rows of one day, the mess included."""
    rng = random.Random(f"{seed}:reviews:{day.isoformat()}")
    wording = random.Random(f"{seed}:wording:{day.isoformat()}")
    products = [p[0] for p in PRODUCTS]
    rows: list[tuple] = []

    def add(product_id: int, rating: int | None, text: str | None) -> None:
        rows.append((_day_id(day, len(rows) + 1), product_id, day, rating, text))

    def add_from(choices: list[tuple[int, str]], count: int) -> None:
        for rating, text in rng.sample(choices, count):
            product_id = rng.choice(products)
            add(product_id, rating, text.format(product=NAMES[product_id]))

    for _ in range(reviews_per_day):
        product_id = rng.choice(products)
        add(product_id, *_regular_review(rng, NAMES[product_id], wording))
    duplicates = rng.sample(rows, min(MESSY_REVIEWS["duplicates"], len(rows)))  # of regular reviews only
    add_from(CHINESE_REVIEWS, MESSY_REVIEWS["chinese"])
    add_from(EMOJI_REVIEWS, MESSY_REVIEWS["emoji"])
    add_from(HTML_REVIEWS, MESSY_REVIEWS["html"])
    for _ in range(MESSY_REVIEWS["long"]):
        product_id = rng.choice(products)
        add(product_id, 4, _long_review(rng, NAMES[product_id]))
    for _ in range(MESSY_REVIEWS["null_text"]):
        add(rng.choice(products), 5, None)  # a star rating without a text
    for _ in range(MESSY_REVIEWS["rating_out_of_range"]):
        product_id = rng.choice(products)
        add(product_id, 0, rng.choice(REVIEW_TEMPLATES["neutral"]["quality"]).format(product=NAMES[product_id]))
    add_from(TOXIC_AND_CONTRADICTORY_REVIEWS, MESSY_REVIEWS["toxic_or_contradictory"])
    rows.extend(duplicates)
    return rows


def _days(start: dt.date, days: int) -> Iterator[dt.date]:
    return (start + dt.timedelta(days=i) for i in range(days))


def generate(conninfo: str, start: dt.date = dt.date(2026, 11, 1), days: int = 7, sales_per_day: int = 300,
             reviews_per_day: int = 100, seed: int = 7) -> dict[str, int]:
    """Create the schema if needed and replace the content of the ``retail`` tables in one transaction.

    :param conninfo: libpq conninfo of the warehouse database.
    :param start: first day of sales and reviews.
    :param days: number of consecutive days.
    :param sales_per_day: catalogue sales rows per day (the 3 article rows and the mess come on top).
    :param reviews_per_day: regular reviews per day (the mess comes on top).
    :param seed: seed of the generators; the same arguments always give the same rows.
    :return: rows written per table, e.g. ``{"products": 28, "daily_sales": 2184, "reviews": 777}``.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if not 0 <= sales_per_day < DAY_ID_FACTOR // 2 or not 0 <= reviews_per_day < DAY_ID_FACTOR // 2:
        raise ValueError(f"sales_per_day and reviews_per_day must be in [0, {DAY_ID_FACTOR // 2}), "
                         f"got {sales_per_day} and {reviews_per_day}")
    started = time.monotonic()
    tables = {name: db.qualified(SCHEMA, name) for name in ("products", "daily_sales", "reviews")}
    with db.connect(conninfo) as conn:
        db.run_sql_files(conn, "warehouse")
        conn.execute("truncate retail.products, retail.daily_sales, retail.reviews")
        counts = {
            "products": db.copy_rows(conn, tables["products"], PRODUCT_COLUMNS, PRODUCTS),
            "daily_sales": db.copy_rows(conn, tables["daily_sales"], SALES_COLUMNS, (
                row for day in _days(start, days) for row in sales_of_day(day, sales_per_day, seed))),
            "reviews": db.copy_rows(conn, tables["reviews"], REVIEW_COLUMNS, (
                row for day in _days(start, days) for row in reviews_of_day(day, reviews_per_day, seed))),
        }
    log.info("demo warehouse %s..%s filled in %.2fs: %s", start, start + dt.timedelta(days=days - 1),
             time.monotonic() - started, counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_insights.runtime.demo_warehouse", description=__doc__.split("\n")[0])
    parser.add_argument("--conninfo", help="libpq conninfo of the warehouse (default: the embedded PostgreSQL, "
                                           "database 'warehouse', started if needed)")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 11, 1),
                        help="first day, YYYY-MM-DD (default 2026-11-01)")
    parser.add_argument("--days", type=int, default=7, help="number of days (default 7)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies the 300 sales and 100 reviews per day (default 1.0)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    if args.scale < 0:
        parser.error(f"--scale must not be negative, got {args.scale}")
    conninfo = args.conninfo
    if conninfo is None:
        from lm_insights.runtime import embedded_pg

        conninfo = embedded_pg.ensure_database(embedded_pg.start(), "warehouse")
    started = time.monotonic()
    counts = generate(conninfo, start=args.start, days=args.days, sales_per_day=round(300 * args.scale),
                      reviews_per_day=round(100 * args.scale), seed=args.seed)
    for table, count in counts.items():
        print(f"{SCHEMA}.{table}: {count} rows")
    print(f"{args.start} .. {args.start + dt.timedelta(days=args.days - 1)} in {time.monotonic() - started:.2f}s")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
