"""Training recipes (ml_collections config files): `python -m vitra_jax.train --config configs/<name>.py`."""
