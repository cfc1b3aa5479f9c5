"""LM Insights Platform: warehouse rows -> text -> lm_engine -> insight tables in PostgreSQL."""
