"""Continual learning of digits: one lifetime learns a sequence of tasks, one after the other.

A lifetime is ``n_tasks`` classification tasks on scikit-learn's 8x8 digits, shown in
order, ``k_shot`` examples per class each, once each, with no signal that the task changed.
Two variants (van de Ven and Tolias 2019, "Three scenarios for continual learning"):

- ``split_classes``: the ten digits are drawn in random order and cut into tasks of
  ``classes_per_task`` digits each (Split MNIST's 5 two-class tasks with the defaults).
- ``permuted_pixels``: every task has the same ``classes_per_task`` digits, but each task
  applies its own fixed random permutation to the 64 pixels (Permuted MNIST; Goodfellow et
  al. 2013, "An Empirical Investigation of Catastrophic Forgetting in Gradient-Based Neural
  Networks").

Both share one output head of ``classes_per_task`` units: a task's classes map to output
units 0, 1, ... in the order they were drawn, so later tasks reuse and overwrite what earlier
tasks taught (the domain-incremental scenario). After each task the network is scored,
without plasticity, on the query set of every task, which gives the accuracy matrix
``R[t, j]`` (accuracy on task ``j`` after learning tasks 0..t; entries j > t are recorded but
unused). From it, as in Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning":

- final average accuracy ``mean_j R[T-1, j]`` (the task's metric);
- forgetting ``mean_{j<T-1} (max_{j<=t<T-1} R[t, j] - R[T-1, j])``;
- plasticity ``mean_j R[j, j]``, the accuracy on each task right after learning it.

Meta-train and meta-test divide every digit's images once (seed ``split_seed``) into two
halves, so the splits share no image. Within a split, each digit's images are divided into
support and query pools as in the few-shot tasks.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from sklearn.datasets import load_digits

from neuroevo import graph
from neuroevo.errors import ConfigError
from neuroevo.lifetime import Learner, LifetimeResult
from neuroevo.tasks.fewshot import ClassPools, build_pools, classification_scores, correct_prediction, divide_examples
from neuroevo.tasks.supervised import SupervisedTask, Updater, epoch_order, lifetime_result, online_pass

SPLITS = ("train", "test")
N_DIGITS, N_PIXELS = 10, 64


@dataclasses.dataclass(frozen=True)
class ContinualDigitsConfig:
    """Options of the continual digits task (config section ``task`` with ``name: continual_digits``)."""

    variant: Literal["split_classes", "permuted_pixels"] = "split_classes"
    n_tasks: int = 5
    classes_per_task: int = 2
    k_shot: int = 10  # training images per class and task, each shown once
    n_query: int = 20  # query images per class and task
    query_fraction: float = 0.5  # share of each digit's images in a split held out as query images
    split_seed: int = 0  # seed of the fixed meta-train/meta-test and support/query divisions

    def validate(self) -> None:
        for name in ("k_shot", "n_query"):
            if getattr(self, name) < 1:
                raise ConfigError(f"task.{name}={getattr(self, name)} must be at least 1")
        if self.n_tasks < 2:
            raise ConfigError(f"task.n_tasks={self.n_tasks} must be at least 2 for a sequence of tasks")
        if not 2 <= self.classes_per_task <= N_DIGITS:
            raise ConfigError(f"task.classes_per_task={self.classes_per_task} must be between 2 and {N_DIGITS}")
        if self.variant == "split_classes" and self.n_tasks * self.classes_per_task > N_DIGITS:
            raise ConfigError(
                f"split_classes needs n_tasks * classes_per_task = {self.n_tasks * self.classes_per_task} distinct digits, "
                f"but digits has {N_DIGITS}; lower task.n_tasks or task.classes_per_task, or use variant: permuted_pixels"
            )
        if not 0.0 < self.query_fraction < 1.0:
            raise ConfigError(f"task.query_fraction={self.query_fraction} must be between 0 and 1")


class ContinualInstance(NamedTuple):
    """One task sequence; axis 0 is the task, in the order the lifetime learns them."""

    train_x: jax.Array  # (n_tasks, classes_per_task * k_shot, 64)
    train_y: jax.Array  # (n_tasks, classes_per_task * k_shot) int32 output unit
    query_x: jax.Array  # (n_tasks, classes_per_task * n_query, 64)
    query_y: jax.Array  # (n_tasks, classes_per_task * n_query) int32
    digits: jax.Array  # (n_tasks, classes_per_task) int32 digit behind each output unit


class ContinualDetails(NamedTuple):
    """Per-lifetime record of a task sequence."""

    accuracy: jax.Array  # (n_tasks, n_tasks) R[t, j]: query accuracy on task j after learning task t


def sequence_metrics(accuracy: np.ndarray) -> dict[str, np.ndarray]:
    """Final average accuracy, forgetting and plasticity of accuracy matrices (..., T, T); each (...,)."""
    accuracy = np.asarray(accuracy, np.float64)
    n_tasks = accuracy.shape[-1]
    final = accuracy[..., -1, :]
    # Best accuracy on task j before the last task, over t = j .. T-2.
    t, j = np.meshgrid(np.arange(n_tasks - 1), np.arange(n_tasks - 1), indexing="ij")
    earlier = np.where(t >= j, accuracy[..., :-1, :-1], -np.inf).max(axis=-2)
    return {
        "final_average_accuracy": final.mean(axis=-1),
        "forgetting": (earlier - final[..., :-1]).mean(axis=-1),
        "plasticity": np.diagonal(accuracy, axis1=-2, axis2=-1).mean(axis=-1),
    }


def _check_pool_sizes(config: ContinualDigitsConfig, split: str, pools: ClassPools) -> None:
    n_support, n_query_pool = pools.support.shape[1], pools.query.shape[1]
    if config.k_shot > n_support:
        raise ConfigError(
            f"task.k_shot={config.k_shot} is larger than the {n_support} support images per digit of the {split} split; "
            "lower k_shot or task.query_fraction"
        )
    if config.n_query > n_query_pool:
        raise ConfigError(
            f"task.n_query={config.n_query} is larger than the {n_query_pool} query images per digit of the {split} split; "
            "lower n_query or raise task.query_fraction"
        )


@dataclasses.dataclass(frozen=True)
class ContinualDigitsTask(SupervisedTask):
    """A sequence of digit classification tasks in one lifetime; see the module docstring."""

    config: ContinualDigitsConfig = ContinualDigitsConfig()

    n_inputs = N_PIXELS
    metric = "accuracy"
    output_activation = "softmax"
    inputs_in_unit_interval = True  # digit pixels scaled to [0, 1], permuted or not

    @classmethod
    def from_config(cls, config: ContinualDigitsConfig) -> ContinualDigitsTask:
        task = cls(config=config)
        for split in SPLITS:
            _check_pool_sizes(config, split, task.data(split))
        return task

    @property
    def n_outputs(self) -> int:
        return self.config.classes_per_task

    @property
    def lifetime_length(self) -> int:
        return self.config.n_tasks * self.config.classes_per_task * self.config.k_shot

    def describe(self) -> str:
        config = self.config
        return f"{config.variant}, {config.n_tasks} tasks of {config.classes_per_task} digits, {config.k_shot}-shot"

    def data(self, split: str) -> ClassPools:
        """Support and query pools of every digit in ``split`` ("train" = meta-train, "test" = meta-test)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        digits = load_digits()
        images = digits.data.astype(np.float32) / 16.0
        classes = tuple(range(N_DIGITS))
        train_indices, test_indices = divide_examples(digits.target, classes, self.config.split_seed)
        indices = train_indices if split == "train" else test_indices
        return build_pools(images[indices], digits.target[indices], classes, self.config.query_fraction, self.config.split_seed)

    def sample(self, key: jax.Array, pools: ClassPools) -> ContinualInstance:
        """Draw one task sequence: digits per task, pixel permutations, images and their order."""
        config = self.config
        n_tasks, n_classes = config.n_tasks, config.classes_per_task
        key_digits, key_pixels, key_support, key_query, key_order = jax.random.split(key, 5)

        order = jax.random.permutation(key_digits, N_DIGITS).astype(jnp.int32)
        if config.variant == "split_classes":
            digits = order[: n_tasks * n_classes].reshape(n_tasks, n_classes)
            pixels = jnp.broadcast_to(jnp.arange(N_PIXELS), (n_tasks, N_PIXELS))
        else:
            digits = jnp.broadcast_to(order[:n_classes], (n_tasks, n_classes))
            pixels = jax.vmap(lambda k: jax.random.permutation(k, N_PIXELS))(jax.random.split(key_pixels, n_tasks))

        def pick(key: jax.Array, pool: jax.Array, count: int) -> jax.Array:
            return pool[jax.random.permutation(key, pool.shape[0])[:count]]

        def images(key: jax.Array, pool: jax.Array, count: int) -> jax.Array:
            keys = jax.random.split(key, n_tasks * n_classes)
            picked = jax.vmap(pick, in_axes=(0, 0, None))(keys, pool[digits.reshape(-1)], count)
            picked = picked.reshape(n_tasks, n_classes * count, N_PIXELS)
            return jax.vmap(lambda x, permutation: x[:, permutation])(picked, pixels)

        units = jnp.arange(n_classes, dtype=jnp.int32)
        train_x = images(key_support, pools.support, config.k_shot)
        train_y = jnp.broadcast_to(jnp.repeat(units, config.k_shot), (n_tasks, n_classes * config.k_shot))
        shuffle = jax.vmap(lambda k: jax.random.permutation(k, n_classes * config.k_shot))(jax.random.split(key_order, n_tasks))
        return ContinualInstance(
            train_x=jnp.take_along_axis(train_x, shuffle[:, :, None], axis=1),
            train_y=jnp.take_along_axis(train_y, shuffle, axis=1),
            query_x=images(key_query, pools.query, config.n_query),
            query_y=jnp.broadcast_to(jnp.repeat(units, config.n_query), (n_tasks, n_classes * config.n_query)),
            digits=digits,
        )

    def training_stream(self, instance: ContinualInstance) -> tuple[jax.Array, jax.Array]:
        """Inputs (n_tasks * n, 64) and one-hot targets of the whole sequence, task after task."""
        xs = instance.train_x.reshape(-1, N_PIXELS)
        return xs, jax.nn.one_hot(instance.train_y.reshape(-1), self.n_outputs, dtype=jnp.float32)

    def train(self, updater: Updater, learner: Learner, instance: ContinualInstance, key: jax.Array, track_query: bool = False, epochs: int = 1) -> LifetimeResult:
        """Learn the tasks in order from the weights drawn with ``key``, scoring every task after each one.

        ``epochs > 1`` repeats each task's stream in fresh random orders before the next
        task starts; the curve covers the first pass of each task. With ``track_query`` the
        curve's query value is the mean accuracy over the tasks seen so far, current included.
        """
        n_tasks = self.config.n_tasks
        n_train = instance.train_x.shape[1]
        targets = jax.nn.one_hot(instance.train_y, self.n_outputs, dtype=jnp.float32)
        key_order = jax.random.fold_in(key, 1)
        orders = jax.vmap(lambda t: epoch_order(jax.random.fold_in(key_order, t), n_train, epochs))(jnp.arange(n_tasks))

        def score_all(weights: graph.Weights) -> tuple[jax.Array, jax.Array]:
            return jax.vmap(lambda x, y: classification_scores(learner, weights, x, y))(instance.query_x, instance.query_y)

        def learn_task(carry, task_inputs):
            task, xs, task_targets, order = task_inputs
            seen = (jnp.arange(n_tasks) <= task).astype(jnp.float32)

            def seen_accuracy(weights: graph.Weights) -> jax.Array:
                return jnp.sum(score_all(weights)[0] * seen) / jnp.sum(seen)

            carry, curve = online_pass(
                learner, updater, carry, xs[order], task_targets[order], correct_prediction, seen_accuracy if track_query else None
            )
            accuracy, loss = score_all(updater.weights(carry))
            return carry, (jax.tree.map(lambda values: values[:n_train], curve), accuracy, loss)

        carry, (curve, accuracy, loss) = lax.scan(
            learn_task, updater.init(key), (jnp.arange(n_tasks), instance.train_x, targets, orders)
        )
        curve = jax.tree.map(lambda values: values.reshape(-1), curve)
        weights = updater.weights(carry)
        details = ContinualDetails(accuracy=accuracy)
        return lifetime_result(learner, weights, accuracy[-1].mean(), loss[-1].mean(), curve, details, updater.structure(carry))

    def extra_metrics(self, result: LifetimeResult) -> dict[str, np.ndarray]:
        """Forgetting, plasticity and the last task's final accuracy per lifetime (batched results: (lifetimes,) each)."""
        accuracy = np.asarray(result.details.accuracy)
        metrics = sequence_metrics(accuracy)
        return {"forgetting": metrics["forgetting"], "plasticity": metrics["plasticity"], "last_task_accuracy": accuracy[..., -1, -1]}
