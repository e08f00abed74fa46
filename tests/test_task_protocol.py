"""Task protocol contract, run for every registered task, plus checks of sinusoid and continual digits."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import graph
from neuroevo.baselines import GradientBaseline
from neuroevo.lifetime import HIGHER_IS_BETTER, Learner, LifetimeResult
from neuroevo.tasks import TASK_CONFIGS, ContinualDigitsConfig, SinusoidConfig, build_task
from neuroevo.tasks.continual import sequence_metrics

import reference

# Small options per registered task, so that each contract case runs in about a second.
SMALL_OPTIONS = {
    "digits": {"n_way": 3, "k_shot": 2, "n_query": 3},
    "iris": {"k_shot": 2, "n_query": 3},
    "wine": {"k_shot": 2, "n_query": 3},
    "breast_cancer": {"k_shot": 2, "n_query": 3},
    "sinusoid": {"k_shot": 4, "n_query": 5},
    "continual_digits": {"n_tasks": 3, "k_shot": 2, "n_query": 3},
}
N_LIFETIMES = 3


def blobs_dataset(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 20)
    np.savez(path, x=rng.normal(size=(80, 3)) + labels[:, None], y=labels)
    return {"path": str(path), "n_way": 2, "k_shot": 2, "n_query": 3, "train_classes": [0, 1], "test_classes": [2, 3]}


SUPERVISED_TASKS = sorted({*SMALL_OPTIONS, "dataset"})


def test_every_task_has_a_contract():
    # Control tasks have no training stream; tests/test_control.py checks their contract.
    # Spike patterns need a spiking network; tests/test_spiking.py runs them.
    assert set(TASK_CONFIGS) == {*SUPERVISED_TASKS, "control", "spike_patterns"}


@pytest.fixture(scope="module", params=SUPERVISED_TASKS)
def task_setup(request, tmp_path_factory):
    name = request.param
    options = blobs_dataset(tmp_path_factory) if name == "dataset" else SMALL_OPTIONS[name]
    task = build_task(TASK_CONFIGS[name](**{key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}))
    output_activation = task.output_activation
    topology = graph.layered_topology(task.n_inputs, (4,), task.n_outputs, output_activation=output_activation)
    learner = Learner(topology, reference.DeltaRule(0.05), feedback="random_feedback", fitness="accuracy" if task.metric == "accuracy" else "neg_loss")
    pools = {split: task.data(split) for split in ("train", "test")}
    keys = jax.random.split(jax.random.key(0), N_LIFETIMES)
    return name, task, learner, pools, keys


def test_task_declares_protocol(task_setup):
    _, task, _, _, _ = task_setup

    assert task.metric in HIGHER_IS_BETTER
    assert set(task.signals) <= {"error", "reward"}
    assert task.output_activation in ("softmax", "tanh", "identity")
    assert task.n_inputs >= 1
    assert task.n_outputs >= 1
    assert hash(task) == hash(task)


def test_task_stream_shapes(task_setup):
    _, task, _, pools, keys = task_setup

    instance = jax.jit(task.sample)(keys[0], pools["train"])
    xs, targets = task.training_stream(instance)

    assert xs.shape == (task.lifetime_length, task.n_inputs)
    assert targets.shape == (task.lifetime_length, task.n_outputs)
    assert xs.dtype == jnp.float32


def test_task_lifetime_jitted_finite(task_setup):
    _, task, learner, pools, keys = task_setup
    params = learner.rule.init(jax.random.key(0))

    run = jax.jit(jax.vmap(lambda key: task.lifetime(learner, params, task.sample(key, pools["train"]), key, track_query=True)))
    result = run(keys)

    assert isinstance(result, LifetimeResult)
    assert result.metric.shape == (N_LIFETIMES,)
    assert np.all(np.isfinite(np.asarray(result.metric)))
    assert np.all(np.isfinite(np.asarray(result.fitness)))
    assert result.curve.query.shape == (N_LIFETIMES, task.lifetime_length)
    assert np.all(np.isfinite(np.asarray(result.curve.query)))


def test_task_gradient_baseline_finite(task_setup):
    _, task, learner, pools, keys = task_setup

    result = GradientBaseline(learner, task, "sgd", epochs=2).evaluate(jnp.float32(0.01), pools["train"], keys)

    assert np.all(np.isfinite(np.asarray(result.metric)))
    assert result.curve.loss.shape == (N_LIFETIMES, task.lifetime_length)


def test_task_splits_differ(task_setup):
    # Meta-train and meta-test instances of the same key must share no (input, target) pair:
    # the classification tasks hold out images, the sinusoid task holds out phases.
    _, task, _, pools, keys = task_setup

    def examples(split: str) -> set[bytes]:
        xs, targets = task.training_stream(task.sample(keys[0], pools[split]))
        return {row.tobytes() for row in np.concatenate([np.asarray(xs), np.asarray(targets)], axis=1)}

    assert not examples("train") & examples("test")


# Sinusoid -------------------------------------------------------------------------------


def test_sinusoid_targets_follow_parameters():
    config = SinusoidConfig(k_shot=6, n_query=7)
    task = build_task(config)

    for split, (amplitude_range, phase_range) in {
        "train": (config.train_amplitude, config.train_phase),
        "test": (config.test_amplitude, config.test_phase),
    }.items():
        for seed in range(8):
            instance = task.sample(jax.random.key(seed), task.data(split))
            amplitude, phase = float(instance.amplitude), float(instance.phase)
            x = np.asarray(instance.query_x, np.float64)[:, 0] * 5.0  # undo the input scaling of x_range [-5, 5]

            assert amplitude_range[0] <= amplitude <= amplitude_range[1], split
            assert phase_range[0] <= phase <= phase_range[1], split
            assert np.all(np.abs(x) <= 5.0 + 1e-5)
            np.testing.assert_allclose(np.asarray(instance.query_y)[:, 0], amplitude * np.sin(x - phase), atol=1e-4)


def test_sinusoid_query_mse_matches_numpy():
    task = build_task(SinusoidConfig(k_shot=5, n_query=9))
    topology = graph.layered_topology(1, (3,), 1, output_activation="identity")
    learner = Learner(topology, reference.DeltaRule(0.05), feedback="random_feedback", fitness="neg_loss")
    instance = task.sample(jax.random.key(1), task.data("train"))

    result = jax.jit(lambda key: task.lifetime(learner, learner.rule.init(key), instance, key, plastic=False))(jax.random.key(2))

    weights = [np.asarray(w, np.float64) for w in learner.init_network(jax.random.key(2)).weights]
    predictions = np.array([reference.forward(topology, weights, x)[1][topology.output_group][0] for x in np.asarray(instance.query_x)])
    mse = np.mean((predictions - np.asarray(instance.query_y)[:, 0]) ** 2)
    assert float(result.metric) == pytest.approx(mse, rel=1e-5)
    assert float(result.fitness) == pytest.approx(-mse, rel=1e-5)


def test_sinusoid_overlapping_ranges_rejected():
    with pytest.raises(Exception, match="disjoint"):
        SinusoidConfig(test_phase=(0.0, math.pi)).validate()


# Continual digits -----------------------------------------------------------------------


def test_sequence_metrics_hand_example():
    accuracy = np.array(
        [
            [0.9, 0.1, 0.5],
            [0.6, 0.8, 0.5],
            [0.5, 0.7, 1.0],
        ]
    )

    metrics = sequence_metrics(accuracy)

    assert metrics["final_average_accuracy"] == pytest.approx((0.5 + 0.7 + 1.0) / 3)
    # Task 0: best earlier 0.9, final 0.5. Task 1: best earlier 0.8 (row 0 precedes it), final 0.7.
    assert metrics["forgetting"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert metrics["plasticity"] == pytest.approx((0.9 + 0.8 + 1.0) / 3)


@pytest.mark.parametrize("variant", ["split_classes", "permuted_pixels"])
def test_continual_instance_structure(variant):
    config = ContinualDigitsConfig(variant=variant, n_tasks=4, classes_per_task=2, k_shot=3, n_query=4)
    task = build_task(config)

    instance = jax.tree.map(np.asarray, task.sample(jax.random.key(5), task.data("train")))

    assert instance.train_x.shape == (4, 6, 64)
    assert instance.query_y.shape == (4, 8)
    if variant == "split_classes":
        assert len(set(instance.digits.reshape(-1).tolist())) == 8  # every task has new digits
    else:
        assert all(np.array_equal(instance.digits[0], row) for row in instance.digits)
        # A pixel permutation keeps each image's pixel values, so the sorted rows match an unpermuted image.
        images = task.data("train")
        pool_rows = {np.sort(row).tobytes() for row in np.asarray(images.support).reshape(-1, 64)}
        assert all(np.sort(row).tobytes() in pool_rows for row in instance.train_x.reshape(-1, 64))
        assert not np.array_equal(instance.train_x[1], np.sort(instance.train_x[1], axis=1))
    for t in range(4):
        assert np.bincount(instance.train_y[t], minlength=2).tolist() == [3, 3]


def test_continual_accuracy_matrix_matches_rescoring():
    # The last row of the recorded matrix must equal scoring the final weights on every task.
    config = ContinualDigitsConfig(n_tasks=3, k_shot=3, n_query=4)
    task = build_task(config)
    learner = Learner(graph.layered_topology(64, (), 2), reference.DeltaRule(0.3), feedback="none")
    instance = task.sample(jax.random.key(3), task.data("test"))
    params = learner.rule.init(jax.random.key(0))

    result = jax.jit(lambda key: task.lifetime(learner, params, instance, key))(jax.random.key(4))

    weights = [np.asarray(w, np.float64) for w in learner.init_network(jax.random.key(4)).weights]
    xs, targets = task.training_stream(instance)
    for x, target in zip(np.asarray(xs), np.asarray(targets)):
        weights = reference.plastic_step(learner.topology, weights, "none", None, x, int(target.argmax()), lambda b, i, j, e: 0.3 * e["error"] * e["pre"]).weights
    final = [reference.query_scores(learner.topology, weights, instance.query_x[t], instance.query_y[t])[0] for t in range(3)]
    np.testing.assert_allclose(np.asarray(result.details.accuracy)[-1], final, atol=1e-6)
    assert float(result.metric) == pytest.approx(np.mean(final), abs=1e-6)
