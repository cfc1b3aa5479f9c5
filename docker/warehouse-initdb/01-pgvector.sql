-- Runs once, when the warehouse-db volume is first initialised (docker-entrypoint-initdb.d), as the
-- superuser POSTGRES_USER in POSTGRES_DB. The insight pipelines keep row embeddings in pgvector columns.
CREATE EXTENSION IF NOT EXISTS vector;
