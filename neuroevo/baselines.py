"""Gradient-descent baselines trained with optax on the same lifetimes as the rules.

Each baseline network has the learner's topology and starts from the very weights that
the plastic network of the same lifetime key starts from (:meth:`Learner.init_network`),
and is trained on the same examples in the same order. One pass is the online setting the rules
face (batch size 1, each example once); multi-pass repeats the support set for several
epochs in fresh random orders, a stronger reference. Learning rates are chosen by a sweep
on meta-train lifetimes only, and then applied to meta-test lifetimes.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import optax

from neuroevo import graph
from neuroevo.lifetime import Learner, LifetimeResult, split_lifetime_key
from neuroevo.tasks.supervised import Updater

OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}


def gradient_updater(learner: Learner, optimizer: optax.GradientTransformation) -> Updater:
    """Online learning by ``optimizer`` on the learner's loss, one example per step; masked edges stay zero."""

    def init(key: jax.Array):
        network = learner.init_network(key)  # the initial weights a rule's lifetime draws from the same key
        return network.weights, optimizer.init(network.weights), network.masks

    def loss_fn(weights: graph.Weights, x: jax.Array, target: jax.Array) -> jax.Array:
        states, activations = learner.present(weights, x)
        return learner.loss(states, activations, target)

    def update(carry, x, target):
        weights, opt_state, masks = carry
        states, activations = learner.present(weights, x)
        grads = jax.grad(loss_fn)(weights, x, target)
        grads = tuple(g * m for g, m in zip(grads, masks))
        updates, opt_state = optimizer.update(grads, opt_state, weights)
        weights = optax.apply_updates(weights, updates)
        return (weights, opt_state, masks), states, activations

    return Updater(init=init, weights=lambda carry: carry[0], update=update)


@dataclasses.dataclass(frozen=True)
class GradientBaseline:
    """Online training of the learner's network by an optax optimizer on the example loss.

    ``task`` must be a supervised task (one with a ``train`` method, see
    :mod:`neuroevo.tasks.supervised`).
    """

    learner: Learner
    task: Any
    optimizer: str = "sgd"  # key of OPTIMIZERS
    epochs: int = 1

    def run(self, learning_rate: jax.Array, instance: Any, key: jax.Array, track_query: bool = False) -> LifetimeResult:
        """Train on ``instance`` from the weights drawn with ``key`` and score it as the task does."""
        updater = gradient_updater(self.learner, OPTIMIZERS[self.optimizer](learning_rate))
        return self.task.train(updater, self.learner, instance, key, track_query=track_query, epochs=self.epochs)

    def lifetimes(self, learning_rate: jax.Array, pools: Any, keys: jax.Array, track_query: bool = False) -> LifetimeResult:
        """Run one lifetime per key, on the task instance and initial weights that the same key gives a rule."""

        def one(key: jax.Array) -> LifetimeResult:
            key_instance, key_network = split_lifetime_key(key)
            instance = self.task.sample(key_instance, pools)
            return self.run(learning_rate, instance, key_network, track_query)

        return jax.vmap(one)(keys)

    @partial(jax.jit, static_argnames=("self", "track_query"))
    def evaluate(self, learning_rate: jax.Array, pools: Any, keys: jax.Array, track_query: bool = False) -> LifetimeResult:
        return self.lifetimes(learning_rate, pools, keys, track_query)

    @partial(jax.jit, static_argnames=("self",))
    def sweep(self, learning_rates: jax.Array, pools: Any, keys: jax.Array) -> jax.Array:
        """Mean task metric of each learning rate over the lifetimes of ``keys``."""
        return jax.vmap(lambda lr: self.lifetimes(lr, pools, keys).metric.mean())(learning_rates)
