"""Gradient baselines: online SGD against NumPy, and the initial weights they share with rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import graph
from neuroevo.baselines import GradientBaseline
from neuroevo.lifetime import Learner
from neuroevo.tasks import FewShotClassification, FewShotInstance

import reference

N_INPUTS, N_OUTPUTS, N_TRAIN, N_QUERY = 8, 3, 12, 9
LEARNING_RATE = 0.5
TASK = FewShotClassification(n_inputs=N_INPUTS, n_way=N_OUTPUTS, k_shot=4, n_query=3)  # sizes of random_instance


def random_instance(seed: int = 0) -> FewShotInstance:
    rng = np.random.default_rng(seed)
    return FewShotInstance(
        train_x=jnp.asarray(rng.normal(size=(N_TRAIN, N_INPUTS)), jnp.float32),
        train_y=jnp.asarray(rng.integers(0, N_OUTPUTS, N_TRAIN), jnp.int32),
        query_x=jnp.asarray(rng.normal(size=(N_QUERY, N_INPUTS)), jnp.float32),
        query_y=jnp.asarray(rng.integers(0, N_OUTPUTS, N_QUERY), jnp.int32),
    )


@pytest.fixture(scope="module")
def zero_start():
    """A single-layer softmax network from zero weights, so every key gives the same start."""
    learner = Learner(graph.layered_topology(N_INPUTS, (), N_OUTPUTS), reference.DeltaRule(), feedback="none", weight_init="zeros")
    baseline = GradientBaseline(learner, task=TASK, optimizer="sgd", epochs=1)
    run = jax.jit(baseline.run, static_argnames=("track_query",))
    return learner, run


def test_sgd_one_pass_matches_numpy(zero_start):
    # For softmax outputs and cross-entropy, the SGD step of a single layer is
    # w_ij += lr * (target_i - a_i) * x_j: the delta rule with eta = lr.
    learner, run = zero_start
    instance = random_instance()

    result = run(jnp.float32(LEARNING_RATE), instance, jax.random.key(0))

    weights = [np.zeros(learner.topology.block_shape(b)) for b in range(len(learner.topology.blocks))]
    losses = []
    for x, label in zip(np.asarray(instance.train_x), np.asarray(instance.train_y)):
        step = reference.plastic_step(
            learner.topology, weights, "none", None, x, int(label), lambda block, i, j, edge: LEARNING_RATE * edge["error"] * edge["pre"]
        )
        weights = step.weights
        losses.append(step.loss)
    accuracy, loss = reference.query_scores(learner.topology, weights, instance.query_x, instance.query_y)
    np.testing.assert_allclose(result.curve.loss, losses, rtol=1e-5)
    assert float(result.loss) == pytest.approx(loss, rel=1e-5)
    assert float(result.metric) == pytest.approx(accuracy, abs=1e-6)


def test_sgd_track_query_ends_at_final(zero_start):
    _, run = zero_start

    result = run(jnp.float32(LEARNING_RATE), random_instance(), jax.random.key(0), track_query=True)

    assert float(result.curve.query[-1]) == pytest.approx(float(result.metric), abs=1e-6)


def test_multi_pass_curve_first_pass():
    learner = Learner(graph.layered_topology(N_INPUTS, (), N_OUTPUTS), reference.DeltaRule(), feedback="none")
    baseline = GradientBaseline(learner, task=TASK, optimizer="sgd", epochs=3)

    result = jax.jit(baseline.run)(jnp.float32(0.1), random_instance(), jax.random.key(0))

    assert result.curve.loss.shape == (N_TRAIN,)


def test_sgd_zero_rate_matches_no_plasticity():
    # SGD with learning rate 0 never changes the weights, so with the same key it must
    # score exactly what the network without plasticity scores.
    learner = Learner(graph.layered_topology(N_INPUTS, (), N_OUTPUTS), reference.DeltaRule(), feedback="none")
    baseline = GradientBaseline(learner, task=TASK, optimizer="sgd", epochs=1)
    instance = random_instance()
    key = jax.random.key(3)

    frozen = jax.jit(lambda *args: TASK.lifetime(learner, *args, plastic=False))(learner.rule.init(key), instance, key)
    sgd = jax.jit(baseline.run)(jnp.float32(0.0), instance, key)

    assert float(sgd.loss) == pytest.approx(float(frozen.loss), rel=1e-6)
