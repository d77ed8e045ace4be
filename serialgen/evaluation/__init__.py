"""The paper's evaluation protocol: metrics, evaluation models, test set, scoring and report (no Prefect)."""
