"""Graph networks: neuron groups joined by dense blocks of edges, and their propagation.

A graph has ``N`` neurons split into groups (input, bias, hidden layers, output). Its
weighted adjacency ``W`` is stored as one dense ``(n_dst, n_src)`` block per pair of groups
that has edges, with a mask ``M`` of the same shape marking which edges exist. A layered
feed-forward graph therefore costs what its dense layers cost, not ``N x N``.

One tick updates every non-input group synchronously from the previous activations:
``h_dst = sum over blocks (src -> dst) of W_block @ a_src``, then ``a = act(h)``. Input neurons
are clamped to the presented input and the bias neuron to 1. A feed-forward graph with
``ticks >= number of weight layers`` therefore computes exactly its MLP forward pass, and
:func:`propagate` computes that pass with one ordered sweep instead of the ticks.

Invariant kept by every function here and by the lifetime: ``W * M == W``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from neuroevo.neurons import activate

Weights = tuple[jax.Array, ...]  # one (n_dst, n_src) array per block


@dataclasses.dataclass(frozen=True)
class Topology:
    """Static structure of a graph network; hashable, so jitted functions can close over it."""

    group_names: tuple[str, ...]
    group_sizes: tuple[int, ...]
    activations: tuple[str, ...]  # one per group; input and bias groups use "identity"
    blocks: tuple[tuple[int, int], ...]  # (src_group, dst_group) of each block of edges
    input_group: int
    output_group: int
    bias_group: int | None
    ticks: int

    @property
    def n_inputs(self) -> int:
        return self.group_sizes[self.input_group]

    @property
    def n_outputs(self) -> int:
        return self.group_sizes[self.output_group]

    @property
    def n_neurons(self) -> int:
        return sum(self.group_sizes)

    @property
    def hidden_groups(self) -> tuple[int, ...]:
        clamped = {self.input_group, self.output_group, self.bias_group}
        return tuple(group for group in range(len(self.group_sizes)) if group not in clamped)

    @property
    def update_order(self) -> tuple[int, ...]:
        """Non-clamped groups in the order of their index (input to output for a layered graph)."""
        return tuple(sorted((*self.hidden_groups, self.output_group)))

    @property
    def is_feedforward(self) -> bool:
        """True when every edge block leads from a clamped or earlier group to a later one, and
        there are enough ticks to reach the output, so one ordered sweep equals the ticks."""
        clamped = {self.input_group, self.bias_group}
        order = {group: position for position, group in enumerate(self.update_order)}
        forward = all(src in clamped or (src in order and order[src] < order[dst]) for src, dst in self.blocks)
        return forward and self.ticks >= len(self.update_order)

    def block_shape(self, block: int) -> tuple[int, int]:
        src, dst = self.blocks[block]
        return self.group_sizes[dst], self.group_sizes[src]

    @property
    def n_edges(self) -> int:
        return sum(rows * cols for rows, cols in map(self.block_shape, range(len(self.blocks))))


def layered_topology(
    n_inputs: int,
    hidden: tuple[int, ...],
    n_outputs: int,
    *,
    hidden_activation: str = "tanh",
    output_activation: str = "softmax",
    bias: bool = True,
    ticks: int = 0,
) -> Topology:
    """Build a layered feed-forward graph: input -> hidden[0] -> ... -> output.

    With ``bias``, one constant-1 neuron feeds every hidden and output neuron. ``ticks=0``
    means one tick per weight layer, the fewest that carry the input to the output.
    """
    layer_sizes = (n_inputs, *hidden, n_outputs)
    names = ["input", *(f"hidden{index}" for index in range(len(hidden))), "output"]
    activations = ["identity", *(hidden_activation,) * len(hidden), output_activation]
    blocks = [(layer, layer + 1) for layer in range(len(layer_sizes) - 1)]
    sizes = list(layer_sizes)
    bias_group = None
    if bias:
        bias_group = len(sizes)
        names.append("bias")
        sizes.append(1)
        activations.append("identity")
        blocks += [(bias_group, layer) for layer in range(1, len(layer_sizes))]
    return Topology(
        group_names=tuple(names),
        group_sizes=tuple(sizes),
        activations=tuple(activations),
        blocks=tuple(blocks),
        input_group=0,
        output_group=len(layer_sizes) - 1,
        bias_group=bias_group,
        ticks=ticks or len(layer_sizes) - 1,
    )


def init_masks(topology: Topology) -> Weights:
    """Masks of a fully connected block structure (every edge of every block exists)."""
    return tuple(jnp.ones(topology.block_shape(block), jnp.float32) for block in range(len(topology.blocks)))


def init_weights(key: jax.Array, topology: Topology, masks: Weights, distribution: str, gain: float) -> Weights:
    """Draw fresh random weights, std ``gain / sqrt(fan_in)``, where fan_in counts every incoming edge."""
    fan_in = [0] * len(topology.group_sizes)
    for block, (_, dst) in enumerate(topology.blocks):
        fan_in[dst] += topology.block_shape(block)[1]

    keys = jax.random.split(key, len(topology.blocks))
    weights = []
    for block, (_, dst) in enumerate(topology.blocks):
        shape = topology.block_shape(block)
        std = gain / jnp.sqrt(jnp.float32(fan_in[dst]))
        if distribution == "normal":
            sample = std * jax.random.normal(keys[block], shape, jnp.float32)
        elif distribution == "uniform":
            # Uniform on [-s, s] has std s / sqrt(3).
            sample = std * jnp.sqrt(3.0) * jax.random.uniform(keys[block], shape, jnp.float32, -1.0, 1.0)
        elif distribution == "zeros":
            sample = jnp.zeros(shape, jnp.float32)
        else:
            raise ValueError(f"unknown weight distribution {distribution!r}")
        weights.append(sample * masks[block])
    return tuple(weights)


def clamp(topology: Topology, activations: list[jax.Array], x: jax.Array) -> list[jax.Array]:
    """Set the input group to ``x`` and the bias group to 1."""
    activations = list(activations)
    activations[topology.input_group] = x
    if topology.bias_group is not None:
        activations[topology.bias_group] = jnp.ones((1,), x.dtype)
    return activations


def tick(topology: Topology, weights: Weights, activations: tuple[jax.Array, ...]) -> tuple[tuple, tuple]:
    """One synchronous update of every non-clamped group; returns (states, activations)."""
    states = [jnp.zeros((size,), jnp.float32) for size in topology.group_sizes]
    for block, (src, dst) in enumerate(topology.blocks):
        states[dst] = states[dst] + weights[block] @ activations[src]
    new_activations = list(activations)
    for group in (*topology.hidden_groups, topology.output_group):
        new_activations[group] = activate(topology.activations[group], states[group])
    return tuple(states), tuple(new_activations)


def propagate(topology: Topology, weights: Weights, x: jax.Array) -> tuple[tuple, tuple]:
    """Present input ``x`` (n_inputs,) from rest for ``topology.ticks`` ticks.

    Returns per-group ``(states h, activations a)``; clamped groups report their clamped
    values as both state and activation.
    """
    rest = [jnp.zeros((size,), jnp.float32) for size in topology.group_sizes]
    activations = tuple(clamp(topology, rest, x))
    states = activations

    def one_tick(_, carry):
        _, activations = carry
        return tick(topology, weights, activations)

    if topology.is_feedforward:
        states, activations = sweep(topology, weights, activations)
    else:
        states, activations = lax.fori_loop(0, topology.ticks, one_tick, (states, activations))
    states = clamp(topology, list(states), x)
    return tuple(states), activations


def sweep(topology: Topology, weights: Weights, activations: tuple[jax.Array, ...]) -> tuple[tuple, tuple]:
    """Update the groups once each, in order, each from the already updated groups that feed it.

    For a feed-forward graph this gives exactly the state that ``ticks >= number of weight
    layers`` synchronous ticks reach, at the cost of one tick.
    """
    states = [jnp.zeros((size,), jnp.float32) for size in topology.group_sizes]
    activations = list(activations)
    for group in topology.update_order:
        for block, (src, dst) in enumerate(topology.blocks):
            if dst == group:
                states[group] = states[group] + weights[block] @ activations[src]
        activations[group] = activate(topology.activations[group], states[group])
    return tuple(states), tuple(activations)
