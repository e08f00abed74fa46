"""The rule protocol shared by every rule family.

A rule is a static, hashable object (its architecture and feature names) with pure
functions, in the style of an optax transform:

- ``init(key) -> params``: a float32 pytree, the part that evolution changes;
- ``random_params(key) -> params``: a random rule of the same structure (the ``random_rule``
  baseline);
- ``init_state(shape) -> state``: per-edge rule state for one block of edges of ``shape``,
  (n_dst, n_src) for a dense block or (E,) for an edge list (``()`` for stateless rules);
- ``apply(params, features, state) -> (dw, state)``: the weight change of every edge of a
  block, of the block's edge shape, from its factored :class:`~neuroevo.features.EdgeFeatures`
  (whose arrays broadcast to that shape; write rules with broadcasting and they run on both
  layouts);
- ``apply_dense(params, features) -> dw``: the reference evaluation on a dense feature
  tensor (..., F); a stateful rule returns the ``dw`` of its first step from ``init_state``.

A rule with ``growth_output = True`` (the MLP rule with ``growth_output: true``) also has
``apply_with_growth(params, features, state) -> (dw, growth, state)``. ``growth`` has the
edge shape and scores edge positions for regrowth (:mod:`neuroevo.structural`).

A shared rule uses the same params for every block and every graph size, because one rule
serves all edges. That is what makes a rule portable between tasks.

Per-edge rules (``per_edge = True``, such as ABCD with ``per_edge: true``) have one parameter
set per edge, so their params depend on the graph. Such a rule is built unbound, and
:func:`bind` returns a copy that knows the edge shape of every block. Its params are a
mapping ``{block_key(b): params of block b}``, and the learner passes only block ``b``'s
entry to ``apply`` (see :func:`block_params`). A per-edge rule is therefore not portable:
it applies only to graphs with the block shapes it was evolved on.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import jax

from neuroevo.errors import ConfigError
from neuroevo.features import FEATURES, EdgeFeatures


class Rule(Protocol):
    feature_names: tuple[str, ...]

    def init(self, key: jax.Array) -> Any: ...

    def random_params(self, key: jax.Array) -> Any: ...

    def init_state(self, shape: tuple[int, ...]) -> Any: ...

    def apply(self, params: Any, features: EdgeFeatures, state: Any) -> tuple[jax.Array, Any]: ...

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array: ...


def is_per_edge(rule: Rule) -> bool:
    """True for a rule with one parameter set per edge."""
    return bool(getattr(rule, "per_edge", False))


def block_key(block: int) -> str:
    """Key of block ``block``'s entry in the params of a per-edge rule."""
    return f"block_{block}"


def bind(rule: Rule, block_shapes: tuple[tuple[int, ...], ...]) -> Rule:
    """Return ``rule`` bound to a graph with these block edge shapes; shared rules are returned unchanged."""
    if not is_per_edge(rule):
        return rule
    return rule.bind(tuple(tuple(shape) for shape in block_shapes))


def block_params(rule: Rule, params: Any, block: int) -> Any:
    """Select the params that ``apply`` receives for block ``block``; a shared rule receives all of them.

    A rule that wraps another one (such as a rule with evolved initial weights) selects its
    own entry with a ``block_params(params, block)`` method.
    """
    if hasattr(rule, "block_params"):
        return rule.block_params(params, block)
    if not is_per_edge(rule):
        return params
    return params[block_key(block)]


def check_feature_names(names: tuple[str, ...], key: str = "rule.features") -> None:
    """Raise ConfigError for an empty, unknown or repeated feature name in a rule config."""
    if not names:
        raise ConfigError(f"{key} is empty; list at least one of " + ", ".join(FEATURES))
    for name in names:
        if name not in FEATURES:
            raise ConfigError(f"{key} contains unknown feature {name!r}; available: {', '.join(FEATURES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}={list(names)} repeats a feature; list each once")


def check_decay(key: str, value: float) -> None:
    """Raise ConfigError unless ``value`` is a decay factor strictly between 0 and 1."""
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{key}={value} must be strictly between 0 and 1, e.g. 0.9")


def logit(probability: float) -> float:
    """Inverse of the sigmoid: the parameter value at which ``sigmoid`` gives ``probability``."""
    return math.log(probability / (1.0 - probability))
