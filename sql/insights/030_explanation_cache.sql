-- One row per (model, label set version, method, text, label): the words that carried the label (explain/words.py).
create table if not exists {schema}.explanation_cache (
    model_key text not null,
    label_set_version text not null,
    method text not null,
    text_sha256 text not null,
    label text not null,
    words jsonb not null,
    computed_at timestamptz not null default now(),
    primary key (model_key, label_set_version, method, text_sha256, label)
)
