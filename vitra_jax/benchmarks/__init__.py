"""Benchmarks runnable as `python -m vitra_jax.benchmarks.<name>`; each prints one table."""
