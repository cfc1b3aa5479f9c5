"""Where the platform runs: database access, the embedded PostgreSQL, the local Airflow, test services, demo data."""
