create index if not exists runs_by_partition on {schema}.runs (pipeline, partition_start)
