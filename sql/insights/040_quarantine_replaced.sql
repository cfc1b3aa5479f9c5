-- Per held partition of a pipeline: the intervals in it that a later load replaced (a published run, or a newer
-- hold). Releasing the held partition leaves what is published there: each source row is published exactly once.
create table if not exists {schema}.quarantine_replaced (
    pipeline text not null,
    held_start timestamptz not null,
    held_end timestamptz not null,
    replaced_start timestamptz not null,
    replaced_end timestamptz not null,
    run_id text,
    recorded_at timestamptz not null default now()
)
