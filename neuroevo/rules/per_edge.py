"""Hebbian ABCD rule with one coefficient set per edge (Najarro and Risi 2020, "Meta-Learning
through Hebbian Plasticity in Random Networks").

``dw_ij = eta_ij * (A_ij * a_i * a_j + B_ij * a_j + C_ij * a_i + D_ij)``, with presynaptic
activation ``a_j`` and postsynaptic activation ``a_i``. With ``modulated``, the scalar reward
signal ``r`` multiplies the whole update (a three-factor rule).

Every edge has its own five coefficients, so the rule is tied to one graph: its parameters
are ``{"block<b>": {"eta", "A", "B", "C", "D"}}`` with one (n_dst, n_src) array per block and
coefficient, and the rule must be built for a topology (:meth:`PerEdgeABCDRule.for_topology`)
before ``init``. A rule evolved on one graph therefore does not run on another.

The per-edge ``D`` term alone lets the weights drift towards a direction that evolution
chooses, ``w(t) = w(0) + t * eta * D``, so after enough steps the network's behaviour no
longer depends on its random initial weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures

COEFFICIENTS = ("A", "B", "C", "D")


@dataclasses.dataclass(frozen=True)
class PerEdgeABCDRuleConfig:
    """Options of the per-edge ABCD rule (config section ``rule`` with ``name: abcd_per_edge``)."""

    modulated: bool = False  # multiply dw by the reward signal
    eta_init: float = 0.1  # eta of every edge at the start of evolution, where A, B, C and D are zero

    def validate(self) -> None:
        if self.eta_init <= 0:
            raise ConfigError(f"rule.eta_init={self.eta_init} must be positive, e.g. 0.1")


@dataclasses.dataclass(frozen=True)
class PerEdgeABCDRule:
    """Stateless ABCD rule with per-edge float32 coefficients; ``block_shapes`` is set by :meth:`for_topology`."""

    modulated: bool = False
    eta_init: float = 0.1
    block_shapes: tuple[tuple[int, int], ...] = ()  # (n_dst, n_src) of every block of the graph

    @classmethod
    def from_config(cls, config: PerEdgeABCDRuleConfig) -> PerEdgeABCDRule:
        return cls(config.modulated, config.eta_init)

    def for_topology(self, topology: Any) -> PerEdgeABCDRule:
        """Return this rule sized for every block of ``topology`` (a :class:`~neuroevo.graph.Topology`)."""
        shapes = tuple(topology.block_shape(block) for block in range(len(topology.blocks)))
        return dataclasses.replace(self, block_shapes=shapes)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("pre", "post", "reward") if self.modulated else ("pre", "post")

    def _check_sized(self) -> None:
        if not self.block_shapes:
            raise ValueError("PerEdgeABCDRule has no block shapes; build it with for_topology(topology) first")

    def init(self, key: jax.Array) -> Any:
        """Starting point of evolution: ``eta = eta_init`` and zero coefficients on every edge, so no weight changes."""
        self._check_sized()
        params = {}
        for block, shape in enumerate(self.block_shapes):
            coefficients = {name: jnp.zeros(shape, jnp.float32) for name in COEFFICIENTS}
            coefficients["eta"] = jnp.full(shape, self.eta_init, jnp.float32)
            params[f"block{block}"] = coefficients
        return params

    def random_params(self, key: jax.Array) -> Any:
        """Draw a random rule: ``eta = eta_init`` and A, B, C, D from N(0, 1) on every edge."""
        params = self.init(key)
        for block, shape in enumerate(self.block_shapes):
            values = jax.random.normal(jax.random.fold_in(key, block), (len(COEFFICIENTS), *shape), jnp.float32)
            for index, name in enumerate(COEFFICIENTS):
                params[f"block{block}"][name] = values[index]
        return params

    def block_params(self, params: Any, block: int) -> Any:
        """Coefficients of one block, each (n_dst, n_src)."""
        return params[f"block{block}"]

    def init_state(self, shape: tuple[int, int]) -> tuple:
        return ()

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """Reference evaluation of one block on dense features (n_dst, n_src, F) in the order of ``feature_names``."""
        pre, post = features[..., 0], features[..., 1]
        dw = params["A"] * pre * post + params["B"] * pre + params["C"] * post + params["D"]
        if self.modulated:
            dw = features[..., 2] * dw
        return params["eta"] * dw

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """Compute dw of one dense block from its coefficients ``params`` (see :meth:`block_params`)."""
        # Post-kind columns follow feature_names: post, then reward when modulated.
        pre = features.pre[..., 0]
        post = features.post[..., 0]
        dw = params["A"] * pre * post + params["B"] * pre + params["C"] * post + params["D"]
        if self.modulated:
            dw = features.post[..., 1] * dw
        return params["eta"] * dw, state
