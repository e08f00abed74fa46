"""MLP Connection Update Module: a small MLP shared by every edge maps its features to ``dw``.

``dw_ij = output_scale * MLP(f_ij)``, where ``f_ij`` are the selected features of edge
``(j -> i)``. The parameters are those of the flax module :class:`EdgeMLP`; :meth:`MLPRule.apply`
evaluates the same function without building the (n_dst, n_src, F) feature tensor: the first
layer's pre-activation splits into a postsynaptic row term, a presynaptic column term and
the per-edge term, ``z_ij = K_post f_i + K_pre f_j + K_edge f_ij + b``, and only the hidden
units are computed per edge.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import FEATURES, EdgeFeatures, split_by_kind
from neuroevo.neurons import ACTIVATIONS

DEFAULT_FEATURES = ("pre", "post", "weight", "error", "in_mean")


@dataclasses.dataclass(frozen=True)
class MLPRuleConfig:
    """Options of the MLP rule (config section ``rule`` with ``name: mlp``)."""

    features: tuple[str, ...] = DEFAULT_FEATURES
    hidden: tuple[int, ...] = (16,)  # hidden units per layer of the rule MLP
    activation: str = "tanh"
    output_scale: float = 0.1  # dw = output_scale * MLP output

    def validate(self) -> None:
        if not self.features:
            raise ConfigError("rule.features is empty; list at least one of " + ", ".join(FEATURES))
        for name in self.features:
            if name not in FEATURES:
                raise ConfigError(f"rule.features contains unknown feature {name!r}; available: {', '.join(FEATURES)}")
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"rule.features={list(self.features)} repeats a feature; list each once")
        if any(width < 1 for width in self.hidden):
            raise ConfigError(f"rule.hidden={list(self.hidden)} has a layer with fewer than 1 unit")
        if self.activation not in ("tanh", "relu", "sigmoid"):
            raise ConfigError(f"rule.activation={self.activation!r} is not one of tanh, relu, sigmoid")
        if self.output_scale <= 0:
            raise ConfigError(f"rule.output_scale={self.output_scale} must be positive")


class EdgeMLP(nn.Module):
    """Reference per-edge MLP: features (..., F) -> output (...)."""

    hidden: tuple[int, ...]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        x = features
        for width in self.hidden:
            x = ACTIVATIONS[self.activation](nn.Dense(width)(x))
        return nn.Dense(1)(x)[..., 0]


@dataclasses.dataclass(frozen=True)
class MLPRule:
    """Stateless MLP CUM; see the module docstring for the factored evaluation."""

    feature_names: tuple[str, ...]
    hidden: tuple[int, ...] = (16,)
    activation: str = "tanh"
    output_scale: float = 0.1

    @classmethod
    def from_config(cls, config: MLPRuleConfig) -> MLPRule:
        return cls(config.features, config.hidden, config.activation, config.output_scale)

    @property
    def module(self) -> EdgeMLP:
        return EdgeMLP(self.hidden, self.activation)

    def random_params(self, key: jax.Array) -> Any:
        """Flax's default initialisation (lecun-normal kernels, zero biases): a random rule."""
        return self.module.init(key, jnp.zeros((len(self.feature_names),), jnp.float32))

    def init(self, key: jax.Array) -> Any:
        """Starting point of evolution: random hidden layers and a zero output layer.

        The initial rule changes no weight. A random output layer instead often makes the
        weights of every member diverge, so that all members score chance and evolution
        gets no signal.
        """
        params = self.random_params(key)
        last = f"Dense_{len(self.hidden)}"
        params["params"][last] = jax.tree.map(jnp.zeros_like, params["params"][last])
        return params

    def init_state(self, shape: tuple[int, int]) -> tuple:
        return ()

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """Reference evaluation on a dense feature tensor (..., F); returns dw (...)."""
        return self.output_scale * self.module.apply(params, features)

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """Factored evaluation for one block; returns dw (edge shape) and the unchanged state."""
        layers = params["params"]
        kinds = split_by_kind(self.feature_names)
        kernel = layers["Dense_0"]["kernel"]  # (F, width of the first layer)

        row = features.post @ kernel[jnp.array(kinds["post"], int)]  # (n_dst, 1, H) or (E, H)
        column = features.pre @ kernel[jnp.array(kinds["pre"], int)]  # (1, n_src, H) or (E, H)
        z = row + column + layers["Dense_0"]["bias"]
        if kinds["edge"]:
            z = z + features.edge @ kernel[jnp.array(kinds["edge"], int)]
        z = jnp.broadcast_to(z, (*features.edge_shape, z.shape[-1]))

        if not self.hidden:
            return self.output_scale * z[..., 0], state

        act = ACTIVATIONS[self.activation]
        x = act(z)
        for layer in range(1, len(self.hidden)):
            dense = layers[f"Dense_{layer}"]
            x = act(x @ dense["kernel"] + dense["bias"])
        last = layers[f"Dense_{len(self.hidden)}"]
        out = x @ last["kernel"][:, 0] + last["bias"][0]
        return self.output_scale * out, state
