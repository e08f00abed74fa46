"""The rule protocol shared by every rule family.

A rule is a static, hashable object (its architecture and feature names) with pure
functions, in the style of an optax transform:

- ``init(key) -> params``: a float32 pytree, the part that evolution changes;
- ``init_state(shape) -> state``: per-edge rule state for one block of edges of ``shape``,
  (n_dst, n_src) for a dense block or (E,) for an edge list (``()`` for stateless rules);
- ``apply(params, features, state) -> (dw, state)``: the weight change of every edge of a
  block, of the block's edge shape, from its factored :class:`~neuroevo.features.EdgeFeatures`
  (whose arrays broadcast to that shape; write rules with broadcasting and they run on both
  layouts).

The same params serve every block and every graph size, because the rule is shared by all
edges. That is what makes a rule portable between tasks.

A rule with parameters per edge (``abcd_per_edge``) is the exception. It defines two more
methods: ``for_topology(topology) -> rule``, which sizes it before ``init``, and
``block_params(params, block) -> params``, which the lifetime calls to pass ``apply`` only the
parameters of the block it updates.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

from neuroevo.features import EdgeFeatures


class Rule(Protocol):
    feature_names: tuple[str, ...]

    def init(self, key: jax.Array) -> Any: ...

    def init_state(self, shape: tuple[int, ...]) -> Any: ...

    def apply(self, params: Any, features: EdgeFeatures, state: Any) -> tuple[jax.Array, Any]: ...
