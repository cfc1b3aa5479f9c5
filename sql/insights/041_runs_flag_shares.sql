-- Per run: the shares of the partition's rows flagged toxic and inconsistent (guard/toxicity.py, guard/inconsistent.py).
alter table {schema}.runs add column if not exists toxic_share double precision,
    add column if not exists inconsistent_share double precision
