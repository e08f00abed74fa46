"""Oja's rule with an evolvable learning rate and weight-decay factor.

Oja 1982, "Simplified neuron model as a principal component analyzer":
``dw_ij = eta * a_i * (a_j - alpha * a_i * w_ij)``. With ``alpha = 1`` this is Oja's rule,
Hebbian learning whose second term keeps the norm of each neuron's incoming weights near 1;
``alpha = 0`` is the plain Hebbian rule. Evolution starts from Oja's rule (``alpha = 1``),
so, unlike the MLP and ABCD rules, the initial rule changes weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures, feature_columns


@dataclasses.dataclass(frozen=True)
class OjaRuleConfig:
    """Options of Oja's rule (config section ``rule`` with ``name: oja``)."""

    eta_init: float = 0.1  # learning rate at the start of evolution

    def validate(self) -> None:
        if self.eta_init <= 0:
            raise ConfigError(f"rule.eta_init={self.eta_init} must be positive, e.g. 0.1")


@dataclasses.dataclass(frozen=True)
class OjaRule:
    """Stateless Oja rule with float32 scalar params ``{"eta", "alpha"}``."""

    eta_init: float = 0.1
    feature_names: tuple[str, ...] = ("pre", "post", "weight")

    @classmethod
    def from_config(cls, config: OjaRuleConfig) -> OjaRule:
        return cls(config.eta_init)

    def init(self, key: jax.Array) -> Any:
        """Oja's rule itself: ``eta = eta_init``, ``alpha = 1``."""
        return {"eta": jnp.float32(self.eta_init), "alpha": jnp.float32(1.0)}

    def random_params(self, key: jax.Array) -> Any:
        """``eta = eta_init`` and ``alpha`` from N(0, 1)."""
        return {"eta": jnp.float32(self.eta_init), "alpha": jax.random.normal(key, (), jnp.float32)}

    def init_state(self, shape: tuple[int, ...]) -> tuple:
        return ()

    def _combine(self, params: Any, pre: jax.Array, post: jax.Array, weight: jax.Array) -> jax.Array:
        return params["eta"] * post * (pre - params["alpha"] * post * weight)

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """Reference evaluation on dense features (..., 3) in the order pre, post, weight."""
        return self._combine(params, features[..., 0], features[..., 1], features[..., 2])

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """dw (edge shape) of one block and the unchanged state."""
        columns = feature_columns(self.feature_names, features)
        return self._combine(params, columns["pre"], columns["post"], columns["weight"]), state
