-- Per run: each head's measured quality on the partition's rows that carry the target (see <pipeline>_quality).
alter table {schema}.runs add column if not exists quality jsonb
