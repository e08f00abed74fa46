"""MLP Connection Update Module: a small MLP shared by every edge maps its features to ``dw``.

``dw_ij = output_scale * MLP(f_ij)``, where ``f_ij`` are the selected features of edge
``(j -> i)``. The parameters are those of the flax module :class:`EdgeMLP`; :meth:`MLPRule.apply`
evaluates the same function without building the (n_dst, n_src, F) feature tensor: the first
layer's pre-activation splits into a postsynaptic row term, a presynaptic column term and
the per-edge term, ``z_ij = K_post f_i + K_pre f_j + K_edge f_ij + b``, and only the hidden
units are computed per edge. The per-edge part is written unit by unit with elementwise
operations, so that XLA compiles it into one fused loop over the edges.
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
    growth_output: bool = False  # a second output that scores absent edges for regrowth (structure.regrow: rule)

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
    """Reference per-edge MLP: features (..., F) -> output (...), or (..., outputs) when ``outputs > 1``."""

    hidden: tuple[int, ...]
    activation: str = "tanh"
    outputs: int = 1

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        x = features
        for width in self.hidden:
            x = ACTIVATIONS[self.activation](nn.Dense(width)(x))
        out = nn.Dense(self.outputs)(x)
        return out[..., 0] if self.outputs == 1 else out


def _project_unit_major(features: jax.Array, kernel_rows: list[jax.Array], bias: jax.Array) -> jax.Array:
    """Compute ``features @ kernel + bias`` with units first; returns (H, ..., n).

    ``features`` is (..., n, F), ``kernel_rows`` the F rows of the kernel, each (H,), and
    ``bias`` (H,).

    Hidden units lead so that each unit's values are contiguous in memory. With units last,
    the fused per-edge loop would read them with a stride of H, which costs about a third of
    the rule's speed.

    The product is written as F broadcast multiply-adds rather than a dot, because F is a
    handful of features. On a CPU each small batched dot is a library call of its own, while
    the multiply-adds fuse with the code that stacks the features. The optimization barrier
    keeps XLA from fusing the projection into the per-edge loop, where it would be recomputed
    for every edge of the row or column. A generation of the reference rule ran about 6%
    faster on a 2-core CPU than with dots (``scripts/bench.py``).
    """
    expand = (slice(None),) + (None,) * (features.ndim - 1)
    projected = jnp.broadcast_to(bias[expand], bias.shape + features.shape[:-1])
    for position, kernel_row in enumerate(kernel_rows):
        projected = projected + kernel_row[expand] * features[..., position]
    return jax.lax.optimization_barrier(projected)


@dataclasses.dataclass(frozen=True)
class MLPRule:
    """Stateless MLP CUM; see the module docstring for the factored evaluation.

    With ``growth_output`` the last layer has a second unit, the growth score. On an edge
    position that does not exist, it scores how strongly the rule favours an edge there
    (:mod:`neuroevo.structural`, ``regrow: rule``).
    """

    feature_names: tuple[str, ...]
    hidden: tuple[int, ...] = (16,)
    activation: str = "tanh"
    output_scale: float = 0.1
    growth_output: bool = False

    @property
    def compute_bound(self) -> bool:
        """Return True when evaluating the rule costs more than reading and writing the weights, as with hidden units.

        On a CPU, evolution then runs more lifetimes at once (see
        :func:`neuroevo.evolve.cpu_lifetime_batch`).
        """
        return bool(self.hidden)

    @classmethod
    def from_config(cls, config: MLPRuleConfig) -> MLPRule:
        return cls(config.features, config.hidden, config.activation, config.output_scale, config.growth_output)

    @property
    def module(self) -> EdgeMLP:
        return EdgeMLP(self.hidden, self.activation, outputs=2 if self.growth_output else 1)

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
        out = self.module.apply(params, features)
        return self.output_scale * (out[..., 0] if self.growth_output else out)

    def growth_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """Reference growth score on a dense feature tensor (..., F); needs ``growth_output``."""
        return self.module.apply(params, features)[..., 1]

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """Factored evaluation for one block; returns dw (edge shape) and the unchanged state."""
        outputs = self._outputs(params, features)
        return self.output_scale * outputs[0], state

    def apply_with_growth(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, jax.Array, tuple]:
        """Like :meth:`apply`, plus the growth score (edge shape) from the second output unit."""
        if not self.growth_output:
            raise ValueError("this MLP rule has no growth output; build it with growth_output=True")
        dw_unscaled, growth = self._outputs(params, features)
        return self.output_scale * dw_unscaled, growth, state

    def _outputs(self, params: Any, features: EdgeFeatures) -> list[jax.Array]:
        """Evaluate the MLP's output units for one block, each of edge shape, without ``output_scale``."""
        layers = params["params"]
        kinds = split_by_kind(self.feature_names)
        first = layers["Dense_0"]
        kernel = first["kernel"]  # (F, width of the first layer)

        # Rows of the kernel are taken with static indices, not a gather: blocks that share a
        # neuron group then compute identical projections, which XLA merges into one.
        row = _project_unit_major(features.post, [kernel[index] for index in kinds["post"]], first["bias"])  # (H, n_dst, 1) or (H, E)
        no_bias = jnp.zeros_like(first["bias"])
        column = _project_unit_major(features.pre, [kernel[index] for index in kinds["pre"]], no_bias)  # (H, 1, n_src) or (H, E)
        edge_rows = [kernel[index] for index in kinds["edge"]]  # F_edge rows, each (H,)

        # Each unit below is one edge-shaped array built only from broadcasts and elementwise
        # operations, so XLA fuses the whole per-edge MLP into one loop over the edges. An
        # (edges, H) hidden tensor followed by a dot is written to memory and read back
        # instead, which ran 4 to 10 times slower on a 2-core CPU.
        units = []
        for unit in range(kernel.shape[1]):
            z = row[unit] + column[unit]
            for position in range(len(kinds["edge"])):
                z = z + features.edge[..., position] * edge_rows[position][unit]
            units.append(z)

        # NOTE: the traced graph grows as width_in x width_out per layer, so very wide hidden
        # layers compile slowly; only widths up to 16 were timed.
        act = ACTIVATIONS[self.activation]
        for layer in range(1, len(self.hidden) + 1):
            dense = layers[f"Dense_{layer}"]
            inputs = [act(z) for z in units]
            units = [
                sum(x * dense["kernel"][index, unit] for index, x in enumerate(inputs)) + dense["bias"][unit]
                for unit in range(dense["kernel"].shape[1])
            ]
        return [jnp.broadcast_to(unit, features.edge_shape) for unit in units]
