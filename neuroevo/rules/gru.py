"""Stateful CUM: a GRU cell per edge, with parameters shared by every edge.

Kirsch and Schmidhuber 2021, "Meta Learning Backpropagation And Improving It" (VSML), replace
each weight by a small recurrent network with shared parameters and per-edge state. Here the
weight itself stays, and a GRU cell turns an edge's features into its weight change:

    h_ij <- GRUCell(h_ij, f_ij)                       (flax.linen.GRUCell, hidden size H)
    dw_ij = output_scale * (v . h_ij + c)

The hidden state ``h_ij`` (H floats per edge) lives in the rule state and is carried through
the lifetime. As in the MLP rule, the input projections of the three gates split by feature
kind, ``W f_ij = W_post f_i + W_pre f_j + W_edge f_ij``, so the (n_dst, n_src, F) feature
tensor is never built. Only the recurrent part ``U h_ij`` is computed per edge. The readout
(v, c) starts at zero, so the initial rule changes no weight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures, split_by_kind
from neuroevo.rules.base import check_feature_names

DEFAULT_FEATURES = ("pre", "post", "weight", "error", "in_mean")
_GATES = ("r", "z", "n")  # reset, update, candidate: the order of flax's ir/iz/in and hr/hz/hn


@dataclasses.dataclass(frozen=True)
class GRURuleConfig:
    """Options of the GRU rule (config section ``rule`` with ``name: gru``)."""

    features: tuple[str, ...] = DEFAULT_FEATURES
    hidden_size: int = 8  # H, floats of state per edge
    output_scale: float = 0.1  # dw = output_scale * readout

    def validate(self) -> None:
        check_feature_names(self.features)
        if self.hidden_size < 1:
            raise ConfigError(f"rule.hidden_size={self.hidden_size} must be at least 1, e.g. 8")
        if self.output_scale <= 0:
            raise ConfigError(f"rule.output_scale={self.output_scale} must be positive")


@dataclasses.dataclass(frozen=True)
class GRURule:
    """GRU CUM; params ``{"cell": flax GRUCell params, "readout": flax Dense(1) params}``, state (*edge_shape, H)."""

    feature_names: tuple[str, ...] = DEFAULT_FEATURES
    hidden_size: int = 8
    output_scale: float = 0.1

    @classmethod
    def from_config(cls, config: GRURuleConfig) -> GRURule:
        return cls(config.features, config.hidden_size, config.output_scale)

    @property
    def cell(self) -> nn.GRUCell:
        return nn.GRUCell(features=self.hidden_size)

    def random_params(self, key: jax.Array) -> Any:
        """Flax's default initialisation of the cell and the readout: a random rule."""
        key_cell, key_readout = jax.random.split(key)
        hidden = jnp.zeros((self.hidden_size,), jnp.float32)
        cell = self.cell.init(key_cell, hidden, jnp.zeros((len(self.feature_names),), jnp.float32))
        readout = nn.Dense(1).init(key_readout, hidden)
        return {"cell": cell["params"], "readout": readout["params"]}

    def init(self, key: jax.Array) -> Any:
        """Draw a random cell and zero the readout, so the initial rule changes no weight."""
        params = self.random_params(key)
        params["readout"] = jax.tree.map(jnp.zeros_like, params["readout"])
        return params

    def init_state(self, shape: tuple[int, ...]) -> jax.Array:
        """Zero hidden states: (n_dst, n_src, H) or (E, H)."""
        return jnp.zeros((*shape, self.hidden_size), jnp.float32)

    def _readout(self, params: Any, hidden: jax.Array) -> jax.Array:
        readout = params["readout"]
        return self.output_scale * (hidden @ readout["kernel"][:, 0] + readout["bias"][0])

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """dw of the first step from zero hidden states, on dense features (..., F); flax's GRUCell is the reference."""
        hidden = jnp.zeros((*features.shape[:-1], self.hidden_size), jnp.float32)
        hidden, _ = self.cell.apply({"params": params["cell"]}, hidden, features)
        return self._readout(params, hidden)

    def apply(self, params: Any, features: EdgeFeatures, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """dw (edge shape) and the new hidden states (*edge_shape, H) of one block."""
        cell = params["cell"]
        kinds = split_by_kind(self.feature_names)
        input_kernel = jnp.concatenate([cell[f"i{gate}"]["kernel"] for gate in _GATES], axis=1)  # (F, 3H)
        input_bias = jnp.concatenate([cell[f"i{gate}"]["bias"] for gate in _GATES])  # (3H,)
        hidden_kernel = jnp.concatenate([cell[f"h{gate}"]["kernel"] for gate in _GATES], axis=1)  # (H, 3H)

        # Input projection of every gate, factored by feature kind.
        projected = features.post @ input_kernel[jnp.array(kinds["post"], int)]
        projected = projected + features.pre @ input_kernel[jnp.array(kinds["pre"], int)] + input_bias
        if kinds["edge"]:
            projected = projected + features.edge @ input_kernel[jnp.array(kinds["edge"], int)]
        input_r, input_z, input_n = jnp.split(projected, 3, axis=-1)

        # Recurrent part, per edge.
        recurrent_r, recurrent_z, recurrent_n = jnp.split(state @ hidden_kernel, 3, axis=-1)
        reset = jax.nn.sigmoid(input_r + recurrent_r)
        update = jax.nn.sigmoid(input_z + recurrent_z)
        candidate = jnp.tanh(input_n + reset * (recurrent_n + cell["hn"]["bias"]))
        hidden = (1.0 - update) * candidate + update * state
        return self._readout(params, hidden), hidden
