"""Online supervised lifetimes, shared by the classification, regression and continual tasks.

A supervised task shows labelled examples one at a time (batch size 1). How the network
learns from each example is an :class:`Updater`: the evolved rule (:func:`rule_updater`),
no learning at all, or an optax optimizer (:mod:`neuroevo.baselines`). Tasks implement
``train(updater, learner, instance, key, track_query, epochs)``, and their ``lifetime``
method is ``train`` with the rule's updater. Rules and gradient baselines therefore see the
same examples in the same order from the same initial weights.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from neuroevo import graph
from neuroevo.lifetime import Learner, LifetimeResult, StepMetrics, guard_fitness


class Updater(NamedTuple):
    """Pure functions through which a network learns from one labelled example at a time."""

    init: Callable[[jax.Array], Any]  # network key -> carry (initial weights and any optimizer state)
    weights: Callable[[Any], graph.Weights]  # carry -> current weights
    # (carry, x (n_inputs,), target (n_out,)) -> (carry, states, activations), where states and
    # activations come from presenting x with the weights before the update
    update: Callable[[Any, jax.Array, jax.Array], tuple[Any, tuple, tuple]]
    structure: Callable[[Any], Any] = lambda carry: ()  # carry -> structure metrics of the lifetime, or () if none


def rule_updater(learner: Learner, params: Any, plastic: bool = True) -> Updater:
    """Learning by the rule with ``params``; ``plastic=False`` keeps the initial weights."""

    def update(network, x, target):
        if plastic:
            return learner.supervised_step(params, network, x, target)
        states, activations = learner.present(network.weights, x)
        return network, states, activations

    structure = learner.structure_metrics if plastic else (lambda network: ())
    return Updater(init=learner.init_network, weights=lambda network: network.weights, update=update, structure=structure)


def epoch_order(key: jax.Array, n_examples: int, epochs: int) -> jax.Array:
    """Example indices (epochs * n_examples,): the stream in its own order, then fresh random orders."""
    order = jnp.arange(n_examples)
    if epochs == 1:
        return order
    later = jax.vmap(lambda k: jax.random.permutation(k, n_examples))(jax.random.split(key, epochs - 1))
    return jnp.concatenate([order[None], later]).reshape(-1)


def online_pass(
    learner: Learner,
    updater: Updater,
    carry: Any,
    xs: jax.Array,
    targets: jax.Array,
    example_metric: Callable[[jax.Array, jax.Array], jax.Array],
    query_metric: Callable[[graph.Weights], jax.Array] | None = None,
) -> tuple[Any, StepMetrics]:
    """Show examples xs (n, n_inputs) with targets (n, n_out) once each, in order, as one ``lax.scan``.

    ``example_metric(output, target)`` scores each example before the update;
    ``query_metric(weights)``, when given, scores the query set after each update.
    """

    def scan_step(carry, example):
        x, target = example
        carry, states, activations = updater.update(carry, x, target)
        query = jnp.float32(jnp.nan) if query_metric is None else query_metric(updater.weights(carry))
        metrics = StepMetrics(
            loss=learner.loss(states, activations, target),
            online=example_metric(learner.output(activations), target),
            query=query,
        )
        return carry, metrics

    return lax.scan(scan_step, carry, (xs, targets))


def train_stream(
    learner: Learner,
    updater: Updater,
    key: jax.Array,
    xs: jax.Array,
    targets: jax.Array,
    example_metric: Callable[[jax.Array, jax.Array], jax.Array],
    score: Callable[[graph.Weights], tuple[jax.Array, jax.Array]],
    track_query: bool,
    epochs: int,
) -> LifetimeResult:
    """Train from the weights drawn with ``key`` on one stream xs (n, n_inputs), targets (n, n_out), then score.

    ``score(weights)`` returns the task metric and mean loss on the query set. ``epochs > 1``
    repeats the stream in fresh random orders (drawn from ``fold_in(key, 1)``); the curve
    covers the first pass, where every example is new.
    """
    n_train = xs.shape[0]
    order = epoch_order(jax.random.fold_in(key, 1), n_train, epochs)
    query_metric = (lambda weights: score(weights)[0]) if track_query else None
    carry, curve = online_pass(learner, updater, updater.init(key), xs[order], targets[order], example_metric, query_metric)
    curve = jax.tree.map(lambda values: values[:n_train], curve)
    weights = updater.weights(carry)
    metric, loss = score(weights)
    return lifetime_result(learner, weights, metric, loss, curve, structure=updater.structure(carry))


def lifetime_result(
    learner: Learner, weights: graph.Weights, metric: jax.Array, loss: jax.Array, curve: StepMetrics, details: Any = (), structure: Any = ()
) -> LifetimeResult:
    """Package a supervised lifetime; fitness is the metric (``accuracy``) or the negated query loss (``neg_loss``)."""
    fitness = metric if learner.fitness == "accuracy" else -loss
    return LifetimeResult(fitness=guard_fitness(fitness, weights), metric=metric, loss=loss, curve=curve, details=details, structure=structure)


class SupervisedTask:
    """Mixin: the rule's lifetime of a task that implements ``train``."""

    signals = ("error",)  # learning signals the task provides to rules: targets give an output error
    # Whether every input value lies in [0, 1], the range of the spiking rate and latency encoders.
    # False is the safe default, so a spiking network on a task that does not set it needs spiking.signed_inputs.
    inputs_in_unit_interval = False

    def lifetime(self, learner: Learner, params: Any, instance: Any, key: jax.Array, plastic: bool = True, track_query: bool = False) -> LifetimeResult:
        """Live one lifetime on ``instance`` with the rule ``params``, from weights drawn with ``key``."""
        return self.train(rule_updater(learner, params, plastic), learner, instance, key, track_query=track_query)
