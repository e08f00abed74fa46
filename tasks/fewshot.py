"""Few-shot online classification, shared by the labelled-data tasks (digits, tables, user files).

Each lifetime (task instance) draws ``n_way`` classes of its split in random order, which
also maps them to output units by a fresh random permutation, then shows ``k_shot`` labelled
examples per class once each, in random order, and scores the network on ``n_query``
held-out examples per class. Every class's examples are divided once, with a fixed seed,
into a support pool (what lifetimes learn from) and a query pool (what they are scored
on), so no image is ever both shown and scored.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from neuroevo import graph
from neuroevo.errors import ConfigError, NeuroevoError
from neuroevo.lifetime import Learner, LifetimeResult
from neuroevo.tasks.supervised import SupervisedTask, Updater, train_stream


class ClassPools(NamedTuple):
    """Examples of one split, grouped by class and trimmed to equal counts."""

    support: jax.Array  # (n_classes, n_support, n_features)
    query: jax.Array  # (n_classes, n_query_pool, n_features)


class FewShotInstance(NamedTuple):
    """One task instance: an online training stream and a query set."""

    train_x: jax.Array  # (n_way * k_shot, n_features)
    train_y: jax.Array  # (n_way * k_shot,) int32, output unit of each example
    query_x: jax.Array  # (n_way * n_query, n_features)
    query_y: jax.Array  # (n_way * n_query,) int32


def build_pools(
    features: np.ndarray,
    labels: np.ndarray,
    classes: tuple[int, ...],
    query_fraction: float,
    split_seed: int,
) -> ClassPools:
    """Divide each class's examples into support and query pools of equal size across classes."""
    rng = np.random.default_rng(split_seed)
    per_class = [rng.permutation(np.flatnonzero(labels == label)) for label in classes]
    count = min(len(indices) for indices in per_class)
    n_query_pool = int(round(count * query_fraction))
    support = np.stack([features[indices[n_query_pool:count]] for indices in per_class])
    query = np.stack([features[indices[:n_query_pool]] for indices in per_class])
    return ClassPools(jnp.asarray(support, jnp.float32), jnp.asarray(query, jnp.float32))


def validate_fewshot_sizes(config) -> None:
    """Raise ConfigError unless ``config`` (a task config) has n_way >= 2, k_shot and n_query >= 1, 0 < query_fraction < 1."""
    if config.n_way < 2:
        raise ConfigError(f"task.n_way={config.n_way} must be at least 2 for a classification task")
    for name in ("k_shot", "n_query"):
        if getattr(config, name) < 1:
            raise ConfigError(f"task.{name}={getattr(config, name)} must be at least 1")
    if not 0.0 < config.query_fraction < 1.0:
        raise ConfigError(f"task.query_fraction={config.query_fraction} must be between 0 and 1")


def check_split_sizes(prefix: str, split: str, pools: ClassPools, n_way: int, k_shot: int, n_query: int) -> None:
    """Raise ConfigError when a split cannot serve the requested way, shot or query counts."""
    n_classes, n_support, _ = pools.support.shape
    n_query_pool = pools.query.shape[1]
    if n_way > n_classes:
        raise ConfigError(
            f"{prefix}.n_way={n_way} is larger than the {n_classes} classes of the {split} split; "
            f"lower n_way or list more classes in {prefix}.{split}_classes"
        )
    if k_shot > n_support:
        raise ConfigError(
            f"{prefix}.k_shot={k_shot} is larger than the {n_support} support examples per class of the {split} "
            f"split; lower k_shot or {prefix}.query_fraction"
        )
    if n_query > n_query_pool:
        raise ConfigError(
            f"{prefix}.n_query={n_query} is larger than the {n_query_pool} query examples per class of the {split} "
            f"split; lower n_query or raise {prefix}.query_fraction"
        )


def classification_scores(learner: Learner, weights: graph.Weights, x: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Accuracy and mean loss of a network on examples x (n, n_inputs) with labels (n,), without plasticity."""
    n_out = learner.topology.n_outputs

    def per_example(x: jax.Array, label: jax.Array) -> tuple[jax.Array, jax.Array]:
        states, activations = learner.present(weights, x)
        prediction = jnp.argmax(learner.output(activations))
        target = jax.nn.one_hot(label, n_out, dtype=jnp.float32)
        return (prediction == label).astype(jnp.float32), learner.loss(states, activations, target)

    correct, loss = jax.vmap(per_example)(x, labels)
    return correct.mean(), loss.mean()


def correct_prediction(output: jax.Array, target: jax.Array) -> jax.Array:
    """1.0 when the output's largest unit is the one-hot target's unit, else 0.0."""
    return (jnp.argmax(output) == jnp.argmax(target)).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class FewShotClassification(SupervisedTask):
    """Static sizes of a few-shot task; the pools are passed to :meth:`sample` as arrays."""

    n_inputs: int
    n_way: int
    k_shot: int
    n_query: int

    metric = "accuracy"
    output_activation = "softmax"

    @property
    def n_outputs(self) -> int:
        return self.n_way

    @property
    def lifetime_length(self) -> int:
        return self.n_way * self.k_shot

    def describe(self) -> str:
        return f"{self.n_way}-way {self.k_shot}-shot"

    def sample(self, key: jax.Array, pools: ClassPools) -> FewShotInstance:
        """Draw one task instance from ``pools`` (one split)."""
        key_classes, key_support, key_query, key_order = jax.random.split(key, 4)
        classes = jax.random.permutation(key_classes, pools.support.shape[0])[: self.n_way]

        def pick(key: jax.Array, pool: jax.Array, count: int) -> jax.Array:
            return pool[jax.random.permutation(key, pool.shape[0])[:count]]

        support = jax.vmap(pick, in_axes=(0, 0, None))(
            jax.random.split(key_support, self.n_way), pools.support[classes], self.k_shot
        )  # (n_way, k_shot, n_features)
        query = jax.vmap(pick, in_axes=(0, 0, None))(
            jax.random.split(key_query, self.n_way), pools.query[classes], self.n_query
        )  # (n_way, n_query, n_features)

        units = jnp.arange(self.n_way, dtype=jnp.int32)
        train_x = support.reshape(self.n_way * self.k_shot, -1)
        train_y = jnp.repeat(units, self.k_shot)
        order = jax.random.permutation(key_order, train_x.shape[0])
        return FewShotInstance(
            train_x=train_x[order],
            train_y=train_y[order],
            query_x=query.reshape(self.n_way * self.n_query, -1),
            query_y=jnp.repeat(units, self.n_query),
        )

    def training_stream(self, instance: FewShotInstance) -> tuple[jax.Array, jax.Array]:
        """Inputs (n, n_inputs) and one-hot targets (n, n_way) of the training stream, in order."""
        return instance.train_x, jax.nn.one_hot(instance.train_y, self.n_way, dtype=jnp.float32)

    def train(self, updater: Updater, learner: Learner, instance: FewShotInstance, key: jax.Array, track_query: bool = False, epochs: int = 1) -> LifetimeResult:
        """Train on the support stream from the weights drawn with ``key``, then score accuracy on the query set."""
        xs, targets = self.training_stream(instance)

        def score(weights: graph.Weights) -> tuple[jax.Array, jax.Array]:
            return classification_scores(learner, weights, instance.query_x, instance.query_y)

        return train_stream(learner, updater, key, xs, targets, correct_prediction, score, track_query, epochs)


SCALINGS = ("minmax", "standard", "none")


def scale_features(features: np.ndarray, scaling: str) -> np.ndarray:
    """Scale each feature (column) with statistics of all rows of ``features``.

    ``minmax`` maps each column's minimum to 0 and maximum to 1, ``standard`` subtracts the
    column mean and divides by the column standard deviation, and ``none`` returns a float32
    copy. A constant column becomes 0 under both ``minmax`` and ``standard``.
    """
    features = np.asarray(features, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if scaling == "none":
            scaled = features.astype(np.float32)
        elif scaling in ("minmax", "standard"):
            if scaling == "minmax":
                offset = features.min(axis=0)
                spread = features.max(axis=0) - offset
            else:
                offset = features.mean(axis=0)
                spread = features.std(axis=0)
            spread = np.where(spread > 0, spread, 1.0)
            scaled = ((features - offset) / spread).astype(np.float32)
        else:
            raise ValueError(f"unknown scaling {scaling!r}; use one of {SCALINGS}")
    if not np.all(np.isfinite(scaled)):
        column = int(np.argwhere(~np.isfinite(scaled))[0][1])
        raise NeuroevoError(
            f"feature column {column} has values too large to scale with scaling={scaling!r} in float32; "
            "divide that column by a constant so its values stay well below 1e38"
        )
    return scaled


def divide_examples(labels: np.ndarray, classes: tuple[int, ...], split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Divide each class's examples at random into a meta-train half and a meta-test half.

    Returns two sorted index arrays into ``labels`` with no index in common. Of a class with
    ``n`` examples, ``n // 2`` go to meta-train and the rest to meta-test.
    """
    rng = np.random.default_rng(split_seed)
    train, test = [], []
    for label in classes:
        indices = rng.permutation(np.flatnonzero(labels == label))
        half = len(indices) // 2
        train.append(indices[:half])
        test.append(indices[half:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
