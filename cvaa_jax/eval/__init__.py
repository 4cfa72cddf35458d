"""Evaluation: per-volume metrics (metrics.py)."""
