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
import jax.numpy as jnp
import optax
from jax import lax

from neuroevo import graph
from neuroevo.lifetime import Learner, LifetimeResult, split_lifetime_key

OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}


@dataclasses.dataclass(frozen=True)
class GradientBaseline:
    """Online training of the learner's network by an optax optimizer on the example loss."""

    learner: Learner
    task: Any
    optimizer: str = "sgd"  # key of OPTIMIZERS
    epochs: int = 1

    def run(self, learning_rate: jax.Array, instance: Any, key: jax.Array, track_query: bool = False) -> LifetimeResult:
        """Train on ``instance.train_*`` from the weights drawn with ``key``; score the query set."""
        network = self.learner.init_network(key)  # the initial weights Learner.run draws from the same key
        key_order = jax.random.fold_in(key, 1)
        masks = network.masks
        optimizer = OPTIMIZERS[self.optimizer](learning_rate)

        def loss_fn(weights: graph.Weights, x: jax.Array, label: jax.Array) -> jax.Array:
            states, activations = graph.propagate(self.learner.topology, weights, x)
            return self.learner.example_loss(states, activations, label)

        def scan_step(carry, index):
            weights, opt_state = carry
            x, label = instance.train_x[index], instance.train_y[index]
            _, _, metrics = self.learner.present(weights, x, label)
            grads = jax.grad(loss_fn)(weights, x, label)
            grads = tuple(g * m for g, m in zip(grads, masks))
            updates, opt_state = optimizer.update(grads, opt_state, weights)
            weights = optax.apply_updates(weights, updates)
            if track_query:
                accuracy, _ = self.learner.evaluate_query(weights, instance.query_x, instance.query_y)
                metrics = metrics._replace(query_accuracy=accuracy)
            return (weights, opt_state), metrics

        n_train = instance.train_x.shape[0]
        order = jnp.arange(n_train)
        if self.epochs > 1:
            later = jax.vmap(lambda k: jax.random.permutation(k, n_train))(jax.random.split(key_order, self.epochs - 1))
            order = jnp.concatenate([order[None], later]).reshape(-1)

        (weights, _), curve = lax.scan(scan_step, (network.weights, optimizer.init(network.weights)), order)
        curve = jax.tree.map(lambda values: values[:n_train], curve)  # the first pass: samples seen once
        accuracy, loss = self.learner.evaluate_query(weights, instance.query_x, instance.query_y)
        fitness = accuracy if self.learner.fitness == "accuracy" else -loss
        return LifetimeResult(fitness=fitness, query_accuracy=accuracy, query_loss=loss, curve=curve)

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
        """Mean query accuracy of each learning rate over the lifetimes of ``keys``."""
        return jax.vmap(lambda lr: self.lifetimes(lr, pools, keys).query_accuracy.mean())(learning_rates)
