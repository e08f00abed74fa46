"""Graph networks: neuron groups joined by blocks of edges, and their propagation.

A graph has ``N`` neurons split into groups (input, bias, hidden layers, output). Its
weighted adjacency ``W`` is stored per pair of groups that has edges, as one block in one
of two layouts:

- dense: weights ``(n_dst, n_src)`` with a mask ``M`` of the same shape marking which edges
  exist (all of them, or a fixed pattern such as local receptive fields);
- edge list: ``E`` edges given by static index arrays ``dst`` and ``src`` (:class:`EdgeList`),
  weights and mask of shape ``(E,)``. Sums over edges are segment sums
  (``jax.ops.segment_sum``), so an irregular sparse block costs ``O(E)``, not ``n_dst * n_src``.

A layered feed-forward graph therefore costs what its dense layers cost, not ``N x N``.
The helpers :func:`matvec`, :func:`transposed_matvec`, :func:`row_sums` and
:func:`column_sums` hide the layout from the rest of the library.

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
import numpy as np
from jax import lax

from neuroevo.neurons import activate

Weights = tuple[jax.Array, ...]  # one array per block: (n_dst, n_src) dense or (E,) edge list


class _FixedArrays:
    """Read-only NumPy arrays compared and hashed by value, so a frozen Topology can hold them."""

    _fields: tuple[str, ...] = ()

    def _key(self) -> tuple:
        return tuple((getattr(self, name).shape, getattr(self, name).tobytes()) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _frozen(values, dtype) -> np.ndarray:
    array = np.array(values, dtype)
    array.flags.writeable = False
    return array


class EdgeList(_FixedArrays):
    """Edges of one sparse block, sorted by ``(dst, src)``: edge ``e`` is ``src[e] -> dst[e]``."""

    _fields = ("dst", "src")

    def __init__(self, dst, src):
        order = np.lexsort((np.asarray(src), np.asarray(dst)))
        self.dst = _frozen(np.asarray(dst)[order], np.int32)  # (E,) index into the destination group
        self.src = _frozen(np.asarray(src)[order], np.int32)  # (E,) index into the source group
        if self.dst.ndim != 1 or self.dst.shape != self.src.shape:
            raise ValueError(f"dst and src must be 1-d arrays of one length, got shapes {self.dst.shape} and {self.src.shape}")
        if len(set(zip(self.dst.tolist(), self.src.tolist()))) != self.dst.size:
            raise ValueError("an edge list contains an edge twice; list each (dst, src) pair once")

    @property
    def n_edges(self) -> int:
        return int(self.dst.size)


class FixedMask(_FixedArrays):
    """Fixed pattern of existing edges of a dense block, (n_dst, n_src) with 1.0 where an edge exists."""

    _fields = ("mask",)

    def __init__(self, mask):
        self.mask = _frozen(mask, np.float32)


Connectivity = EdgeList | FixedMask | None  # None: a dense block in which every edge exists


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
    connectivity: tuple[Connectivity, ...] = ()  # one per block; empty means every block dense and full

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
        """(n_dst, n_src) of the groups a block joins, whatever its layout."""
        src, dst = self.blocks[block]
        return self.group_sizes[dst], self.group_sizes[src]

    def block_connectivity(self, block: int) -> Connectivity:
        return self.connectivity[block] if self.connectivity else None

    def edge_list(self, block: int) -> EdgeList | None:
        """Return the block's edge list, or None for a dense block."""
        connectivity = self.block_connectivity(block)
        return connectivity if isinstance(connectivity, EdgeList) else None

    def edge_shape(self, block: int) -> tuple[int, ...]:
        """Shape of the block's weights and mask: (E,) for an edge list, else (n_dst, n_src)."""
        edges = self.edge_list(block)
        return (edges.n_edges,) if edges is not None else self.block_shape(block)

    @property
    def n_edges(self) -> int:
        """Number of stored weights; a masked dense block also stores its absent edges."""
        return sum(int(np.prod(self.edge_shape(block))) for block in range(len(self.blocks)))


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
    """Masks of the topology's edges: its fixed pattern for a dense block, ones for full and edge-list blocks."""
    masks = []
    for block in range(len(topology.blocks)):
        connectivity = topology.block_connectivity(block)
        if isinstance(connectivity, FixedMask):
            masks.append(jnp.asarray(connectivity.mask))
        else:
            masks.append(jnp.ones(topology.edge_shape(block), jnp.float32))
    return tuple(masks)


def fan_in(topology: Topology, masks: Weights) -> tuple[jax.Array, ...]:
    """Count the existing incoming edges of every neuron, summed over all blocks; one (n,) array per group."""
    counts = [jnp.zeros((size,), jnp.float32) for size in topology.group_sizes]
    for block, (_, dst) in enumerate(topology.blocks):
        counts[dst] = counts[dst] + row_sums(topology, block, masks[block])
    return tuple(counts)


def init_weights(key: jax.Array, topology: Topology, masks: Weights, distribution: str, gain: float) -> Weights:
    """Draw fresh random weights; an edge into neuron ``i`` has std ``gain / sqrt(fan_in_i)``.

    ``fan_in_i`` counts the existing edges into ``i`` (``masks``) over all blocks, the bias
    edge included. A neuron without incoming edges counts as fan-in 1.
    """
    fan_ins = fan_in(topology, masks)
    keys = jax.random.split(key, len(topology.blocks))
    weights = []
    for block, (_, dst) in enumerate(topology.blocks):
        shape = topology.edge_shape(block)
        row_std = gain / jnp.sqrt(jnp.maximum(fan_ins[dst], 1.0))  # (n_dst,)
        edges = topology.edge_list(block)
        std = row_std[edges.dst] if edges is not None else row_std[:, None]
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
        states[dst] = states[dst] + matvec(topology, block, weights[block], activations[src])
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
                states[group] = states[group] + matvec(topology, block, weights[block], activations[src])
        activations[group] = activate(topology.activations[group], states[group])
    return tuple(states), tuple(activations)


# Layout-independent block operations ---------------------------------------------------------


def matvec(topology: Topology, block: int, weights: jax.Array, source: jax.Array) -> jax.Array:
    """``W @ source`` for one block: (n_src,) -> (n_dst,)."""
    edges = topology.edge_list(block)
    if edges is None:
        return weights @ source
    return row_sums(topology, block, weights * source[edges.src])


def transposed_matvec(topology: Topology, block: int, weights: jax.Array, target: jax.Array) -> jax.Array:
    """``W.T @ target`` for one block: (n_dst,) -> (n_src,)."""
    edges = topology.edge_list(block)
    if edges is None:
        return weights.T @ target
    return column_sums(topology, block, weights * target[edges.dst])


def row_sums(topology: Topology, block: int, values: jax.Array) -> jax.Array:
    """Sum per-edge ``values`` (the block's edge shape) over the edges into each destination neuron: (n_dst,)."""
    edges = topology.edge_list(block)
    if edges is None:
        return values.sum(axis=1)
    n_dst, _ = topology.block_shape(block)
    return jax.ops.segment_sum(values, edges.dst, num_segments=n_dst, indices_are_sorted=True)


def column_sums(topology: Topology, block: int, values: jax.Array) -> jax.Array:
    """Sum per-edge ``values`` (the block's edge shape) over the edges out of each source neuron: (n_src,)."""
    edges = topology.edge_list(block)
    if edges is None:
        return values.sum(axis=0)
    _, n_src = topology.block_shape(block)
    return jax.ops.segment_sum(values, edges.src, num_segments=n_src)


def row_abs_max(topology: Topology, block: int, values: jax.Array) -> jax.Array:
    """Return the max of ``|values|`` over the edges into each destination neuron: (n_dst,), 0 where none."""
    edges = topology.edge_list(block)
    if edges is None:
        return jnp.abs(values).max(axis=1)
    n_dst, _ = topology.block_shape(block)
    return jnp.maximum(jax.ops.segment_max(jnp.abs(values), edges.dst, num_segments=n_dst, indices_are_sorted=True), 0.0)


def column_abs_max(topology: Topology, block: int, values: jax.Array) -> jax.Array:
    """Return the max of ``|values|`` over the edges out of each source neuron: (n_src,), 0 where none."""
    edges = topology.edge_list(block)
    if edges is None:
        return jnp.abs(values).max(axis=0)
    _, n_src = topology.block_shape(block)
    return jnp.maximum(jax.ops.segment_max(jnp.abs(values), edges.src, num_segments=n_src), 0.0)


def to_dense(topology: Topology, block: int, values: jax.Array) -> jax.Array:
    """Scatter per-edge ``values`` of a block into an (n_dst, n_src) array, zero where no edge is stored."""
    edges = topology.edge_list(block)
    if edges is None:
        return values
    return jnp.zeros(topology.block_shape(block), values.dtype).at[edges.dst, edges.src].set(values)
