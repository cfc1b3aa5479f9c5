-- One row per DAG run (or script run) of a pipeline partition.
create table if not exists {schema}.runs (
    run_id text not null,
    pipeline text not null,
    partition_start timestamptz not null,
    partition_end timestamptz not null,
    status text not null,
    extracted bigint,
    rejected bigint,
    cached bigint,
    computed bigint,
    loaded bigint,
    model_key text,
    template_version text,
    head_version text,
    timings jsonb not null default '{{}}',
    message text,
    recorded_at timestamptz not null default now(),
    primary key (pipeline, run_id)
)
