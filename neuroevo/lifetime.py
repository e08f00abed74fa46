"""The inner loop: one network, from fresh random weights, learns one task instance online.

Each step presents one example (batch size 1, each example once): propagate, compute the
output error and the hidden errors of the feedback pathway, read every edge's features, let
the rule produce ``dw`` and add it to the existing edges. The whole lifetime is one
``lax.scan``; per-member and per-instance batching is done by the caller with ``vmap``.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from neuroevo import features as feature_lib
from neuroevo import graph, signals
from neuroevo.rules.base import Rule
from neuroevo.tasks.fewshot import FewShotInstance


class NetworkState(NamedTuple):
    """Everything about one network that changes during, or is drawn for, a lifetime."""

    weights: graph.Weights  # per block (n_dst, n_src), or (E,) for an edge list; zero where the mask is zero
    masks: graph.Weights  # per block, shaped like its weights, 1.0 where an edge exists
    feedback: signals.FeedbackMatrices  # fixed random matrices of the pathway, or None (see signals.py)
    rule_state: tuple  # per block, the rule's per-edge state


class StepMetrics(NamedTuple):
    """Online metrics of one presentation, measured before the weights change."""

    loss: jax.Array  # () cross-entropy (softmax outputs) or squared error of the presented example
    correct: jax.Array  # () 1.0 when the prediction before the update was right
    query_accuracy: jax.Array  # () query accuracy after the update; NaN unless tracked


class LifetimeResult(NamedTuple):
    fitness: jax.Array  # () what evolution maximises
    query_accuracy: jax.Array  # () accuracy on the query set after the lifetime
    query_loss: jax.Array  # () mean loss on the query set after the lifetime
    curve: StepMetrics  # each field (lifetime_length,)


def split_lifetime_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split a lifetime key into (task instance key, network key).

    Every method (evolved rule, baselines) splits lifetime keys this way, so one key means
    the same task instance and the same initial weights for all of them.
    """
    key_instance, key_network = jax.random.split(key)
    return key_instance, key_network


@dataclasses.dataclass(frozen=True)
class Learner:
    """Static description of a plastic network: topology, rule, learning signal, initialisation."""

    topology: graph.Topology
    rule: Rule
    feedback: str = "random_feedback"
    weight_init: str = "normal"
    weight_gain: float = 1.0
    fitness: str = "accuracy"  # "accuracy" or "neg_loss"

    def init_network(self, key: jax.Array) -> NetworkState:
        """Fresh random weights and feedback matrices for one lifetime."""
        key_weights, key_feedback = jax.random.split(key)
        masks = graph.init_masks(self.topology)
        weights = graph.init_weights(key_weights, self.topology, masks, self.weight_init, self.weight_gain)
        return NetworkState(
            weights=weights,
            masks=masks,
            feedback=signals.init_feedback(key_feedback, self.topology, self.feedback),
            rule_state=tuple(self.rule.init_state(self.topology.edge_shape(b)) for b in range(len(self.topology.blocks))),
        )

    # Forward pass and loss ------------------------------------------------------------------

    def output_target(self, label: jax.Array) -> jax.Array:
        return jax.nn.one_hot(label, self.topology.n_outputs, dtype=jnp.float32)

    def example_loss(self, states: tuple, activations: tuple, label: jax.Array) -> jax.Array:
        """Cross-entropy of the output states for softmax outputs, else squared error to the one-hot target."""
        out = self.topology.output_group
        if self.topology.activations[out] == "softmax":
            logits = states[out]
            return jax.nn.logsumexp(logits) - logits[label]
        return jnp.sum((activations[out] - self.output_target(label)) ** 2)

    def evaluate_query(self, weights: graph.Weights, query_x: jax.Array, query_y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Accuracy and mean loss on a query set, without plasticity."""

        def per_example(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
            states, activations = graph.propagate(self.topology, weights, x)
            prediction = jnp.argmax(activations[self.topology.output_group])
            return (prediction == y).astype(jnp.float32), self.example_loss(states, activations, y)

        correct, loss = jax.vmap(per_example)(query_x, query_y)
        return correct.mean(), loss.mean()

    # One plastic step ------------------------------------------------------------------------

    def edge_features(self, network: NetworkState, states: tuple, activations: tuple, label: jax.Array) -> tuple[feature_lib.EdgeFeatures, ...]:
        """Compute the rule's features for every block, after presenting an example with ``label``."""
        out = self.topology.output_group
        error_out = signals.output_error(self.output_target(label), activations[out])
        errors = signals.neuron_errors(self.topology, self.feedback, network.feedback, network.weights, states, error_out)
        contexts = feature_lib.neuron_contexts(self.topology, network.weights, network.masks, states, activations, errors)
        return tuple(
            feature_lib.block_features(self.rule.feature_names, contexts[dst], contexts[src], network.weights[block], self.topology.edge_list(block))
            for block, (src, dst) in enumerate(self.topology.blocks)
        )

    def weight_changes(self, params: Any, network: NetworkState, states: tuple, activations: tuple, label: jax.Array):
        """Rule output ``dw`` for every block (masked) and the new rule state."""
        changes, rule_states = [], []
        for block, edge_features in enumerate(self.edge_features(network, states, activations, label)):
            dw, rule_state = self.rule.apply(params, edge_features, network.rule_state[block])
            changes.append(dw * network.masks[block])
            rule_states.append(rule_state)
        return tuple(changes), tuple(rule_states)

    def present(self, weights: graph.Weights, x: jax.Array, label: jax.Array) -> tuple[tuple, tuple, StepMetrics]:
        """Propagate one labelled example; returns states, activations and its online metrics."""
        states, activations = graph.propagate(self.topology, weights, x)
        prediction = jnp.argmax(activations[self.topology.output_group])
        metrics = StepMetrics(
            loss=self.example_loss(states, activations, label),
            correct=(prediction == label).astype(jnp.float32),
            query_accuracy=jnp.float32(jnp.nan),
        )
        return states, activations, metrics

    def step(self, params: Any, network: NetworkState, x: jax.Array, label: jax.Array) -> tuple[NetworkState, StepMetrics]:
        """Present one labelled example and apply the rule to every edge."""
        states, activations, metrics = self.present(network.weights, x, label)
        changes, rule_state = self.weight_changes(params, network, states, activations, label)
        weights = tuple(w + dw for w, dw in zip(network.weights, changes))
        return network._replace(weights=weights, rule_state=rule_state), metrics

    # Whole lifetime -------------------------------------------------------------------------

    def run(
        self,
        params: Any,
        instance: FewShotInstance,
        key: jax.Array,
        plastic: bool = True,
        track_query: bool = False,
    ) -> LifetimeResult:
        """Live one lifetime on ``instance`` from weights drawn with ``key``.

        ``plastic=False`` keeps the initial weights (the no-plasticity baseline, same draws).
        ``track_query=True`` also measures query accuracy after every step, for learning
        curves; it costs one query-set pass per step.
        """
        network = self.init_network(key)

        def scan_step(network: NetworkState, example: tuple[jax.Array, jax.Array]):
            x, label = example
            if plastic:
                network, metrics = self.step(params, network, x, label)
            else:
                _, _, metrics = self.present(network.weights, x, label)
            if track_query:
                accuracy, _ = self.evaluate_query(network.weights, instance.query_x, instance.query_y)
                metrics = metrics._replace(query_accuracy=accuracy)
            return network, metrics

        network, curve = lax.scan(scan_step, network, (instance.train_x, instance.train_y))
        accuracy, loss = self.evaluate_query(network.weights, instance.query_x, instance.query_y)
        fitness = accuracy if self.fitness == "accuracy" else -loss
        # Diverged weights make every prediction argmax(NaN) = 0, a finite but meaningless
        # accuracy; report NaN so that evolution counts the lifetime as failed.
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(w)) for w in network.weights]))
        fitness = jnp.where(finite, fitness, jnp.nan)
        return LifetimeResult(fitness=fitness, query_accuracy=accuracy, query_loss=loss, curve=curve)


@dataclasses.dataclass(frozen=True)
class Lifetimes:
    """Batches of lifetimes of one learner on one task; each key gives one task instance and network."""

    learner: Learner
    task: Any

    def run(self, params: Any, pools: Any, keys: jax.Array, plastic: bool = True, track_query: bool = False) -> LifetimeResult:
        """Live one lifetime per key (keys: (n,)) with rule ``params``; results batched over n."""

        def one(key: jax.Array) -> LifetimeResult:
            key_instance, key_network = split_lifetime_key(key)
            instance = self.task.sample(key_instance, pools)
            return self.learner.run(params, instance, key_network, plastic=plastic, track_query=track_query)

        return jax.vmap(one)(keys)

    @partial(jax.jit, static_argnames=("self", "plastic", "track_query"))
    def evaluate(self, params: Any, pools: Any, keys: jax.Array, plastic: bool = True, track_query: bool = False) -> LifetimeResult:
        """Jitted :meth:`run`."""
        return self.run(params, pools, keys, plastic, track_query)

    @partial(jax.jit, static_argnames=("self",))
    def sweep(self, stacked_params: Any, pools: Any, keys: jax.Array) -> jax.Array:
        """Mean query accuracy of each parameter set (leading axis of ``stacked_params``) on the same lifetimes."""
        return jax.vmap(lambda params: self.run(params, pools, keys).query_accuracy.mean())(stacked_params)
