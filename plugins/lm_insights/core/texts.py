"""The texts the model reads for a partition: the staging query every step that counts or encodes them shares."""

from __future__ import annotations

from psycopg import sql

from lm_insights.core.partition import Partition, staging_table
from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec


def lm_texts(spec: PipelineSpec, partition: Partition) -> sql.Composable:
    """Every text the LM reads for the partition (``text_sha256, text``): the rows' and, with attributions, the
    occluded ones."""
    texts = sql.SQL("select text_sha256, text from {}").format(staging_table(spec, partition, "texts"))
    if not spec.lm.attributions:
        return texts
    return texts + sql.SQL(" union all select text_sha256, text from {}").format(
        staging_table(spec, partition, "occlusions"))


def count_distinct_texts(spec: PipelineSpec, conninfo: str, partition: Partition) -> int:
    """Distinct texts of the partition: what a cold infer encodes."""
    with db.connect(conninfo) as conn:
        query = sql.SQL("select count(distinct text_sha256) from ({}) as t").format(lm_texts(spec, partition))
        return conn.execute(query).fetchone()[0]
