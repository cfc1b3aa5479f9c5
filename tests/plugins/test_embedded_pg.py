"""`make stop` stops the embedded PostgreSQL even when a killed process left its handle behind."""

from __future__ import annotations

import json

import psutil

from lm_insights.runtime import embedded_pg


def test_stop_ends_the_server_despite_stale_handles(tmp_path):
    pgdata = tmp_path / "pgdata"
    server = embedded_pg.start(pgdata, keep_running=True)
    postmaster = server.get_postmaster_info().process.pid
    handles = pgdata / ".handle_pids.json"
    handles.write_text(json.dumps([*json.loads(handles.read_text()), 999_999]))  # a task that was killed

    assert embedded_pg.stop(pgdata) is True
    assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == psutil.STATUS_ZOMBIE
    assert embedded_pg.stop(pgdata) is False
