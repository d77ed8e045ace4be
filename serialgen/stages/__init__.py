"""Stage drivers: library entry points that run one DAG stage over the lake (no Prefect)."""
