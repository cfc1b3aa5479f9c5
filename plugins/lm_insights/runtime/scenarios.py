"""Synthetic warehouses for the article's finance and logistics scenarios, with a structure planted on purpose.

The data is **synthetic**: seeded draws whose effects are written below, so that a test (and a reader) can check
that the platform reports what was planted and nothing that was not. The same arguments give the same rows.
:func:`generate` creates the schema if needed and replaces the scenario's table in one transaction.

``market_risk`` (table ``markets.instrument_days``): one row per instrument and trading day.

- ``prior_volatility`` is the realised volatility (daily, in %) of the row's day: "yesterday's" as seen from the
  day the row predicts. ``next_day_volatility``, the target, is that of the next day. Each instrument has its own
  base level (uniform 0.8-3.0 %) and volatility is persistent: ``next = base + PERSISTENCE * (prior - base) +
  event effect + N(0, VOLATILITY_NOISE)``, so the prior volatility is the strongest single predictor.
- ``headline`` is the day's headline for the instrument. Its wording carries the planted signal:
  ``profit_warning`` (+2.0 points of next-day volatility) and ``lawsuit`` (+1.6) days are followed by higher
  volatility; ``good_news`` and ``routine`` headlines add nothing (see ``EVENT_EFFECTS`` and ``HEADLINES``).
- Noise (no planted effect on the target): ``sector``, ``volume``, and the sign of ``return_pct`` (the day's return
  is drawn with the day's volatility, so only its size relates to the prior volatility).
- A live warehouse learns the next day's volatility a day later; here every row has it (one more day is simulated).

``shipments`` (table ``logistics.shipments``): one row per shipment, by ``ship_date``.

- ``delay_hours = actual_hours - planned_hours`` with ``planned_hours = distance_km / 60 + 4`` and
  ``delay = DELAY_PER_KM * distance_km`` (grows with distance) ``+ SLOW_CARRIER_HOURS`` for carrier
  ``SLOW_CARRIER`` ``+ SLOW_ROUTE_HOURS`` on route ``SLOW_ROUTE`` ``+`` the note's topic effect (``customs``
  +9 h, ``weather`` +6 h; ``damage`` and ``routine`` notes +0 h) ``+ N(0, DELAY_NOISE)``.
- ``note`` is one of the topic's templates (``NOTES``) signed by one of a dozen drivers (no effect).
- Noise (no planted effect on the delay): ``weight_kg``, the other carriers and routes (their distances differ,
  so route and origin still carry the distance effect).

Command line::

    python -m lm_insights.runtime.scenarios market_risk --conninfo "host=... dbname=warehouse" --days 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from psycopg import sql

from lm_insights.runtime import db
from lm_insights.runtime.demo_warehouse import DAY_ID_FACTOR, _day_id  # ids yyyymmdd * DAY_ID_FACTOR + n, as in retail

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------- market_risk

MARKET_COLUMNS = ("row_id", "trade_date", "ticker", "company", "sector", "return_pct", "volume",
                  "prior_volatility", "headline", "next_day_volatility")
SECTORS = ("Energy", "Technology", "Financials", "Healthcare", "Industrials", "Consumer")
PERSISTENCE = 0.7  # share of the deviation from the instrument's base volatility that carries to the next day
VOLATILITY_NOISE = 0.25  # standard deviation of the next day's volatility around its expectation, in points
MIN_VOLATILITY = 0.2
EVENT_EFFECTS = {"profit_warning": 2.0, "lawsuit": 1.6, "good_news": 0.0, "routine": 0.0}  # next-day points
EVENT_WEIGHTS = {"profit_warning": 7, "lawsuit": 6, "good_news": 12, "routine": 75}
HEADLINES = {
    "profit_warning": [
        "{company} issues profit warning and cuts its full-year outlook",
        "{company} warns profit will miss forecasts as orders slow",
        "{company} slashes guidance in a surprise profit warning",
    ],
    "lawsuit": [
        "{company} faces lawsuit from investors over misleading statements",
        "Regulator sues {company} over alleged accounting irregularities",
        "{company} hit with class action lawsuit over product defects",
    ],
    "good_news": [
        "{company} beats earnings estimates and raises its dividend",
        "{company} wins a multi-year supply contract",
        "{company} reports record quarterly revenue",
    ],
    "routine": [
        "{company} to present at an industry conference next week",
        "{company} appoints a new independent board member",
        "{company} opens a new regional office",
        "{company} publishes its annual sustainability report",
        "{company} confirms the date of its annual general meeting",
    ],
}
COMPANY_STEMS = ("Northwind", "Bluepeak", "Harbor", "Silverline", "Redwood", "Ironbridge", "Lakeside", "Summit",
                 "Crescent", "Granite", "Evergreen", "Falcon", "Meridian", "Pioneer", "Quantum", "Sterling",
                 "Aurora", "Cobalt", "Horizon", "Juniper", "Keystone", "Orchid", "Polaris", "Vertex", "Willow")
SECTOR_WORDS = {"Energy": "Energy", "Technology": "Systems", "Financials": "Capital", "Healthcare": "Health",
                "Industrials": "Industries", "Consumer": "Brands"}


@dataclass(frozen=True)
class Instrument:
    ticker: str
    company: str
    sector: str
    base_volatility: float
    base_volume: float


def instruments(count: int, seed: int) -> list[Instrument]:
    """``count`` instruments with their sector, base volatility and base volume (independent of the sector)."""
    rng = random.Random(f"{seed}:instruments")
    found = []
    for i in range(count):
        sector = rng.choice(SECTORS)
        stem = COMPANY_STEMS[i % len(COMPANY_STEMS)]
        suffix = "" if i < len(COMPANY_STEMS) else f" {chr(ord('A') + i // len(COMPANY_STEMS) - 1)}"
        found.append(Instrument(ticker=f"{stem[:3].upper()}{i:03d}", company=f"{stem} {SECTOR_WORDS[sector]}{suffix}",
                                sector=sector, base_volatility=rng.uniform(0.8, 3.0),
                                base_volume=math.exp(rng.uniform(11, 15))))
    return found


def market_rows(start: dt.date, days: int, instrument_count: int, seed: int) -> Iterator[tuple]:
    """The ``markets.instrument_days`` rows of ``days`` trading days from ``start`` (weekends included: synthetic)."""
    rng = random.Random(f"{seed}:market:{start.isoformat()}")
    book = instruments(instrument_count, seed)
    volatility = [i.base_volatility for i in book]
    events, weights = list(EVENT_WEIGHTS), list(EVENT_WEIGHTS.values())
    for d in range(days):
        day = start + dt.timedelta(days=d)
        for n, (instrument, prior) in enumerate(zip(book, volatility), 1):
            event = rng.choices(events, weights=weights)[0]
            expected = (instrument.base_volatility + PERSISTENCE * (prior - instrument.base_volatility)
                        + EVENT_EFFECTS[event])
            following = max(MIN_VOLATILITY, rng.gauss(expected, VOLATILITY_NOISE))
            volatility[n - 1] = following
            yield (_day_id(day, n), day, instrument.ticker, instrument.company, instrument.sector,
                   round(rng.gauss(0, prior), 3), round(instrument.base_volume * rng.lognormvariate(0, 0.3)),
                   round(prior, 4), rng.choice(HEADLINES[event]).format(company=instrument.company),
                   round(following, 4))


# --------------------------------------------------------------------------------------------------- shipments

SHIPMENT_COLUMNS = ("shipment_id", "ship_date", "origin", "destination", "route", "carrier", "distance_km",
                    "weight_kg", "planned_hours", "actual_hours", "delay_hours", "note")
CITIES = {"Shanghai": (31.2, 121.5), "Shenzhen": (22.5, 114.1), "Tianjin": (39.1, 117.2), "Wuhan": (30.6, 114.3),
          "Beijing": (39.9, 116.4), "Chengdu": (30.7, 104.1), "Xi'an": (34.3, 108.9)}
ORIGINS = ("Shanghai", "Shenzhen", "Tianjin", "Wuhan")
DESTINATIONS = ("Beijing", "Chengdu", "Xi'an")
CARRIERS = ("Apex Freight", "BlueLine Cargo", "Kestrel Logistics", "Orient Haulage", "Summit Transport")
SLOW_CARRIER, SLOW_CARRIER_HOURS = "Kestrel Logistics", 6.0
SLOW_ROUTE, SLOW_ROUTE_HOURS = "Shenzhen-Chengdu", 8.0
DELAY_PER_KM = 0.004  # hours of delay per km: 1000 km add 4 h
DELAY_NOISE = 2.5  # standard deviation of the delay around its expectation, in hours
ROAD_FACTOR = (1.15, 1.45)  # road distance over the great-circle distance, uniform per shipment
NOTE_EFFECTS = {"customs": 9.0, "weather": 6.0, "damage": 0.0, "routine": 0.0}  # hours of delay
NOTE_WEIGHTS = {"customs": 10, "weather": 10, "damage": 8, "routine": 72}
NOTES = {
    "customs": [
        "Held at customs for inspection, missing import declaration.",
        "Customs clearance took longer than planned, paperwork incomplete.",
        "Container stopped at the customs checkpoint for document checks.",
    ],
    "weather": [
        "Heavy snow closed the expressway, truck waited overnight.",
        "Typhoon warning, the driver stopped until the storm passed.",
        "Dense fog and flooding on the highway slowed the trip.",
    ],
    "damage": [
        "Two boxes arrived crushed, customer signed with remarks.",
        "Pallet wrap torn and some cartons wet on arrival.",
        "One item broken in transit, photos attached.",
    ],
    "routine": [
        "Delivered to the loading dock, signed by reception.",
        "Customer confirmed receipt, all items complete.",
        "Left with the warehouse supervisor as agreed.",
        "Delivered, no issues reported.",
        "Driver called ahead, goods unloaded by the customer.",
    ],
}

# Signed by one of these drivers: a note is free text with many distinct values, as in a real feed.
DRIVERS = ("Li Wei", "Zhang Min", "Wang Fang", "Chen Jie", "Liu Yang", "Zhao Lei", "Huang Tao", "Zhou Xin",
           "Wu Hao", "Sun Li", "Ma Jun", "Hu Bin")


def route_distance_km(origin: str, destination: str) -> float:
    """Great-circle distance between two cities (haversine, Earth radius 6371 km)."""
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, CITIES[c])) for c in (origin, destination))
    a = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371 * math.asin(math.sqrt(a))


def shipment_rows(start: dt.date, days: int, shipments_per_day: int, seed: int) -> Iterator[tuple]:
    """The ``logistics.shipments`` rows of ``days`` days from ``start``; each day has its own seeded draw."""
    topics, weights = list(NOTE_WEIGHTS), list(NOTE_WEIGHTS.values())
    for d in range(days):
        day = start + dt.timedelta(days=d)
        rng = random.Random(f"{seed}:shipments:{day.isoformat()}")
        for n in range(1, shipments_per_day + 1):
            origin, destination, carrier = rng.choice(ORIGINS), rng.choice(DESTINATIONS), rng.choice(CARRIERS)
            route = f"{origin}-{destination}"
            distance = route_distance_km(origin, destination) * rng.uniform(*ROAD_FACTOR)
            topic = rng.choices(topics, weights=weights)[0]
            delay = (DELAY_PER_KM * distance + (SLOW_CARRIER_HOURS if carrier == SLOW_CARRIER else 0.0)
                     + (SLOW_ROUTE_HOURS if route == SLOW_ROUTE else 0.0) + NOTE_EFFECTS[topic]
                     + rng.gauss(0, DELAY_NOISE))
            planned = distance / 60 + 4
            yield (_day_id(day, n), day, origin, destination, route, carrier, round(distance, 1),
                   round(rng.lognormvariate(7, 0.8), 1), round(planned, 2), round(planned + delay, 2),
                   round(delay, 2), f"{rng.choice(NOTES[topic])} Driver: {rng.choice(DRIVERS)}.")


# ----------------------------------------------------------------------------------------------------- common


@dataclass(frozen=True)
class Scenario:
    name: str  # the pipeline (dags/pipelines/<name>.yaml) that reads the table
    schema: str
    table: str
    columns: tuple[str, ...]
    rows: Callable[[dt.date, int, int, int], Iterator[tuple]]  # (start, days, rows_per_day, seed)
    rows_per_day: int  # the default: instruments per day, shipments per day
    ddl: str


SCENARIOS = {
    "market_risk": Scenario(
        "market_risk", "markets", "instrument_days", MARKET_COLUMNS, market_rows, 150,
        "create table if not exists markets.instrument_days (row_id bigint not null, trade_date date not null, "
        "ticker text not null, company text not null, sector text not null, return_pct double precision, "
        "volume bigint, prior_volatility double precision, headline text, next_day_volatility double precision); "
        "create index if not exists instrument_days_trade_date_idx on markets.instrument_days (trade_date)"),
    "shipments": Scenario(
        "shipments", "logistics", "shipments", SHIPMENT_COLUMNS, shipment_rows, 300,
        "create table if not exists logistics.shipments (shipment_id bigint not null, ship_date date not null, "
        "origin text not null, destination text not null, route text not null, carrier text not null, "
        "distance_km double precision, weight_kg double precision, planned_hours double precision, "
        "actual_hours double precision, delay_hours double precision, note text); "
        "create index if not exists shipments_ship_date_idx on logistics.shipments (ship_date)"),
}


def scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {sorted(SCENARIOS)}")
    return SCENARIOS[name]


def generate(conninfo: str, name: str, start: dt.date = dt.date(2026, 11, 1), days: int = 7,
             rows_per_day: int | None = None, seed: int = 7) -> int:
    """Create the scenario's schema and table if needed and replace its rows in one transaction.

    :param name: ``market_risk`` or ``shipments``.
    :param rows_per_day: instruments (market_risk) or shipments per day; default: the scenario's.
    :return: the number of rows written.
    """
    found = scenario(name)
    rows_per_day = found.rows_per_day if rows_per_day is None else rows_per_day
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if not 1 <= rows_per_day < DAY_ID_FACTOR:
        raise ValueError(f"rows_per_day must be in [1, {DAY_ID_FACTOR}), got {rows_per_day}")
    started = time.monotonic()
    table = db.qualified(found.schema, found.table)
    with db.connect(conninfo) as conn:
        db.ensure_schema(conn, found.schema)
        conn.execute(found.ddl)
        conn.execute(sql.SQL("truncate {}").format(table))
        count = db.copy_rows(conn, table, found.columns, found.rows(start, days, rows_per_day, seed))
    log.info("scenario %s: %d rows in %s.%s (%s..%s) in %.2fs", name, count, found.schema, found.table, start,
             start + dt.timedelta(days=days - 1), time.monotonic() - started)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_insights.runtime.scenarios",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--conninfo", help="libpq conninfo of the warehouse (default: the embedded PostgreSQL, "
                                           "database 'warehouse', started if needed)")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 11, 1),
                        help="first day, YYYY-MM-DD (default 2026-11-01)")
    parser.add_argument("--days", type=int, default=7, help="number of days (default 7)")
    parser.add_argument("--rows-per-day", type=int, help="instruments or shipments per day (default: the scenario's)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    conninfo = args.conninfo
    if conninfo is None:
        from lm_insights.runtime import embedded_pg

        conninfo = embedded_pg.ensure_database(embedded_pg.start(), "warehouse")
    count = generate(conninfo, args.scenario, args.start, args.days, args.rows_per_day, args.seed)
    found = SCENARIOS[args.scenario]
    print(f"{found.schema}.{found.table}: {count} rows, {args.start} .. {args.start + dt.timedelta(days=args.days - 1)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
