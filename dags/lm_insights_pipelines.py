"""
# LM insight pipelines

One DAG per spec in `dags/pipelines/*.yaml`: extract a daily partition of a warehouse table, validate it with
Great Expectations, turn each row into text, run the `lm_engine` Transformer, and load insight tables into
PostgreSQL. Add a pipeline by adding a YAML file; see docs/spec.md for every field.

An invalid spec gets no DAG here and does not stop the others: `lm_insights_spec_check.py` reports it as an import
error naming the file and the field.
"""

from pathlib import Path

from lm_insights.airflow_dag import build_dag, build_train_dag
from lm_insights.spec import load_specs_isolated

_specs, _ = load_specs_isolated(Path(__file__).parent / "pipelines")
for _spec in _specs:
    globals()[_spec.name] = build_dag(_spec)
    if _spec.lm.heads:  # <pipeline>__train: trains the heads the spec declares
        globals()[f"{_spec.name}__train"] = build_train_dag(_spec)
