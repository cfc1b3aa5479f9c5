"""One invalid spec beside the demo specs: the others still parse and run; Airflow names the file and the field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DEMO_DAGS = {"product_sales", "customer_reviews", "insights_report"}


@pytest.fixture
def dags_with_a_bad_spec(tmp_path) -> Path:
    """A copy of dags/ with one more spec whose text column is named `text` (reserved)."""
    folder = tmp_path / "dags"
    shutil.copytree(DAGS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    raw = yaml.safe_load((folder / "pipelines" / "product_sales.yaml").read_text())
    raw["name"] = "broken_sales"
    raw["source"]["columns"].append("text")
    (folder / "pipelines" / "broken_sales.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def test_an_invalid_spec_fails_alone_in_the_dag_bag(dags_with_a_bad_spec):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_with_a_bad_spec))
    assert DEMO_DAGS <= set(bag.dag_ids)
    assert "broken_sales" not in bag.dag_ids
    # the error sits on the check file, which holds no DAG, so no pipeline's DAG is marked as failing
    assert list(bag.import_errors) == [str(dags_with_a_bad_spec / "lm_insights_spec_check.py")]
    message = next(iter(bag.import_errors.values()))
    assert str(dags_with_a_bad_spec / "pipelines" / "broken_sales.yaml") in message
    assert "source.columns[7]: 'text' is reserved" in message
    assert all(bag.dags[d].fileloc != str(dags_with_a_bad_spec / "lm_insights_spec_check.py") for d in DEMO_DAGS)


def test_valid_specs_give_no_import_error():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert bag.import_errors == {}
    assert DEMO_DAGS <= set(bag.dag_ids)


def test_dag_processor_records_the_error_and_keeps_the_demo_dags_active(dags_with_a_bad_spec, pg_server, tmp_path):
    """A real `airflow dag-processor` run on its own metadata database: what the UI reads."""
    from lm_insights.runtime import embedded_pg, local_env

    embedded_pg.ensure_database(pg_server, "airflow_spec_isolation")
    info = pg_server.get_postmaster_info()
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "airflow"),
               AIRFLOW__CORE__DAGS_FOLDER=str(dags_with_a_bad_spec),
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg2://postgres@/airflow_spec_isolation"
                                                   f"?host={info.socket_dir}&port={info.port}")
    airflow = str(Path(sys.executable).with_name("airflow"))
    for command in (["db", "migrate"], ["dag-processor", "--num-runs", "1"]):
        done = subprocess.run([airflow, *command], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    query = (
        "import json, sqlalchemy as sa; e = sa.create_engine(%r); c = e.connect(); print(json.dumps({"
        "'errors': [list(r) for r in c.execute(sa.text('select filename, stacktrace from import_error'))],"
        "'dags': [list(r) for r in c.execute(sa.text('select dag_id, is_stale, has_import_errors from dag'))]}))"
    ) % env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    found = json.loads(subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, check=True)
                       .stdout.strip().splitlines()[-1])
    assert [filename for filename, _ in found["errors"]] == ["lm_insights_spec_check.py"]
    assert "broken_sales.yaml" in found["errors"][0][1] and "'text' is reserved" in found["errors"][0][1]
    dags = {dag_id: (stale, errors) for dag_id, stale, errors in found["dags"]}
    assert {d: dags.get(d) for d in DEMO_DAGS} == {d: (False, False) for d in DEMO_DAGS}
    assert "broken_sales" not in dags
