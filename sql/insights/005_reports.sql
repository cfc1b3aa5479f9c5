-- One row per run of the insights_report DAG: the text report and the assets that triggered it.
create table if not exists {schema}.reports (
    id bigint generated always as identity primary key,
    generated_at timestamptz not null default now(),
    triggered_by text[] not null,
    report text not null
)
