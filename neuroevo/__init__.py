"""neuroevo: evolve local learning rules (Connection Update Modules) for graph networks in JAX."""

__version__ = "0.1.0"
