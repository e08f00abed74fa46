"""Hebbian ABCD rule (Najarro and Risi 2020, "Meta-Learning through Hebbian Plasticity in Random Networks").

``dw_ij = eta * (A * a_i * a_j + B * a_j + C * a_i + D)``, with presynaptic activation ``a_j``
and postsynaptic activation ``a_i``. One coefficient set ``(eta, A, B, C, D)`` is shared by
every edge, so the rule, like the MLP rule, runs unchanged on any graph size.

With ``modulated``, the postsynaptic error ``e_i`` gates the update (a three-factor rule):
``dw_ij = eta * e_i * (A * a_i * a_j + B * a_j + C * a_i + D)``. Its ``B`` term alone is the
delta rule. The unmodulated rule reads no error, so on a supervised task no label
information reaches the weights.

With ``per_edge``, every edge has its own ``(eta, A, B, C, D)``, as Najarro and Risi evolve
them. Those params depend on the graph: the rule must be bound to the block shapes
(:func:`neuroevo.rules.base.bind`), and a rule evolved on one graph applies only to graphs
with the same block shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures, split_by_kind
from neuroevo.rules.base import block_key

COEFFICIENTS = ("A", "B", "C", "D")


@dataclasses.dataclass(frozen=True)
class ABCDRuleConfig:
    """Options of the ABCD rule (config section ``rule`` with ``name: abcd``)."""

    modulated: bool = False  # multiply dw by the postsynaptic error e_i
    eta_init: float = 1.0  # eta at the start of evolution, where A, B, C and D are zero
    per_edge: bool = False  # one (eta, A, B, C, D) per edge instead of one shared set

    def validate(self) -> None:
        if self.eta_init <= 0:
            raise ConfigError(f"rule.eta_init={self.eta_init} must be positive, e.g. 1.0")


@dataclasses.dataclass(frozen=True)
class ABCDRule:
    """Stateless ABCD rule with float32 params ``{"eta", "A", "B", "C", "D"}``.

    Shared: every value is a scalar. Per edge: ``{block_key(b): {"eta", "A", ...}}`` with
    arrays of block ``b``'s edge shape, after :meth:`bind` has set ``block_shapes``.
    """

    modulated: bool = False
    eta_init: float = 1.0
    per_edge: bool = False
    block_shapes: tuple[tuple[int, ...], ...] | None = None  # edge shape per block; per-edge rules only

    @classmethod
    def from_config(cls, config: ABCDRuleConfig) -> ABCDRule:
        return cls(config.modulated, config.eta_init, config.per_edge)

    def bind(self, block_shapes: tuple[tuple[int, ...], ...]) -> ABCDRule:
        """Copy of this per-edge rule for a graph whose blocks have these edge shapes."""
        return dataclasses.replace(self, block_shapes=block_shapes)

    def _shapes(self) -> tuple[tuple[int, ...], ...]:
        if self.block_shapes is None:
            raise ValueError("a per-edge ABCD rule has one coefficient set per edge; bind it to the graph's block shapes first (neuroevo.rules.base.bind)")
        return self.block_shapes

    def _per_block(self, make) -> Any:
        """Params of a per-edge rule, ``make(block, shape)`` giving each block's entry."""
        return {block_key(block): make(block, shape) for block, shape in enumerate(self._shapes())}

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("pre", "post", "error") if self.modulated else ("pre", "post")

    def init(self, key: jax.Array) -> Any:
        """Starting point of evolution: ``eta = eta_init`` and zero coefficients, so no weight changes."""
        if self.per_edge:
            return self._per_block(lambda block, shape: self._constant_params(shape))
        return self._constant_params(())

    def _constant_params(self, shape: tuple[int, ...]) -> Any:
        params = {name: jnp.zeros(shape, jnp.float32) for name in COEFFICIENTS}
        params["eta"] = jnp.full(shape, self.eta_init, jnp.float32)
        return params

    def random_params(self, key: jax.Array) -> Any:
        """Draw a random rule: ``eta = eta_init`` and A, B, C, D from N(0, 1) (per edge if ``per_edge``)."""
        if self.per_edge:
            keys = jax.random.split(key, len(self._shapes()))
            return self._per_block(lambda block, shape: self._random_params(keys[block], shape))
        return self._random_params(key, ())

    def _random_params(self, key: jax.Array, shape: tuple[int, ...]) -> Any:
        values = jax.random.normal(key, (len(COEFFICIENTS), *shape), jnp.float32)
        params = {name: values[index] for index, name in enumerate(COEFFICIENTS)}
        params["eta"] = jnp.full(shape, self.eta_init, jnp.float32)
        return params

    def init_state(self, shape: tuple[int, int]) -> tuple:
        return ()

    def _combine(self, params: Any, pre: jax.Array, post: jax.Array, error: jax.Array | None) -> jax.Array:
        """Evaluate the ABCD formula on broadcastable arrays."""
        dw = params["A"] * pre * post + params["B"] * pre + params["C"] * post + params["D"]
        if self.modulated:
            dw = error * dw
        return params["eta"] * dw

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """Reference evaluation on dense features (..., F) in the order of ``feature_names``.

        A per-edge rule takes one block's params, whose arrays broadcast against (...).
        """
        if self.per_edge and "eta" not in params:
            raise ValueError("a per-edge ABCD rule evaluates one block at a time; pass params[block_key(block)]")
        error = features[..., 2] if self.modulated else None
        return self._combine(params, features[..., 0], features[..., 1], error)

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """Factored evaluation for one block; returns dw (edge shape) and the unchanged state."""
        if self.per_edge and params["eta"].shape != features.edge_shape:
            raise ValueError(
                f"this per-edge ABCD rule has coefficients for blocks of edge shape {params['eta'].shape}, "
                f"but the block has edge shape {features.edge_shape}; per-edge rules apply only to the graph they were evolved on"
            )
        kinds = split_by_kind(self.feature_names)
        post_columns = {self.feature_names[index]: column for column, index in enumerate(kinds["post"])}
        pre = features.pre[..., 0]
        post = features.post[..., post_columns["post"]]
        error = features.post[..., post_columns["error"]] if self.modulated else None
        dw = self._combine(params, pre, post, error)
        # D alone is a scalar, so broadcast to the edge shape.
        return jnp.broadcast_to(dw, features.edge_shape), state
