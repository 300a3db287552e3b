"""Benchmarks of the labeling pipeline: `python -m preprocess.benchmarks.<name>` prints one table."""
