"""The scenario generators: the structure docs/scenarios.md says is planted holds in the raw rows, tested with scipy
on the rows as they land in a real PostgreSQL, and the fields said to be noise carry no effect."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import pytest
from scipy import stats

from lm_insights.runtime import scenarios

START = dt.date(2026, 11, 1)
STRONG = 1e-6  # a planted effect
NOISE = 0.01  # a field without one is not significant at this level (fixed seed: deterministic)


def loaded(conninfo: str, name: str, days: int) -> pd.DataFrame:
    found = scenarios.scenario(name)
    scenarios.generate(conninfo, name, START, days)
    with psycopg.connect(conninfo) as conn:
        cursor = conn.execute(f"select * from {found.schema}.{found.table}")
        frame = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
    assert len(frame) == days * found.rows_per_day
    return frame


def topic_of(text: str, templates: dict[str, list[str]]) -> str:
    return next(topic for topic, texts in templates.items()
                if any(t.split("{company}")[-1] in text for t in texts))


@pytest.fixture(scope="module")
def shipments(pg_server) -> pd.DataFrame:
    from lm_insights.runtime import embedded_pg

    frame = loaded(embedded_pg.ensure_database(pg_server, "scenario_shipments"), "shipments", 3)
    frame["topic"] = [topic_of(n, scenarios.NOTES) for n in frame["note"]]
    return frame


@pytest.fixture(scope="module")
def market(pg_server) -> pd.DataFrame:
    from lm_insights.runtime import embedded_pg

    frame = loaded(embedded_pg.ensure_database(pg_server, "scenario_market"), "market_risk", 3)
    frame["event"] = [topic_of(h, scenarios.HEADLINES) for h in frame["headline"]]
    # what persistence does not explain: the residual of next-day volatility regressed on today's
    fit = stats.linregress(frame["prior_volatility"], frame["next_day_volatility"])
    frame["residual"] = frame["next_day_volatility"] - (fit.intercept + fit.slope * frame["prior_volatility"])
    return frame


def welch_p(a, b) -> float:
    return stats.ttest_ind(a, b, equal_var=False).pvalue


def test_shipments_delay_is_actual_minus_planned_and_grows_with_distance(shipments):
    assert np.allclose(shipments["actual_hours"] - shipments["planned_hours"], shipments["delay_hours"], atol=0.011)
    fit = stats.linregress(shipments["distance_km"], shipments["delay_hours"])
    assert fit.slope > 0 and fit.pvalue < STRONG
    assert shipments["route"].equals(shipments["origin"] + "-" + shipments["destination"])


def test_shipments_one_carrier_and_one_route_are_slow_the_others_alike(shipments):
    delay = shipments["delay_hours"]
    slow = shipments["carrier"] == scenarios.SLOW_CARRIER
    assert delay[slow].mean() > delay[~slow].mean() and welch_p(delay[slow], delay[~slow]) < STRONG
    others = [delay[shipments["carrier"] == c] for c in scenarios.CARRIERS if c != scenarios.SLOW_CARRIER]
    assert stats.f_oneway(*others).pvalue > NOISE
    # routes differ in distance: compare what distance does not explain
    fit = stats.linregress(shipments["distance_km"], delay)
    residual = delay - (fit.intercept + fit.slope * shipments["distance_km"])
    on_route = shipments["route"] == scenarios.SLOW_ROUTE
    assert residual[on_route].mean() > 5 and welch_p(residual[on_route], residual[~on_route]) < STRONG


def test_shipments_customs_and_weather_notes_go_with_delays_damage_does_not(shipments):
    by_topic = {t: g["delay_hours"] for t, g in shipments.groupby("topic")}
    for topic in ("customs", "weather"):
        assert by_topic[topic].mean() > by_topic["routine"].mean() and welch_p(by_topic[topic],
                                                                               by_topic["routine"]) < STRONG
    assert welch_p(by_topic["damage"], by_topic["routine"]) > NOISE
    assert stats.pearsonr(shipments["weight_kg"], shipments["delay_hours"]).pvalue > NOISE


def test_market_volatility_persists_and_the_series_are_continuous(market):
    r = stats.pearsonr(market["prior_volatility"], market["next_day_volatility"])
    assert r.statistic > 0.6 and r.pvalue < STRONG
    # each instrument's next-day volatility is the prior volatility of its row the next day
    ordered = market.sort_values(["ticker", "trade_date"])
    same = ordered["ticker"].eq(ordered["ticker"].shift(-1))
    assert np.allclose(ordered["next_day_volatility"][same], ordered["prior_volatility"].shift(-1)[same])
    assert (market["prior_volatility"] >= 0).all() and (market["next_day_volatility"] >= 0).all()


def test_market_profit_warnings_and_lawsuits_precede_higher_volatility_other_fields_are_noise(market):
    residual = market["residual"]
    quiet = residual[market["event"].isin(["routine", "good_news"])]
    for event in ("profit_warning", "lawsuit"):
        shocked = residual[market["event"] == event]
        assert shocked.mean() > quiet.mean() + 1 and welch_p(shocked, quiet) < STRONG
    assert welch_p(residual[market["event"] == "good_news"], residual[market["event"] == "routine"]) > NOISE
    assert stats.f_oneway(*[g for _, g in residual.groupby(market["sector"])]).pvalue > NOISE
    assert stats.pearsonr(market["volume"], residual).pvalue > NOISE
    assert stats.pearsonr(market["return_pct"], market["next_day_volatility"]).pvalue > NOISE


def test_generation_is_seeded_and_replaces_the_table(warehouse_conninfo):
    first = list(scenarios.shipment_rows(START, 2, 20, seed=7))
    assert first == list(scenarios.shipment_rows(START, 2, 20, seed=7)) != list(scenarios.shipment_rows(
        START, 2, 20, seed=8))
    assert list(scenarios.market_rows(START, 2, 10, 7)) == list(scenarios.market_rows(START, 2, 10, 7))
    for _ in range(2):
        assert scenarios.generate(warehouse_conninfo, "shipments", START, 2, rows_per_day=20) == 40
    with psycopg.connect(warehouse_conninfo) as conn:
        assert conn.execute("select count(*), count(distinct shipment_id) from logistics.shipments").fetchone() == (
            40, 40)


def test_unknown_scenario_and_bad_sizes_are_refused_by_name(warehouse_conninfo):
    with pytest.raises(ValueError, match="unknown scenario 'retail'.*market_risk"):
        scenarios.generate(warehouse_conninfo, "retail")
    with pytest.raises(ValueError, match="rows_per_day"):
        scenarios.generate(warehouse_conninfo, "market_risk", rows_per_day=0)


def test_metric_drift_measures_segments_by_column(warehouse_conninfo):
    """The shipments spec segments by carrier (by_column): the drift gate's per-segment moments must cover it (it
    raised AttributeError on the day after the first, when a reference window exists)."""
    from psycopg import sql

    from lm_insights.guard.gates import segment_moments
    from lm_insights.spec import load_specs

    spec = next(s for s in load_specs() if s.name == "shipments")
    with psycopg.connect(warehouse_conninfo) as conn:
        conn.execute("create table rows (carrier text, route text, distance_km float8, note_topic_label text, "
                     "delay_hours float8)")
        conn.execute("insert into rows values ('A', 'X-Y', 500, 'customs', 1), ('A', 'X-Y', 1200, 'routine', 3), "
                     "(null, 'X-Z', 2100, null, 'NaN'), ('B', 'X-Z', 900, 'routine', 10)")
        moments = segment_moments(spec, conn, sql.Identifier("rows"), sql.SQL("true"), {}, "delay_hours")
    assert (moments["column:carrier=A"].n, moments["column:carrier=A"].mean) == (2, 2.0)
    assert moments["column:carrier=B"].mean == 10.0 and moments["column:carrier=unknown"].n == 0
    assert moments["column:route=X-Z"].n == 1 and moments["tiers:distance_km=[2000, 5000)"].n == 0
    assert moments["label:note_topic=customs"].mean == 1.0
