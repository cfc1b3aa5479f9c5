"""Which partition a run processes: its data interval, or the date range given as Params."""

from __future__ import annotations

import datetime as dt

import pytest

from lm_insights.airflow_dag import manual_interval, resolve_partition

UTC = dt.timezone.utc
INTERVAL = (dt.datetime(2026, 11, 2, tzinfo=UTC), dt.datetime(2026, 11, 3, tzinfo=UTC))


def test_without_params_the_data_interval_is_the_partition():
    partition = resolve_partition({"partition_start": None, "partition_end": None}, *INTERVAL)
    assert (partition.start, partition.end) == INTERVAL


def test_a_start_date_alone_is_that_day_and_a_range_is_inclusive():
    day = resolve_partition({"partition_start": "2026-11-05"}, *INTERVAL)
    assert (day.start, day.end) == (dt.datetime(2026, 11, 5, tzinfo=UTC), dt.datetime(2026, 11, 6, tzinfo=UTC))
    week = resolve_partition({"partition_start": "2026-11-01", "partition_end": "2026-11-07"}, *INTERVAL)
    assert (week.start, week.end) == (dt.datetime(2026, 11, 1, tzinfo=UTC), dt.datetime(2026, 11, 8, tzinfo=UTC))


@pytest.mark.parametrize("params, message", [
    ({"partition_start": "2026-11-02", "partition_end": "2026-11-01"}, "partition_end 2026-11-01 is before"),
    ({"partition_end": "2026-11-01"}, "partition_end needs partition_start"),
])
def test_inconsistent_params_are_refused_with_the_reason(params, message):
    with pytest.raises(ValueError, match=message):
        resolve_partition(params, *INTERVAL)


def test_a_run_without_a_logical_date_takes_the_last_complete_day():
    start, end = manual_interval("@daily", dt.datetime(2026, 11, 28, 10, 53, 12, tzinfo=UTC))
    assert (start, end) == (dt.datetime(2026, 11, 27, tzinfo=UTC), dt.datetime(2026, 11, 28, tzinfo=UTC))


def test_staging_names_of_a_range_are_lowercase_short_and_share_one_stem():
    from lm_insights.spec import load_specs
    from lm_insights.core.partition import Partition, staging_name, staging_stem, stem_of

    spec = next(s for s in load_specs() if s.name == "customer_reviews")
    long_name = spec.model_copy(update={"name": "a" * 32})
    for one in (spec, long_name):
        for partition in (Partition.days("2008-01-01", "2017-12-31"),
                          Partition(dt.datetime(2026, 11, 1, 6, tzinfo=UTC), dt.datetime(2026, 11, 1, 18, tzinfo=UTC),
                                    run_id="manual__2026-11-28T10:53:12+00:00")):
            names = [staging_name(one, partition, step) for step in ("extracted", "rejects_loaded", "summary")]
            assert all(n == n.lower() and len(n) <= 63 for n in names), names
            assert {stem_of(n) for n in names} == {staging_stem(one, partition)}


def test_run_takes_a_date_or_an_inclusive_range():
    from lm_insights.cli import cli_partition
    from lm_insights.core.partition import Partition

    assert cli_partition("2026-11-01", "2026-11-03") == Partition.days("2026-11-01", "2026-11-03")
    assert cli_partition("2026-11-02", "2026-11-02") == Partition.day("2026-11-02")
    with pytest.raises(SystemExit, match="--end 2026-11-01 is before --start 2026-11-02"):
        cli_partition("2026-11-02", "2026-11-01")
    with pytest.raises(SystemExit, match="dates are YYYY-MM-DD"):
        cli_partition("11/02/2026", "2026-11-03")
