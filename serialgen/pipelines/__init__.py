"""Inference pipelines usable from plain Python (no Prefect)."""

from serialgen.pipelines.standardization import StandardizationPipeline

__all__ = ["StandardizationPipeline"]
