-- A bounded seeded sample of a head version's training embeddings (float16): the reference of the guard's ood flag.
alter table {schema}.models add column if not exists ood_reference bytea
