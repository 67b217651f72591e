"""Metrics, scoring of prediction folders, prediction files, baselines, external layouts and bridges."""
