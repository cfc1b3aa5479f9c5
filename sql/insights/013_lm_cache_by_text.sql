-- Training reads a text's cached embedding whatever the head version that cached it (learn.training).
create index if not exists lm_cache_by_text on {schema}.lm_cache (model_key, template_version, text_sha256)
