"""Independent oracles for every figure the platform publishes, recomputed with pandas/numpy from the source rows.

The platform computes its figures in SQL (``lm_insights.steps.insights``); these functions compute the same
figures again from the *source table* with pandas and numpy, and compare them with the insight tables to 1e-9
relative. They select columns by name, so columns that other features add to the insight tables do not break
them. The LM's labels are the one input taken from the platform (they are the model's output, checked by the
encoder tests against sentence-transformers); everything measured on top of them is recomputed here.

Use :func:`check_partition` for the whole set, or the single oracles for a new figure.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from collections import Counter

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

REL_TOL = 1e-9
ABS_TOL = 1e-12  # for figures that are exactly zero (the variance of equal values)
UNKNOWN = "unknown"


# ---------------------------------------------------------------------------------------------------- reading


def fetch_frame(conninfo: str, query: sql.Composable | str, params=None) -> pd.DataFrame:
    """A query's rows as a DataFrame, columns by name; numeric (Decimal) cells stay Decimal until :func:`as_float`."""
    with psycopg.connect(conninfo) as conn:
        cursor = conn.execute(query, params)
        return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description], dtype=object)


def as_float(values: pd.Series) -> pd.Series:
    """Numbers (int, Decimal, float) as float64; NULL, NaN and +-Infinity as NaN (statistics skip them)."""
    numbers = [np.nan if v is None else float(v) for v in values]
    return pd.Series([v if math.isfinite(v) else np.nan for v in numbers], index=values.index, dtype="float64")


def non_finite(values: pd.Series) -> pd.Series:
    """NaN or +-Infinity (a float or numeric cell; NULL is not one)."""
    return values.map(lambda v: isinstance(v, float | decimal.Decimal) and not math.isfinite(float(v))).astype(bool)


def utc_instant(value: object) -> dt.datetime:
    """A partition column's value as a UTC instant: a ``date`` is its day starting at 00:00 UTC."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)


def source_partition(conninfo: str, spec, partition) -> pd.DataFrame:
    """The spec's source columns of every source row in ``[start, end)``, filtered here (not by the platform's SQL)."""
    schema, table = spec.source.table.split(".") if "." in spec.source.table else ("public", spec.source.table)
    frame = fetch_frame(conninfo, sql.SQL("select {} from {}").format(
        sql.SQL(", ").join(map(sql.Identifier, spec.source.columns)), sql.Identifier(schema, table)))
    instants = frame[spec.source.partition_column].map(utc_instant)
    inside = (instants >= partition.start) & (instants < partition.end)
    return frame[inside.astype(bool)].reset_index(drop=True)


def insight_frame(conninfo: str, spec, suffix: str, partition, missing_ok: bool = False) -> pd.DataFrame:
    """The partition's rows of ``<sink schema>.<pipeline>_<suffix>`` (empty if ``missing_ok`` and it does not exist)."""
    if missing_ok:
        with psycopg.connect(conninfo) as conn:
            if conn.execute("select to_regclass(%s)", (f'"{spec.sink.schema_}"."{spec.name}_{suffix}"',)
                            ).fetchone()[0] is None:
                return pd.DataFrame()
    return fetch_frame(conninfo, sql.SQL("select * from {} where partition_start = %s").format(
        sql.Identifier(spec.sink.schema_, f"{spec.name}_{suffix}")), (partition.start,))


# ---------------------------------------------------------------------------------------------------- rejects


def expected_reject_mask(spec, source: pd.DataFrame) -> pd.Series:
    """Which source rows the spec's row-level expectations reject, decided with pandas.

    GX semantics: NULLs are not failures of ``between`` or ``unique``; ``unique`` rejects every copy of a
    repeated value.
    """
    rejected = pd.Series(False, index=source.index)
    for entry in spec.expectations.rows:
        (name, kwargs), = entry.items()
        values = source[kwargs["column"]] if "column" in kwargs else None
        if name == "expect_column_values_to_not_be_null":
            failed = values.isna()
        elif name == "expect_column_values_to_be_between":
            numbers = as_float(values)
            failed = pd.Series(False, index=source.index)
            low, high = kwargs.get("min_value"), kwargs.get("max_value")
            if low is not None:
                failed |= (numbers <= low) if kwargs.get("strict_min") else (numbers < low)
            if high is not None:
                failed |= (numbers >= high) if kwargs.get("strict_max") else (numbers > high)
            failed &= numbers.notna()
        elif name == "expect_column_values_to_be_unique":
            failed = values.notna() & values.duplicated(keep=False)
        else:
            raise NotImplementedError(f"no oracle for the row expectation {name}; add one to tests/oracles.py")
        rejected |= failed.astype(bool)
    if getattr(spec.insights, "non_finite", "reject") == "reject":  # NaN/Infinity in a number column of insights
        for column in {*spec.insights.metrics, *(s.by_tiers.column for s in spec.insights.segments if s.by_tiers)}:
            rejected |= non_finite(source[column])
    return rejected


def comparable(value: object) -> object:
    """One cell in a form equal across Decimal/int/float, JSON strings and SQL values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, decimal.Decimal | int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        return utc_instant(value).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def row_multiset(frame: pd.DataFrame, columns: list[str]) -> Counter:
    return Counter(tuple(comparable(v) for v in row) for row in frame[columns].itertuples(index=False))


def check_rejects(spec, source: pd.DataFrame, rejects: pd.DataFrame) -> None:
    """The published rejects are exactly the source rows the expectations reject, each with its whole row."""
    expected = source[expected_reject_mask(spec, source)]
    columns = list(spec.source.columns)
    part = spec.source.partition_column
    published = Counter(
        tuple(comparable(_iso_instant(row.get(c)) if c == part else row.get(c)) for c in columns)
        for row in (rejects["row"] if len(rejects) else []))
    assert published == row_multiset(expected, columns), "rejects differ from the expectations applied with pandas"
    assert all(row_key for row_key in rejects.get("row_key", [])), "every reject names its row"


def _iso_instant(value: str | None) -> object:
    """The partition column of a reject's JSON row (an ISO date or timestamp) as a date or datetime."""
    if value is None:
        return None
    return dt.date.fromisoformat(value) if len(value) == 10 else dt.datetime.fromisoformat(value)


def valid_source_rows(spec, source: pd.DataFrame) -> pd.DataFrame:
    return source[~expected_reject_mask(spec, source)].reset_index(drop=True)


def check_rows(spec, valid: pd.DataFrame, rows: pd.DataFrame) -> None:
    """``<pipeline>_rows`` holds every valid source row once, and no rejected row."""
    columns = [c for c in spec.row_columns if c in valid.columns]
    assert row_multiset(rows, columns) == row_multiset(valid, columns), \
        "the rows table is not the source rows minus the rejects"


# ---------------------------------------------------------------------------------------------------- segments


def edge_text(edge: float) -> str:
    """A tier edge as the segment names print it: 150, 19.9."""
    return str(int(edge)) if float(edge).is_integer() else repr(float(edge))


def tier_name(low: float, high: float) -> str:
    return f"[{edge_text(low)}, {edge_text(high)})"


def tier_of(value: float, edges: list[float]) -> tuple[str, int]:
    """A value's tier ``[low, high)`` and its order; NULL is ``unknown``, beyond the edges ``outside [..)``."""
    last = len(edges) - 1
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN, last
    for i, (low, high) in enumerate(zip(edges, edges[1:])):
        if low <= value < high:
            return tier_name(low, high), i
    return f"outside [{edge_text(edges[0])}, {edge_text(edges[-1])})", last


def expected_segments(spec, rows: pd.DataFrame) -> pd.DataFrame:
    """count, mean, sample variance and stddev, min, max of every metric per segment value (pandas, ddof=1)."""
    records = []
    groupings = []
    for segment in spec.insights.segments:
        if segment.by_tiers:
            tiers = [tier_of(v, segment.by_tiers.edges) for v in as_float(rows[segment.by_tiers.column])]
            groupings.append((segment.name, pd.Series([name for name, _ in tiers], index=rows.index), dict(tiers)))
        else:
            column = segment.by_column or f"{segment.by_label}_label"
            groupings.append((segment.name, rows[column].map(lambda v: UNKNOWN if v is None else str(v)), {}))
    if "cluster_name" in rows and rows["cluster_name"].notna().any():  # discovery's clusters: a segment too
        groupings.append(("cluster", rows["cluster_name"].map(lambda v: UNKNOWN if v is None else v), {}))
    for name, values, orders in groupings:
        for metric in spec.insights.metrics:
            numbers = as_float(rows[metric])
            for value in sorted(set(values)):
                group = numbers[values == value].dropna().to_numpy()
                n = len(group)
                records.append({
                    "segment": name, "segment_value": value, "segment_order": orders.get(value, 0),
                    "metric": metric, "row_count": n,
                    "mean": float(np.mean(group)) if n else None,
                    "variance": float(np.var(group, ddof=1)) if n > 1 else None,
                    "stddev": float(np.std(group, ddof=1)) if n > 1 else None,
                    "min": float(np.min(group)) if n else None,
                    "max": float(np.max(group)) if n else None,
                })
    return pd.DataFrame.from_records(records)


def missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def close(expected: float | None, got: float | None) -> bool:
    """Equal to 1e-9 relative; None and NaN both stand for SQL NULL."""
    expected, got = (None if missing(v) else v for v in (expected, got))
    if expected is None or got is None:
        return expected is None and got is None
    return math.isclose(float(expected), float(got), rel_tol=REL_TOL, abs_tol=ABS_TOL)


SEGMENT_FIGURES = ("row_count", "mean", "variance", "stddev", "min", "max")


def check_segments(spec, rows: pd.DataFrame, segments: pd.DataFrame) -> pd.DataFrame:
    """Every published segment figure equals the oracle's, and no segment is missing or extra."""
    expected = expected_segments(spec, rows)
    keys = ["segment", "segment_value", "metric"]
    published = {tuple(r[k] for k in keys): r for r in segments.to_dict("records")}
    wanted = {tuple(r[k] for k in keys): r for r in expected.to_dict("records")}
    assert set(published) == set(wanted), (sorted(set(published) ^ set(wanted)))
    for key, want in wanted.items():
        got = published[key]
        for figure in SEGMENT_FIGURES:
            assert close(want[figure], got[figure]), f"segment {key} {figure}: oracle {want[figure]}, " \
                                                     f"published {got[figure]}"
        if key[0].startswith("tiers:"):
            assert got["segment_order"] == want["segment_order"], f"segment {key} order"
    return expected


# ---------------------------------------------------------------------------------------------------- drivers


def pearson(rows: pd.DataFrame, field: str, target: str) -> tuple[float | None, int]:
    """Pearson r of the field and the target over rows where both are present (numpy), and that n."""
    x, y = as_float(rows[field]), as_float(rows[target])
    both = x.notna() & y.notna()
    x, y = x[both].to_numpy(), y[both].to_numpy()
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None, len(x)
    return float(np.corrcoef(x, y)[0, 1]), len(x)


def eta_squared(rows: pd.DataFrame, field: str, target: str) -> tuple[float | None, int, pd.Series]:
    """Correlation ratio: between-group sum of squares / total sum of squares, with the group means (pandas)."""
    frame = pd.DataFrame({"x": rows[field], "y": as_float(rows[target])})
    frame = frame[frame["x"].notna() & frame["y"].notna()]
    frame["x"] = frame["x"].map(str)
    total = float(((frame["y"] - frame["y"].mean()) ** 2).sum())
    groups = frame.groupby("x")["y"].agg(["count", "mean"])
    between = float((groups["count"] * (groups["mean"] - frame["y"].mean()) ** 2).sum())
    return (between / total if total else None), len(frame), groups


def large_groups(rows: pd.DataFrame, field: str, target: str, min_rows: int) -> list[np.ndarray]:
    """The target's values per value of ``field`` that has ``min_rows`` rows (both present), by value."""
    frame = pd.DataFrame({"x": rows[field], "y": as_float(rows[target])})
    frame = frame[frame["x"].notna() & frame["y"].notna()]
    frame["x"] = frame["x"].map(str)
    return [g.to_numpy() for _, g in sorted(frame.groupby("x")["y"]) if len(g) >= max(min_rows, 2)]


def omega_squared(groups: list[np.ndarray]) -> float:
    """(SS between - (k - 1) MS within) / (SS total + MS within), at least 0 (numpy)."""
    values = np.concatenate(groups)
    between = sum(len(g) * (g.mean() - values.mean()) ** 2 for g in groups)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    mean_within = within / (len(values) - len(groups))
    return max((between - (len(groups) - 1) * mean_within) / (between + within + mean_within), 0.0)


def check_drivers(spec, rows: pd.DataFrame, drivers: pd.DataFrame, required: list[str] = ()) -> None:
    """Every published driver's effect (importance, on the share-of-variance scale), p-value, direction, method
    and n equal scipy's on the rows; ``required`` fields are published."""
    from scipy import stats

    published = drivers.to_dict("records")
    assert {d["field"] for d in published} >= set(required), (required, [d["field"] for d in published])
    assert not {d["field"] for d in published} & {spec.target, *spec.insights.outcomes}, "an outcome is no driver"
    target = spec.target
    for d in published:
        assert d["target"] == target
        if d["method"].startswith("pearson"):
            r, n = pearson(rows, d["field"], target)
            assert r is not None and close(r * r, d["importance"]), (d, r)
            assert d["method"] == f"pearson r = {r:+.3f}" and d["n"] == n and close(r, d["correlation"]), (d, r, n)
            x, y = as_float(rows[d["field"]]), as_float(rows[target])
            both = x.notna() & y.notna()
            assert math.isclose(stats.pearsonr(x[both], y[both]).pvalue, d["p_value"], rel_tol=1e-6, abs_tol=1e-300)
            rises = "rises" if r > 0 else "falls"
            assert d["direction"] == f"{target} {rises} as {d['field']} rises", d
        else:
            assert d["method"] == "omega squared", d
            groups = large_groups(rows, d["field"], target, spec.insights.min_group_rows)
            assert len(groups) >= 2 and d["n"] == sum(len(g) for g in groups), (d, groups)
            assert close(omega_squared(groups), d["importance"]), d
            assert math.isclose(stats.f_oneway(*groups).pvalue, d["p_value"], rel_tol=1e-6, abs_tol=1e-300), d
            _, _, means = eta_squared(rows, d["field"], target)
            eligible = means[means["count"] >= spec.insights.min_group_rows]
            best = set(eligible.index[np.isclose(eligible["mean"], eligible["mean"].max(), rtol=REL_TOL)])
            top = d["direction"].removeprefix(f"highest {target} when {d['field']} = ")
            assert top in best, (d, best)


def expected_driver_fields(spec, rows: pd.DataFrame) -> list[str]:
    """The spec's source columns that the oracle finds measurable as drivers: published for sure (LM outputs are
    not drivers: their relation to the target is tested as segments)."""
    skip = {*spec.source.key, spec.source.partition_column, spec.target, *spec.insights.outcomes}
    fields = [c for c in spec.row_columns if c not in skip]
    measurable = []
    for field in fields:
        values = rows[field].dropna()
        if len(values) and all(isinstance(v, int | float | decimal.Decimal) and not isinstance(v, bool)
                               for v in values):
            r, n = pearson(rows, field, spec.target)
            if r is not None and n >= 3:  # two points always lie on a line: no test
                measurable.append(field)
        else:
            eta2, n, groups = eta_squared(rows, field, spec.target)
            large = large_groups(rows, field, spec.target, spec.insights.min_group_rows)
            if len(groups) <= 20 and len(groups) <= n / 2 and len(large) >= 2 and eta2 is not None:
                measurable.append(field)
    return measurable


# ---------------------------------------------------------------------------------------------------- findings


def check_findings(spec, rows: pd.DataFrame, findings: pd.DataFrame, drivers: pd.DataFrame) -> None:
    """The findings table against scipy: each driver and segment finding's effect, p and n recomputed from the rows;
    q-values by scipy's Benjamini-Hochberg over every tested finding; significance and rank from them."""
    from scipy import stats

    if findings.empty:
        return
    tested = findings[findings["p_value"].notna()]
    q = stats.false_discovery_control(tested["p_value"].astype(float).to_numpy())
    for (_, f), want in zip(tested.iterrows(), q):
        assert math.isclose(f["q_value"], want, rel_tol=1e-9, abs_tol=1e-300), (f["subject"], f["q_value"], want)
    minimum = spec.insights.min_effect
    by_field = drivers.set_index("field")
    by_construction = {name for name, head in spec.lm.heads.items() if head.target == spec.target}
    assert not [f["subject"] for _, f in findings.iterrows()
                if f["kind"] == "segment" and f["subject"].split(" = ", 1)[0] in by_construction], \
        "a head trained on the target splits it by construction: no finding"
    for _, f in findings.iterrows():
        if f["kind"] == "driver" and " | " not in f["subject"]:
            d = by_field.loc[f["subject"]]
            assert close(f["p_value"], d["p_value"]) and f["n"] == d["n"], f["subject"]
            assert close(f["effect"], d["importance"]), f["subject"]
        elif f["kind"] == "segment":
            segment, value = f["subject"].split(" = ", 1)
            names = segment_names(spec, rows, segment)
            y = as_float(rows[spec.target])
            present = y.notna().to_numpy()
            inside, rest = y[(names == value).to_numpy() & present], y[(names != value).to_numpy() & present]
            assert min(len(inside), len(rest)) >= spec.insights.min_group_rows, f["subject"]
            assert math.isclose(stats.ttest_ind(inside, rest, equal_var=False).pvalue, f["p_value"], rel_tol=1e-6,
                                abs_tol=1e-300), f["subject"]
            assert close(inside.mean() / rest.mean() - 1, f["effect"]) and f["n"] == len(inside) + len(rest)
            assert f["ci_low"] <= f["effect"] <= f["ci_high"]
        if f["p_value"] is not None and not missing(f["p_value"]):
            relative = f["effect_measure"] in ("relative difference of means", "difference of relative changes")
            large = abs(f["effect"]) >= (minimum.relative_difference if relative else minimum.proportion_difference
                                         if f["effect_measure"] == "proportion difference" else minimum.variance_share)
            if f["effect_measure"] == "difference of means":
                large = True  # judged on its share of variance, not recomputed here
            if f["kind"] == "rule":  # its own held-out verdict (tests/plugins/test_explain_rules.py) and the family's q
                assert not f["significant"] or f["q_value"] <= spec.insights.fdr, f["subject"]
            else:
                assert bool(f["significant"]) == (f["q_value"] <= spec.insights.fdr and large) or \
                    f["effect_measure"] == "difference of means", f["subject"]
        assert f["sentence"].startswith("uncertain: ") != bool(f["significant"]) or f["kind"] == "cluster"
    ranks = sorted(int(r) for r in findings["rank"].dropna())
    assert ranks == list(range(1, int(findings["significant"].sum()) + 1)), ranks
    plain = findings[findings["rank"].notna() & ~findings["kind"].isin(["cluster", "rule"])
                     & ~findings["subject"].str.contains(" | ", regex=False)]
    by_rank = plain.sort_values("rank")
    families = list(dict.fromkeys(family(f) for _, f in by_rank.iterrows()))
    for name in families:  # a family's findings are ranked together, its driver (if significant) first
        members = [f for _, f in by_rank.iterrows() if family(f) == name]
        kinds = [f["kind"] for f in members]
        assert "driver" not in kinds or kinds[0] == "driver", (name, kinds)
        ranks = [int(f["rank"]) for f in members]
        assert ranks == list(range(ranks[0], ranks[0] + len(ranks))), (name, ranks)  # one block of ranks


def family(finding) -> str:
    """A segment finding belongs with the driver of the column it is cut by ("price = [0, 150)" with price)."""
    return finding["subject"].split(" = ", 1)[0] if finding["kind"] == "segment" else finding["subject"]


def segment_names(spec, rows: pd.DataFrame, segment: str) -> pd.Series:
    """Each row's value of the spec segment named ``segment`` (its short name: "price", "positioning")."""
    spec_segment = next(s for s in spec.insights.segments if s.name.split(":", 1)[-1] == segment)
    if spec_segment.by_tiers:
        numbers = as_float(rows[spec_segment.by_tiers.column])
        return pd.Series([tier_of(v, spec_segment.by_tiers.edges)[0] for v in numbers], index=rows.index)
    column = spec_segment.by_column or f"{spec_segment.by_label}_label"
    return rows[column].map(lambda v: UNKNOWN if v is None else str(v))


def check_changes(spec, now: pd.DataFrame, before: pd.DataFrame, findings: pd.DataFrame) -> None:
    """The change findings recomputed from the two days' loaded rows with numpy and scipy: all rows by Welch's t, a
    segment value's change against the other rows' by the delta method, a label mix by chi-square (Fisher's exact
    for a small 2 x 2), the top driver's r by Fisher's z."""
    from scipy import stats

    y_now, y_before = as_float(now[spec.target]), as_float(before[spec.target])
    checked = 0
    for _, f in findings[findings["kind"].isin(["change", "label_mix"])].iterrows():
        if f["subject"] == "all rows":
            a, b = y_now.dropna(), y_before.dropna()
            p, effect = stats.ttest_ind(a, b, equal_var=False).pvalue, a.mean() / b.mean() - 1
        elif f["subject"].startswith("driver "):
            field = f["subject"].removeprefix("driver ")
            (r1, n1), (r2, n2) = pearson(now, field, spec.target), pearson(before, field, spec.target)
            effect = r1 - r2
            p = 2 * stats.norm.sf(abs(np.arctanh(r1) - np.arctanh(r2)) / np.sqrt(1 / (n1 - 3) + 1 / (n2 - 3)))
        elif f["kind"] == "label_mix":
            name = f["subject"].removesuffix(" mix")
            counts = [now[f"{name}_label"].value_counts(), before[f"{name}_label"].value_counts()]
            labels = sorted(set(counts[0].index) | set(counts[1].index))
            table = np.array([[c.get(label, 0) for label in labels] for c in counts])
            chi = stats.chi2_contingency(table, correction=False)
            small = table.shape == (2, 2) and chi.expected_freq.min() < 5
            p = stats.fisher_exact(table).pvalue if small else chi.pvalue
            shares = table / table.sum(axis=1, keepdims=True)
            effect = (shares[0] - shares[1])[np.argmax(np.abs(shares[0] - shares[1]))]
        else:
            segment, value = f["subject"].split(" = ", 1)
            inside_now = (segment_names(spec, now, segment) == value).to_numpy()
            inside_before = (segment_names(spec, before, segment) == value).to_numpy()
            parts = [y[mask].dropna().to_numpy() for y, mask in (
                (y_now, inside_now), (y_before, inside_before), (y_now, ~inside_now), (y_before, ~inside_before))]
            assert min(len(part) for part in parts) >= spec.insights.min_group_rows, f["subject"]
            a, b, c, d = parts
            effect = a.mean() / b.mean() - c.mean() / d.mean()
            terms = []  # delta method: var(x / z) = (var x + (x / z)^2 var z) / z^2 for the means x now, z before
            for now_part, before_part in ((a, b), (c, d)):
                ratio, base = now_part.mean() / before_part.mean(), before_part.mean() ** 2
                terms += [now_part.var(ddof=1) / len(now_part) / base,
                          ratio ** 2 * before_part.var(ddof=1) / len(before_part) / base]
            df = sum(terms) ** 2 / sum(t * t / (len(part) - 1) for t, part in zip(terms, parts))
            p = 2 * stats.t.sf(abs(effect) / np.sqrt(sum(terms)), df)
        assert math.isclose(f["p_value"], p, rel_tol=1e-6, abs_tol=1e-300), (f["subject"], f["p_value"], p)
        assert math.isclose(f["effect"], effect, rel_tol=1e-9, abs_tol=1e-12), (f["subject"], f["effect"], effect)
        assert f["ci_low"] <= f["effect"] <= f["ci_high"], f["subject"]
        checked += 1
    assert checked, "a second partition compares something with the first"


def headline_sentences(findings: pd.DataFrame) -> list[str]:
    """The sentences the summary leads with: by rank, the first of each family, at most 3."""
    ranked = findings[findings["rank"].notna() & ~findings["kind"].isin(["cluster", "rule"])].sort_values("rank")
    sentences, told = [], set()
    for _, f in ranked.iterrows():
        if family(f) not in told and len(sentences) < 3:
            sentences.append(f["sentence"])
            told.add(family(f))
    return sentences


# ---------------------------------------------------------------------------------------------------- summary

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?%?")


EXPLAIN_SENTENCE = re.compile(r"(No significant change since |Significant changes since |Discovery found |"
                              r"No clear groups |Rules that reproduce |No shallow rules reproduce |Nothing stands out|"
                              r"No other difference|Flags: |"
                              r"\d+ more significant finding)")


def summary_numbers(summary: str, partition, headline=(), cluster_names=()) -> list[str]:
    """The numbers the summary states, without the partition's date and the headline's sentences (each a row of
    the findings table, checked by :func:`check_findings`)."""
    # explain/'s sentences compare with the previous partition, or quote clusters and rules: their figures have
    # their own oracles (tests/plugins/test_explain_*.py); this one checks the partition's own figures.
    for sentence in headline:
        summary = summary.replace(sentence, "")
    text = " ".join(sentence for sentence in re.split(r"(?<=\.)\s+", summary)
                    if not EXPLAIN_SENTENCE.match(sentence))
    for day in (partition.start.date(), (partition.end - dt.timedelta(days=1)).date()):  # "for 2026-11-02"
        text = text.replace(day.isoformat(), "")
    for name in sorted(cluster_names, key=len, reverse=True):  # "3: bamboo, board": the id is a name, no figure
        text = text.replace(name, "")
    return _NUMBER.findall(text)


def numeric_cells(frame: pd.DataFrame) -> list[float]:
    return [float(v) for column in frame.columns for v in frame[column]
            if isinstance(v, int | float | decimal.Decimal) and not isinstance(v, bool) and math.isfinite(float(v))]


def check_summary(spec, partition, summary: str, rows: pd.DataFrame, rejected: int, findings: pd.DataFrame,
                  quality: pd.DataFrame | None = None) -> None:
    """The summary leads with the findings table's top 3 significant sentences (or says nothing stands out), and
    every other number in it is a figure of the tables, as the oracle computes it, rounded as printed.

    ``quality`` (the heads' ``<pipeline>_quality`` rows, checked by their own oracle) adds its numbers, and its
    shares as percentages."""
    figures: list[float] = [len(rows), rejected]
    if "truncated" in rows:
        figures.append(int(rows["truncated"].fillna(False).astype(bool).sum()))
    shares = []
    for name in spec.lm.label_sets:
        column = f"{name}_top_field"
        if column in rows and rows[column].notna().any():
            shares.append(rows[column].dropna().value_counts(normalize=True).max() * 100)
    if quality is not None and len(quality):
        cells = numeric_cells(quality)
        figures += cells
        shares += [c * 100 for c in cells if 0 <= c <= 1] + [(1 - c) * 100 for c in cells if 0 <= c <= 1]
    headline = headline_sentences(findings)
    opening = f"{len(rows)} rows analysed, {rejected} rejected"
    assert opening in summary, summary
    after = summary[summary.index(opening):]
    after = after[after.index(". ") + 2:] if headline else after
    assert after.startswith(" ".join(headline)), (headline, summary)
    if headline:
        ranked = int((findings["rank"].notna() & ~findings["kind"].isin(["cluster", "rule"])).sum())
        assert ("No other difference is larger than chance." in summary) == (ranked == len(headline)), summary
    else:
        assert "Nothing stands out: " in summary, summary
    clusters = rows["cluster_name"].dropna().unique() if "cluster_name" in rows else ()
    numbers = summary_numbers(summary, partition, headline, clusters)
    for token in numbers:
        if token.endswith("%"):
            assert any(f"{s:.0f}%" == token for s in shares) or token == f"{spec.insights.fdr:.0%}", \
                (token, shares, summary)
            continue
        decimals = len(token.split(".")[1]) if "." in token else 0
        printed = {f"{f:.{decimals}f}" for f in figures} | {f"{f:+.{decimals}f}" for f in figures}
        tested = int(findings["p_value"].notna().sum())
        assert token in printed or token.lstrip("+") in printed or token == str(tested), \
            f"{token!r} of the summary is in no table: {summary}"


# ---------------------------------------------------------------------------------------------------- all


def check_partition(source_conninfo: str, sink_conninfo: str, spec, partition,
                    required_drivers: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Every published figure of one partition against the oracles; returns the frames for further checks."""
    source = source_partition(source_conninfo, spec, partition)
    tables = {s: insight_frame(sink_conninfo, spec, s, partition)
              for s in ("rows", "segments", "drivers", "summaries", "rejects", "findings")}
    check_rejects(spec, source, tables["rejects"])
    valid = valid_source_rows(spec, source)
    rows = tables["rows"]
    check_rows(spec, valid, rows)
    check_segments(spec, rows, tables["segments"])
    required = expected_driver_fields(spec, rows) if required_drivers is None else required_drivers
    check_drivers(spec, rows, tables["drivers"], required)
    assert len(tables["summaries"]) == 1
    quality = insight_frame(sink_conninfo, spec, "quality", partition, missing_ok=True)
    check_findings(spec, rows, tables["findings"], tables["drivers"])
    check_summary(spec, partition, tables["summaries"]["summary"].iloc[0], rows, len(tables["rejects"]),
                  tables["findings"], quality)
    return {"source": source, "valid": valid, **tables}
