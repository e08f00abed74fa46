"""Structural plasticity: pruning, regrowth and neuron resets that keep a network learnable.

Every ``every`` steps of a lifetime, a refresh may edit the network's wiring:

- **Pruning** removes an edge whose ``|w|`` is below ``prune_threshold`` times the mean
  ``|w|`` of its block's existing edges, once the edge has existed for a whole window.
  At most ``prune_fraction`` of the block's edge budget goes per refresh, smallest first.
- **Regrowth** adds edges back, up to the budget, where the topology allows an edge and none
  existed before this refresh: chosen at random (SET, Mocanu et al. 2018, "Scalable
  training of artificial neural networks with adaptive sparse connectivity inspired by
  network science"), by the co-activity of the two neurons, a gradient-free stand-in for
  RigL's gradient criterion (Evci et al. 2020, "Rigging the Lottery: Making All Tickets
  Winners"), or by the rule itself: an MLP rule with ``growth_output`` has a second output
  unit, evaluated on every edge position, and the positions with the largest sum of it over
  the window grow. A new edge starts at weight 0 and age 0, as in RigL.
- **ReDo** (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep Reinforcement
  Learning"): a hidden neuron's score is its mean ``|a|`` over the window divided by the
  mean of that over its group. A neuron with score <= ``redo_threshold`` gets fresh incoming
  weights and zero outgoing weights.
- **GraMa** (after Liu et al. 2025, "Measure gradients not activations! Enhancing neuronal
  activity in deep reinforcement learning", arXiv 2505.24061): the same score computed from
  the summed ``|dw|`` the rule applied to the neuron's incoming edges. A neuron with score
  <= ``grama_threshold`` gets fresh incoming weights only.

Output, input and bias neurons are never reset. A block's edge budget is the number of
edges it starts with: every edge the topology allows, or a random ``density`` share of them.
Blocks from the bias neuron are never pruned, regrown or thinned. Masks keep their fixed
shapes, so refreshes run inside the jitted lifetime.

The step counter is created inside the lifetime and never depends on batched values. Under
``vmap`` the ``lax.cond`` that runs a refresh therefore stays a branch, and steps between
refreshes only add to the window sums. A task that mixes the network state with batched
values (the control tasks do on every step) turns the branch into a select, which runs
the refresh computation on every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from neuroevo import graph
from neuroevo.errors import ConfigError
from neuroevo.rules import base as rules_base

# Refresh options that evolution may tune; each travels as log(value) in the rule params.
EVOLVABLE = ("prune_threshold", "prune_fraction", "redo_threshold", "grama_threshold")
_MECHANISM_OF = {"prune_threshold": "prune", "prune_fraction": "prune", "redo_threshold": "redo", "grama_threshold": "grama"}
_FOLD_STRUCTURE = 0x5EED  # folded into the network key for the refresh draws, so the weight draws stay as without refresh
_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class StructureConfig:
    """Structural plasticity (config section ``structure``); ``every: 0`` turns it off entirely."""

    # Steps between refreshes; 0: no refresh and no structure metrics. With every mechanism off,
    # a value above the lifetime measures the dormant fraction over the whole lifetime.
    every: int = 0
    density: float = 1.0  # share of the topology's edges that exist at the start, per non-bias block; it sets the edge budget
    prune: bool = False
    prune_threshold: float = 0.1  # prune |w| < prune_threshold * mean |w| of the block's existing edges
    prune_fraction: float = 0.1  # at most this share of a block's budget is pruned per refresh
    regrow: Literal["none", "random", "coactivity", "rule"] = "none"  # rule: the rule's growth output chooses
    redo: bool = False
    redo_threshold: float = 0.1  # ReDo: reset hidden neurons whose activation score is <= this
    grama: bool = False
    grama_threshold: float = 0.1  # GraMa: reset incoming weights of hidden neurons whose update score is <= this
    evolve: tuple[str, ...] = ()  # names from EVOLVABLE that evolution tunes, starting from the values above

    @property
    def active(self) -> bool:
        return self.every > 0

    def validate(self) -> None:
        if self.every < 0:
            raise ConfigError(f"structure.every={self.every} is negative; use 0 (off) or the number of steps between refreshes")
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(f"structure.density={self.density} is outside (0, 1]; use the share of the topology's edges that exist at the start")
        for name in ("prune_threshold", "redo_threshold", "grama_threshold"):
            if getattr(self, name) < 0:
                raise ConfigError(f"structure.{name}={getattr(self, name)} is negative; use a value >= 0")
        if not 0.0 <= self.prune_fraction <= 1.0:
            raise ConfigError(f"structure.prune_fraction={self.prune_fraction} is outside [0, 1]; use the share of the edge budget that one refresh may prune, e.g. 0.05")
        for name in self.evolve:
            if name not in EVOLVABLE:
                raise ConfigError(f"structure.evolve contains {name!r}; choose from {', '.join(EVOLVABLE)}")
            if getattr(self, name) <= 0:
                raise ConfigError(f"structure.{name}={getattr(self, name)} is evolved on the log scale, so it must be positive")
        if len(set(self.evolve)) != len(self.evolve):
            raise ConfigError(f"structure.evolve={list(self.evolve)} names an option twice; list each once")
        for name in self.evolve:
            mechanism = _MECHANISM_OF[name]
            if not getattr(self, mechanism):
                raise ConfigError(
                    f"structure.evolve contains {name}, but structure.{mechanism}=false, so the evolved value is never used; "
                    f"set structure.{mechanism}=true or remove {name} from structure.evolve"
                )
        if self.regrow != "none" and not self.prune:
            raise ConfigError(
                f"structure.regrow={self.regrow} only refills edges that pruning removed, but structure.prune=false, so no edge "
                "ever grows; set structure.prune=true or structure.regrow=none"
            )
        uses_refresh = self.prune or self.redo or self.grama or self.regrow != "none" or self.evolve or self.density < 1.0
        if uses_refresh and not self.active:
            raise ConfigError("structure options are set but structure.every=0 turns structural plasticity off; set structure.every, e.g. 50")

    def initial_params(self) -> dict[str, jax.Array]:
        """Evolved refresh options as rule params: log of each value named in ``evolve``."""
        return {name: jnp.float32(np.log(getattr(self, name))) for name in self.evolve}

    def values(self, params: dict[str, jax.Array]) -> dict[str, Any]:
        """Refresh option values: evolved ones from ``params`` (log scale), the rest from the config."""
        fixed = {name: getattr(self, name) for name in EVOLVABLE}
        return {**fixed, **{name: jnp.exp(value) for name, value in params.items()}}


class StructureState(NamedTuple):
    """Refresh bookkeeping carried in the network state through a lifetime."""

    key: jax.Array  # (2,) uint32 key data; the refresh at step s draws from fold_in(key, s)
    step: jax.Array  # () int32 steps since the lifetime began
    activity: tuple[jax.Array, ...]  # per group (n,): sum of |a| over the current window
    update: tuple[jax.Array, ...]  # per group (n,): sum over the window of |dw| on the neuron's incoming edges
    growth: tuple[jax.Array, ...]  # per block (edge shape): the rule's growth output summed over the window; () unless regrow is "rule"
    pruned: jax.Array  # () float32 edges pruned so far
    grown: jax.Array  # () float32 edges grown so far
    resets: jax.Array  # () float32 neurons reset so far, ReDo and GraMa together
    dormant: jax.Array  # () float32 dormant fraction of hidden neurons in the last completed window


class StructureMetrics(NamedTuple):
    """Per-lifetime structure metrics (``LifetimeResult.structure``)."""

    dormant_fraction: jax.Array  # () share of hidden neurons with ReDo score <= redo_threshold, last window
    pruned: jax.Array  # () edges pruned during the lifetime
    grown: jax.Array  # () edges grown during the lifetime
    turnover: jax.Array  # () grown / edge budget of the prunable blocks
    resets: jax.Array  # () neurons reset (ReDo and GraMa)


def prunable_blocks(topology: graph.Topology) -> tuple[int, ...]:
    """Blocks whose edges may be thinned, pruned and regrown: every block not from the bias neuron."""
    return tuple(block for block, (src, _) in enumerate(topology.blocks) if src != topology.bias_group)


def allowed_masks(topology: graph.Topology) -> graph.Weights:
    """Return where the topology allows an edge, per block: the masks a network without refresh starts with."""
    return graph.init_masks(topology)


def edge_budgets(topology: graph.Topology, density: float) -> tuple[int, ...]:
    """Edges each block starts with and may never exceed: round(density * allowed) for prunable blocks."""
    prunable = prunable_blocks(topology)
    budgets = []
    for block in range(len(topology.blocks)):
        connectivity = topology.block_connectivity(block)
        if isinstance(connectivity, graph.FixedMask):
            allowed = int(np.asarray(connectivity.mask).sum())
        else:
            allowed = int(np.prod(topology.edge_shape(block)))
        budgets.append(max(1, int(round(density * allowed))) if block in prunable and density < 1.0 else allowed)
    return tuple(budgets)


def _order_keys(values: jax.Array) -> jax.Array:
    """Map float32 values to uint32 keys in the same order (-0.0 and 0.0 share a key)."""
    values = jnp.where(values == 0.0, 0.0, values.astype(jnp.float32))
    bits = lax.bitcast_convert_type(values, jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _take_smallest(values: jax.Array, eligible: jax.Array, count: jax.Array) -> jax.Array:
    """Return a bool mask of the ``count`` eligible entries with the smallest values (ties by position).

    A bisection over the 32 bits of the order keys finds the count-th smallest value, in 32
    counting passes. XLA's sort took 15 to 20 times as long on a 2-core CPU for a few thousand
    edges, and two sorts per call made refreshes the largest cost of a lifetime.
    """
    keys = jnp.where(eligible, _order_keys(values), jnp.uint32(0xFFFFFFFF)).reshape(-1)
    count = jnp.asarray(count, jnp.int32)

    def halve(_, bounds):
        low, high = bounds
        middle = low + (high - low) // 2
        enough = jnp.sum(keys <= middle) >= count
        return jnp.where(enough, low, middle + 1), jnp.where(enough, middle, high)

    _, threshold = lax.fori_loop(0, 32, halve, (jnp.uint32(0), jnp.uint32(0xFFFFFFFF)))
    below = keys < threshold
    ties = keys == threshold
    chosen = below | (ties & (jnp.cumsum(ties) <= count - jnp.sum(below)))
    return (chosen & eligible.reshape(-1)).reshape(values.shape)


def initial_masks(topology: graph.Topology, config: StructureConfig, key: jax.Array) -> graph.Weights:
    """Masks at the start of a lifetime: a random ``density`` share of each prunable block's allowed edges.

    ``key`` comes from :func:`refresh_key`.
    """
    masks = allowed_masks(topology)
    if config.density >= 1.0:
        return masks
    budgets = edge_budgets(topology, config.density)
    keys = jax.random.split(jax.random.fold_in(key, 0), len(masks))
    thinned = []
    for block, mask in enumerate(masks):
        if block in prunable_blocks(topology):
            scores = jax.random.uniform(keys[block], mask.shape)
            mask = _take_smallest(scores, mask > 0, budgets[block]).astype(jnp.float32)
        thinned.append(mask)
    return tuple(thinned)


def refresh_key(network_key: jax.Array) -> jax.Array:
    """Key of a lifetime's structure draws: the initial thinning uses ``fold_in(key, 0)``, the refresh at step s ``fold_in(key, s)``."""
    return jax.random.fold_in(network_key, _FOLD_STRUCTURE)


def init_state(topology: graph.Topology, config: StructureConfig, key: jax.Array) -> StructureState:
    """Fresh refresh state; ``key`` comes from :func:`refresh_key`."""
    zeros = tuple(jnp.zeros((size,), jnp.float32) for size in topology.group_sizes)
    return StructureState(
        key=jax.random.key_data(key),
        step=jnp.int32(0),
        activity=zeros,
        update=zeros,
        growth=_zero_growth(topology, config),
        pruned=jnp.float32(0.0),
        grown=jnp.float32(0.0),
        resets=jnp.float32(0.0),
        dormant=jnp.float32(0.0),
    )


def _zero_growth(topology: graph.Topology, config: StructureConfig) -> tuple[jax.Array, ...]:
    if config.regrow != "rule":
        return ()
    return tuple(jnp.zeros(topology.edge_shape(block), jnp.float32) for block in range(len(topology.blocks)))


# Scores ---------------------------------------------------------------------------------------


def neuron_scores(topology: graph.Topology, sums: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """Per hidden group, each neuron's sum divided by the group's mean sum; zeros for other groups.

    With activation sums this is the ReDo score, with incoming update sums the GraMa score.
    The window length cancels, so sums stand in for means.
    """
    scores = []
    for group, values in enumerate(sums):
        if group in topology.hidden_groups:
            scores.append(values / (jnp.mean(values) + _EPS))
        else:
            scores.append(jnp.zeros_like(values))
    return tuple(scores)


def dormant_neurons(topology: graph.Topology, scores: tuple[jax.Array, ...], threshold: jax.Array) -> tuple[jax.Array, ...]:
    """Per group (n,) bool: hidden neurons whose score is <= ``threshold``; never input, bias or output."""
    return tuple((score <= threshold) & (group in topology.hidden_groups) for group, score in enumerate(scores))


def dormant_fraction(topology: graph.Topology, dormant: tuple[jax.Array, ...]) -> jax.Array:
    """Share of hidden neurons marked in ``dormant``; 0 for a network without hidden neurons."""
    hidden = [dormant[group] for group in topology.hidden_groups]
    if not hidden:
        return jnp.float32(0.0)
    return jnp.mean(jnp.concatenate(hidden).astype(jnp.float32))


def incoming_update_sums(topology: graph.Topology, updates: graph.Weights) -> tuple[jax.Array, ...]:
    """Per group (n,): sum of |dw| over each neuron's incoming edges in all blocks."""
    sums = [jnp.zeros((size,), jnp.float32) for size in topology.group_sizes]
    for block, (_, dst) in enumerate(topology.blocks):
        sums[dst] = sums[dst] + graph.row_sums(topology, block, jnp.abs(updates[block]))
    return tuple(sums)


# Edits ----------------------------------------------------------------------------------------


def _per_edge(topology: graph.Topology, block: int, neuron_values: jax.Array, side: str) -> jax.Array:
    """Broadcast per-neuron values of the block's dst or src group to its edge shape."""
    edges = topology.edge_list(block)
    if edges is None:
        return neuron_values[:, None] if side == "dst" else neuron_values[None, :]
    return neuron_values[edges.dst] if side == "dst" else neuron_values[edges.src]


def reset_neurons(
    topology: graph.Topology,
    weights: graph.Weights,
    masks: graph.Weights,
    reset: tuple[jax.Array, ...],
    fresh: graph.Weights,
    zero_outgoing: bool,
) -> graph.Weights:
    """Give neurons marked in ``reset`` (per group (n,) bool) the ``fresh`` incoming weights.

    ``zero_outgoing`` also sets their outgoing weights to 0 (ReDo). ``fresh`` is a full
    draw of :func:`graph.init_weights` for the current masks.
    """
    updated = []
    for block, (src, dst) in enumerate(topology.blocks):
        w = jnp.where(_per_edge(topology, block, reset[dst], "dst"), fresh[block], weights[block])
        if zero_outgoing:
            w = jnp.where(_per_edge(topology, block, reset[src], "src"), 0.0, w)
        updated.append(w * masks[block])
    return tuple(updated)


def prune(
    topology: graph.Topology, weights: graph.Weights, masks: graph.Weights, edge_age: graph.Weights, threshold: jax.Array, fraction: jax.Array, min_age: int, budgets: tuple[int, ...]
) -> tuple[graph.Weights, jax.Array]:
    """Return the masks without pruned edges, and the number pruned.

    An edge is pruned when it has existed ``min_age`` steps or more and ``|w|`` is below
    ``threshold`` times the mean ``|w|`` of the block's existing edges. At most
    ``floor(fraction * budget)`` edges per block go, smallest ``|w|`` first.
    """
    new_masks, count = list(masks), jnp.float32(0.0)
    for block in prunable_blocks(topology):
        mask, magnitude = masks[block], jnp.abs(weights[block])
        typical = jnp.sum(magnitude * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        eligible = (mask > 0) & (edge_age[block] >= min_age) & (magnitude < threshold * typical)
        pruned = _take_smallest(magnitude, eligible, jnp.floor(fraction * budgets[block]))
        new_masks[block] = jnp.where(pruned, 0.0, mask)
        count = count + jnp.sum(pruned)
    return tuple(new_masks), count


def regrow(
    topology: graph.Topology, masks: graph.Weights, candidates: graph.Weights, budgets: tuple[int, ...], scores: graph.Weights
) -> tuple[graph.Weights, jax.Array]:
    """Return masks with edges added at the highest-scoring candidates, up to each block's budget, and the number grown.

    ``candidates`` (per block, bool) marks where an edge may grow: the topology allows it and
    none existed before the refresh.
    """
    new_masks, count = list(masks), jnp.float32(0.0)
    for block in prunable_blocks(topology):
        room = budgets[block] - jnp.sum(masks[block])
        grown = _take_smallest(-scores[block], candidates[block], room)
        new_masks[block] = jnp.where(grown, 1.0, masks[block])
        count = count + jnp.sum(grown)
    return tuple(new_masks), count


def regrowth_scores(topology: graph.Topology, config: StructureConfig, state: StructureState, key: jax.Array) -> graph.Weights:
    """Score every edge position of each block from the window in ``state``.

    Random; or co-activity, or the rule's summed growth output, each plus a random
    tie-breaker far below the scores' spread. A rule whose growth output is constant (the
    initial rule of evolution) therefore regrows at random.

    NOTE: co-activity is the product of the two neurons' summed ``|a|`` over the window, not
    the windowed mean of the product, so no per-edge accumulator is needed.
    """
    keys = jax.random.split(key, len(topology.blocks))
    scores = []
    for block, (src, dst) in enumerate(topology.blocks):
        noise = jax.random.uniform(keys[block], topology.edge_shape(block))
        if config.regrow == "coactivity":
            coactivity = _per_edge(topology, block, state.activity[dst], "dst") * _per_edge(topology, block, state.activity[src], "src")
            scores.append(coactivity + 1e-6 * jnp.max(coactivity) * noise)
        elif config.regrow == "rule":
            growth = state.growth[block]
            scores.append(growth + 1e-6 * (jnp.max(growth) - jnp.min(growth) + _EPS) * noise)
        else:
            scores.append(noise)
    return tuple(scores)


# Refresh --------------------------------------------------------------------------------------


def accumulate(
    topology: graph.Topology, state: StructureState, activations: tuple[jax.Array, ...], updates: graph.Weights, growth: graph.Weights | None = None
) -> StructureState:
    """Add one step to the window sums and advance the step.

    ``activations`` per group, ``updates`` the applied (masked) ``dw`` per block, and
    ``growth`` the rule's growth output per block; None leaves the growth sums unchanged.
    """
    return state._replace(
        step=state.step + 1,
        activity=tuple(total + jnp.abs(a) for total, a in zip(state.activity, activations)),
        update=tuple(total + step for total, step in zip(state.update, incoming_update_sums(topology, updates))),
        growth=state.growth if growth is None else tuple(total + step for total, step in zip(state.growth, growth)),
    )


class Refreshed(NamedTuple):
    """The parts of a network a refresh may change."""

    weights: graph.Weights
    masks: graph.Weights
    edge_age: graph.Weights
    structure: StructureState


def refresh(
    topology: graph.Topology,
    config: StructureConfig,
    values: dict[str, Any],
    network: Refreshed,
    init_weights: Any,
) -> Refreshed:
    """Run one refresh at the end of a window: measure dormancy, reset neurons, prune, regrow.

    ``values`` contains the refresh options (:meth:`StructureConfig.values`).
    ``init_weights(key, masks)`` draws fresh weights as the lifetime's initialisation does.
    The draws come from ``fold_in(key, step)``, split into (reset, regrowth) keys; the reset
    draws one full set of fresh weights for the masks before pruning.
    """
    state = network.structure
    weights, masks, edge_age = network.weights, network.masks, network.edge_age
    key_reset, key_regrow = jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step))

    # Dormancy is measured before any reset, so it describes the window that just ended.
    redo_dormant = dormant_neurons(topology, neuron_scores(topology, state.activity), values["redo_threshold"])
    dormant = dormant_fraction(topology, redo_dormant)
    resets = jnp.float32(0.0)

    if config.redo or config.grama:
        fresh = init_weights(key_reset, masks)
        if config.grama:
            grama_dormant = dormant_neurons(topology, neuron_scores(topology, state.update), values["grama_threshold"])
            weights = reset_neurons(topology, weights, masks, grama_dormant, fresh, zero_outgoing=False)
            resets = resets + sum(jnp.sum(reset) for reset in grama_dormant)
        if config.redo:
            weights = reset_neurons(topology, weights, masks, redo_dormant, fresh, zero_outgoing=True)
            resets = resets + sum(jnp.sum(reset) for reset in redo_dormant)

    pruned = grown = jnp.float32(0.0)
    if config.prune or config.regrow != "none":
        budgets = edge_budgets(topology, config.density)
        candidates = tuple((allowed > 0) & (mask == 0) for allowed, mask in zip(allowed_masks(topology), masks))
        new_masks = masks
        if config.prune:
            new_masks, pruned = prune(topology, weights, masks, edge_age, values["prune_threshold"], values["prune_fraction"], config.every, budgets)
        if config.regrow != "none":
            scores = regrowth_scores(topology, config, state, key_regrow)
            new_masks, grown = regrow(topology, new_masks, candidates, budgets, scores)
        # NOTE: the rule's per-edge state (GRU hidden state, BCM threshold, traces) of a
        # regrown edge is the state its slot had before. Only weight and age restart.
        changed = tuple(new != old for new, old in zip(new_masks, masks))
        weights = tuple(w * mask for w, mask in zip(weights, new_masks))
        edge_age = tuple(jnp.where(change, 0.0, age) for change, age in zip(changed, edge_age))
        masks = new_masks

    zeros = tuple(jnp.zeros_like(total) for total in state.activity)
    state = state._replace(
        activity=zeros,
        update=zeros,
        growth=tuple(jnp.zeros_like(total) for total in state.growth),
        pruned=state.pruned + pruned,
        grown=state.grown + grown,
        resets=state.resets + resets,
        dormant=dormant,
    )
    return Refreshed(weights, masks, edge_age, state)


def maybe_refresh(topology: graph.Topology, config: StructureConfig, values: dict[str, Any], network: Refreshed, init_weights: Any) -> Refreshed:
    """Run :func:`refresh` when the step counter reaches a multiple of ``every``; otherwise return ``network``."""
    due = network.structure.step % config.every == 0
    return lax.cond(due, lambda n: refresh(topology, config, values, n, init_weights), lambda n: n, network)


def metrics(topology: graph.Topology, config: StructureConfig, state: StructureState) -> StructureMetrics:
    """Structure metrics at the end of a lifetime.

    The dormant fraction is that of the last completed window, or of the partial window when
    the lifetime was shorter than ``every`` steps.
    """
    partial = dormant_fraction(topology, dormant_neurons(topology, neuron_scores(topology, state.activity), config.redo_threshold))
    dormant = jnp.where(state.step >= config.every, state.dormant, partial)
    budget = sum(edge_budgets(topology, config.density)[block] for block in prunable_blocks(topology))
    return StructureMetrics(
        dormant_fraction=dormant,
        pruned=state.pruned,
        grown=state.grown,
        turnover=state.grown / max(budget, 1),
        resets=state.resets,
    )


@dataclasses.dataclass(frozen=True)
class WithStructureParams:
    """A rule whose parameters also hold evolved refresh options, so evolution tunes both.

    Parameters: ``{"rule": <the wrapped rule's params>, "structure": {name: log(value)}}`` for
    the names in ``StructureConfig.evolve``. Only used when that list is non-empty, so the
    params of every other run keep the wrapped rule's layout.
    """

    rule: Any
    config: StructureConfig

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.rule.feature_names

    @property
    def per_edge(self) -> bool:
        return bool(getattr(self.rule, "per_edge", False))

    @property
    def compute_bound(self) -> bool:
        return bool(getattr(self.rule, "compute_bound", False))

    def bind(self, block_shapes: tuple[tuple[int, ...], ...]) -> WithStructureParams:
        """Bind the wrapped rule to the graph's block shapes (it may be a per-edge rule itself)."""
        return dataclasses.replace(self, rule=rules_base.bind(self.rule, block_shapes))

    def init(self, key: jax.Array) -> Any:
        return {"rule": self.rule.init(key), "structure": self.config.initial_params()}

    def random_params(self, key: jax.Array) -> Any:
        return {"rule": self.rule.random_params(key), "structure": self.config.initial_params()}

    def block_params(self, params: Any, block: int) -> Any:
        """Select the wrapped rule's parameters for ``block``."""
        return rules_base.block_params(self.rule, params["rule"], block)

    def init_state(self, shape: tuple[int, ...]) -> Any:
        return self.rule.init_state(shape)

    @property
    def growth_output(self) -> bool:
        return bool(getattr(self.rule, "growth_output", False))

    def apply(self, params: Any, features: Any, state: Any) -> tuple[jax.Array, Any]:
        return self.rule.apply(params, features, state)

    def apply_with_growth(self, params: Any, features: Any, state: Any) -> tuple[jax.Array, jax.Array, Any]:
        return self.rule.apply_with_growth(params, features, state)

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        return self.rule.apply_dense(params["rule"], features)
