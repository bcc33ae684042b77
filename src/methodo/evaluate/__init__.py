"""Evaluation: metrics, per-class tables and dummy baselines."""

from methodo.evaluate.baselines import baseline_metrics
from methodo.evaluate.metrics import METRICS, classification_tables, compute_metrics, predict

__all__ = ["METRICS", "compute_metrics", "classification_tables", "predict", "baseline_metrics"]
