-- Per run: what the drift gates decided (action, tripped gates); figures in <pipeline>_quality.
alter table {schema}.runs add column if not exists guard jsonb
