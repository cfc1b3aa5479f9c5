"""A run needs no CREATE on the database once the schemas exist: the least-privilege role of docs/warehouse.md works."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo

from lm_insights.pipeline import run_partition
from lm_insights.runtime import demo_warehouse
from lm_insights.spec import DEFAULT_PIPELINES_DIR, load_spec
from lm_insights.core.partition import Partition

DAY = Partition.day("2026-11-01")
# The grants of docs/warehouse.md, run by an administrator once.
GRANTS = """
create schema if not exists insights;
create schema if not exists lm_staging;
create role lm_runner login;
grant usage on schema retail to lm_runner;
grant select on all tables in schema retail to lm_runner;
grant usage, create on schema insights, lm_staging to lm_runner;
"""


def test_a_run_needs_only_schema_privileges(warehouse_conninfo):
    demo_warehouse.create_schema(warehouse_conninfo)
    demo_warehouse.generate(warehouse_conninfo, start=DAY.start.date(), days=1, sales_per_day=8, reviews_per_day=1)
    with psycopg.connect(warehouse_conninfo, autocommit=True) as admin:
        admin.execute("drop role if exists lm_runner")  # a role is cluster-wide: a rerun of this test meets it
        admin.execute(GRANTS)
    runner = make_conninfo(warehouse_conninfo, user="lm_runner")
    try:
        with psycopg.connect(runner) as conn:
            database_create, = conn.execute(
                "select has_database_privilege(current_user, current_database(), 'CREATE')").fetchone()
        assert database_create is False
        spec = load_spec(DEFAULT_PIPELINES_DIR / "product_sales.yaml")
        record = run_partition(spec, runner, runner, DAY)
        assert record.status == "success" and record.loaded > 0
        with psycopg.connect(runner) as conn:
            owners = conn.execute("select distinct tableowner from pg_tables where schemaname = 'insights'").fetchall()
        assert owners == [("lm_runner",)]
    finally:
        with psycopg.connect(warehouse_conninfo, autocommit=True) as admin:
            admin.execute("drop owned by lm_runner; drop role lm_runner")
