"""Hebbian ABCD rule (Najarro and Risi 2020, "Meta-Learning through Hebbian Plasticity in Random Networks").

``dw_ij = eta * (A * a_i * a_j + B * a_j + C * a_i + D)``, with presynaptic activation ``a_j``
and postsynaptic activation ``a_i``. One coefficient set ``(eta, A, B, C, D)`` is shared by
every edge, so the rule, like the MLP rule, runs unchanged on any graph size.

With ``modulated``, the postsynaptic error ``e_i`` gates the update (a three-factor rule):
``dw_ij = eta * e_i * (A * a_i * a_j + B * a_j + C * a_i + D)``. Its ``B`` term alone is the
delta rule. The unmodulated rule reads no error, so on a supervised task no label
information reaches the weights.

Najarro and Risi evolve one coefficient set per edge. That needs the block shapes at
``init``, which the rule protocol does not pass, so only the shared form is built here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures, split_by_kind

COEFFICIENTS = ("A", "B", "C", "D")


@dataclasses.dataclass(frozen=True)
class ABCDRuleConfig:
    """Options of the ABCD rule (config section ``rule`` with ``name: abcd``)."""

    modulated: bool = False  # multiply dw by the postsynaptic error e_i
    eta_init: float = 1.0  # eta at the start of evolution, where A, B, C and D are zero

    def validate(self) -> None:
        if self.eta_init <= 0:
            raise ConfigError(f"rule.eta_init={self.eta_init} must be positive, e.g. 1.0")


@dataclasses.dataclass(frozen=True)
class ABCDRule:
    """Stateless ABCD rule with float32 scalar params ``{"eta", "A", "B", "C", "D"}``."""

    modulated: bool = False
    eta_init: float = 1.0

    @classmethod
    def from_config(cls, config: ABCDRuleConfig) -> ABCDRule:
        return cls(config.modulated, config.eta_init)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("pre", "post", "error") if self.modulated else ("pre", "post")

    def init(self, key: jax.Array) -> Any:
        """Starting point of evolution: ``eta = eta_init`` and zero coefficients, so no weight changes."""
        params = {name: jnp.float32(0.0) for name in COEFFICIENTS}
        params["eta"] = jnp.float32(self.eta_init)
        return params

    def random_params(self, key: jax.Array) -> Any:
        """Draw a random rule: ``eta = eta_init`` and A, B, C, D from N(0, 1)."""
        values = jax.random.normal(key, (len(COEFFICIENTS),), jnp.float32)
        params = {name: values[index] for index, name in enumerate(COEFFICIENTS)}
        params["eta"] = jnp.float32(self.eta_init)
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
        """Reference evaluation on dense features (..., F) in the order of ``feature_names``."""
        error = features[..., 2] if self.modulated else None
        return self._combine(params, features[..., 0], features[..., 1], error)

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """Factored evaluation for one block; returns dw (edge shape) and the unchanged state."""
        kinds = split_by_kind(self.feature_names)
        post_columns = {self.feature_names[index]: column for column, index in enumerate(kinds["post"])}
        pre = features.pre[..., 0]
        post = features.post[..., post_columns["post"]]
        error = features.post[..., post_columns["error"]] if self.modulated else None
        dw = self._combine(params, pre, post, error)
        # D alone is a scalar, so broadcast to the edge shape.
        return jnp.broadcast_to(dw, features.edge_shape), state
