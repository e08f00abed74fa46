"""Spiking graph networks: leaky integrate-and-fire neurons, spike coding, delays and STDP sums.

Neurons are leaky integrate-and-fire (LIF) units with delta synapses (Gerstner, Kistler,
Naud and Paninski 2014, "Neuronal Dynamics"). Each tick of ``dt`` ms:

    v <- exp(-dt / tau_mem) * v + I          (I = sum of the weights of the spikes arriving now)
    spike when v >= v_threshold; then v <- v_reset and the neuron stays at v_reset,
    ignoring input, for ``refractory`` ticks.

The resting potential is 0. A presentation runs ``ticks`` synchronous ticks from rest. Every
non-input group receives the spikes that its source groups emitted on the previous tick, or
``1 + d`` ticks earlier through an edge with delay ``d``. The existing topologies and both
block layouts therefore run unchanged through :func:`neuroevo.graph.matvec`. The input
group emits the encoded input, and the bias neuron spikes on every tick.

Input coding: ``rate`` gives Bernoulli spikes with probability ``x * max_rate * dt`` per tick.
``latency`` gives one spike at tick ``round((1 - x) * (ticks - 1))``, and none for ``x <= 0``.
``raster`` means the task presents a flattened (ticks, n_inputs) spike raster. With
``signed_inputs``, an input of ``n`` signed values (control observations lie in about
[-1, 1]) feeds ``2n`` input neurons: neuron ``i`` encodes ``clip(x_i, 0, 1)`` and neuron
``n + i`` encodes ``clip(-x_i, 0, 1)``. Readout: the
output logits are ``readout_scale`` times the spike counts, or times the ticks left after the
first spike (``first_spike``; 0 without a spike), and the output activations their softmax.

STDP sums follow the pair-based model with all-to-all pairing of Song, Miller and Abbott
2000, "Competitive Hebbian learning through spike-timing-dependent synaptic plasticity",
fitted to the measurements of Bi and Poo 1998: a pre spike at ``t_pre`` (its arrival at the
edge, ``t_pre + d``, with a delay) and a post spike at ``t_post`` give

    ltp += exp(-(t_post - t_pre) * dt / tau_plus)     if t_post >= t_pre
    ltd += exp(-(t_pre - t_post) * dt / tau_minus)    if t_pre >  t_post

and a rule combines them, e.g. ``dw = eta * (A_plus * ltp - A_minus * ltd)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from neuroevo import features as feature_lib
from neuroevo import graph, signals
from neuroevo.config import SpikingConfig
from neuroevo.lifetime import Learner, LearningSignals, NetworkState


class LIFState(NamedTuple):
    """Membrane state of one group of LIF neurons."""

    v: jax.Array  # (n,) membrane potential
    refractory: jax.Array  # (n,) int32, ticks left in the refractory period


def lif_rest(size: int) -> LIFState:
    """Neurons at rest: potential 0, not refractory."""
    return LIFState(v=jnp.zeros((size,), jnp.float32), refractory=jnp.zeros((size,), jnp.int32))


def lif_step(config: SpikingConfig, state: LIFState, current: jax.Array) -> tuple[LIFState, jax.Array]:
    """Advance LIF neurons by one tick with input ``current`` (n,); returns the new state and spikes (n,) in {0, 1}."""
    blocked = state.refractory > 0
    decay = np.exp(-config.dt / config.tau_mem)
    v = jnp.where(blocked, config.v_reset, decay * state.v + current)

    spiking = v >= config.v_threshold
    v = jnp.where(spiking, config.v_reset, v)
    refractory = jnp.where(spiking, config.refractory, jnp.maximum(state.refractory - 1, 0))
    return LIFState(v=v, refractory=refractory.astype(jnp.int32)), spiking.astype(jnp.float32)


# Input coding ---------------------------------------------------------------------------------


def rate_encode(key: jax.Array, x: jax.Array, ticks: int, max_rate: float, dt: float) -> jax.Array:
    """Bernoulli spike raster (ticks, n) with spike probability ``clip(x * max_rate * dt, 0, 1)`` per tick."""
    probability = jnp.clip(x * max_rate * dt, 0.0, 1.0)
    return jax.random.bernoulli(key, probability, (ticks, x.shape[0])).astype(jnp.float32)


def latency_encode(x: jax.Array, ticks: int) -> jax.Array:
    """Raster (ticks, n) with one spike per input at tick ``round((1 - x) * (ticks - 1))``; ``x <= 0`` never spikes."""
    x = jnp.clip(x, 0.0, 1.0)
    spike_tick = jnp.round((1.0 - x) * (ticks - 1)).astype(jnp.int32)
    raster = jnp.arange(ticks)[:, None] == spike_tick[None, :]
    return (raster & (x > 0.0)[None, :]).astype(jnp.float32)


def split_signed(x: jax.Array) -> jax.Array:
    """Split signed values (n,) into ``[clip(x, 0, 1), clip(-x, 0, 1)]`` (2n,), the inputs of the rate and latency encoders."""
    return jnp.concatenate([jnp.clip(x, 0.0, 1.0), jnp.clip(-x, 0.0, 1.0)])


def input_key(seed: int, x: jax.Array) -> jax.Array:
    """Key of the rate encoder, derived from the bits of ``x`` (n,): one input always gets the same raster.

    NOTE: the Learner interface gives ``present`` no key, so an image shown twice (support
    and query use disjoint images, but multi-pass training repeats them) gets identical
    spikes. Fresh noise per presentation needs a key threaded through the task protocol.
    """
    bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    weights = jnp.arange(1, 2 * x.shape[0], 2, dtype=jnp.uint32)  # odd multipliers, so positions matter
    return jax.random.fold_in(jax.random.key(seed), jnp.sum(bits * weights))


# Traces and STDP sums -------------------------------------------------------------------------


def trace_kernel(ticks: int, decay: float, strict: bool = False) -> np.ndarray:
    """Matrix K (ticks, ticks) with ``K[t, s] = decay ** (t - s)`` for ``s <= t`` (``s < t`` if ``strict``), else 0.

    ``K @ spikes`` gives the spike trace ``x(t) = decay * x(t - 1) + s(t)`` from ``x(-1) = 0``.
    """
    lag = np.arange(ticks)[:, None] - np.arange(ticks)[None, :]
    keep = lag > 0 if strict else lag >= 0
    return np.where(keep, decay ** np.maximum(lag, 0), 0.0).astype(np.float32)


def spike_traces(spikes: jax.Array, decay: float) -> jax.Array:
    """Trace (ticks, n) of a spike raster (ticks, n): ``x(t) = decay * x(t - 1) + s(t)``, ``x(-1) = 0``."""
    return jnp.asarray(trace_kernel(spikes.shape[0], decay)) @ spikes


def summarise_spikes(config: SpikingConfig, spikes: jax.Array) -> feature_lib.SpikeSummary:
    """Spike counts, first-spike times and end-of-presentation traces of a raster (ticks, n)."""
    ticks = spikes.shape[0]
    fired = spikes.sum(axis=0) > 0
    first = jnp.where(fired, jnp.argmax(spikes > 0, axis=0), ticks) / ticks
    return feature_lib.SpikeSummary(
        count=spikes.sum(axis=0),
        first_spike=first.astype(jnp.float32),
        trace_plus=spike_traces(spikes, np.exp(-config.dt / config.tau_plus))[-1],
        trace_minus=spike_traces(spikes, np.exp(-config.dt / config.tau_minus))[-1],
    )


# Synaptic delays ------------------------------------------------------------------------------


class Delays(graph._FixedArrays):
    """Integer delay in ticks of every edge, one read-only array per block (its edge shape)."""

    def __init__(self, per_block):
        self.per_block = tuple(graph._frozen(delays, np.int32) for delays in per_block)

    def _key(self) -> tuple:
        return tuple((delays.shape, delays.tobytes()) for delays in self.per_block)

    @property
    def max_delay(self) -> int:
        return max((int(delays.max()) for delays in self.per_block if delays.size), default=0)


def draw_delays(topology: graph.Topology, max_delay: int, seed: int) -> Delays | None:
    """Draw a delay from 0..max_delay ticks for every edge with NumPy from ``seed``; None when ``max_delay`` is 0.

    The delays are static, like the structure of a sparse graph: every lifetime, member and
    process of a run uses the same ones.
    """
    if max_delay == 0:
        return None
    rng = np.random.default_rng([seed, 1])
    return Delays([rng.integers(0, max_delay + 1, topology.edge_shape(block)) for block in range(len(topology.blocks))])


def delayed_source(topology: graph.Topology, block: int, delays: np.ndarray, buffer: jax.Array, tick: jax.Array) -> jax.Array:
    """Source spikes each edge delivers at ``tick``: ``buffer[(tick - 1 - d) mod D, j]`` for edge ``(j -> i)``.

    ``buffer`` (D, n_src) is the ring buffer of the source group's last D spike vectors,
    slot ``t mod D`` holding tick ``t``. Returns the block's edge shape.
    """
    depth = buffer.shape[0]
    slots = (tick - 1 - jnp.asarray(delays)) % depth
    edges = topology.edge_list(block)
    if edges is not None:
        return buffer[slots, jnp.asarray(edges.src)]
    _, n_src = topology.block_shape(block)
    return buffer[slots, jnp.arange(n_src)[None, :]]


def shift_by_delays(topology: graph.Topology, block: int, delays: np.ndarray | None, values: jax.Array) -> jax.Array:
    """Per-edge copy of source values (ticks, n_src), each edge's shifted later by its delay (zeros before).

    Returns (ticks, 1, n_src) without delays on a dense block (it broadcasts), else
    (ticks, n_dst, n_src) or (ticks, E).
    """
    edges = topology.edge_list(block)
    if delays is None:
        return values[:, edges.src] if edges is not None else values[:, None, :]
    ticks = values.shape[0]
    source_tick = jnp.arange(ticks).reshape((ticks,) + (1,) * delays.ndim) - jnp.asarray(delays)[None]
    padded = jnp.concatenate([jnp.zeros((1, values.shape[1]), values.dtype), values])  # row 0: before the first tick
    columns = jnp.asarray(edges.src) if edges is not None else jnp.arange(values.shape[1])[None, :]
    return padded[jnp.maximum(source_tick + 1, 0), columns]


def post_per_edge(topology: graph.Topology, block: int, values: jax.Array) -> jax.Array:
    """Destination values (ticks, n_dst) laid out per edge: (ticks, n_dst, 1) dense, (ticks, E) for an edge list."""
    edges = topology.edge_list(block)
    return values[:, edges.dst] if edges is not None else values[:, :, None]


def stdp_sums(
    config: SpikingConfig,
    topology: graph.Topology,
    block: int,
    delays: np.ndarray | None,
    pre_spikes: jax.Array,
    post_spikes: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Pair-based STDP sums ``(ltp, ltd)`` of one block (its edge shape) from rasters pre (ticks, n_src), post (ticks, n_dst).

    A pre spike counts at its arrival at the edge, ``delays`` ticks after emission.
    """
    plus = jnp.asarray(trace_kernel(pre_spikes.shape[0], np.exp(-config.dt / config.tau_plus)))
    minus = jnp.asarray(trace_kernel(pre_spikes.shape[0], np.exp(-config.dt / config.tau_minus), strict=True))
    arrivals = shift_by_delays(topology, block, delays, pre_spikes)  # (ticks, *edge-like shape)
    post = post_per_edge(topology, block, post_spikes)
    shape = topology.edge_shape(block)

    # ltp: each post spike reads the pre trace (arrivals at or before it); ltd: each arrival
    # reads the post trace of strictly earlier post spikes.
    pre_trace = jnp.tensordot(plus, arrivals, axes=1)
    post_trace = jnp.tensordot(minus, post, axes=1)
    ltp = jnp.broadcast_to((post * pre_trace).sum(axis=0), shape)
    ltd = jnp.broadcast_to((arrivals * post_trace).sum(axis=0), shape)
    return ltp, ltd


# The spiking learner --------------------------------------------------------------------------


class SpikingStates(NamedTuple):
    """Per-group output of one presentation of a spiking network, read by the loss and the rule."""

    h: tuple[jax.Array, ...]  # per group (n,): output logits; spike rate (spikes / ticks) elsewhere
    spikes: tuple[jax.Array, ...]  # per group (ticks, n) spike raster; clamped groups included


def encode(config: SpikingConfig, seed: int, x: jax.Array, n_inputs: int) -> jax.Array:
    """Spike raster (ticks, n_inputs) of input ``x``.

    ``x`` is (n_inputs,) values in [0, 1], (n_inputs / 2,) signed values with
    ``signed_inputs``, or a flattened raster for ``raster``.
    """
    if config.encoder == "raster":
        return x.reshape(config.ticks, n_inputs).astype(jnp.float32)
    if config.signed_inputs:
        x = split_signed(x)
    if config.encoder == "latency":
        return latency_encode(x, config.ticks)
    return rate_encode(input_key(seed, x), x, config.ticks, config.max_rate, config.dt)


def readout_logits(config: SpikingConfig, spikes: jax.Array) -> jax.Array:
    """Output logits (n_out,) from the output raster (ticks, n_out)."""
    if config.readout == "count":
        return config.readout_scale * spikes.sum(axis=0)
    ticks = spikes.shape[0]
    fired = spikes.sum(axis=0) > 0
    ticks_left = jnp.where(fired, ticks - jnp.argmax(spikes > 0, axis=0), 0)
    return config.readout_scale * ticks_left.astype(jnp.float32)


def simulate(config: SpikingConfig, topology: graph.Topology, weights: graph.Weights, raster: jax.Array, delays: Delays | None) -> tuple[jax.Array, ...]:
    """Run the network for ``raster.shape[0]`` ticks from rest on an input raster (ticks, n_inputs).

    Returns one spike raster (ticks, n) per group.
    """
    groups = topology.update_order
    depth = 1 + (delays.max_delay if delays is not None else 0)
    buffers = [jnp.zeros((depth, size), jnp.float32) for size in topology.group_sizes]
    if topology.bias_group is not None:
        buffers[topology.bias_group] = jnp.ones((depth, 1), jnp.float32)
    membranes = tuple(lif_rest(topology.group_sizes[group]) for group in groups)

    def one_tick(carry, step):
        membranes, buffers = carry
        tick, input_spikes = step

        new_membranes, spikes = [], list(jnp.ones((size,), jnp.float32) for size in topology.group_sizes)
        for position, group in enumerate(groups):
            current = jnp.zeros((topology.group_sizes[group],), jnp.float32)
            for block, (src, dst) in enumerate(topology.blocks):
                if dst != group:
                    continue
                if delays is None:
                    current = current + graph.matvec(topology, block, weights[block], buffers[src][0])
                else:
                    arriving = delayed_source(topology, block, delays.per_block[block], buffers[src], tick)
                    current = current + graph.row_sums(topology, block, weights[block] * arriving)
            membrane, spikes[group] = lif_step(config, membranes[position], current)
            new_membranes.append(membrane)
        spikes[topology.input_group] = input_spikes

        buffers = [buffer.at[tick % depth].set(spike) for buffer, spike in zip(buffers, spikes)]
        return (tuple(new_membranes), buffers), tuple(spikes)

    ticks = raster.shape[0]
    _, rasters = lax.scan(one_tick, (membranes, buffers), (jnp.arange(ticks), raster))
    return rasters


@dataclasses.dataclass(frozen=True)
class SpikingLearner(Learner):
    """A :class:`~neuroevo.lifetime.Learner` whose neurons are LIF units; same building blocks, same tasks.

    ``present`` runs ``spiking.ticks`` ticks and returns :class:`SpikingStates`. The rule runs
    once per presentation, on features that summarise its spikes: rates, counts, first-spike
    times, traces and the STDP sums.

    NOTE: one rule call per presentation, not per tick. The STDP sums add up the per-tick
    pair-based terms of the presentation, which equals per-tick STDP exactly while the
    weights stay fixed within a presentation, and costs one rule call instead of ``ticks``.
    """

    spiking: SpikingConfig = SpikingConfig()
    delays: Delays | None = None
    seed: int = 0  # seeds the rate encoder

    @property
    def reads_stdp(self) -> bool:
        return bool({"stdp_ltp", "stdp_ltd"} & set(self.rule.feature_names))

    @property
    def error_topology(self) -> graph.Topology:
        """The topology with identity hidden activations: the feedback pathway then passes errors unscaled.

        NOTE: a spike threshold has no useful derivative, so hidden errors are the fed-back
        output error without any surrogate derivative.
        """
        activations = tuple("identity" if group in self.topology.hidden_groups else name for group, name in enumerate(self.topology.activations))
        return dataclasses.replace(self.topology, activations=activations)

    def present(self, weights: graph.Weights, x: jax.Array) -> tuple[SpikingStates, tuple]:
        """Encode ``x``, run the ticks; returns :class:`SpikingStates` and per-group activations.

        Activations are spike rates (spikes / ticks), except the softmax of the logits at the output.
        """
        topology = self.topology
        raster = encode(self.spiking, self.seed, x, topology.n_inputs)
        rasters = simulate(self.spiking, topology, weights, raster, self.delays)

        rates = [spikes.mean(axis=0) for spikes in rasters]
        logits = readout_logits(self.spiking, rasters[topology.output_group])
        h = list(rates)
        h[topology.output_group] = logits
        activations = list(rates)
        activations[topology.output_group] = jax.nn.softmax(logits)
        return SpikingStates(h=tuple(h), spikes=tuple(rasters)), tuple(activations)

    def output_state(self, states: SpikingStates) -> jax.Array:
        """Return the output logits (n_out,): scaled spike counts or first-spike times, as ``spiking.readout`` selects."""
        return states.h[self.topology.output_group]

    def loss(self, states: SpikingStates, activations: tuple, target: jax.Array) -> jax.Array:
        """Cross-entropy of the output logits against ``target`` (n_out,)."""
        logits = states.h[self.topology.output_group]
        return jax.nn.logsumexp(logits) - jnp.sum(target * logits)

    def edge_features(self, network: NetworkState, states: SpikingStates, activations: tuple, learning_signals: LearningSignals) -> tuple[feature_lib.EdgeFeatures, ...]:
        """Compute the rule's features for every block, spike-timing features included."""
        errors = signals.neuron_errors(self.error_topology, self.feedback, network.feedback, network.weights, states.h, learning_signals.error_out)
        summaries = tuple(summarise_spikes(self.spiking, spikes) for spikes in states.spikes)
        contexts = feature_lib.neuron_contexts(
            self.topology,
            network.weights,
            network.masks,
            states.h,
            activations,
            errors,
            self.updated_traces(network, activations),
            reward=learning_signals.reward,
            spikes=summaries,
        )
        blocks = []
        for block, (src, dst) in enumerate(self.topology.blocks):
            stdp = None
            if self.reads_stdp:
                delays = self.delays.per_block[block] if self.delays is not None else None
                stdp = stdp_sums(self.spiking, self.topology, block, delays, states.spikes[src], states.spikes[dst])
            names = self.rule.feature_names
            blocks.append(feature_lib.block_features(names, contexts[dst], contexts[src], network.weights[block], network.edge_age[block], self.topology.edge_list(block), stdp))
        return tuple(blocks)


def spiking_learner(learner_kwargs: dict[str, Any], config: SpikingConfig, seed: int) -> SpikingLearner:
    """Build a :class:`SpikingLearner` with the keyword arguments of a Learner and delays drawn from ``seed``."""
    delays = draw_delays(learner_kwargs["topology"], config.max_delay, seed)
    return SpikingLearner(**learner_kwargs, spiking=config, delays=delays, seed=seed)
