"""Per-edge features that a rule reads, selected by name.

Every feature of edge ``(j -> i)`` is either a property of the postsynaptic neuron ``i``
(kind ``"post"``), of the presynaptic neuron ``j`` (kind ``"pre"``), or of the edge itself
(kind ``"edge"``). Features are therefore delivered factored, per block of edges, as three
arrays that broadcast against each other to the block's edge shape:

- dense block (n_dst, n_src): ``post`` (n_dst, 1, F_post), ``pre`` (1, n_src, F_pre),
  ``edge`` (n_dst, n_src, F_edge);
- edge list of E edges: ``post`` (E, F_post), ``pre`` (E, F_pre), ``edge`` (E, F_edge).

A rule written with broadcasting (``features.post @ K_post + features.pre @ K_pre``) thus
runs on both layouts, and on a dense block it never builds the (n_dst, n_src, F) tensor.
``dense()`` builds that tensor for reference implementations and tests.

Every feature is one float per edge; :data:`FEATURES` lists each with its kind and meaning.
Activation traces and edge ages are state that the lifetime carries from step to step
(``NetworkState.traces`` and ``NetworkState.edge_age`` in :mod:`neuroevo.lifetime`).

Spike-timing features (``Feature.spiking``) summarise the spike trains of one presentation
of a spiking network (:mod:`neuroevo.spiking`): spike counts, first-spike times, spike
traces and the two sums of pair-based STDP. Rate networks have no spikes, so a rule that
reads them needs ``network.neurons: lif``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from neuroevo.graph import EdgeList, Topology, Weights, column_abs_max, column_sums, row_abs_max, row_sums


@dataclasses.dataclass(frozen=True)
class Feature:
    """One registered feature: its kind and what it means."""

    kind: str  # "post", "pre" or "edge"
    doc: str
    requires: str = ""  # the learning signal a task must provide for this feature, if any
    spiking: bool = False  # True for spike-timing features, which only spiking networks provide


FEATURES: dict[str, Feature] = {
    "pre": Feature("pre", "presynaptic activation a_j"),
    "post": Feature("post", "postsynaptic activation a_i"),
    "post_state": Feature("post", "postsynaptic state h_i (before the activation function)"),
    "weight": Feature("edge", "current weight w_ij"),
    "error": Feature("post", "postsynaptic error e_i delivered by the feedback pathway", requires="error"),
    "in_mean": Feature("post", "mean weight of the existing edges into neuron i"),
    "in_norm": Feature("post", "L2 norm of the weights into neuron i"),
    "out_mean": Feature("pre", "mean weight of the existing edges out of neuron j"),
    "out_norm": Feature("pre", "L2 norm of the weights out of neuron j"),
    "in_max": Feature("post", "max |w| over the edges into neuron i"),
    "out_max": Feature("pre", "max |w| over the edges out of neuron j"),
    "reward": Feature(
        "post",
        "reward (or reward-prediction error) that the task broadcasts to every neuron; zero on tasks without a reward signal",
        requires="reward",
    ),
    "pre_trace": Feature("pre", "exponential trace of a_j: x <- d * x + (1 - d) * a_j each step, with d = network.trace_decay"),
    "post_trace": Feature("post", "exponential trace of a_i: x <- d * x + (1 - d) * a_i each step, with d = network.trace_decay"),
    "edge_age": Feature("edge", "steps since edge (j -> i) was created; equal for every edge, because no rule creates or resets edges yet"),
    "pre_spike_count": Feature("pre", "spikes of neuron j in this presentation", spiking=True),
    "post_spike_count": Feature("post", "spikes of neuron i in this presentation", spiking=True),
    "pre_first_spike": Feature("pre", "tick of neuron j's first spike divided by spiking.ticks; 1 if it did not spike", spiking=True),
    "post_first_spike": Feature("post", "tick of neuron i's first spike divided by spiking.ticks; 1 if it did not spike", spiking=True),
    "pre_spike_trace": Feature("pre", "spike trace of j at the last tick: x <- exp(-dt / tau_plus) * x + s_j each tick, from 0", spiking=True),
    "post_spike_trace": Feature("post", "spike trace of i at the last tick: y <- exp(-dt / tau_minus) * y + s_i each tick, from 0", spiking=True),
    "stdp_ltp": Feature("edge", "sum over the spikes of i of the trace x_j as it arrives at the edge: causal pre-then-post pairs, exp(-delta_t / tau_plus) each", spiking=True),
    "stdp_ltd": Feature("edge", "sum over the arrivals of j's spikes of the trace y_i: anti-causal post-then-pre pairs, exp(-delta_t / tau_minus) each", spiking=True),
}


class NeuronContext(NamedTuple):
    """Per-neuron quantities of one group, each of shape (n,)."""

    activation: jax.Array  # (n,)
    state: jax.Array  # (n,)
    error: jax.Array  # (n,)
    in_mean: jax.Array  # (n,)
    in_norm: jax.Array  # (n,)
    out_mean: jax.Array  # (n,)
    out_norm: jax.Array  # (n,)
    in_max: jax.Array  # (n,)
    out_max: jax.Array  # (n,)
    reward: jax.Array  # (n,) the broadcast reward signal
    trace: jax.Array  # (n,) exponential trace of the activation
    spike_count: jax.Array  # (n,) spikes in the presentation; zero in rate networks
    first_spike: jax.Array  # (n,) first-spike tick / ticks, 1 without a spike
    spike_trace_plus: jax.Array  # (n,) spike trace with tau_plus at the last tick
    spike_trace_minus: jax.Array  # (n,) spike trace with tau_minus at the last tick


class SpikeSummary(NamedTuple):
    """Spike-timing quantities of one group over one presentation."""

    count: jax.Array  # (n,) spikes
    first_spike: jax.Array  # (n,) tick of the first spike / ticks; 1.0 without a spike
    trace_plus: jax.Array  # (n,) spike trace with time constant tau_plus at the last tick
    trace_minus: jax.Array  # (n,) spike trace with time constant tau_minus at the last tick


_CONTEXT_FIELD = {
    "pre": "activation",
    "post": "activation",
    "post_state": "state",
    "error": "error",
    "reward": "reward",
    "in_mean": "in_mean",
    "in_norm": "in_norm",
    "out_mean": "out_mean",
    "out_norm": "out_norm",
    "in_max": "in_max",
    "out_max": "out_max",
    "reward": "reward",
    "pre_trace": "trace",
    "post_trace": "trace",
    "pre_spike_count": "spike_count",
    "post_spike_count": "spike_count",
    "pre_first_spike": "first_spike",
    "post_first_spike": "first_spike",
    "pre_spike_trace": "spike_trace_plus",
    "post_spike_trace": "spike_trace_minus",
}


class EdgeFeatures(NamedTuple):
    """Factored features of one block of edges; within each kind, columns follow the rule's feature names.

    The leading axes broadcast to the edge shape (see the module docstring); ``edge`` always
    has the full edge shape, even with no edge feature (F_edge = 0).
    """

    post: jax.Array  # (n_dst, 1, F_post) or (E, F_post)
    pre: jax.Array  # (1, n_src, F_pre) or (E, F_pre)
    edge: jax.Array  # (n_dst, n_src, F_edge) or (E, F_edge)

    @property
    def edge_shape(self) -> tuple[int, ...]:
        """Shape of the block's weight array: (n_dst, n_src) or (E,)."""
        return self.edge.shape[:-1]

    @classmethod
    def for_block(cls, post: jax.Array, pre: jax.Array, edge: jax.Array) -> EdgeFeatures:
        """Dense-block features from per-neuron columns post (n_dst, F_post), pre (n_src, F_pre) and edge (n_dst, n_src, F_edge)."""
        return cls(post=post[:, None, :], pre=pre[None, :, :], edge=edge)


def split_by_kind(names: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Positions of each kind in ``names``: {"post": (...), "pre": (...), "edge": (...)}."""
    return {kind: tuple(index for index, name in enumerate(names) if FEATURES[name].kind == kind) for kind in ("post", "pre", "edge")}


def validate_names(names: tuple[str, ...]) -> None:
    """Raise ValueError for an unknown or repeated feature name."""
    for name in names:
        if name not in FEATURES:
            raise ValueError(f"unknown feature {name!r}; available features: {', '.join(FEATURES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"features {list(names)} repeat a name; list each feature once")


def neuron_contexts(
    topology: Topology,
    weights: Weights,
    masks: Weights,
    states: tuple[jax.Array, ...],
    activations: tuple[jax.Array, ...],
    errors: tuple[jax.Array, ...],
    traces: tuple[jax.Array, ...] | None = None,
    reward: jax.Array | float = 0.0,
    spikes: tuple[SpikeSummary, ...] | None = None,
) -> tuple[NeuronContext, ...]:
    """Collect every per-neuron quantity, with neighbour-weight statistics over all blocks.

    ``traces`` are the activation traces per group (n,), zero when omitted. ``reward`` is a
    scalar learning signal (0 for tasks without rewards) that every neuron receives.
    ``spikes`` summarises each group's spikes in a spiking network; without it, spike
    counts and traces are zero and first-spike times are 1.
    """
    n_groups = len(topology.group_sizes)
    if traces is None:
        traces = tuple(jnp.zeros((size,)) for size in topology.group_sizes)
    if spikes is None:
        spikes = tuple(SpikeSummary(jnp.zeros((size,)), jnp.ones((size,)), jnp.zeros((size,)), jnp.zeros((size,))) for size in topology.group_sizes)
    reward = jnp.asarray(reward, jnp.float32)
    in_sum = [jnp.zeros((size,)) for size in topology.group_sizes]
    in_sq = [jnp.zeros((size,)) for size in topology.group_sizes]
    in_count = [jnp.zeros((size,)) for size in topology.group_sizes]
    out_sum = [jnp.zeros((size,)) for size in topology.group_sizes]
    out_sq = [jnp.zeros((size,)) for size in topology.group_sizes]
    out_count = [jnp.zeros((size,)) for size in topology.group_sizes]
    in_max = [jnp.zeros((size,)) for size in topology.group_sizes]
    out_max = [jnp.zeros((size,)) for size in topology.group_sizes]
    for block, (src, dst) in enumerate(topology.blocks):
        w, m = weights[block], masks[block]
        in_sum[dst] += row_sums(topology, block, w)
        in_sq[dst] += row_sums(topology, block, w * w)
        in_count[dst] += row_sums(topology, block, m)
        out_sum[src] += column_sums(topology, block, w)
        out_sq[src] += column_sums(topology, block, w * w)
        out_count[src] += column_sums(topology, block, m)
        # The lifetime keeps W * M == W, so missing edges have w = 0 and cannot raise the max of |w|.
        in_max[dst] = jnp.maximum(in_max[dst], row_abs_max(topology, block, w))
        out_max[src] = jnp.maximum(out_max[src], column_abs_max(topology, block, w))
    return tuple(
        NeuronContext(
            activation=activations[group],
            state=states[group],
            error=errors[group],
            in_mean=in_sum[group] / jnp.maximum(in_count[group], 1.0),
            in_norm=jnp.sqrt(in_sq[group]),
            out_mean=out_sum[group] / jnp.maximum(out_count[group], 1.0),
            out_norm=jnp.sqrt(out_sq[group]),
            in_max=in_max[group],
            out_max=out_max[group],
            reward=jnp.full((topology.group_sizes[group],), reward),
            trace=traces[group],
            spike_count=spikes[group].count,
            first_spike=spikes[group].first_spike,
            spike_trace_plus=spikes[group].trace_plus,
            spike_trace_minus=spikes[group].trace_minus,
        )
        for group in range(n_groups)
    )


def block_features(
    names: tuple[str, ...],
    post_context: NeuronContext,
    pre_context: NeuronContext,
    weight: jax.Array,
    edge_age: jax.Array | None = None,
    edges: EdgeList | None = None,
    stdp: tuple[jax.Array, jax.Array] | None = None,
) -> EdgeFeatures:
    """Assemble the factored features of one block.

    ``weight``, ``edge_age`` (zero when omitted) and the STDP sums ``stdp = (ltp, ltd)``
    (zero when omitted) are (n_dst, n_src), or (E,) with the block's ``edges``.
    """
    kinds = split_by_kind(names)
    n_dst, n_src = post_context.activation.shape[0], pre_context.activation.shape[0]

    def stack(context: NeuronContext, indices: tuple[int, ...], size: int) -> jax.Array:
        columns = [getattr(context, _CONTEXT_FIELD[names[index]]) for index in indices]
        return jnp.stack(columns, axis=-1) if columns else jnp.zeros((size, 0))

    ltp, ltd = (jnp.zeros_like(weight), jnp.zeros_like(weight)) if stdp is None else stdp
    edge_values = {"weight": weight, "edge_age": jnp.zeros_like(weight) if edge_age is None else edge_age, "stdp_ltp": ltp, "stdp_ltd": ltd}
    edge_columns = [edge_values[names[index]] for index in kinds["edge"]]
    edge = jnp.stack(edge_columns, axis=-1) if edge_columns else jnp.zeros((*weight.shape, 0))
    post = stack(post_context, kinds["post"], n_dst)
    pre = stack(pre_context, kinds["pre"], n_src)
    if edges is not None:
        # Gather each edge's postsynaptic and presynaptic rows: every array becomes (E, F).
        return EdgeFeatures(post=post[edges.dst], pre=pre[edges.src], edge=edge)
    return EdgeFeatures.for_block(post=post, pre=pre, edge=edge)


def feature_columns(names: tuple[str, ...], features: EdgeFeatures) -> dict[str, jax.Array]:
    """Map each feature name to its column, broadcastable to the edge shape: (n_dst, 1), (1, n_src), (n_dst, n_src) or (E,)."""
    kinds = split_by_kind(names)
    columns = {}
    for kind, array in (("post", features.post), ("pre", features.pre), ("edge", features.edge)):
        for position, index in enumerate(kinds[kind]):
            columns[names[index]] = array[..., position]
    return columns


def dense(names: tuple[str, ...], features: EdgeFeatures) -> jax.Array:
    """Materialise the (*edge_shape, F) feature tensor, columns in the order of ``names``."""
    kinds = split_by_kind(names)
    shape = features.edge_shape
    columns = [None] * len(names)
    for kind, array in (("post", features.post), ("pre", features.pre), ("edge", features.edge)):
        for position, index in enumerate(kinds[kind]):
            columns[index] = jnp.broadcast_to(array[..., position], shape)
    return jnp.stack(columns, axis=-1)
