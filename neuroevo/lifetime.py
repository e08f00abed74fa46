"""The inner loop: one network, from fresh random weights, learns one task instance.

This module contains the parts of a lifetime that every task shares. :class:`Learner` is a
static description of a plastic network with three building blocks that know nothing about
labels: :meth:`Learner.init_network` draws the weights, :meth:`Learner.present` propagates
one input, and :meth:`Learner.learn` lets the rule change every edge given the
:class:`LearningSignals` a task computes (an output error from targets, or a reward).

A task (see :mod:`neuroevo.tasks`) runs a whole lifetime as one ``lax.scan`` in its
``lifetime(learner, params, instance, key, plastic, track_query)`` method and returns a
:class:`LifetimeResult`, so evolution, evaluation and run summaries treat every task alike.
:class:`Lifetimes` batches lifetimes with ``vmap`` and jits them.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from neuroevo import features as feature_lib
from neuroevo import graph, signals, structural
from neuroevo.rules.base import Rule, bind, block_params

# Whether a larger value of each task metric is better; baseline sweeps and tables use it.
HIGHER_IS_BETTER = {"accuracy": True, "mse": False, "return": True}


class NetworkState(NamedTuple):
    """Everything about one network that changes during, or is drawn for, a lifetime."""

    weights: graph.Weights  # per block (n_dst, n_src), or (E,) for an edge list; zero where the mask is zero
    masks: graph.Weights  # per block, shaped like its weights, 1.0 where an edge exists
    feedback: signals.FeedbackMatrices  # fixed random matrices of the pathway, or None (see signals.py)
    rule_state: tuple  # per block, the rule's per-edge state
    traces: tuple[jax.Array, ...]  # per group (n,), exponential trace of the activations (features pre_trace, post_trace)
    edge_age: graph.Weights  # per block, shaped like its weights: steps each edge has existed (feature edge_age)
    structure: Any = ()  # structural.StructureState when structural plasticity is on, else ()


class LearningSignals(NamedTuple):
    """Learning signals a task computes after one presentation, read by the features and the feedback pathway."""

    error_out: jax.Array  # (n_out,) output error target - a; zeros where the task gives no error
    reward: jax.Array  # () reward or reward-prediction error; 0 where the task gives no reward


class StepMetrics(NamedTuple):
    """Metrics of one training step; ``loss`` and ``online`` are measured before the weights change."""

    loss: jax.Array  # () loss of the presented example (cross-entropy or squared error); NaN if the task has none
    online: jax.Array  # () task metric of the presented example: 1.0 if correct (accuracy), squared error (mse), reward (return)
    query: jax.Array  # () task metric on the query set after the step; NaN unless tracked


class LifetimeResult(NamedTuple):
    """Outcome of one lifetime, the same for every task."""

    fitness: jax.Array  # () what evolution maximises; NaN if the weights diverged
    metric: jax.Array  # () the task's metric after the lifetime: accuracy, mse or return
    loss: jax.Array  # () mean query loss after the lifetime; NaN if the task has none
    curve: StepMetrics  # each field (lifetime_length,)
    details: Any = ()  # task-specific pytree, e.g. the continual accuracy matrix; () if none
    structure: Any = ()  # structural.StructureMetrics of the lifetime when structural plasticity is on, else ()


def split_lifetime_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split a lifetime key into (task instance key, network key).

    Every method (evolved rule, baselines) splits lifetime keys this way, so one key means
    the same task instance and the same initial weights for all of them.
    """
    key_instance, key_network = jax.random.split(key)
    return key_instance, key_network


def weights_finite(weights: graph.Weights) -> jax.Array:
    """() bool, True when no weight is NaN or infinite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(w)) for w in weights]))


def guard_fitness(fitness: jax.Array, weights: graph.Weights) -> jax.Array:
    """Return ``fitness``, or NaN when the final weights diverged.

    Diverged weights make every prediction argmax(NaN) = 0, a finite but meaningless
    accuracy; NaN makes evolution count the lifetime as failed.
    """
    return jnp.where(weights_finite(weights), fitness, jnp.nan)


@dataclasses.dataclass(frozen=True)
class Learner:
    """Static description of a plastic network: topology, rule, learning signal, initialisation."""

    topology: graph.Topology
    rule: Rule
    feedback: str = "random_feedback"
    weight_init: str = "normal"
    weight_gain: float = 1.0
    fitness: str = "accuracy"  # "accuracy" or "neg_loss"; tasks read it when they score a lifetime
    trace_decay: float = 0.8  # d in trace <- d * trace + (1 - d) * a
    structure: structural.StructureConfig = structural.StructureConfig()  # refresh of the wiring; off by default

    def __post_init__(self):
        # A per-edge rule needs the edge shape of every block, (n_dst, n_src) or (E,) for an edge
        # list; a shared rule is unchanged.
        shapes = tuple(self.topology.edge_shape(block) for block in range(len(self.topology.blocks)))
        object.__setattr__(self, "rule", bind(self.rule, shapes))

    def init_network(self, key: jax.Array) -> NetworkState:
        """Draw fresh random weights and feedback matrices for one lifetime.

        With structural plasticity on, the refresh draws come from a key folded out of
        ``key``, so the weight and feedback draws are the same as without it.
        """
        key_weights, key_feedback = jax.random.split(key)
        masks = graph.init_masks(self.topology)
        structure = ()
        if self.structure.active:
            key_structure = structural.refresh_key(key)
            masks = structural.initial_masks(self.topology, self.structure, key_structure)
            structure = structural.init_state(self.topology, self.structure, key_structure)
        weights = graph.init_weights(key_weights, self.topology, masks, self.weight_init, self.weight_gain)
        return NetworkState(
            weights=weights,
            masks=masks,
            feedback=signals.init_feedback(key_feedback, self.topology, self.feedback),
            rule_state=tuple(self.rule.init_state(self.topology.edge_shape(b)) for b in range(len(self.topology.blocks))),
            traces=tuple(jnp.zeros((size,), jnp.float32) for size in self.topology.group_sizes),
            edge_age=tuple(jnp.zeros_like(mask) for mask in masks),
            structure=structure,
        )

    # Forward pass and supervised quantities ------------------------------------------------

    def present(self, weights: graph.Weights, x: jax.Array) -> tuple[tuple, tuple]:
        """Propagate one input (n_inputs,); returns per-group states and activations."""
        return graph.propagate(self.topology, weights, x)

    def output(self, activations: tuple) -> jax.Array:
        """Return the activations of the output group (n_out,)."""
        return activations[self.topology.output_group]

    def output_state(self, states: tuple) -> jax.Array:
        """Return the states of the output group (n_out,), before the output activation."""
        return states[self.topology.output_group]

    def loss(self, states: tuple, activations: tuple, target: jax.Array) -> jax.Array:
        """Return the loss of one presentation against ``target`` (n_out,).

        Cross-entropy of the output states for softmax outputs (``target`` a probability
        vector, one-hot for labels), else the summed squared error of the output activations.
        """
        out = self.topology.output_group
        if self.topology.activations[out] == "softmax":
            logits = states[out]
            return jax.nn.logsumexp(logits) - jnp.sum(target * logits)
        return jnp.sum((activations[out] - target) ** 2)

    def supervised_signals(self, activations: tuple, target: jax.Array) -> LearningSignals:
        """Return the learning signals of a labelled example: output error ``target - a``, no reward."""
        return LearningSignals(error_out=signals.output_error(target, self.output(activations)), reward=jnp.float32(0.0))

    # Plasticity ------------------------------------------------------------------------------

    def updated_traces(self, network: NetworkState, activations: tuple) -> tuple[jax.Array, ...]:
        """Return the activation traces after this presentation: ``d * trace + (1 - d) * a`` per group."""
        decay = self.trace_decay
        return tuple(decay * trace + (1.0 - decay) * activation for trace, activation in zip(network.traces, activations))

    def edge_features(self, network: NetworkState, states: tuple, activations: tuple, learning_signals: LearningSignals) -> tuple[feature_lib.EdgeFeatures, ...]:
        """Compute the rule's features for every block after one presentation; traces include this presentation."""
        errors = signals.neuron_errors(self.topology, self.feedback, network.feedback, network.weights, states, learning_signals.error_out)
        traces = self.updated_traces(network, activations)
        contexts = feature_lib.neuron_contexts(
            self.topology, network.weights, network.masks, states, activations, errors, traces, reward=learning_signals.reward
        )
        return tuple(
            feature_lib.block_features(
                self.rule.feature_names, contexts[dst], contexts[src], network.weights[block], network.edge_age[block], self.topology.edge_list(block)
            )
            for block, (src, dst) in enumerate(self.topology.blocks)
        )

    def learn(self, params: Any, network: NetworkState, states: tuple, activations: tuple, learning_signals: LearningSignals) -> NetworkState:
        """Apply the rule to every existing edge after one presentation; returns the updated network.

        A per-edge rule receives only the parameters of the block it updates (see
        :func:`~neuroevo.rules.base.block_params`). Activation traces and edge ages advance
        by this presentation. With structural plasticity on, this step's activations and
        updates enter the refresh window, and every ``structure.every`` steps a refresh
        edits the wiring (:mod:`neuroevo.structural`).
        """
        # A rule without a growth output (a baseline under regrow=rule) leaves the growth sums at
        # zero, so its regrowth is random.
        rule_grows = self.structure.active and self.structure.regrow == "rule" and getattr(self.rule, "growth_output", False)
        weights, rule_states, updates, growth = [], [], [], []
        for block, edge_features in enumerate(self.edge_features(network, states, activations, learning_signals)):
            rule_params = block_params(self.rule, params, block)
            if rule_grows:
                dw, block_growth, rule_state = self.rule.apply_with_growth(rule_params, edge_features, network.rule_state[block])
                growth.append(block_growth)
            else:
                dw, rule_state = self.rule.apply(rule_params, edge_features, network.rule_state[block])
            updates.append(dw * network.masks[block])
            weights.append(network.weights[block] + updates[-1])
            rule_states.append(rule_state)
        network = network._replace(
            weights=tuple(weights),
            rule_state=tuple(rule_states),
            traces=self.updated_traces(network, activations),
            edge_age=tuple(age + mask for age, mask in zip(network.edge_age, network.masks)),
        )
        if not self.structure.active:
            return network

        structure = structural.accumulate(self.topology, network.structure, activations, tuple(updates), tuple(growth) if rule_grows else None)
        values = self.structure.values(params["structure"] if isinstance(self.rule, structural.WithStructureParams) else {})
        refreshed = structural.maybe_refresh(
            self.topology,
            self.structure,
            values,
            structural.Refreshed(network.weights, network.masks, network.edge_age, structure),
            lambda key, masks: graph.init_weights(key, self.topology, masks, self.weight_init, self.weight_gain),
        )
        return network._replace(weights=refreshed.weights, masks=refreshed.masks, edge_age=refreshed.edge_age, structure=refreshed.structure)

    def structure_metrics(self, network: NetworkState) -> Any:
        """Return the lifetime's :class:`~neuroevo.structural.StructureMetrics`, or () when structural plasticity is off."""
        if not self.structure.active:
            return ()
        return structural.metrics(self.topology, self.structure, network.structure)

    def supervised_step(self, params: Any, network: NetworkState, x: jax.Array, target: jax.Array) -> tuple[NetworkState, tuple, tuple]:
        """Present ``x``, compute the output error against ``target`` and learn.

        Returns the updated network and the states and activations of the presentation,
        which were computed with the weights before the update.
        """
        states, activations = self.present(network.weights, x)
        network = self.learn(params, network, states, activations, self.supervised_signals(activations, target))
        return network, states, activations


@dataclasses.dataclass(frozen=True)
class Lifetimes:
    """Batches of lifetimes of one learner on one task; each key gives one task instance and network."""

    learner: Learner
    task: Any

    def run(self, params: Any, pools: Any, keys: jax.Array, plastic: bool = True, track_query: bool = False) -> LifetimeResult:
        """Live one lifetime per key (keys: (n,)) with rule ``params``; results batched over n.

        ``plastic=False`` keeps the initial weights (the no-plasticity baseline, same draws).
        ``track_query=True`` also measures the query metric after every step, for learning
        curves.
        """

        def one(key: jax.Array) -> LifetimeResult:
            key_instance, key_network = split_lifetime_key(key)
            instance = self.task.sample(key_instance, pools)
            return self.task.lifetime(self.learner, params, instance, key_network, plastic=plastic, track_query=track_query)

        return jax.vmap(one)(keys)

    def run_population(self, stacked_params: Any, pools: Any, keys: jax.Array, batch: int | None = None) -> LifetimeResult:
        """Live one lifetime per key for every parameter set (leading axis P of ``stacked_params``).

        Results are batched as (P, n). Lifetimes form the outer loop and members the inner
        ``vmap``, so each task instance and initial network is drawn once per key and shared by
        the members. The weights are then laid out (n, P, n_dst, n_src), so the forward pass of
        all members on a shared input is one matrix product. With members as the outer
        ``vmap``, XLA transposes every weight block at every step to form that product.

        ``batch`` lifetimes run at once (``vmap``) and the batches in sequence (``lax.map``);
        None runs all n at once. On a CPU, batches small enough for the population's weights
        to stay in cache can be faster (see :func:`neuroevo.evolve.cpu_lifetime_batch`).
        """

        def one(key: jax.Array) -> LifetimeResult:
            key_instance, key_network = split_lifetime_key(key)
            instance = self.task.sample(key_instance, pools)
            return jax.vmap(lambda params: self.task.lifetime(self.learner, params, instance, key_network))(stacked_params)

        if batch is None or batch >= keys.shape[0]:
            return jax.vmap(one, out_axes=1)(keys)
        results = lax.map(one, keys, batch_size=batch)  # every leaf (n, P, ...)
        return jax.tree.map(lambda leaf: jnp.swapaxes(leaf, 0, 1), results)

    @partial(jax.jit, static_argnames=("self", "plastic", "track_query"))
    def evaluate(self, params: Any, pools: Any, keys: jax.Array, plastic: bool = True, track_query: bool = False) -> LifetimeResult:
        """Jitted :meth:`run`."""
        return self.run(params, pools, keys, plastic, track_query)

    @partial(jax.jit, static_argnames=("self",))
    def sweep(self, stacked_params: Any, pools: Any, keys: jax.Array) -> jax.Array:
        """Return the mean task metric of each parameter set (leading axis of ``stacked_params``) on the same lifetimes."""
        return jax.vmap(lambda params: self.run(params, pools, keys).metric.mean())(stacked_params)
