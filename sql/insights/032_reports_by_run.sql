-- The DAG run a report belongs to: the insights_report run that wrote it, or the pipeline run whose partition it
-- shows (pipeline, partition_start); the report tab of a DAG run page looks its report up by (dag_id, run_id).
alter table {schema}.reports add column if not exists dag_id text, add column if not exists run_id text,
    add column if not exists pipeline text, add column if not exists partition_start timestamptz
