create unique index if not exists models_one_promoted on {schema}.models (pipeline, head) where promoted
