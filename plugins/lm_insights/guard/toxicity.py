"""Toxic language per row, scored in the validate step on the row's text columns (``guard.toxicity.columns``, default
the text-typed ``text.columns``; not the template's words).

``toxicity`` is alt-profanity-check's probability that the text is offensive: a linear SVM (calibrated) on TF-IDF
of words and characters, trained on ~200k human-labelled comments and tweets; it ships in its wheel and runs
offline, ~10k texts a second on one core. Rows at or above ``guard.toxicity.threshold`` are ``toxic``:

- ``flag``: loaded, ``toxic`` in ``quality_flags``;
- ``exclude_from_findings``: loaded and flagged, but never a cluster's representative row, a row whose words are
  explained or a row a rule is fitted on (:func:`kept_for_findings`);
- ``reject``: into ``<pipeline>_rejects`` with the score as the reason, never textualized nor loaded.

The scores wait in staging ``toxicity`` (``_row_number, toxicity, toxic``) until the guard step copies them into
the rows. The report shows texts through :func:`masked`. Why this library: docs/guards.md.
"""

from __future__ import annotations

import re

import numpy as np
from psycopg import sql

from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec
from lm_insights.core.partition import STAGING_SCHEMA, Partition, staging_name, staging_table

TEXT_TYPES = ("text", "character varying", "character")
TOXIC = "toxic"
MASK = "\u2588"  # a full block per masked letter: the length stays, the word does not
REPORT_THRESHOLD = 0.5  # the report has no spec at hand: it masks what the library itself calls offensive


def score_texts(texts: list[str]) -> np.ndarray:
    """Per text, the probability that it is offensive (alt-profanity-check)."""
    if not texts:
        return np.empty(0)
    try:
        from profanity_check import predict_prob
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ImportError("guard.toxicity needs alt-profanity-check (pip install alt-profanity-check==1.9.1), or "
                          "set guard.toxicity: null in the spec") from exc
    return np.asarray(predict_prob(list(texts)), dtype=np.float64)


def text_columns(spec: PipelineSpec, types: dict[str, str]) -> list[str]:
    """The spec's text columns whose type (``types``: column -> type) holds text, not numbers or dates."""
    return [c for c in spec.text.columns if types.get(c, "").split("(")[0] in TEXT_TYPES]


def score_partition(spec: PipelineSpec, conninfo: str, conn, partition: Partition) -> list[tuple[int, str, str]]:
    """Staging ``toxicity`` for the extracted rows; with action ``reject``, ``(_row_number, label, reason)`` of each
    toxic row for the rejects table (else an empty list). Nothing happens without ``guard.toxicity``."""
    settings = spec.guard.toxicity
    target = staging_table(spec, partition, "toxicity")
    conn.execute(sql.SQL("drop table if exists {}").format(target))
    if settings is None:
        return []
    conn.execute(sql.SQL("create table {} (_row_number bigint primary key, toxicity double precision not null, "
                         "toxic boolean not null)").format(target))
    columns = settings.columns or text_columns(
        spec, db.table_columns(conn, STAGING_SCHEMA, staging_name(spec, partition, "extracted")))
    if not columns:
        return []
    texts = sql.SQL("concat_ws(' ', {})").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    query = sql.SQL("select _row_number, {} from {} order by _row_number").format(
        texts, staging_table(spec, partition, "extracted"))
    rejected = []
    with db.connect(conninfo) as read:  # a server-side cursor beside the writes of this transaction
        for chunk in db.stream_query(read, query, None, spec.lm.chunk_size):
            scores = score_texts([text or "" for _, text in chunk])
            toxic = scores >= settings.threshold
            db.copy_rows(conn, target, ("_row_number", "toxicity", "toxic"),
                         ((n, round(float(s), 6), bool(t)) for (n, _), s, t in zip(chunk, scores, toxic)))
            if settings.action == "reject":
                rejected += [(n, "toxicity", f"toxicity {s:.3f} >= guard.toxicity.threshold {settings.threshold:g} "
                                             f"(text columns {', '.join(columns)})")
                             for (n, _), s, t in zip(chunk, scores, toxic) if t]
    return rejected


def kept_for_findings(spec: PipelineSpec, partition: Partition, alias: str = "r") -> sql.Composable:
    """A condition on staging ``rows`` (as ``alias``): false for the toxic rows that action
    ``exclude_from_findings`` keeps out of clusters' representatives, word explanations and rule fits."""
    settings = spec.guard.toxicity
    if settings is None or settings.action != "exclude_from_findings":
        return sql.SQL("true")
    return sql.SQL("not exists (select from {} as x where x._row_number = {}._row_number and x.toxic)").format(
        staging_table(spec, partition, "toxicity"), sql.Identifier(alias))


def kept_loaded(spec: PipelineSpec, loaded_columns: dict[str, str]) -> sql.Composable:
    """:func:`kept_for_findings` for loaded ``<pipeline>_rows`` (their ``quality_flags``)."""
    settings = spec.guard.toxicity
    if settings is None or settings.action != "exclude_from_findings" or "quality_flags" not in loaded_columns:
        return sql.SQL("true")
    return sql.SQL("not coalesce({} = any(quality_flags), false)").format(sql.Literal(TOXIC))


def excluded_row_numbers(spec: PipelineSpec, conn, partition: Partition) -> set[int]:
    """The staged rows that :func:`kept_for_findings` leaves out."""
    condition = kept_for_findings(spec, partition)
    return {n for (n,) in conn.execute(sql.SQL("select _row_number from {} as r where not ({})").format(
        staging_table(spec, partition, "rows"), condition))}


def copy_to_rows(spec: PipelineSpec, conn, partition: Partition) -> None:
    """Add ``toxicity`` to staging ``rows`` and ``toxic`` to its ``quality_flags`` (which must exist)."""
    rows = staging_table(spec, partition, "rows")
    conn.execute(sql.SQL("alter table {} add column if not exists toxicity double precision").format(rows))
    if spec.guard.toxicity is None or not db.table_exists(conn, STAGING_SCHEMA,
                                                            staging_name(spec, partition, "toxicity")):
        return
    conn.execute(sql.SQL(
        "update {rows} as r set toxicity = x.toxicity, quality_flags = case when x.toxic "
        "then array_append(array_remove(r.quality_flags, {flag}), {flag}) else r.quality_flags end "
        "from {scores} as x where x._row_number = r._row_number").format(
        rows=rows, scores=staging_table(spec, partition, "toxicity"), flag=sql.Literal(TOXIC)))


_WORD = re.compile(r"\w+", re.UNICODE)


def masked(text: str | None, threshold: float = REPORT_THRESHOLD) -> str | None:
    """The text with each offensive word's letters blocked out; a text that stays offensive without them (a threat
    in plain words) is masked whole. Texts below ``threshold`` come back as they are."""
    if not text or score_texts([text])[0] < threshold:
        return text
    words = sorted(set(_WORD.findall(text)))
    offensive = {w for w, s in zip(words, score_texts(words)) if s >= threshold}
    result = _WORD.sub(lambda m: MASK * len(m.group()) if m.group() in offensive else m.group(), text)
    if score_texts([result])[0] >= threshold:
        return f"[text masked: toxicity {score_texts([text])[0]:.2f}]"
    return result
