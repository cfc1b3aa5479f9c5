"""Pipeline specs: one YAML file declares one warehouse table's daily insight pipeline.

A spec is validated by pydantic models with ``extra="forbid"``: an unknown key, a wrong type or a column that
the source does not have raises :class:`SpecError` naming the file and the field path.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# Columns the platform adds next to the source columns in the staging tables and <pipeline>_rows.
RESERVED_COLUMNS = ("_row_number", "text", "text_sha256", "n_tokens", "truncated", "partition_start", "partition_end",
                    "cluster", "cluster_name",  # discovery (explain/clusters.py)
                    "quality_flags", "ambiguous", "ood_score", "ood",  # per-row flags (guard/flags.py)
                    "toxicity", "inconsistency")  # guard/toxicity.py, guard/inconsistent.py
# ... and per label set <set>_<suffix>, e.g. sentiment_label,
LABEL_SET_COLUMN_SUFFIXES = ("label", "score", "margin", "entropy", "top_field", "top_effect")
# ... and per learned head <head>_<suffix> (learn/heads.py), e.g. learned_sentiment_probability.
HEAD_COLUMN_SUFFIXES = {"classification": ("label", "probability", "margin", "entropy"),
                        "regression": ("prediction", "prediction_low", "prediction_high")}
# A pipeline's tables are <name>_<table>, its held partitions wait in <name>_quarantine_<table>: a pipeline named
# x_quarantine would share x's. Names may not end so, nor hold "__" (it separates the name in staging tables and
# in the <name>__train DAG).
RESERVED_NAME_ENDINGS = ("_quarantine",)
RESERVED_LABELS = ("uncertain", "unknown")  # written by the platform: below min_margin / NULL segment value
DEFAULT_PIPELINES_DIR = Path(__file__).resolve().parents[2] / "dags" / "pipelines"


class SpecError(ValueError):
    """A pipeline spec is invalid; the message names the file and the field."""


class TemplateError(ValueError):
    """A text template is malformed, or a row's value does not fit its placeholder (deterministic: no retry)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    conn_id: str = "warehouse"  # Airflow connection id of the warehouse
    table: str  # "schema.table" or "table"; a view works too
    key: list[str] = Field(min_length=1)  # columns that identify a row
    partition_column: str  # date/timestamp column that the data interval filters on
    columns: list[str] = Field(min_length=1)  # columns to extract; must include key and partition column

    @model_validator(mode="after")
    def _plain_identifiers(self) -> Source:
        """Mixed-case, spaced or non-ASCII names are refused with the view that aliases them."""
        parts = self.table.split(".")
        odd_columns = [c for c in dict.fromkeys([*self.columns, *self.key, self.partition_column])
                       if not IDENTIFIER.match(c)]
        if len(parts) <= 2 and all(IDENTIFIER.match(p) for p in parts) and not odd_columns:
            return self
        raise ValueError(odd_identifiers_message(self.table, self.columns, odd_columns))

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
    # Python format string over the columns, e.g. "Product: {product_name}. Price: {price:.2f} yuan." ({price}
    # writes the value in full; a format spec formats the raw value, NULL reads "unknown"); when None the
    # TabLLM-style default "The <column> is <value>." is used for every column in `columns`.
    template: str | None = None
    columns: list[str] = Field(min_length=1)  # columns that go into the text (and into occlusion attributions)


class LabelSet(_Strict):
    labels: dict[str, str] = Field(min_length=2)  # label -> description that defines it
    min_margin: float = Field(default=0.02, ge=0, le=2)  # below this margin to the runner-up the label is 'uncertain'

    @field_validator("labels")
    @classmethod
    def _labels_are_not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        for label in value:
            if label.strip().lower() in RESERVED_LABELS:
                raise ValueError(f"label {label!r} is reserved: the platform writes {RESERVED_LABELS} itself "
                                 "(below min_margin, missing value); rename it")
        return value


class Head(_Strict):
    """A model trained on the warehouse's own outcomes (``lm.heads``): see docs/heads.md."""

    task: Literal["classification", "regression"]
    target: str  # source column holding the known outcome of past rows; never part of the text (leakage)
    # classification: class -> the target values it covers, e.g. {negative: [1, 2], neutral: [3], positive: [4, 5]};
    # without it every distinct target value is its own class.
    classes: dict[str, list[str | int | float | bool]] | None = None
    zero_shot: str | None = None  # a label set with the same labels: the zero-shot reference to beat
    method: Literal["linear", "finetune"] = "linear"  # linear: on cached embeddings; finetune: encoder + head
    train_window_days: int = Field(default=365, ge=1)  # labelled rows of the last N days train and evaluate
    # the latest share of the window that the rolling-origin backtest predicts (each fold trained on older rows)
    evaluation_share: float = Field(default=0.5, gt=0, lt=1)
    # The one objective that picks hyper-parameters, the abstention threshold and promotion: accuracy | macro_f1 |
    # balanced_accuracy for classification (default accuracy), mae for regression (the default).
    metric: Literal["accuracy", "macro_f1", "balanced_accuracy", "mae"] | None = None
    min_precision: float | None = Field(default=None, gt=0, le=1)  # classification: abstain below (default 0.8)
    interval: float = Field(default=0.9, gt=0, lt=1)  # regression: coverage of the prediction interval
    epochs: int = Field(default=3, ge=1, le=100)  # finetune
    learning_rate: float = Field(default=2e-5, gt=0, le=1)  # finetune
    min_rows: int = Field(default=50, ge=10)  # fewer labelled rows in the window: training refuses
    # classification: leave out of training the rows whose recorded class confident learning calls a label error
    # (out-of-fold probabilities on the training rows; guard/inconsistent.py); the card says how many
    exclude_inconsistent: bool = False

    @model_validator(mode="after")
    def _fields_fit_the_task(self) -> Head:
        if self.task == "regression":
            for name in ("classes", "zero_shot", "min_precision"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is for classification heads; this head's task is regression")
        if (self.metric == "mae") != (self.task == "regression") and self.metric is not None:
            raise ValueError(f"metric {self.metric!r} does not fit a {self.task} head: use "
                             + ("mae" if self.task == "regression" else "accuracy, macro_f1 or balanced_accuracy"))
        if self.classes is not None:
            if len(self.classes) < 2:
                raise ValueError(f"classes: give at least two classes, got {list(self.classes)}")
            seen: dict[str, str] = {}
            for label, values in self.classes.items():
                if not values:
                    raise ValueError(f"classes.{label}: list the target values of this class")
                for value in values:
                    if str(value) in seen:
                        raise ValueError(f"classes: target value {value!r} is in both {seen[str(value)]!r} and "
                                         f"{label!r}")
                    seen[str(value)] = label
        return self

    @property
    def objective(self) -> str:
        """The metric the head is selected, calibrated and promoted by."""
        return self.metric or ("accuracy" if self.task == "classification" else "mae")

    @property
    def precision_target(self) -> float | None:
        """The precision a published label must reach on the evaluation set (classification)."""
        if self.task != "classification":
            return None
        return self.min_precision if self.min_precision is not None else 0.8


class LM(_Strict):
    model: str = "all-MiniLM-L6-v2"  # a name in the lm_engine registry
    # Numeric precision of the encoder, part of the result-cache key (the vectors differ): fp32 gives the same
    # vectors on every worker; bf16 halves GPU memory traffic and is the fastest CPU path where the CPU has AMX
    # (slow without); int8 is CPU only, vectors within cosine 0.99 of fp32 (trade-offs: docs/performance.md).
    precision: Literal["fp32", "bf16", "int8"] = "fp32"
    embeddings: bool = True  # keep each row's embedding (pgvector) in the result cache
    label_sets: dict[str, LabelSet] = {}  # zero-shot classifications to run on every row
    heads: dict[str, Head] = {}  # models trained on the warehouse's outcomes (lm-insights train / <name>__train)
    # Per row, the text column whose removal ("unknown" in its place) lowers the row's label score most:
    # one extra text per text column to encode (the cache shares repeats), so it is opt-in.
    attributions: bool = False
    queue: str = "gpu"  # Celery queue of the infer shards
    pool: str = "lm_gpu"  # Airflow pool of the infer shards (size it to the GPUs)
    shards: int | None = Field(default=None, ge=1, le=64)  # None: from the partition size
    rows_per_shard: int = Field(default=5000, ge=1)  # used to size shards when `shards` is None
    chunk_size: int = Field(default=1000, ge=1)  # rows per streamed chunk in every step

    @field_validator("label_sets", "heads")
    @classmethod
    def _label_set_names_are_identifiers(cls, value: dict) -> dict:
        for name in value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"name {name!r} is not a lowercase identifier (it names columns)")
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
    by_label: str | None = None  # a label set name from lm.label_sets, or a classification head from lm.heads
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


class MinEffect(_Strict):
    """The smallest effects worth telling (docs/findings.md); smaller ones are never significant."""
    variance_share: float = Field(default=0.01, ge=0, lt=1)  # r², omega² ... of a driver, split or label mix
    relative_difference: float = Field(default=0.05, ge=0)  # |mean / other mean - 1| of a segment or a change
    proportion_difference: float = Field(default=0.05, ge=0, lt=1)  # a label's share moved by this much


class Insights(_Strict):
    metrics: list[str] = Field(min_length=1)  # numeric columns summarised per segment
    segments: list[Segment] = Field(min_length=1)
    target: str | None = None  # metric whose drivers are measured; default: the first metric
    outcomes: list[str] = []  # metrics that are outcomes (revenue = price x units), never candidate drivers
    keep_columns: list[str] = []  # source columns copied into <pipeline>_rows (default: key + text columns)
    # A NaN or +-Infinity in a metric or tier column: "reject" puts the row in <pipeline>_rejects with the reason;
    # "exclude" keeps the row and leaves the value out of every statistic (as a NULL would be).
    non_finite: Literal["reject", "exclude"] = "reject"
    fdr: float = Field(default=0.05, gt=0, lt=1)  # false discovery rate over everything a partition tests
    min_effect: MinEffect = MinEffect()
    min_group_rows: int = Field(default=10, ge=2)  # a group with fewer rows is not tested nor named

    @model_validator(mode="after")
    def _outcomes_are_metrics(self) -> Insights:
        for i, column in enumerate(self.outcomes):
            if column not in self.metrics:
                raise ValueError(f"outcomes[{i}]: {column!r} is not one of insights.metrics {self.metrics}")
        return self

    @property
    def number_columns(self) -> list[str]:
        """The columns statistics are computed on: metrics, the target and tier columns, without repeats."""
        tiers = [s.by_tiers.column for s in self.segments if s.by_tiers]
        return list(dict.fromkeys([*self.metrics, *([self.target] if self.target else []), *tiers]))


GuardAction = Literal["warn", "fail", "quarantine"]  # load and flag / load nothing, no retry / hold for release


class LabelMixGate(_Strict):
    action: GuardAction = "warn"
    psi: float = Field(default=0.2, gt=0)  # population stability index above which a label mix has moved
    p_value: float = Field(default=0.01, gt=0, lt=1)  # ... and the chi-square test must call it significant


class MetricDriftGate(_Strict):
    action: GuardAction = "warn"
    effect_size: float = Field(default=0.5, gt=0)  # |mean shift| in reference standard deviations, per segment
    p_value: float = Field(default=0.01, gt=0, lt=1)  # ... and Welch's t-test must call it significant


class EmbeddingDriftGate(_Strict):
    action: GuardAction = "warn"
    roc_auc: float = Field(default=0.55, gt=0.5, le=1)  # a classifier tells current from reference rows this well
    p_value: float = Field(default=0.01, gt=0, lt=1)  # ... and its out-of-fold scores differ significantly


class Toxicity(_Strict):
    """Toxic language per row: ``toxicity`` (alt-profanity-check's probability on the text columns) and the
    quality flag ``toxic`` at or above ``threshold`` (docs/guards.md)."""
    threshold: float = Field(default=0.5, gt=0, lt=1)  # 0.5: the library's own decision (its published figures)
    # flag: load and flag; exclude_from_findings: load and flag, never a cluster's representative row, a quoted
    # word explanation or a row a rule is fitted on; reject: into <pipeline>_rejects with the score as reason
    action: Literal["flag", "exclude_from_findings", "reject"] = "flag"
    # the columns whose text is scored; default: the text-typed text.columns. Leave out names and categories: short
    # catalogue text scores high by mistake ("Wool Socks" 0.57)
    columns: list[str] | None = Field(default=None, min_length=1)


class FlagShareGate(_Strict):
    """The shares of ``toxic`` and ``inconsistent`` rows against the reference window's."""
    action: GuardAction = "warn"
    increase: float = Field(default=0.05, gt=0, le=1)  # the share rose by more than this (absolute) ...
    p_value: float = Field(default=0.01, gt=0, lt=1)  # ... and a one-sided Fisher exact test calls it significant


class PredictionRange(_Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> PredictionRange:
        if not self.min < self.max:
            raise ValueError(f"min {self.min:g} must be below max {self.max:g}")
        return self


class OutputExpectations(_Strict):
    """Great Expectations on the model's outputs in the staged rows: every label within its label set or head
    classes (or ``uncertain``), every score, margin, probability and entropy within range, every regression
    prediction within its range, and the shares below."""
    action: GuardAction = "warn"
    max_uncertain_share: float = Field(default=0.5, ge=0, le=1)  # per label set: rows labelled `uncertain`
    max_ood_share: float = Field(default=0.2, ge=0, le=1)  # rows flagged out of distribution
    # regression head -> the range its predictions must lie in; a head not listed gets the range its promoted
    # version's training targets span, widened by 10% of that span on each side (recorded in its card)
    prediction_ranges: dict[str, PredictionRange] = {}


class Guard(_Strict):
    """Per-row flags, output expectations and drift gates (see docs/guards.md)."""
    window_days: int = Field(default=7, ge=1, le=366)  # the reference: loaded rows of the days before the partition
    min_reference_rows: int = Field(default=30, ge=10)  # fewer: the gates are recorded as skipped
    max_sample_rows: int = Field(default=1000, ge=50)  # per side, for the embedding domain classifier
    min_text_chars: int = Field(default=5, ge=1)  # fewer characters left after cleaning: flag too_short
    ood_quantile: float = Field(default=0.99, gt=0.5, lt=1)  # of the reference's own nearest-neighbour distances
    # A row is ambiguous when a label set's or classification head's label distribution has a normalized entropy
    # (0: one label certain, 1: all equally likely) above this: 0.95 is a 64/36 split of two labels, or three
    # labels whose best holds about half (0.5/0.25/0.25 gives 0.946). See docs/guards.md.
    max_entropy: float = Field(default=0.95, gt=0, le=1)
    label_mix: LabelMixGate | None = LabelMixGate()  # null switches a gate off
    metric_drift: MetricDriftGate | None = MetricDriftGate()
    embedding_drift: EmbeddingDriftGate | None = EmbeddingDriftGate()
    flag_share: FlagShareGate | None = FlagShareGate()
    # Off unless set: a score for text people write (reviews, notes), not for catalogue names ("Wool Socks (3 pairs)"
    # scores 0.74: the classifier was trained on comments and tweets, not product names). {} takes the defaults.
    toxicity: Toxicity | None = None
    outputs: OutputExpectations = OutputExpectations()  # run in every run: set its action to warn to only flag

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_always_run(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("the output expectations run in every run and cannot be switched off; give "
                             "outputs: {action: warn} to only flag the run")
        return value


# Without a guard section: per-row flags and output expectations with their defaults, no drift gates.
NO_GATES = Guard(label_mix=None, metric_drift=None, embedding_drift=None, flag_share=None)


class Sink(_Strict):
    conn_id: str = "warehouse"  # Airflow connection id of the database the insight tables go to
    schema_: str = Field(default="insights", alias="schema")  # schema of the insight tables

    @field_validator("schema_")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a lowercase identifier")
        return value


class Rules(_Strict):
    """Shallow decision trees that reproduce the model's labels and the target metric from the source columns."""
    enabled: bool = True
    max_depth: int = Field(default=3, ge=1, le=6)  # deeper trees stop being rules a person reads
    min_fidelity: float = Field(default=0.8, ge=0, le=1)  # held out; below: stored, marked not faithful, not quoted
    # ... and the held-out fidelity must beat the majority rule's with a one-sided p-value below this
    p_value: float = Field(default=0.05, gt=0, lt=1)
    min_leaf_rows: int = Field(default=5, ge=1)  # a rule must cover at least this many rows
    max_rows: int = Field(default=20000, ge=10)  # rows the trees are fitted on (seeded sample of the window)
    # Fit on this partition's rows and the loaded <pipeline>_rows of the days before it, window_days in all;
    # null: this partition's rows only.
    window_days: int | None = Field(default=None, ge=1, le=366)


class Clusters(_Strict):
    """Discovery: groups of rows in embedding space (needs lm.embeddings), joined back as <pipeline>_rows.cluster."""
    enabled: bool = True
    max_clusters: int = Field(default=8, ge=2, le=30)  # k is chosen by silhouette over 2..max_clusters
    min_cluster_rows: int = Field(default=5, ge=1)  # k stays at most rows / min_cluster_rows
    name_terms: int = Field(default=3, ge=1, le=10)  # distinctive terms in a cluster's name
    max_rows: int = Field(default=5000, ge=10)  # k-means is fitted on a seeded sample this size; all rows assigned
    min_silhouette: float = Field(default=0.25, gt=-1, le=1)  # groups are reported as separated from this on


class Words(_Strict):
    """Word-level explanations (captum) of each label set's label for a bounded sample of rows per partition."""
    enabled: bool = True
    uncertain_rows: int = Field(default=2, ge=0, le=1000)  # the rows with the smallest margin
    random_rows: int = Field(default=2, ge=0, le=1000)  # plus a seeded random sample
    method: Literal["kernel_shap", "lime", "ablation"] = "kernel_shap"  # ablation: leave one word out
    n_samples: int = Field(default=32, ge=4, le=2000)  # perturbed texts encoded per row (kernel_shap, lime) ...
    # ... and at least this many per word of the row, plus one: a long text's weights stay determined
    samples_per_word: float = Field(default=2.0, ge=0, le=50)
    top_words: int = Field(default=5, ge=1, le=50)  # words stored per row
    seed: int = 0
    # The cap on their cost, in the unit of infer's work: the explanations (most uncertain rows first) encode at most
    # this share of the partition's distinct texts, what its cold infer encodes. Counted in texts, not seconds, so a
    # partition always gets the same explanations. Cached explanations cost nothing and are always used; the rows
    # left are counted as skipped. Infer is about 80% of a cold run (make bench), so 0.25 keeps the words under
    # about a fifth of it, and explain/ as a whole within the 25% it may add.
    max_infer_share: float = Field(default=0.25, ge=0, le=10)


class Explain(_Strict):
    """Why the model said so: rules, discovery and word-level explanations."""
    rules: Rules = Rules()
    clusters: Clusters = Clusters()
    words: Words = Words()


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
    guard: Guard = NO_GATES  # flags and output expectations always; drift gates only in a guard: section
    explain: Explain = Explain()

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a lowercase identifier (letters, digits, '_')")
        if "__" in value or value.endswith(RESERVED_NAME_ENDINGS):
            raise ValueError(f"{value!r}: a name may not contain '__' or end in {' or '.join(RESERVED_NAME_ENDINGS)}"
                             " (reserved for the platform's tables and DAGs of another pipeline); rename it")
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
            check_template_formats(self.text.template)
        self._no_duplicates()
        self._no_reserved_columns()
        for i, column in enumerate(self.insights.metrics):
            check(f"insights.metrics[{i}]", column)
        for i, column in enumerate(self.insights.keep_columns):
            check(f"insights.keep_columns[{i}]", column)
        if self.insights.target:
            check("insights.target", self.insights.target)
        for i, segment in enumerate(self.insights.segments):
            if segment.by_tiers:
                check(f"insights.segments[{i}].by_tiers.column", segment.by_tiers.column)
            labelled = [*self.lm.label_sets, *(n for n, h in self.lm.heads.items() if h.task == "classification")]
            if segment.by_column:
                check(f"insights.segments[{i}].by_column", segment.by_column)
            if segment.by_label and segment.by_label not in labelled:
                raise ValueError(
                    f"insights.segments[{i}].by_label: {segment.by_label!r} is not in lm.label_sets or a "
                    f"classification head of lm.heads {sorted(labelled)}"
                )
        text_columns = {*self.text.columns, *(_template_fields(self.text.template) if self.text.template else [])}
        label_sets = self.lm.label_sets
        for name, head in self.lm.heads.items():
            if name in label_sets:
                raise ValueError(f"lm.heads.{name}: a label set has this name too and both would write "
                                 f"{name}_label; rename the head and point it at the label set with zero_shot: {name}")
            if head.zero_shot is not None and head.zero_shot not in label_sets:
                raise ValueError(f"lm.heads.{name}.zero_shot: {head.zero_shot!r} is not in lm.label_sets "
                                 f"{sorted(label_sets)}")
            if head.zero_shot is not None and set(head.classes or {}) != set(label_sets[head.zero_shot].labels):
                raise ValueError(f"lm.heads.{name}.zero_shot: label set {head.zero_shot!r} has the labels "
                                 f"{sorted(label_sets[head.zero_shot].labels)}; the head's classes must be the "
                                 "same to compare them")
            check(f"lm.heads.{name}.target", head.target)
            if head.target in text_columns:
                raise ValueError(
                    f"lm.heads.{name}.target: column {head.target!r} is part of the text the model reads "
                    "(text.columns / text.template), so the head would read the answer it is meant to predict; "
                    f"remove {head.target!r} from the text or predict another column")
        for kind in ("rows", "table"):
            for i, entry in enumerate(getattr(self.expectations, kind)):
                kwargs = next(iter(entry.values()))
                for arg in ("column", "column_A", "column_B"):
                    if arg in kwargs:
                        check(f"expectations.{kind}[{i}].{arg}", kwargs[arg])
                for j, column in enumerate(kwargs.get("column_list", [])):
                    check(f"expectations.{kind}[{i}].column_list[{j}]", column)
        self._guard_has_inputs()
        return self

    def _guard_has_inputs(self) -> None:
        if self.guard.embedding_drift and not self.lm.embeddings:
            raise ValueError("guard.embedding_drift: needs lm.embeddings: true (the gate compares row embeddings); "
                             "set it, or set guard.embedding_drift: null")
        if self.guard.label_mix and not self.lm.label_sets:
            raise ValueError("guard.label_mix: the spec has no lm.label_sets to compare; add one, or set "
                             "guard.label_mix: null")
        for i, column in enumerate((self.guard.toxicity.columns or []) if self.guard.toxicity else []):
            if column not in self.source.columns:
                raise ValueError(f"guard.toxicity.columns[{i}]: column {column!r} is not in source.columns "
                                 f"{sorted(self.source.columns)}")
        regression = sorted(n for n, h in self.lm.heads.items() if h.task == "regression")
        for name in self.guard.outputs.prediction_ranges:
            if name not in regression:
                raise ValueError(f"guard.outputs.prediction_ranges.{name}: not a regression head of lm.heads "
                                 f"{regression}; a range is for a head whose task is regression")

    def _no_duplicates(self) -> None:
        for path, names in (("source.columns", self.source.columns), ("source.key", self.source.key),
                            ("text.columns", self.text.columns), ("insights.metrics", self.insights.metrics),
                            ("insights.keep_columns", self.insights.keep_columns),
                            ("insights.outcomes", self.insights.outcomes)):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{path}: {repeated} listed twice")
        segments = [s.name for s in self.insights.segments]
        repeated = sorted({n for n in segments if segments.count(n) > 1})
        if repeated:
            raise ValueError(f"insights.segments: {repeated} listed twice")

    def _no_reserved_columns(self) -> None:
        """Source columns must not collide with the columns the platform adds (text, n_tokens, <set>_label ...)."""
        reserved = {c: "a column the platform adds" for c in RESERVED_COLUMNS}
        for name in self.lm.label_sets:
            reserved |= {f"{name}_{suffix}": f"a column of label set {name!r}" for suffix in LABEL_SET_COLUMN_SUFFIXES}
        for name, head in self.lm.heads.items():
            reserved |= {f"{name}_{suffix}": f"a column of head {name!r}" for suffix in HEAD_COLUMN_SUFFIXES[head.task]}
        for i, column in enumerate(self.source.columns):
            if column in reserved:
                raise ValueError(f"source.columns[{i}]: {column!r} is reserved ({reserved[column]}); alias it in a "
                                 f"view, e.g. select {column} as source_{column}, and point source.table at the view")

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
                  *self.text.columns, *self.insights.number_columns, *segment_columns,  # what segments read
                  *(h.target for h in self.lm.heads.values())]
        return list(dict.fromkeys(wanted))


# One piece of a template: "{{" or "}}" (a literal brace), a placeholder "{column}" / "{column:format spec}", a lone
# brace (an error), or text without braces.
_TEMPLATE_PIECE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]|[^{}]+")


def parse_template(template: str) -> list[tuple[str, str | None, str]]:
    """``(literal text, column or None, format spec)`` per piece of a text template.

    A placeholder is a plain column name with an optional format spec: ``{price}``, ``{price:.2f}``. Attribute or
    index access (``{price.real}``, ``{row[0]}``), conversions (``{price!r}``) and nested fields are refused, so
    rendering never looks anything up on a value (``string.Formatter`` would walk ``{id.__init__.__globals__}``).
    """
    pieces = []
    for match in _TEMPLATE_PIECE.finditer(template):
        piece, field = match.group(0), match.group(1)
        if piece in ("{{", "}}"):
            pieces.append((piece[0], None, ""))
        elif piece == "{":
            raise TemplateError(f"text.template: expected '}}' after the '{{' at character {match.start()} of "
                                f"{template!r}; write {{{{ for a literal brace")
        elif piece == "}":
            raise TemplateError(f"text.template: a single '}}' at character {match.start()} of {template!r}; "
                                "write }} for a literal brace")
        elif field is None:
            pieces.append((piece, None, ""))
        else:
            name, _, format_spec = field.partition(":")
            if not IDENTIFIER.match(name):
                raise TemplateError(f"text.template: placeholders name a column, e.g. {{price}} or {{price:.2f}}; "
                                    f"got {{{field}}} (no attributes, indexes or conversions)")
            pieces.append(("", name, format_spec))
    return pieces


def _template_fields(template: str) -> list[str]:
    """The column names a template reads (``{price:.2f}`` -> price; ``{{`` is a literal brace)."""
    return [field for _, field, _ in parse_template(template) if field is not None]


# One value of every kind a column can bring: a format spec must fit at least one of them. Dates format with
# strftime, which copies any text it does not know, so they count only for specs with a %-directive.
SAMPLE_VALUES = (decimal.Decimal("1234.5"), 1234, 1234.5, "text")
SAMPLE_DATES = (dt.date(2026, 11, 1), dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.timezone.utc))


def check_template_formats(template: str) -> None:
    """Each ``{column:spec}`` must format some kind of value: a typo such as ``{price:.2z}`` fails at load."""
    for _, field, format_spec in parse_template(template):
        if field is None or not format_spec:
            continue
        errors = []
        for sample in (*SAMPLE_VALUES, *(SAMPLE_DATES if "%" in format_spec else ())):
            try:
                format(sample, format_spec)
                break
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        else:
            raise ValueError(f"text.template: {{{field}:{format_spec}}} formats no number, text or date "
                             f"({errors[0]}); see https://docs.python.org/3/library/string.html#formatspec")


def plain_identifier(name: str) -> str:
    """A lowercase ASCII alias of an odd name: "CustomerID" -> customer_id, "price €" -> price_eur."""
    name = name.replace("€", " eur ").replace("$", " usd ").replace("%", " pct ")
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    name = re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "column"
    return name if IDENTIFIER.match(name) else f"c_{name}"


def _quoted(name: str) -> str:
    return name if IDENTIFIER.match(name) else '"' + name.replace('"', '""') + '"'


def odd_identifiers_message(table: str, columns: list[str], odd_columns: list[str]) -> str:
    """Why the names are refused, and the exact view that aliases them to plain names."""
    schema, relation = [p.strip('"') for p in table.split(".", 1)] if "." in table else ("public", table.strip('"'))
    odd_table = [table] if not (IDENTIFIER.match(schema) and IDENTIFIER.match(relation)) else []
    view = f"{plain_identifier(schema)}.{plain_identifier(relation)}_lm"
    select = ",\n         ".join(c if IDENTIFIER.match(c) else f"{_quoted(c)} as {plain_identifier(c)}"
                                 for c in columns)
    names = ", ".join([*(f"source.table {t!r}" for t in odd_table),
                       *([f"source.columns {odd_columns}"] if odd_columns else [])])
    return (f"{names}: names must be lowercase ASCII identifiers (letters, digits, '_') so that every tool "
            "(SQL, Great Expectations, the insight tables) reads them unquoted. Alias them in a view, point "
            "source.table at it and use the aliases in the spec:\n"
            f"  create view {view} as\n  select {select}\n  from {_quoted(schema)}.{_quoted(relation)};\n"
            f"  grant select on {view} to <the role of the run>;")


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


def load_specs_isolated(directory: str | Path = DEFAULT_PIPELINES_DIR) -> tuple[list[PipelineSpec], list[SpecError]]:
    """The valid specs of a directory and one error per invalid file: one bad spec never hides the others.

    Two files with one pipeline name are both invalid (which one is meant cannot be told).
    """
    specs, errors = [], []
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            errors.append(exc)
    names = [s.name for s in specs]
    for spec in [s for s in specs if names.count(s.name) > 1]:
        others = [str(o.origin) for o in specs if o.name == spec.name and o is not spec]
        errors.append(SpecError(f"{spec.origin}: invalid pipeline spec\n  name: {spec.name!r} is used by {others} "
                                "too; pipeline names must be unique"))
    return sorted((s for s in specs if names.count(s.name) == 1), key=lambda s: s.name), errors


def load_specs(directory: str | Path = DEFAULT_PIPELINES_DIR) -> list[PipelineSpec]:
    """All specs of a directory (``*.yaml``), sorted by name; any invalid one raises :class:`SpecError`."""
    specs, errors = load_specs_isolated(directory)
    if errors:
        raise SpecError("\n\n".join(str(error) for error in errors))
    return specs
