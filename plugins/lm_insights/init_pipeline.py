"""Propose a pipeline spec from a live table: ``lm-insights init-pipeline NAME --table schema.table``.

The table is read, never changed: its columns and types and its primary key or unique indexes from the catalog,
its partition column from the date/timestamp columns (the one with the most distinct days), and a sample for
everything else. The sample is spread over the table's whole history (up to ``sample_rows / HISTORY_PERIODS`` rows
from each of ``HISTORY_PERIODS`` equal stretches of time, so a sparse year counts as much as a busy one) plus the
rows of its newest ``sample_days`` days. A hash of each row puts it in one of two halves: the *profile* half
proposes expectations, the *check* half measures in SQL the share of rows each proposal would reject. A proposal
that would reject more than ``max_reject_share`` of the check rows is left out, and the file says so.

Every proposal in the written YAML carries the figures it rests on as a comment. Values and names reach the file
only through PyYAML's escaping; comments hold figures and spec names, and a warehouse string (a table name, an
original column name) appears in a comment only as a double-quoted, escaped YAML string, so no value can add a
line, let alone a key. Before the file is written it is parsed back and compared with what was meant.

Python::

    from lm_insights.init_pipeline import init_pipeline
    result = init_pipeline("orders", "host=... dbname=warehouse", "shop.orders", key=["order_id"])
    print(result.path, result.view_sql, result.checks)

Names the spec cannot take (not lowercase identifiers, or names the insight tables use themselves, such as
``text``) are renamed in a generated view ``<schema>.<table>_lm``; its SQL is returned and printed, and only
executed with ``create_view=True`` (``--create-view``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from psycopg import sql

from lm_insights.runtime import db
from lm_insights.spec import DEFAULT_PIPELINES_DIR, IDENTIFIER, RESERVED_COLUMNS, SpecError, load_spec

DATE_TYPES = ("date", "timestamp without time zone", "timestamp with time zone")
NUMERIC_TYPES = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
TEXT_TYPES = ("text", "character varying", "character")
# Types the steps do not carry through COPY and text as they are: left out of source.columns, named in a comment.
LEFT_OUT_TYPES = ("json", "jsonb", "bytea", "xml")
HISTORY_PERIODS = 20  # equal stretches of the partition column's range; the sample takes as many rows from each
MAX_REJECT_SHARE = 0.01  # a proposed row expectation may reject at most this share of the check rows
MAX_CATEGORIES = 20  # a text column with at most this many distinct values in the sample is categorical
MAX_ALLOWED_VALUES = 12  # ... and with at most this many (each seen 3+ times on average) may get an allowed set,
MAX_NEW_VALUE_SHARE = 0.01  # ... when at most this share of the newest third's rows has a value the rest lacks
MIN_RANGE_VALUES = 30  # a range needs at least this many values in the profile half
FREE_TEXT_MIN_LENGTH = 30  # mean length from which a many-valued text column is prose, read last in the template
MAX_TEXT_NUMBERS = 3  # numeric columns named in the text ("key numbers")
RANGE_MARGIN = 0.5  # allowed range = [p1, p99] widened by this share of its width on each side
TIER_QUANTILES = (0.25, 0.5, 0.75)
# Names of money and amount columns: outcomes of a sale or an order, not what drives it (price is a driver).
OUTCOME_NAME_PARTS = ("revenue", "amount", "total", "turnover", "income", "profit", "earnings", "gmv", "spend",
                      "spent", "paid", "payment", "sales")
MIN_RELATION_ROWS = 10  # rows a product or sum relation must hold on before it marks an outcome
RELATION_SHARE = 0.99  # ... and the share of them it must hold on


class InitError(ValueError):
    """The table cannot be turned into a spec as it is; the message says what to pass or change."""


@dataclass
class ColumnProfile:
    name: str  # the name in the spec (after renaming)
    source_name: str  # the name in the table
    type: str
    rows: int = 0
    nulls: int = 0
    distinct: int = 0
    numbers: list[float] = field(default_factory=list, repr=False)  # non-null values of a numeric column
    top_values: list[tuple[str, int]] = field(default_factory=list)  # (value, count) of a categorical column
    new_value_share: float = 0.0  # share of the newest third's values that the older two thirds never had
    mean_length: float = 0.0  # of a text column

    @property
    def kind(self) -> str:
        base = self.type.split("(")[0]
        if base in NUMERIC_TYPES:
            return "numeric"
        if base in DATE_TYPES:
            return "date"
        if base in TEXT_TYPES:
            return "text"
        return "other"

    def quantile(self, q: float) -> float:
        ordered = sorted(self.numbers)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class ExpectationCheck:
    """One row expectation considered for the spec and what it did to the check rows."""

    name: str  # the Great Expectations name, e.g. expect_column_values_to_be_between
    kwargs: dict[str, Any]
    basis: str  # the profile figures it rests on (a comment in the file)
    failing: sql.Composable | None  # SQL that is true for a row the expectation rejects; None: true of none
    rejected: int = 0  # check rows it rejects
    checked: int = 0  # check rows it was run on
    proposed: bool = True
    why_not: str = ""  # why it was left out

    @property
    def label(self) -> str:
        columns = self.kwargs.get("column_list") or [self.kwargs["column"]]
        return f"{self.name}({', '.join(columns)})"

    @property
    def share(self) -> float:
        return self.rejected / self.checked if self.checked else 0.0


@dataclass
class Sample:
    profiles: dict[str, ColumnProfile]  # of the profile half
    rows: list[dict[str, Any]]  # the profile half, oldest first
    query: sql.Composable  # every sampled row with a boolean ``_check``: True for the check half
    profile_rows: int
    check_rows: int


@dataclass
class InitResult:
    path: Path  # the spec file written
    spec_yaml: str
    table: str  # what the spec reads: the table, or the generated view
    view_sql: str | None  # the view to create when a name had to change; None when none is needed
    view_created: bool
    key: list[str]
    key_source: str  # "primary key", "unique index <name>" or "--key"
    partition_column: str
    partition_days: int
    first_day: dt.date | None  # the table's history, as the sample saw it
    last_day: dt.date | None  # the newest day in the table: a partition to try first
    sample_rows: int  # rows profiled
    check_rows: int  # rows the proposed expectations were checked on
    expectations: int  # row and table expectations proposed
    checks: list[ExpectationCheck]  # every row expectation considered, proposed or not
    reject_share: float  # share of the check rows that the proposed row expectations reject together
    text_columns: list[str]
    metrics: list[str]
    outcomes: list[str]
    segments: list[str]


def init_pipeline(name: str, conninfo: str, table: str, *, conn_id: str = "warehouse", key: list[str] | None = None,
                  partition_column: str | None = None, pipelines_dir: str | Path = DEFAULT_PIPELINES_DIR,
                  force: bool = False, create_view: bool = False, sample_days: int = 7,
                  sample_rows: int = 10_000, max_reject_share: float = MAX_REJECT_SHARE,
                  outcomes: list[str] | None = None) -> InitResult:
    """Write ``<pipelines_dir>/<name>.yaml`` proposed from ``table``; return what was decided and why.

    :param name: the pipeline name (dag_id): a lowercase identifier of at most 32 characters.
    :param conninfo: libpq conninfo of the database that holds ``table``.
    :param table: ``schema.table`` or ``table`` (schema ``public``); a view works too.
    :param conn_id: the Airflow connection id the spec's ``source.conn_id`` names.
    :param key: columns that identify a row; default: the primary key, else the narrowest unique index.
    :param partition_column: default: the date/timestamp column with the most distinct days.
    :param force: replace an existing spec file.
    :param create_view: execute the generated view's SQL when a name had to be changed.
    :param sample_days: the newest days sampled on top of the history (``--days``).
    :param sample_rows: rows profiled over the history, and as many again held out for the check (``--sample``).
    :param max_reject_share: a row expectation that rejects more of the check rows is not proposed.
    :param outcomes: metrics to mark as outcomes besides those found (``--outcomes``).
    :raises InitError: the name is taken or invalid, the table is missing, or no key / partition column is found.
    """
    path = Path(pipelines_dir) / f"{name}.yaml"
    if not IDENTIFIER.match(name) or len(name) > 32:
        raise InitError(f"pipeline name {name!r}: use a lowercase identifier (letters, digits, '_') of at most "
                        "32 characters; it becomes the dag_id and the prefix of the insight tables")
    if path.exists() and not force:
        raise InitError(f"{path} exists; pass --force (force=True) to replace it")
    if sample_days < 1 or sample_rows < 2 * HISTORY_PERIODS:
        raise InitError(f"--days must be at least 1 and --sample at least {2 * HISTORY_PERIODS} "
                        f"(got {sample_days}, {sample_rows})")
    schema, _, table_name = table.rpartition(".")
    schema = schema or "public"
    with db.connect(conninfo) as conn:
        types = db.table_columns(conn, schema, table_name)
        if not types:
            raise InitError(f"table {schema}.{table_name} does not exist in {_where(conninfo)} "
                            "(names are case-sensitive: quote nothing, give them as the catalog spells them)")
        left_out = {c: t for c, t in types.items() if t in LEFT_OUT_TYPES or t.endswith("[]")}
        types = {c: t for c, t in types.items() if c not in left_out}
        renames = {column: spec_name(column) for column in types}
        if len(set(renames.values())) != len(renames):
            raise InitError(f"{schema}.{table_name}: two columns map to one spec name {renames}; "
                            "create a view with distinct lowercase names and point --table at it")
        view_sql = None
        read_schema, read_table = schema, table_name
        if any(r != c for c, r in renames.items()) or not (IDENTIFIER.match(schema) and IDENTIFIER.match(table_name)):
            read_schema = schema if IDENTIFIER.match(schema) else "public"
            read_table = f"{spec_name(table_name)[:60]}_lm"
            view_sql = _view_sql(schema, table_name, read_schema, read_table, renames)
        key, key_source = _find_key(conn, schema, table_name, renames, key)
        source = sql.SQL("(select {columns} from {table}) as source").format(
            columns=sql.SQL(", ").join(sql.SQL("{} as {}").format(sql.Identifier(c), sql.Identifier(r))
                                       for c, r in renames.items()),
            table=db.qualified(schema, table_name))
        spec_types = {renames[c]: t for c, t in types.items()}
        partition_column, partition_days, first_day, last_day = _find_partition_column(
            conn, source, spec_types, partition_column)
        sample = _sample(conn, source, spec_types, renames, partition_column, sample_days, sample_rows)
        proposal = _propose(name, conn_id, f"{read_schema}.{read_table}", table, key, key_source, partition_column,
                            partition_days, first_day, last_day, sample_days, sample, view_sql, left_out,
                            outcomes or [])
        proposal.reject_share = _check(conn, sample, proposal.checks, key, key_source, partition_column, source,
                                       max_reject_share)
        if view_sql and create_view:
            conn.execute(view_sql)
    spec_yaml = proposal.render()
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.draft")
    draft.write_text(spec_yaml)
    try:
        load_spec(draft)
    except SpecError as exc:  # a proposal the validator refuses is a bug here, never the user's
        draft.unlink()
        raise RuntimeError(f"init-pipeline proposed an invalid spec for {table}:\n{exc}") from None
    draft.replace(path)
    proposed = [c for c in proposal.checks if c.proposed]
    return InitResult(path=path, spec_yaml=spec_yaml, table=f"{read_schema}.{read_table}", view_sql=view_sql,
                      view_created=bool(view_sql and create_view), key=key, key_source=key_source,
                      partition_column=partition_column, partition_days=partition_days, first_day=first_day,
                      last_day=last_day, sample_rows=sample.profile_rows, check_rows=sample.check_rows,
                      expectations=len(proposed) + 1, checks=proposal.checks,
                      reject_share=proposal.reject_share, text_columns=proposal.doc["text"]["columns"],
                      metrics=proposal.doc["insights"]["metrics"],
                      outcomes=proposal.doc["insights"].get("outcomes", []), segments=proposal.segments)


def spec_name(identifier: str) -> str:
    """The name a spec can take for ``identifier``: lowercase, ``_`` for anything else, never a reserved name."""
    name = re.sub(r"[^a-z0-9_]+", "_", identifier.lower()).strip("_") or "column"
    if name[0].isdigit():
        name = f"c_{name}"
    return f"{name}_value" if name in RESERVED_COLUMNS else name


def _where(conninfo: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return f"database {conninfo_to_dict(conninfo).get('dbname', '?')!r}"


def _view_sql(schema: str, table: str, view_schema: str, view: str, renames: dict[str, str]) -> str:
    columns = ",\n".join(f"    {_quote(c)} as {r}" for c, r in renames.items())
    return (f"-- lm-insights init-pipeline: names a pipeline spec can take\n"
            f"create or replace view {view_schema}.{view} as\nselect\n{columns}\n"
            f"from {_quote(schema)}.{_quote(table)};")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _find_key(conn, schema: str, table: str, renames: dict[str, str],
              given: list[str] | None) -> tuple[list[str], str]:
    if given:
        known = set(renames.values())
        given = [spec_name(c) if c in renames else c for c in given]
        unknown = [c for c in given if c not in known]
        if unknown:
            raise InitError(f"--key {unknown}: not columns of {schema}.{table}; it has {sorted(known)}")
        return given, "--key"
    indexes = conn.execute(
        """
        select i.indisprimary, ic.relname, array_agg(a.attname order by k.ord)
        from pg_index as i
        join pg_class as c on c.oid = i.indrelid
        join pg_namespace as n on n.oid = c.relnamespace
        join pg_class as ic on ic.oid = i.indexrelid
        cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
        join pg_attribute as a on a.attrelid = c.oid and a.attnum = k.attnum
        where n.nspname = %s and c.relname = %s and (i.indisprimary or i.indisunique)
          and i.indpred is null and i.indexprs is null
        group by i.indexrelid, i.indisprimary, ic.relname
        order by i.indisprimary desc, count(*), ic.relname
        """, (schema, table)).fetchall()
    if not indexes:
        raise InitError(f"{schema}.{table} has no primary key or unique index: name the columns that identify a row "
                        f"with --key (e.g. --key {next(iter(renames.values()))}); columns: {sorted(renames.values())}")
    primary, index_name, columns = indexes[0]
    return [renames[c] for c in columns], "primary key" if primary else f"unique index {_shown(index_name)}"


def _find_partition_column(conn, source: sql.Composable, types: dict[str, str],
                           given: str | None) -> tuple[str, int, dt.date | None, dt.date | None]:
    """(column, distinct days, first day, last day) of the partition column."""
    candidates = [c for c, t in types.items() if t.split("(")[0] in DATE_TYPES]
    if given:
        given = spec_name(given) if given not in types else given
        if given not in candidates:
            raise InitError(f"--partition-column {given!r} is not a date or timestamp column; "
                            f"those are {candidates or 'none'}")
        candidates = [given]
    if not candidates:
        raise InitError(f"no date or timestamp column to partition by among {list(types)}: a run reads one day of "
                        "the partition column; create a view with one (e.g. created_at::date as created_day)")
    conn.execute("set time zone 'UTC'")  # the days a run reads are UTC days
    found = []
    for column in candidates:
        days, first, last = conn.execute(sql.SQL(
            "select count(distinct {c}::date), min({c})::date, max({c})::date from {source}").format(
            c=sql.Identifier(column), source=source)).fetchone()
        found.append((days, column, first, last))
    days, column, first, last = max(found, key=lambda f: (f[0], -candidates.index(f[1])))
    return column, days, first, last


# ---------------------------------------------------------------------------------------------- the sample


def _sample_query(source: sql.Composable, columns: list[str], partition_column: str, sample_days: int,
                  sample_rows: int) -> sql.Composable:
    """Every sampled row (its spec columns and ``_check``), oldest first; the same rows on every call.

    Up to ``2 * sample_rows / HISTORY_PERIODS`` rows of each of ``HISTORY_PERIODS`` equal stretches of the
    partition column's range, plus up to ``2 * sample_rows`` rows of the newest ``sample_days`` days. The md5 of a
    row orders the picks and halves them: profile (``_check`` false) and check (``_check`` true).
    """
    part = sql.Identifier(partition_column)
    # Literals, not bound parameters: a column named like "Battery %" would read as a placeholder.
    return sql.SQL(
        "with bounds as (select extract(epoch from min({part})) as low, extract(epoch from max({part})) as high, "
        "max({part}) as newest from {source}), "
        "hashed as (select source.*, md5(source::text) as _hash from {source} where {part} is not null), "
        "ranked as (select hashed.*, "
        "row_number() over (partition by floor({periods} * (extract(epoch from {part}) - low) "
        "/ greatest(high - low, 1)) order by _hash) as _pick, "
        "row_number() over (order by {part} desc, _hash) as _newest, "
        "{part} >= newest - {days} * interval '1 day' as _recent "
        "from hashed cross join bounds) "
        "select {columns}, get_byte(decode(_hash, 'hex'), 15) % 2 = 1 as _check from ranked "
        "where _pick <= {per_period} or (_recent and _newest <= {recent}) order by {part}, _hash"
    ).format(part=part, source=source, periods=sql.Literal(HISTORY_PERIODS), days=sql.Literal(sample_days),
             columns=db.columns_sql(columns), per_period=sql.Literal(math.ceil(2 * sample_rows / HISTORY_PERIODS)),
             recent=sql.Literal(2 * sample_rows))


def _sample(conn, source: sql.Composable, types: dict[str, str], renames: dict[str, str], partition_column: str,
            sample_days: int, sample_rows: int) -> Sample:
    """Profiles of every column over the profile half of the sample."""
    columns = list(types)
    query = _sample_query(source, columns, partition_column, sample_days, sample_rows)
    sampled = conn.execute(query).fetchall()
    rows = [dict(zip(columns, row[:-1])) for row in sampled if not row[-1]]
    check_rows = len(sampled) - len(rows)
    if not rows:
        raise InitError(f"the table has no rows with a {partition_column}: nothing to profile")
    by_spec_name = {r: c for c, r in renames.items()}
    profiles = {column: _profile(column, by_spec_name[column], type_name, [row[column] for row in rows])
                for column, type_name in types.items()}
    return Sample(profiles=profiles, rows=rows, query=query, profile_rows=len(rows), check_rows=check_rows)


def _profile(column: str, source_name: str, type_name: str, values: list) -> ColumnProfile:
    """The profile of one column from its values, oldest row first."""
    present = [v for v in values if v is not None]
    profile = ColumnProfile(column, source_name, type_name, rows=len(values), nulls=len(values) - len(present),
                            distinct=len(set(map(str, present))))
    if profile.kind == "numeric":
        profile.numbers = [float(v) for v in present if math.isfinite(float(v))]
    if profile.kind == "text":
        counts: dict[str, int] = {}
        for v in present:
            counts[v] = counts.get(v, 0) + 1
        profile.top_values = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_CATEGORIES]
        profile.mean_length = statistics.fmean(len(v) for v in present) if present else 0.0
        older, newest = present[:len(present) * 2 // 3], present[len(present) * 2 // 3:]
        seen = set(older)
        profile.new_value_share = sum(v not in seen for v in newest) / len(newest) if newest else 0.0
    return profile


# ---------------------------------------------------------------------------------------------- the check


def _check(conn, sample: Sample, checks: list[ExpectationCheck], key: list[str], key_source: str,
           partition_column: str, source: sql.Composable, max_reject_share: float) -> float:
    """Run every row expectation over the check rows in SQL; leave out those that reject too many.

    :returns: the share of the check rows that the proposed expectations reject together.
    """
    measured = [c for c in checks if c.failing is not None]
    if measured and sample.check_rows:
        flags = conn.execute(sql.SQL("select {} from ({}) as sampled where _check").format(
            sql.SQL(", ").join(sql.SQL("coalesce({}, false)").format(c.failing) for c in measured),
            sample.query)).fetchall()
        for i, check in enumerate(measured):
            check.rejected, check.checked = sum(row[i] for row in flags), len(flags)
    else:
        flags = []
    for check in checks:
        if check.name.endswith("_to_be_unique") and key_source == "--key":
            check.rejected, check.checked = _duplicated_rows(conn, source, key, partition_column)
        if check.checked and check.share > max_reject_share:
            check.proposed, check.why_not = False, f"would reject more than {max_reject_share:.0%}"
    # Together, too: the largest one goes until the rest reject at most the threshold.
    while True:
        kept = [i for i, c in enumerate(measured) if c.proposed]
        together = sum(any(row[i] for i in kept) for row in flags) / len(flags) if flags else 0.0
        if together <= max_reject_share or not kept:
            break
        worst = max(kept, key=lambda i: measured[i].share)
        measured[worst].proposed = False
        measured[worst].why_not = f"left out so that the others together reject at most {max_reject_share:.0%}"
    for check in checks:
        check.basis += (f"; rejects {check.share:.1%} of {check.checked} check rows" if check.checked else "")
    return together


def _duplicated_rows(conn, source: sql.Composable, key: list[str], partition_column: str) -> tuple[int, int]:
    """(rows whose key repeats within their day, rows) over the whole table: a run validates one day."""
    keys = db.columns_sql(key)
    return conn.execute(sql.SQL(
        "select count(*) filter (where n > 1), count(*) from (select count(*) over (partition by {keys}, "
        "{part}::date) as n from {source} where {part} is not null) as t").format(
        keys=keys, part=sql.Identifier(partition_column), source=source)).fetchone()


# ---------------------------------------------------------------------------------------------- the proposal


def _is_identifier_like(profile: ColumnProfile) -> bool:
    return profile.name == "id" or profile.name.endswith("_id")


def _nice(value: float, up: bool) -> float | int:
    """``value`` rounded outward to 2 significant digits (ints stay ints)."""
    if value == 0:
        return 0
    scale = 10 ** (math.floor(math.log10(abs(value))) - 1)
    rounded = (math.ceil if up else math.floor)(value / scale) * scale
    return int(rounded) if scale >= 1 else round(rounded, 10)


def _figure(value: float) -> str:
    return f"{value:.4g}"


def _range(profile: ColumnProfile) -> tuple[float | int, float | int, str]:
    """(min_value, max_value, comment) of the proposed range of a numeric column."""
    p1, p99 = profile.quantile(0.01), profile.quantile(0.99)
    margin = max((p99 - p1) * RANGE_MARGIN, abs(p99) * 0.1, 1.0)
    low, high = _nice(p1 - margin, up=False), _nice(p99 + margin, up=True)
    if p1 >= 0 and low < 0:
        low = 0  # a quantity that is non-negative but for outliers stays non-negative
    comment = (f"profile: min {_figure(min(profile.numbers))}, p1 {_figure(p1)}, median "
               f"{_figure(profile.quantile(0.5))}, p99 {_figure(p99)}, max {_figure(max(profile.numbers))}; "
               f"range = p1..p99 widened by {RANGE_MARGIN:.0%}")
    return low, high, comment


def _tier_edges(profile: ColumnProfile) -> list[float]:
    inner = [_nice(profile.quantile(q), up=False) for q in TIER_QUANTILES]
    low, high = _nice(min(profile.numbers), up=False), _nice(max(profile.numbers), up=True)
    if high <= max(profile.numbers):
        high = _nice(max(profile.numbers) * 1.01 + 1, up=True)  # tiers are [low, high): the maximum must be inside
    edges = sorted({low, *inner, high})
    return [e for e in edges if low <= e <= high]


def _outcome_reasons(numeric: list[ColumnProfile], rows: list[dict[str, Any]], named: list[str]) -> dict[str, str]:
    """``{metric: why it is an outcome}``: named by the user, the product or sum of two others, or a money name."""
    reasons = {column: "named with --outcomes" for column in named}
    for target in numeric:
        if target.name in reasons:
            continue
        for a, b in ((a, b) for i, a in enumerate(numeric) for b in numeric[i + 1:]):
            if target in (a, b):
                continue
            for symbol, combine in (("x", lambda x, y: x * y), ("+", lambda x, y: x + y)):
                held = [math.isclose(float(r[target.name]), combine(float(r[a.name]), float(r[b.name])),
                                     rel_tol=1e-6, abs_tol=0.01)
                        for r in rows if None not in (r[target.name], r[a.name], r[b.name])]
                if len(held) >= MIN_RELATION_ROWS and sum(held) >= RELATION_SHARE * len(held):
                    reasons[target.name] = (f"{target.name} = {a.name} {symbol} {b.name} in {sum(held)} of "
                                            f"{len(held)} profile rows")
                    break
            if target.name in reasons:
                break
        parts = set(target.name.split("_"))
        if target.name not in reasons and parts & set(OUTCOME_NAME_PARTS):
            reasons[target.name] = f"a money or amount name ({sorted(parts & set(OUTCOME_NAME_PARTS))[0]})"
    return reasons


def _shown(name: str) -> str:
    """A warehouse name for a comment or message: as it is when it is an identifier, else quoted and escaped."""
    return name if IDENTIFIER.match(name) else _quoted(name)


def _quoted(text: str) -> str:
    """``text`` as a double-quoted YAML string on one line: every line break and control character escaped."""
    return yaml.safe_dump(text, default_style='"', width=math.inf, allow_unicode=True).rstrip("\n")


PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # strings written unquoted where YAML reads them back as strings


def _yaml(value: Any) -> str:
    """``value`` as one line of YAML, in flow style: scalars as PyYAML writes them, a string plain only when it is
    a simple word that reads back as itself, else double-quoted with every break and control character escaped."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, str):
        return value if PLAIN.fullmatch(value) and yaml.safe_load(value) == value else _quoted(value)
    if isinstance(value, decimal.Decimal):
        value = int(value) if value == value.to_integral_value() else float(value)
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").rstrip("\n")


def _comment(text: str) -> str:
    """A comment's text on one line: any character that is not printable (line breaks, controls) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@dataclass
class Proposal:
    """The spec as data (``doc``), the comments that say why, and the row expectations considered."""

    doc: dict[str, Any]
    header: list[str]
    comments: dict[tuple, str]  # path in doc -> comment at the end of its line
    notes: dict[tuple, list[str]]  # path in doc -> comment lines after it
    checks: list[ExpectationCheck]
    segments: list[str]
    reject_share: float = 0.0  # of the check rows, by the proposed row expectations together

    def render(self) -> str:
        """The YAML file: ``doc`` with its comments; parsed back and compared before it is returned."""
        doc = self.doc
        doc["expectations"]["rows"] = [{c.name: c.kwargs} for c in self.checks if c.proposed]
        comments = dict(self.comments)
        notes = {k: list(v) for k, v in self.notes.items()}
        for i, check in enumerate(c for c in self.checks if c.proposed):
            comments[("expectations", "rows", i)] = check.basis
        notes.setdefault(("expectations", "rows"), []).extend(
            f"not proposed: {c.label} {c.why_not}: {c.basis}" for c in self.checks if not c.proposed)
        lines = [*(f"# {_comment(line)}" for line in self.header), ""]
        _render_mapping(doc, (), 0, comments, notes, lines)
        text = "\n".join(lines) + "\n"
        if yaml.safe_load(text) != doc:
            raise RuntimeError("init-pipeline: the written YAML does not read back as the proposal")
        return text


def _render_mapping(node: dict, path: tuple, indent: int, comments: dict, notes: dict, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in node.items():
        here = (*path, key)
        note = comments.get(here)
        tail = f"   # {_comment(note)}" if note else ""
        if isinstance(value, dict) and value and len(here) == 1:
            lines.append(f"{pad}{key}:{tail}")
            _render_mapping(value, here, indent + 2, comments, notes, lines)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:{tail}")
            for i, item in enumerate(value):
                item_note = comments.get((*here, i))
                lines.append(f"{pad}  - {_yaml(item)[1:-1]}" + (f"   # {_comment(item_note)}" if item_note else ""))
        else:
            lines.append(f"{pad}{key}: {_yaml(value)}{tail}")
        lines.extend(f"{pad}  # {_comment(n)}" for n in notes.get(here, []))
        if len(here) == 1 and isinstance(value, dict):
            lines.append("")


def _propose(name: str, conn_id: str, read_table: str, table: str, key: list[str], key_source: str,
             partition_column: str, partition_days: int, first_day: dt.date | None, last_day: dt.date | None,
             sample_days: int, sample: Sample, view_sql: str | None, left_out: dict[str, str],
             named_outcomes: list[str]) -> Proposal:
    profiles = sample.profiles
    rows = sample.profile_rows
    columns = list(profiles)
    rest = [p for c, p in profiles.items() if c not in key and c != partition_column]
    numeric = [p for p in rest if p.kind == "numeric" and p.numbers and not _is_identifier_like(p)]
    texts = [p for p in rest if p.kind == "text" and p.distinct > 0 and not _is_identifier_like(p)]
    categoricals = [p for p in texts if p.distinct <= MAX_CATEGORIES]
    prose = [p for p in texts if p not in categoricals]
    if not numeric:
        raise InitError(f"{table} has no numeric column besides keys and ids to measure (insights.metrics needs "
                        f"one); create a view that adds one (e.g. a rating, an amount, length(text))")
    unknown = [c for c in named_outcomes if c not in {p.name for p in numeric}]
    if unknown:
        raise InitError(f"--outcomes {unknown}: outcomes must be metrics, the numeric columns "
                        f"{[p.name for p in numeric]}")

    header = [f"Proposed by `lm-insights init-pipeline {name} --table` {_quoted(table)} on {dt.date.today()}.",
              f"Profile: {rows} rows spread over {first_day}..{last_day} ({HISTORY_PERIODS} equal stretches of "
              f"{partition_column}) and the newest {sample_days} days;",
              f"each row expectation was run on {sample.check_rows} other rows of the same spread (the check).",
              "Review every proposal, then commit it. Every field: docs/spec.md."]
    comments: dict[tuple, str] = {}
    notes: dict[tuple, list[str]] = {}
    if view_sql:
        header += ["Some names of the table are not lowercase identifiers, or collide with names of the insight",
                   f"tables: the spec reads the view {read_table} (lm-insights init-pipeline --create-view makes it):",
                   *[f"  {_quoted(p.source_name)} as {p.name}" for p in profiles.values() if p.source_name != p.name]]

    other_dates = [p.name for p in profiles.values() if p.kind == "date" and p.name != partition_column]
    doc: dict[str, Any] = {
        "name": name,
        "description": f"Daily insights on {table}, proposed by lm-insights init-pipeline.",
        "owner": "data-team", "tags": ["generated"], "schedule": "@daily",
        "start_date": first_day or dt.date.today(), "catchup": False, "retries": 2,
        "source": {"conn_id": conn_id, "table": read_table, "key": key, "partition_column": partition_column,
                   "columns": columns},
    }
    comments[("source", "key")] = key_source
    comments[("source", "partition_column")] = (f"{partition_days} distinct days"
                                                + (f"; other date columns: {other_dates}" if other_dates else ""))
    if left_out:
        notes[("source", "columns")] = ["left out (types the steps do not carry as they are): "
                                        + ", ".join(f"{_shown(c)} ({t})" for c, t in left_out.items())]

    checks, unsupported = _row_expectations(profiles, key, key_source, rows, numeric, categoricals)
    notes[("expectations", "rows")] = unsupported
    doc["expectations"] = {"rows": [], "table": [{"expect_table_row_count_to_be_between":
                                                  {"min_value": 1, "max_value": None}}]}
    comments[("expectations", "table", 0)] = "a day without rows fails the run"

    text_numbers = numeric[:MAX_TEXT_NUMBERS]
    in_text = (*categoricals, *text_numbers, *prose)
    doc["text"] = {"template": " ".join(f"{p.name.replace('_', ' ').capitalize()}: {{{p.name}}}." for p in in_text),
                   "columns": [p.name for p in in_text]}
    notes[("text", "columns")] = [
        f"{p.name}: {'categorical' if p in categoricals else 'free text'}, {p.distinct} distinct values, "
        f"mean length {p.mean_length:.0f}, {p.nulls} nulls in {rows} rows" for p in (*categoricals, *prose)]
    doc["lm"] = {"model": "all-MiniLM-L6-v2", "embeddings": True}
    notes[("lm", "embeddings")] = ["label_sets: zero-shot classifications of each row's text (label -> "
                                   "description); see docs/spec.md"]

    main = numeric[0]  # the first number of the table (price before units before revenue) is tiered
    candidates = [p for p in numeric if p is not main] or [main]
    target = max(candidates, key=lambda p: (p.distinct, -numeric.index(p)))  # the most finely measured other one
    metrics = [target.name, *(p.name for p in numeric if p is not target)]
    segments, segment_entries = [], []
    edges = _tier_edges(main)
    if len(edges) >= 3:
        segments.append(f"tiers:{main.name}")
        segment_entries.append(({"by_tiers": {"column": main.name, "edges": edges}},
                                f"quartiles of {len(main.numbers)} values, outer edges from min "
                                f"{_figure(min(main.numbers))} and max {_figure(max(main.numbers))}"))
    for p in categoricals:
        segments.append(f"column:{p.name}")
        segment_entries.append(({"by_column": p.name}, f"{p.distinct} values"))
    if not segments:
        raise InitError(f"{table}: no column to segment by ({main.name} has too few distinct values for tiers and no "
                        f"text column has at most {MAX_CATEGORIES}); add insights.segments by hand")
    outcome_reasons = _outcome_reasons(numeric, sample.rows, named_outcomes)
    doc["insights"] = {"metrics": metrics, "segments": [entry for entry, _ in segment_entries],
                       "target": target.name}
    if outcome_reasons:
        doc["insights"]["outcomes"] = [m for m in metrics if m in outcome_reasons]
        notes[("insights", "outcomes")] = [f"{m}: {outcome_reasons[m]}" for m in doc["insights"]["outcomes"]]
    comments[("insights", "metrics")] = "numeric columns other than keys and *_id"
    comments[("insights", "target")] = (f"the metric with the most distinct values ({target.distinct})"
                                        + (f" besides the tiered {main.name}" if target is not main else ""))
    for i, (_, why) in enumerate(segment_entries):
        comments[("insights", "segments", i)] = why
    doc["sink"] = {"conn_id": conn_id, "schema": "insights"}
    return Proposal(doc=doc, header=header, comments=comments, notes=notes, checks=checks, segments=segments)


def _row_expectations(profiles: dict[str, ColumnProfile], key: list[str], key_source: str, rows: int,
                      numeric: list[ColumnProfile],
                      categoricals: list[ColumnProfile]) -> tuple[list[ExpectationCheck], list[str]]:
    """(every row expectation the profile supports, each with the SQL that finds the rows it rejects; a line for
    each range or allowed set the profile does not support)."""
    checks, unsupported = [], []
    for profile in profiles.values():
        if profile.nulls == 0:
            checks.append(ExpectationCheck("expect_column_values_to_not_be_null", {"column": profile.name},
                                           f"0 nulls in {rows} profile rows",
                                           sql.SQL("{} is null").format(sql.Identifier(profile.name))))
    guaranteed = key_source != "--key"  # a primary key or unique index: no duplicate can exist
    if len(key) == 1:
        checks.append(ExpectationCheck("expect_column_values_to_be_unique", {"column": key[0]},
                                       key_source + ("" if guaranteed else "; duplicates counted per day"), None))
    else:
        checks.append(ExpectationCheck("expect_compound_columns_to_be_unique", {"column_list": key},
                                       key_source + ("" if guaranteed else "; duplicates counted per day"), None))
    for profile in numeric:
        if len(profile.numbers) < MIN_RANGE_VALUES:
            unsupported.append(f"no range for {profile.name}: {len(profile.numbers)} values in the profile, "
                               f"fewer than {MIN_RANGE_VALUES}")
            continue
        low, high, comment = _range(profile)
        checks.append(ExpectationCheck(
            "expect_column_values_to_be_between", {"column": profile.name, "min_value": low, "max_value": high},
            comment, sql.SQL("{c} < {low} or {c} > {high}").format(c=sql.Identifier(profile.name),
                                                                   low=sql.Literal(low), high=sql.Literal(high))))
    for profile in categoricals:
        seen = rows - profile.nulls
        if profile.distinct > MAX_ALLOWED_VALUES or seen < 3 * profile.distinct:
            unsupported.append(f"no allowed values for {profile.name}: {profile.distinct} values in {seen} profile "
                               f"rows (a set needs at most {MAX_ALLOWED_VALUES}, each seen 3 times on average)")
        elif profile.new_value_share > MAX_NEW_VALUE_SHARE:
            unsupported.append(f"no allowed values for {profile.name}: {profile.new_value_share:.0%} of the newest "
                               f"third of the profile rows have a value the older rows lack (new values keep coming)")
        else:
            values = sorted(v for v, _ in profile.top_values)
            counts = ", ".join(str(n) for _, n in profile.top_values[:5])
            checks.append(ExpectationCheck(
                "expect_column_values_to_be_in_set", {"column": profile.name, "value_set": values},
                f"{profile.distinct} values in {seen} profile rows (counts {counts}"
                f"{', ...' if profile.distinct > 5 else ''}); {profile.new_value_share:.0%} of the newest third new",
                sql.SQL("not ({c} = any({values}))").format(c=sql.Identifier(profile.name),
                                                           values=sql.Literal(values))))
    return checks, unsupported
