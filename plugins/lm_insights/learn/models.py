"""The model registry of trained heads: ``<schema>.models`` holds every version's weights and card.

Weights are safetensors bytes (no pickle), so any worker of any deployment loads a head from the database alone,
with no shared filesystem. At most one version per (pipeline, head) is promoted; inference uses that one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import sql

from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


@dataclass
class LoadedHead:
    """One stored head version, ready to predict."""

    name: str
    version: int
    card: dict[str, Any]
    head: Any  # lm_engine.train.TrainedHead
    _engines: dict = field(default_factory=dict, repr=False)

    def engine_for(self, base):
        """The engine whose embeddings this head reads: ``base`` for linear heads, the fine-tuned one otherwise."""
        from lm_engine.train import head_engine

        if base.model_key not in self._engines:
            self._engines[base.model_key] = head_engine(base, self.head)
        return self._engines[base.model_key]


_LOADED: dict[tuple[str, str, str, int], LoadedHead] = {}  # (schema, pipeline, head, version): versions never change


def models_table(spec: PipelineSpec) -> sql.Composed:
    return db.qualified(spec.sink.schema_, "models")


def promoted_versions(conninfo: str, spec: PipelineSpec) -> dict[str, int]:
    """``{head: version}`` of the promoted version of each head of the spec (heads without one are absent)."""
    if not spec.lm.heads:
        return {}
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, spec.sink.schema_)
        rows = conn.execute(sql.SQL("select head, version from {} where pipeline = %s and promoted and "
                                    "head = any(%s)").format(models_table(spec)),
                            (spec.name, list(spec.lm.heads))).fetchall()
    return dict(rows)


def load_head(conninfo: str, spec: PipelineSpec, name: str, version: int) -> LoadedHead:
    """One stored version (from the database on first use in this process)."""
    from lm_engine.train import from_safetensors

    cache_key = (spec.sink.schema_, spec.name, name, version)
    if cache_key not in _LOADED:
        with db.connect(conninfo) as conn:
            row = conn.execute(sql.SQL("select weights, card from {} where pipeline = %s and head = %s and "
                                       "version = %s").format(models_table(spec)),
                               (spec.name, name, version)).fetchone()
        if row is None:
            raise LookupError(f"{spec.name}: head {name!r} has no version {version} in "
                              f"{spec.sink.schema_}.models")
        weights, card = row
        _LOADED[cache_key] = LoadedHead(name, version, card, from_safetensors(bytes(weights)))
        log.info("%s: loaded head %s v%d (%s, %d bytes) from %s.models", spec.name, name, version,
                 card.get("method"), len(weights), spec.sink.schema_)
    return _LOADED[cache_key]


def load_heads(conninfo: str, spec: PipelineSpec, versions: dict[str, int]) -> dict[str, LoadedHead]:
    return {name: load_head(conninfo, spec, name, version) for name, version in sorted(versions.items())}


def save_version(conn, spec: PipelineSpec, name: str, weights: bytes, card: dict[str, Any], decision: str,
                 reason: str, ood_reference: bytes | None = None) -> int:
    """Insert the next version of ``name``; promote it when ``decision`` is "promoted". Same transaction as
    ``conn``: a training run that dies before its commit leaves the registry as it was. ``ood_reference``: the
    sample of training embeddings the guard measures rows against (float16, see ``card["ood_reference"]``)."""
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"lm_insights models {spec.name}.{name}",))
    version = conn.execute(sql.SQL("select coalesce(max(version), 0) + 1 from {} where pipeline = %s and head = %s")
                           .format(models_table(spec)), (spec.name, name)).fetchone()[0]
    promote = decision == "promoted"
    if promote:
        conn.execute(sql.SQL("update {} set promoted = false where pipeline = %s and head = %s and promoted")
                     .format(models_table(spec)), (spec.name, name))
    conn.execute(sql.SQL(
        "insert into {} (pipeline, head, version, task, method, encoder_key, weights, card, decision, reason, "
        "promoted, promoted_at, ood_reference) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "case when %s then now() end, %s)").format(models_table(spec)),
        (spec.name, name, version, card["task"], card["method"], card["encoder_key"], weights,
         json.dumps(card | {"version": version}), decision, reason, promote, promote, ood_reference))
    return version


def rollback(conninfo: str, spec: PipelineSpec, name: str) -> tuple[int | None, int | None]:
    """Demote the promoted version and promote the one promoted before it; return (from, to) versions.

    ``to`` is None when no earlier promoted version is left: the head then has no promoted version.
    """
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, spec.sink.schema_)
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"lm_insights models {spec.name}.{name}",))
        table = models_table(spec)
        current = conn.execute(sql.SQL("select version from {} where pipeline = %s and head = %s and promoted")
                               .format(table), (spec.name, name)).fetchone()
        if current is None:
            return None, None
        conn.execute(sql.SQL("update {} set promoted = false, rolled_back_at = now() where pipeline = %s and "
                             "head = %s and version = %s").format(table), (spec.name, name, current[0]))
        previous = conn.execute(sql.SQL(
            "select version from {} where pipeline = %s and head = %s and version < %s and decision = 'promoted' "
            "and rolled_back_at is null order by version desc limit 1").format(table),
            (spec.name, name, current[0])).fetchone()
        if previous:
            conn.execute(sql.SQL("update {} set promoted = true, promoted_at = now() where pipeline = %s and "
                                 "head = %s and version = %s").format(table), (spec.name, name, previous[0]))
    log.info("%s: head %s rolled back from v%s to %s", spec.name, name, current[0],
             f"v{previous[0]}" if previous else "no promoted version")
    return current[0], previous[0] if previous else None


def history(conninfo: str, spec: PipelineSpec, name: str) -> list[dict[str, Any]]:
    """Every version of a head, newest first: version, method, decision, reason, promoted, created_at."""
    with db.connect(conninfo) as conn:
        db.ensure_insight_schema(conn, spec.sink.schema_)
        cursor = conn.execute(sql.SQL(
            "select version, method, decision, reason, promoted, created_at from {} where pipeline = %s and "
            "head = %s order by version desc").format(models_table(spec)), (spec.name, name))
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def cards(conn, spec: PipelineSpec, versions: dict[str, int]) -> dict[str, dict[str, Any]]:
    """``{head: card}`` of the given versions, without loading their weights."""
    if not versions:
        return {}
    rows = conn.execute(sql.SQL("select head, card from {} where pipeline = %s and head = any(%s) and "
                                "(head, version) in (select * from unnest(%s::text[], %s::int[]))")
                        .format(models_table(spec)),
                        (spec.name, list(versions), list(versions), list(versions.values()))).fetchall()
    return dict(rows)


def ood_reference(conn, spec: PipelineSpec, name: str, version: int) -> np.ndarray | None:
    """The stored sample of a version's training embeddings, (rows, dim) float32; None when it has none."""
    import numpy as np

    row = conn.execute(sql.SQL("select ood_reference, card -> 'ood_reference' ->> 'dim' from {} where pipeline = %s "
                               "and head = %s and version = %s").format(models_table(spec)),
                       (spec.name, name, version)).fetchone()
    if row is None or row[0] is None:
        return None
    return np.frombuffer(bytes(row[0]), dtype="<f2").reshape(-1, int(row[1])).astype(np.float32)
