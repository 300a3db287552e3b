"""vitra_jax: a JAX/Flax reimplementation of VITRA (arXiv 2510.21571).

Kept free of heavy imports so that `vitra_jax.handspace` and `vitra_jax.deploy` load without JAX or
TensorFlow.
"""

__version__ = "0.1.0"
