"""Few-shot online regression of sinusoids, the standard toy problem of meta-learning.

Each task instance is ``y = A sin(x - phi)``. Amplitude ``A`` and phase ``phi`` are drawn
uniformly from the split's ranges and ``x`` uniformly from ``x_range``, the setup of Finn,
Abbeel and Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks" (A in [0.1, 5], phi in [0, pi], x in [-5, 5]). A lifetime presents ``k_shot``
samples once each, in random order, and is scored by the mean squared error on ``n_query``
fresh samples of the same sinusoid.

Meta-train and meta-test draw from ranges that must be disjoint in amplitude or in phase;
by default both use amplitudes [0.1, 5], meta-train phases [0, pi/2] and meta-test phases
[pi/2, pi]. The network receives ``x`` divided by ``max(|x_low|, |x_high|)``, so its input lies
in [-1, 1]; targets and errors stay in the units of ``y``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from neuroevo import graph
from neuroevo.errors import ConfigError
from neuroevo.lifetime import Learner, LifetimeResult
from neuroevo.tasks.supervised import SupervisedTask, Updater, train_stream

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class SinusoidConfig:
    """Options of the sinusoid task (config section ``task`` with ``name: sinusoid``); ranges are [low, high]."""

    k_shot: int = 10  # training samples per lifetime, each shown once
    n_query: int = 50  # samples on which the query MSE is measured
    x_range: tuple[float, ...] = (-5.0, 5.0)
    train_amplitude: tuple[float, ...] = (0.1, 5.0)
    test_amplitude: tuple[float, ...] = (0.1, 5.0)
    train_phase: tuple[float, ...] = (0.0, math.pi / 2)  # radians
    test_phase: tuple[float, ...] = (math.pi / 2, math.pi)  # radians

    def validate(self) -> None:
        for name in ("k_shot", "n_query"):
            if getattr(self, name) < 1:
                raise ConfigError(f"task.{name}={getattr(self, name)} must be at least 1")
        for name in ("x_range", "train_amplitude", "test_amplitude", "train_phase", "test_phase"):
            bounds = getattr(self, name)
            if len(bounds) != 2 or not bounds[0] < bounds[1]:
                raise ConfigError(f"task.{name}={list(bounds)} must be two numbers [low, high] with low < high")
        if max(abs(bound) for bound in self.x_range) == 0.0:
            raise ConfigError(f"task.x_range={list(self.x_range)} must contain a non-zero bound")

        def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
            return a[0] < b[1] and b[0] < a[1]

        if overlap(self.train_amplitude, self.test_amplitude) and overlap(self.train_phase, self.test_phase):
            raise ConfigError(
                f"the meta-train and meta-test ranges overlap in both amplitude ({list(self.train_amplitude)}, "
                f"{list(self.test_amplitude)}) and phase ({list(self.train_phase)}, {list(self.test_phase)}); "
                "make task.train_amplitude and task.test_amplitude, or task.train_phase and task.test_phase, disjoint"
            )


class SinusoidRanges(NamedTuple):
    """Parameter ranges of one split, passed to :meth:`SinusoidTask.sample` as arrays."""

    amplitude: jax.Array  # (2,) low, high
    phase: jax.Array  # (2,) low, high, radians


class SinusoidInstance(NamedTuple):
    """One sinusoid: an online training stream and a query set, with x already scaled to the network input."""

    train_x: jax.Array  # (k_shot, 1) scaled inputs
    train_y: jax.Array  # (k_shot, 1)
    query_x: jax.Array  # (n_query, 1) scaled inputs
    query_y: jax.Array  # (n_query, 1)
    amplitude: jax.Array  # ()
    phase: jax.Array  # ()


def regression_scores(learner: Learner, weights: graph.Weights, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean squared error and mean loss of a network on x (n, n_inputs), y (n, n_out), without plasticity."""

    def per_example(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        states, activations = learner.present(weights, x)
        return squared_error(learner.output(activations), y), learner.loss(states, activations, y)

    errors, losses = jax.vmap(per_example)(x, y)
    return errors.mean(), losses.mean()


def squared_error(output: jax.Array, target: jax.Array) -> jax.Array:
    """Squared error summed over output units (one unit here)."""
    return jnp.sum((output - target) ** 2)


@dataclasses.dataclass(frozen=True)
class SinusoidTask(SupervisedTask):
    """K-shot online sinusoid regression: one input, one identity output."""

    k_shot: int
    n_query: int
    config: SinusoidConfig = SinusoidConfig()

    n_inputs = 1
    n_outputs = 1
    metric = "mse"
    output_activation = "identity"

    @classmethod
    def from_config(cls, config: SinusoidConfig) -> SinusoidTask:
        return cls(k_shot=config.k_shot, n_query=config.n_query, config=config)

    @property
    def lifetime_length(self) -> int:
        return self.k_shot

    def describe(self) -> str:
        return f"{self.k_shot}-shot sinusoid regression"

    def data(self, split: str) -> SinusoidRanges:
        """Amplitude and phase ranges of ``split`` ("train" = meta-train, "test" = meta-test)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        amplitude = self.config.train_amplitude if split == "train" else self.config.test_amplitude
        phase = self.config.train_phase if split == "train" else self.config.test_phase
        return SinusoidRanges(jnp.asarray(amplitude, jnp.float32), jnp.asarray(phase, jnp.float32))

    def sample(self, key: jax.Array, ranges: SinusoidRanges) -> SinusoidInstance:
        """Draw one sinusoid and its training and query samples."""
        key_amplitude, key_phase, key_train, key_query = jax.random.split(key, 4)
        amplitude = jax.random.uniform(key_amplitude, (), minval=ranges.amplitude[0], maxval=ranges.amplitude[1])
        phase = jax.random.uniform(key_phase, (), minval=ranges.phase[0], maxval=ranges.phase[1])
        x_low, x_high = self.config.x_range
        x_scale = max(abs(x_low), abs(x_high))

        def draw(key: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
            x = jax.random.uniform(key, (count, 1), minval=x_low, maxval=x_high)
            return x / x_scale, amplitude * jnp.sin(x - phase)

        train_x, train_y = draw(key_train, self.k_shot)
        query_x, query_y = draw(key_query, self.n_query)
        return SinusoidInstance(train_x, train_y, query_x, query_y, amplitude, phase)

    def training_stream(self, instance: SinusoidInstance) -> tuple[jax.Array, jax.Array]:
        """Inputs (k_shot, 1) and targets (k_shot, 1) of the training stream, in order."""
        return instance.train_x, instance.train_y

    def train(self, updater: Updater, learner: Learner, instance: SinusoidInstance, key: jax.Array, track_query: bool = False, epochs: int = 1) -> LifetimeResult:
        """Train on the k_shot samples from the weights drawn with ``key``, then score the query MSE."""

        def score(weights: graph.Weights) -> tuple[jax.Array, jax.Array]:
            return regression_scores(learner, weights, instance.query_x, instance.query_y)

        return train_stream(learner, updater, key, instance.train_x, instance.train_y, squared_error, score, track_query, epochs)
