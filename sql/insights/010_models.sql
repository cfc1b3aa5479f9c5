-- One row per trained head version (lm-insights train / <pipeline>__train): weights as safetensors, a JSON card.
create table if not exists {schema}.models (
    pipeline text not null,
    head text not null,
    version integer not null,
    task text not null,
    method text not null,
    encoder_key text not null,
    weights bytea not null,
    card jsonb not null,
    decision text not null,
    reason text not null,
    promoted boolean not null default false,
    promoted_at timestamptz,
    rolled_back_at timestamptz,
    created_at timestamptz not null default now(),
    primary key (pipeline, head, version)
)
