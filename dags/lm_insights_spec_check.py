"""
# Pipeline spec check (holds no DAG)

Airflow records import errors per DAG file and marks every DAG of a file that fails to import as stale. So
`lm_insights_pipelines.py` builds a DAG for each valid spec in `dags/pipelines/` and skips the invalid ones, and
this file fails to import while any spec is invalid: the UI's "DAG Import Errors" shows each invalid spec with its
file and field, while the other pipelines and `insights_report` keep running. Fix the spec and the error clears
at the next parse.
"""

from pathlib import Path

from lm_insights.spec import SpecError, load_specs_isolated

_, _errors = load_specs_isolated(Path(__file__).parent / "pipelines")
if _errors:
    raise SpecError(f"{len(_errors)} invalid pipeline spec(s); their pipelines have no DAG until fixed:\n\n"
                    + "\n\n".join(str(error) for error in _errors))
