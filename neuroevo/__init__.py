"""neuroevo: evolve local learning rules (Connection Update Modules) for graph networks in JAX."""

__version__ = "0.1.0"


def load_rule(path):
    """Load a rule file; see :func:`neuroevo.export.load_rule`."""
    from neuroevo.export import load_rule as _load_rule

    return _load_rule(path)
