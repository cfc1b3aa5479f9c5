"""Propose a pipeline spec from a live table: ``lm-insights init-pipeline NAME --table schema.table``.

The table is read, never changed: its columns and types and its primary key or unique indexes from the catalog,
its partition column from the date/timestamp columns (the one with the most distinct days), and a profile of a
recent sample (the rows of its last ``sample_days`` days, at most ``sample_rows``) for everything else. Every
proposal in the written YAML carries the figures it rests on as a comment, so a reviewer can judge it.

Python::

    from lm_insights.init_pipeline import init_pipeline
    result = init_pipeline("orders", "host=... dbname=warehouse", "shop.orders", key=["order_id"])
    print(result.path, result.view_sql)

Names the spec cannot take (not lowercase identifiers, or names the insight tables use themselves, such as
``text``) are renamed in a generated view ``<schema>.<table>_lm``; its SQL is returned and printed, and only
executed with ``create_view=True`` (``--create-view``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from psycopg import sql

from lm_insights.runtime import db
from lm_insights.spec import DEFAULT_PIPELINES_DIR, IDENTIFIER, RESERVED_COLUMNS, SpecError, load_spec

DATE_TYPES = ("date", "timestamp without time zone", "timestamp with time zone")
NUMERIC_TYPES = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
TEXT_TYPES = ("text", "character varying", "character")
# Types the steps do not carry through COPY and text as they are: left out of source.columns, named in a comment.
LEFT_OUT_TYPES = ("json", "jsonb", "bytea", "xml")
MAX_CATEGORIES = 20  # a text column with at most this many distinct values in the sample is categorical
MAX_ALLOWED_VALUES = 12  # ... and with at most this many (each seen 3+ times on average) it gets an allowed set
FREE_TEXT_MIN_LENGTH = 30  # mean length from which a many-valued text column is prose, read last in the template
MAX_TEXT_NUMBERS = 3  # numeric columns named in the text ("key numbers")
RANGE_MARGIN = 0.5  # allowed range = [p1, p99] widened by this share of its width on each side
TIER_QUANTILES = (0.25, 0.5, 0.75)


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
    sample_rows: int
    expectations: int
    text_columns: list[str]
    metrics: list[str]
    segments: list[str]
    last_day: dt.date | None  # the newest day in the table: a partition to try first


def init_pipeline(name: str, conninfo: str, table: str, *, conn_id: str = "warehouse", key: list[str] | None = None,
                  partition_column: str | None = None, pipelines_dir: str | Path = DEFAULT_PIPELINES_DIR,
                  force: bool = False, create_view: bool = False, sample_days: int = 7,
                  sample_rows: int = 10_000) -> InitResult:
    """Write ``<pipelines_dir>/<name>.yaml`` proposed from ``table``; return what was decided and why.

    :param name: the pipeline name (dag_id): a lowercase identifier of at most 32 characters.
    :param conninfo: libpq conninfo of the database that holds ``table``.
    :param table: ``schema.table`` or ``table`` (schema ``public``); a view works too.
    :param conn_id: the Airflow connection id the spec's ``source.conn_id`` names.
    :param key: columns that identify a row; default: the primary key, else the narrowest unique index.
    :param partition_column: default: the date/timestamp column with the most distinct days.
    :param force: replace an existing spec file.
    :param create_view: execute the generated view's SQL when a name had to be changed.
    :raises InitError: the name is taken or invalid, the table is missing, or no key / partition column is found.
    """
    path = Path(pipelines_dir) / f"{name}.yaml"
    if not IDENTIFIER.match(name) or len(name) > 32:
        raise InitError(f"pipeline name {name!r}: use a lowercase identifier (letters, digits, '_') of at most "
                        "32 characters; it becomes the dag_id and the prefix of the insight tables")
    if path.exists() and not force:
        raise InitError(f"{path} exists; pass --force (force=True) to replace it")
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
        profiles = _profile(conn, source, spec_types, renames, partition_column, sample_days, sample_rows)
        if view_sql and create_view:
            conn.execute(view_sql)
    proposal = _propose(name, conn_id, f"{read_schema}.{read_table}", table, key, key_source, partition_column,
                        partition_days, first_day, profiles, view_sql, left_out)
    spec_yaml = proposal.pop("yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.draft")
    draft.write_text(spec_yaml)
    try:
        load_spec(draft)
    except SpecError as exc:  # a proposal the validator refuses is a bug here, never the user's
        draft.unlink()
        raise RuntimeError(f"init-pipeline proposed an invalid spec for {table}:\n{exc}") from None
    draft.replace(path)
    return InitResult(path=path, spec_yaml=spec_yaml, table=f"{read_schema}.{read_table}", view_sql=view_sql,
                      view_created=bool(view_sql and create_view), key=key, key_source=key_source,
                      partition_column=partition_column, partition_days=partition_days,
                      sample_rows=profiles[partition_column].rows, last_day=last_day, **proposal)


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
    return [renames[c] for c in columns], "primary key" if primary else f"unique index {index_name}"


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


def _profile(conn, source: sql.Composable, types: dict[str, str], renames: dict[str, str], partition_column: str,
             sample_days: int, sample_rows: int) -> dict[str, ColumnProfile]:
    """Profiles of every column over the rows of the last ``sample_days`` days (at most ``sample_rows``)."""
    part = sql.Identifier(partition_column)
    # Literals, not bound parameters: a column named like "Battery %" would read as a placeholder.
    query = sql.SQL(
        "select * from {source} where {part} >= (select max({part}) from {source}) - {days} * interval '1 day' "
        "order by {part} desc limit {limit}").format(source=source, part=part, days=sql.Literal(sample_days),
                                                     limit=sql.Literal(sample_rows))
    rows = conn.execute(query).fetchall()
    by_spec_name = {r: c for c, r in renames.items()}
    profiles = {}
    for i, (column, type_name) in enumerate(types.items()):
        values = [row[i] for row in rows]
        present = [v for v in values if v is not None]
        profile = ColumnProfile(column, by_spec_name[column], type_name, rows=len(values),
                                nulls=len(values) - len(present), distinct=len({_hashable(v) for v in present}))
        if profile.kind == "numeric":
            profile.numbers = [float(v) for v in present if not (isinstance(v, float) and math.isnan(v))]
        if profile.kind == "text":
            counts: dict[str, int] = {}
            for v in present:
                counts[v] = counts.get(v, 0) + 1
            profile.top_values = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_CATEGORIES]
            profile.mean_length = statistics.fmean(len(v) for v in present) if present else 0.0
        profiles[column] = profile
    if not rows:
        raise InitError(f"the table has no rows with a {partition_column}: nothing to profile")
    return profiles


def _hashable(value):
    return json.dumps(value, default=str, sort_keys=True) if isinstance(value, (dict, list)) else value


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
    comment = (f"sample: min {_figure(min(profile.numbers))}, p1 {_figure(p1)}, median "
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


def _flow(value) -> str:
    """``value`` as one line of YAML (plain where that reads back as the same value, else JSON-quoted)."""
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z_][\w.\-]*", value) and yaml.safe_load(value) == value
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and "e" in repr(value):
        return f"{value:f}"  # YAML 1.1 reads 1e-05 as a string
    if isinstance(value, decimal.Decimal):
        return f"{value:f}"
    return json.dumps(value)


def _propose(name: str, conn_id: str, read_table: str, table: str, key: list[str], key_source: str,
             partition_column: str, partition_days: int, first_day: dt.date | None,
             profiles: dict[str, ColumnProfile], view_sql: str | None, left_out: dict[str, str]) -> dict:
    sample = profiles[partition_column].rows
    columns = list(profiles)
    rest = [p for c, p in profiles.items() if c not in key and c != partition_column]
    numeric = [p for p in rest if p.kind == "numeric" and p.numbers and not _is_identifier_like(p)]
    texts = [p for p in rest if p.kind == "text" and p.distinct > 0 and not _is_identifier_like(p)]
    categoricals = [p for p in texts if p.distinct <= MAX_CATEGORIES]
    prose = [p for p in texts if p not in categoricals]
    if not numeric:
        raise InitError(f"{table} has no numeric column besides keys and ids to measure (insights.metrics needs "
                        f"one); create a view that adds one (e.g. a rating, an amount, length(text))")

    other_dates = [p.name for p in profiles.values() if p.kind == "date" and p.name != partition_column]
    lines = [f"# Proposed by `lm-insights init-pipeline {name} --table {table}` on {dt.date.today()} from a profile",
             f"# of {sample} recent rows (the last days of {partition_column}). Review every proposal, then commit it.",
             "# Validated by lm_insights.spec.PipelineSpec; the README's \"Add a pipeline\" lists every field."]
    if view_sql:
        lines += ["# Some names of the table are not lowercase identifiers, or collide with names of the insight",
                  f"# tables: the spec reads the view {read_table} (lm-insights init-pipeline --create-view makes it):",
                  *[f"#   {line}" for line in view_sql.splitlines()]]
    lines += [f"name: {name}", "description: |", f"  ### {name}", "",
              f"  Daily insights on `{table}`, proposed by `lm-insights init-pipeline`.",
              "owner: data-team", "tags: [generated]", 'schedule: "@daily"',
              f"start_date: {first_day or dt.date.today()}", "catchup: false", "retries: 2", "",
              "source:", f"  conn_id: {_flow(conn_id)}", f"  table: {read_table}",
              f"  key: {_flow(key)}   # {key_source}",
              f"  partition_column: {partition_column}   # {partition_days} distinct days"
              + (f"; other date columns: {other_dates}" if other_dates else ""),
              f"  columns: {_flow(columns)}"]
    if left_out:
        lines.append("  # left out (types the steps do not carry as they are): "
                     + ", ".join(f"{c} ({t})" for c, t in left_out.items()))
    lines += ["", "expectations:", "  rows:"]
    expectations = 0

    def expect(name_: str, kwargs: dict, comment: str) -> None:
        nonlocal expectations
        expectations += 1
        lines.append(f"    - {name_}: {_flow(kwargs)}   # {comment}")

    for profile in profiles.values():
        if profile.nulls == 0:
            expect("expect_column_values_to_not_be_null", {"column": profile.name}, f"0 nulls in {sample} rows")
    if len(key) == 1:
        duplicates = sample - profiles[key[0]].nulls - profiles[key[0]].distinct
        expect("expect_column_values_to_be_unique", {"column": key[0]},
               f"{key_source}; {duplicates} duplicates in the sample")
    else:
        expect("expect_compound_columns_to_be_unique", {"column_list": key}, key_source)
    for profile in numeric:
        low, high, comment = _range(profile)
        expect("expect_column_values_to_be_between",
               {"column": profile.name, "min_value": low, "max_value": high}, comment)
    for profile in categoricals:
        if profile.distinct <= MAX_ALLOWED_VALUES and sample - profile.nulls >= 3 * profile.distinct:
            shown = ", ".join(f"{v} {n}" for v, n in profile.top_values[:5])
            expect("expect_column_values_to_be_in_set",
                   {"column": profile.name, "value_set": sorted(v for v, _ in profile.top_values)},
                   f"{profile.distinct} values in the sample ({shown}{', ...' if profile.distinct > 5 else ''})")
    lines += ["  table:", "    - expect_table_row_count_to_be_between: {min_value: 1, max_value: null}"
              "   # a day without rows fails the run"]

    text_numbers = numeric[:MAX_TEXT_NUMBERS]
    text_columns = [p.name for p in (*categoricals, *text_numbers, *prose)]
    template = " ".join(f"{p.name.replace('_', ' ').capitalize()}: {{{p.name}}}." for p in
                        (*categoricals, *text_numbers, *prose))
    lines += ["", "text:", f"  template: {json.dumps(template, ensure_ascii=False)}",
              f"  columns: {_flow(text_columns)}"]
    for p in (*categoricals, *prose):
        role = "categorical" if p in categoricals else "free text"
        lines.append(f"  # {p.name}: {role}, {p.distinct} distinct values, mean length {p.mean_length:.0f}, "
                     f"{p.nulls} nulls in {sample} rows")

    lines += ["", "lm:", "  model: all-MiniLM-L6-v2", "  embeddings: true",
              "  # label_sets: zero-shot classifications of each row's text (label -> description); see the README"]

    main = numeric[0]  # the first number of the table (price before units before revenue) is tiered
    outcomes = [p for p in numeric if p is not main] or [main]
    target = max(outcomes, key=lambda p: (p.distinct, -numeric.index(p)))  # the most finely measured other one
    metrics = [target.name, *(p.name for p in numeric if p is not target)]
    segments, segment_lines = [], []
    edges = _tier_edges(main)
    if len(edges) >= 3:
        segments.append(f"tiers:{main.name}")
        segment_lines.append(f"    - by_tiers: {{column: {main.name}, edges: {_flow(edges)}}}   # quartiles of "
                             f"{len(main.numbers)} values, outer edges from min {_figure(min(main.numbers))} "
                             f"and max {_figure(max(main.numbers))}")
    for p in categoricals:
        segments.append(f"column:{p.name}")
        segment_lines.append(f"    - by_column: {p.name}   # {p.distinct} values")
    if not segments:
        raise InitError(f"{table}: no column to segment by ({main.name} has too few distinct values for tiers and no "
                        f"text column has at most {MAX_CATEGORIES}); add insights.segments by hand")
    lines += ["", "insights:", f"  metrics: {_flow(metrics)}   # numeric columns other than keys and *_id",
              "  segments:", *segment_lines,
              f"  target: {target.name}   # the metric with the most distinct values ({target.distinct})"
              + (f" besides the tiered {main.name}" if target is not main else ""), "",
              "sink:", f"  conn_id: {_flow(conn_id)}", "  schema: insights", ""]
    return {"yaml": "\n".join(lines), "expectations": expectations + 1, "text_columns": text_columns,
            "metrics": metrics, "segments": segments}
