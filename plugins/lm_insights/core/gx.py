"""Great Expectations plumbing shared by the validate step and the output guard: a quiet import, an in-memory
context with a PostgreSQL datasource, a suite run, and expectation errors turned into exceptions."""

from __future__ import annotations

import logging
import os
from typing import Any

from lm_insights.runtime import db
from lm_insights.spec import PipelineSpec

_GX_URL_VARIABLE = "lm_insights_gx_url"  # runtime config variable: PostgresDsn rejects unix-socket URLs


def import_gx():
    """Import Great Expectations quietly (it is a heavy import, so only when a task needs it)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its import logs hundreds of lines
    import great_expectations as gx

    # This module pins its own level to INFO at import and logs a line for every ephemeral context.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


def gx_context(gx, conninfo: str):
    """An in-memory GE context with a PostgreSQL datasource on ``conninfo``, progress bars off."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # The URL goes in as a runtime variable: the datasource's own URL check rejects unix-socket hosts.
    context = gx.get_context(mode="ephemeral", runtime_environment={_GX_URL_VARIABLE: db.sqlalchemy_url(conninfo)})
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    datasource = context.data_sources.add_postgres("warehouse", connection_string=f"${{{_GX_URL_VARIABLE}}}")
    return context, datasource


def run_suite(context, batch_definition, suite, result_format: dict[str, Any]):
    """Validate the batch against ``suite`` (added to the context first)."""
    suite = context.suites.add(suite)
    return batch_definition.get_batch().validate(suite, result_format=result_format)


def raise_on_exception(spec: PipelineSpec, kind: str, result) -> None:
    """GE reports an expectation that could not run (e.g. SQL error) as a failed result; make it an error."""
    info = result.exception_info or {}
    # Flat {"raised_exception": ...} or, when a metric failed, {metric_id: {"raised_exception": ...}}.
    infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    messages = [i.get("exception_message") for i in infos if i.get("raised_exception")]
    if messages:
        config = result.expectation_config
        raise ValueError(f"{spec.name}: expectations.{kind}[{config.meta['entry']}] {config.type} could not run "
                         f"on {kind == 'rows' and 'the extracted rows' or 'the valid rows'}: {messages[0]}")
