"""BCM rule with a sliding threshold (Bienenstock, Cooper and Munro 1982, "Theory for the
development of neuron selectivity: orientation specificity and binocular interaction in
visual cortex").

Each step the threshold of postsynaptic neuron ``i`` moves towards ``a_i^2``, and the weight
grows when ``a_i`` is above it and shrinks when below:

    theta_i <- d * theta_i + (1 - d) * a_i^2
    dw_ij = eta * a_j * a_i * (a_i - theta_i)        (with the updated theta_i)

``theta_i`` is a running mean of ``a_i^2`` with decay ``d = sigmoid(params["decay_logit"])``,
which evolution tunes on the logit scale so that a step of the same size matters as much
near ``d = 0.5`` as near ``d = 0.99``. The rule state stores ``theta`` per edge, because an
edge list does not tell the rule which edges share a postsynaptic neuron. Edges into the
same neuron therefore store equal values. Evolution starts from this rule with ``eta = eta_init``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures, feature_columns
from neuroevo.rules.base import check_decay, logit


@dataclasses.dataclass(frozen=True)
class BCMRuleConfig:
    """Options of the BCM rule (config section ``rule`` with ``name: bcm``)."""

    eta_init: float = 0.1  # learning rate at the start of evolution
    decay_init: float = 0.9  # threshold decay d at the start of evolution

    def validate(self) -> None:
        if self.eta_init <= 0:
            raise ConfigError(f"rule.eta_init={self.eta_init} must be positive, e.g. 0.1")
        check_decay("rule.decay_init", self.decay_init)


@dataclasses.dataclass(frozen=True)
class BCMRule:
    """BCM rule with float32 scalar params ``{"eta", "decay_logit"}`` and state ``theta`` (edge shape)."""

    eta_init: float = 0.1
    decay_init: float = 0.9
    feature_names: tuple[str, ...] = ("pre", "post")

    @classmethod
    def from_config(cls, config: BCMRuleConfig) -> BCMRule:
        return cls(config.eta_init, config.decay_init)

    def init(self, key: jax.Array) -> Any:
        """Return the BCM rule with ``eta = eta_init`` and threshold decay ``decay_init``."""
        return {"eta": jnp.float32(self.eta_init), "decay_logit": jnp.float32(logit(self.decay_init))}

    def random_params(self, key: jax.Array) -> Any:
        """``eta = eta_init`` and a decay logit from N(0, 1)."""
        return {"eta": jnp.float32(self.eta_init), "decay_logit": jax.random.normal(key, (), jnp.float32)}

    def init_state(self, shape: tuple[int, ...]) -> jax.Array:
        """Zero thresholds, one per edge: (n_dst, n_src) or (E,)."""
        return jnp.zeros(shape, jnp.float32)

    def _step(self, params: Any, pre: jax.Array, post: jax.Array, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
        decay = jax.nn.sigmoid(params["decay_logit"])
        theta = decay * theta + (1.0 - decay) * post * post
        return params["eta"] * pre * post * (post - theta), theta

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """dw of the first step from zero thresholds, on dense features (..., 2) in the order pre, post."""
        dw, _ = self._step(params, features[..., 0], features[..., 1], jnp.zeros(features.shape[:-1], jnp.float32))
        return dw

    def apply(self, params: Any, features: EdgeFeatures, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """dw and updated thresholds, both of the block's edge shape."""
        columns = feature_columns(self.feature_names, features)
        dw, theta = self._step(params, columns["pre"], columns["post"], state)
        return jnp.broadcast_to(dw, features.edge_shape), jnp.broadcast_to(theta, features.edge_shape)
