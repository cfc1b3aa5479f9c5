"""Pipeline specs: one YAML file declares one warehouse table's daily insight pipeline.

A spec is validated by pydantic models with ``extra="forbid"``: an unknown key, a wrong type or a column that
the source does not have raises :class:`SpecError` naming the file and the field path.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
DEFAULT_PIPELINES_DIR = Path(__file__).resolve().parents[2] / "dags" / "pipelines"


class SpecError(ValueError):
    """A pipeline spec is invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    conn_id: str = "warehouse"  # Airflow connection id of the warehouse
    table: str  # "schema.table" or "table"; a view works too
    key: list[str] = Field(min_length=1)  # columns that identify a row
    partition_column: str  # date/timestamp column that the data interval filters on
    columns: list[str] = Field(min_length=1)  # columns to extract; must include key and partition column

    @field_validator("table")
    @classmethod
    def _table_is_identifier(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(IDENTIFIER.match(p) for p in parts):
            raise ValueError(f"{value!r} is not 'schema.table' in lowercase letters, digits and '_'")
        return value

    @model_validator(mode="after")
    def _key_and_partition_are_extracted(self) -> Source:
        for column in [*self.key, self.partition_column]:
            if column not in self.columns:
                raise ValueError(f"{column!r} must be listed in source.columns")
        return self

    @property
    def schema_name(self) -> str:
        return self.table.split(".")[0] if "." in self.table else "public"

    @property
    def table_name(self) -> str:
        return self.table.split(".")[-1]


class Expectations(_Strict):
    # Each entry is {expectation_name: {kwargs}}, e.g. {expect_column_values_to_not_be_null: {column: price}}.
    rows: list[dict[str, dict[str, Any]]] = []  # row-level: failing rows go to <pipeline>_rejects
    table: list[dict[str, dict[str, Any]]] = []  # table-level: a failure fails the run, no retry

    @field_validator("rows", "table")
    @classmethod
    def _one_expectation_per_entry(cls, value: list[dict[str, dict[str, Any]]]) -> list[dict[str, dict[str, Any]]]:
        for i, entry in enumerate(value):
            if len(entry) != 1:
                raise ValueError(f"entry [{i}]: each entry must be one {{expectation_name: {{kwargs}}}}, "
                                 f"got {list(entry)}")
            name = next(iter(entry))
            if not name.startswith("expect_"):
                raise ValueError(f"entry [{i}]: {name!r} is not a Great Expectations expectation name (expect_...)")
        return value


class Text(_Strict):
    # Python format string over the columns, e.g. "Product: {product_name}. Price: {price} yuan."; when None the
    # TabLLM-style default "The <column> is <value>." is used for every column in `columns`.
    template: str | None = None
    columns: list[str] = Field(min_length=1)  # columns that go into the text (and into occlusion attributions)


class LabelSet(_Strict):
    labels: dict[str, str] = Field(min_length=2)  # label -> description that defines it
    min_margin: float = Field(default=0.02, ge=0, le=2)  # below this margin to the runner-up the label is 'uncertain'


class LM(_Strict):
    model: str = "all-MiniLM-L6-v2"  # a name in the lm_engine registry
    embeddings: bool = True  # keep each row's embedding (pgvector) in the result cache
    label_sets: dict[str, LabelSet] = {}  # zero-shot classifications to run on every row
    # Per row, the text column whose removal ("unknown" in its place) lowers the row's label score most:
    # one extra text per text column to encode (the cache shares repeats), so it is opt-in.
    attributions: bool = False
    queue: str = "gpu"  # Celery queue of the infer shards
    pool: str = "lm_gpu"  # Airflow pool of the infer shards (size it to the GPUs)
    shards: int | None = Field(default=None, ge=1, le=64)  # None: from the partition size
    rows_per_shard: int = Field(default=5000, ge=1)  # used to size shards when `shards` is None
    chunk_size: int = Field(default=1000, ge=1)  # rows per streamed chunk in every step

    @field_validator("label_sets")
    @classmethod
    def _label_set_names_are_identifiers(cls, value: dict[str, LabelSet]) -> dict[str, LabelSet]:
        for name in value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"label set name {name!r} is not a lowercase identifier (it names columns)")
        return value


class Tiers(_Strict):
    column: str
    edges: list[float] = Field(min_length=2)  # ascending; tier i is [edges[i], edges[i+1])

    @field_validator("edges")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"edges must be strictly ascending, got {value}")
        return value


class Segment(_Strict):
    by_label: str | None = None  # a label set name from lm.label_sets
    by_tiers: Tiers | None = None  # numeric tiers of a column
    by_column: str | None = None  # each value of a (categorical) column is a segment

    @model_validator(mode="after")
    def _exactly_one(self) -> Segment:
        if sum(kind is not None for kind in (self.by_label, self.by_tiers, self.by_column)) != 1:
            raise ValueError("give exactly one of by_label, by_tiers or by_column")
        return self

    @property
    def name(self) -> str:
        if self.by_label:
            return f"label:{self.by_label}"
        return f"tiers:{self.by_tiers.column}" if self.by_tiers else f"column:{self.by_column}"


class Insights(_Strict):
    metrics: list[str] = Field(min_length=1)  # numeric columns summarised per segment
    segments: list[Segment] = Field(min_length=1)
    target: str | None = None  # metric whose drivers are measured; default: the first metric
    keep_columns: list[str] = []  # source columns copied into <pipeline>_rows (default: key + text columns)


class Sink(_Strict):
    conn_id: str = "warehouse"  # Airflow connection id of the database the insight tables go to
    schema_: str = Field(default="insights", alias="schema")  # schema of the insight tables

    @field_validator("schema_")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a lowercase identifier")
        return value


class PipelineSpec(_Strict):
    _path: Path | None = PrivateAttr(default=None)  # the YAML file it came from, named in errors
    name: str = Field(max_length=32)  # dag_id and prefix of the insight and staging tables (63-character limit)
    description: str = ""  # Markdown shown in the Airflow UI
    owner: str = "data-team"
    tags: list[str] = []
    schedule: str = "@daily"  # cron expression or preset; data intervals are real (CronDataIntervalTimetable)
    start_date: dt.date
    catchup: bool = False
    retries: int = Field(default=2, ge=0)
    source: Source
    expectations: Expectations = Expectations()
    text: Text
    lm: LM = LM()
    insights: Insights
    sink: Sink = Sink()

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a lowercase identifier (letters, digits, '_')")
        return value

    @model_validator(mode="after")
    def _columns_exist(self) -> PipelineSpec:
        known = set(self.source.columns)

        def check(path: str, column: str) -> None:
            if column not in known:
                raise ValueError(f"{path}: column {column!r} is not in source.columns {sorted(known)}")

        for i, column in enumerate(self.text.columns):
            check(f"text.columns[{i}]", column)
        if self.text.template:
            for column in _template_fields(self.text.template):
                check("text.template", column)
        for i, column in enumerate(self.insights.metrics):
            check(f"insights.metrics[{i}]", column)
        for i, column in enumerate(self.insights.keep_columns):
            check(f"insights.keep_columns[{i}]", column)
        if self.insights.target:
            check("insights.target", self.insights.target)
        for i, segment in enumerate(self.insights.segments):
            if segment.by_tiers:
                check(f"insights.segments[{i}].by_tiers.column", segment.by_tiers.column)
            if segment.by_column:
                check(f"insights.segments[{i}].by_column", segment.by_column)
            if segment.by_label and segment.by_label not in self.lm.label_sets:
                raise ValueError(
                    f"insights.segments[{i}].by_label: {segment.by_label!r} is not in lm.label_sets "
                    f"{sorted(self.lm.label_sets)}"
                )
        for kind in ("rows", "table"):
            for i, entry in enumerate(getattr(self.expectations, kind)):
                kwargs = next(iter(entry.values()))
                for arg in ("column", "column_A", "column_B"):
                    if arg in kwargs:
                        check(f"expectations.{kind}[{i}].{arg}", kwargs[arg])
                for j, column in enumerate(kwargs.get("column_list", [])):
                    check(f"expectations.{kind}[{i}].column_list[{j}]", column)
        return self

    @property
    def origin(self) -> str:
        """Where the spec came from, for error messages: its file, or its name when built in code."""
        return str(self._path) if self._path else self.name

    @property
    def target(self) -> str:
        return self.insights.target or self.insights.metrics[0]

    @property
    def row_columns(self) -> list[str]:
        """Source columns copied into ``<pipeline>_rows``, in a stable order without repeats."""
        segment_columns = [s.by_column for s in self.insights.segments if s.by_column]
        wanted = [*self.source.key, self.source.partition_column, *self.insights.keep_columns,
                  *self.text.columns, *self.insights.metrics, *segment_columns]
        return list(dict.fromkeys(wanted))


def _template_fields(template: str) -> list[str]:
    """The column names a format string reads (``{price:.2f}`` -> price; ``{{`` is a literal brace)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"text.template: {exc} in {template!r}") from None
    fields = []
    for _, field, _, _ in parsed:
        if field is not None:
            name = re.split(r"[.\[]", field, maxsplit=1)[0]
            if not name or name.isdigit():
                raise ValueError(f"text.template: placeholders name a column, e.g. {{price}}; got {{{field}}}")
            fields.append(name)
    return fields


def _format_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid pipeline spec"]
    for item in error.errors():
        # list positions as [i], like the paths the validators above write: insights.segments[0].by_tiers.edges
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"]).lstrip(".")
        message = item["msg"].removeprefix("Value error, ")
        # Cross-field checks already start with the field they are about (text.columns[1]: ...).
        lines.append(f"  {field}: {message}" if field else f"  {message}")
    return "\n".join(lines)


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate one spec file; raise :class:`SpecError` naming the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a pipeline spec is a YAML mapping, got {type(raw).__name__}")
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_error(path, exc)) from None
    spec._path = path
    return spec


def load_specs(directory: str | Path = DEFAULT_PIPELINES_DIR) -> list[PipelineSpec]:
    """All specs of a directory (``*.yaml``), sorted by name; two specs with one name is an error."""
    specs = [load_spec(p) for p in sorted(Path(directory).glob("*.yaml"))]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{directory}: pipeline names used twice: {duplicates}")
    return sorted(specs, key=lambda s: s.name)
