create index if not exists reports_by_run on {schema}.reports (dag_id, run_id, id)
