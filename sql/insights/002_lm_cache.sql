-- One row per (model, head, template, text): what the LM said about a text, reused by every later run.
create table if not exists {schema}.lm_cache (
    model_key text not null,
    head_version text not null,
    template_version text not null,
    text_sha256 text not null,
    embedding vector,
    labels jsonb not null,
    n_tokens integer not null,
    truncated boolean not null,
    computed_at timestamptz not null default now(),
    primary key (model_key, head_version, template_version, text_sha256)
)
