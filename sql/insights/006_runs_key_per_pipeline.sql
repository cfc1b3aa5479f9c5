-- Run ids repeat across DAGs (every pipeline's backfill of a day is backfill__<date>): a run is (pipeline, run_id).
-- Databases created with run_id alone as the primary key get the two-column key once.
do $$
begin
    if (select array_length(conkey, 1) from pg_constraint
        where conrelid = '{schema}.runs'::regclass and contype = 'p') = 1 then
        alter table {schema}.runs drop constraint runs_pkey;
        alter table {schema}.runs add primary key (pipeline, run_id);
    end if;
end
$$
