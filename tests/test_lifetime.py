"""One plastic step and whole lifetimes of a Learner, against NumPy loops over edges and steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import graph
from neuroevo.lifetime import Learner, Lifetimes
from neuroevo.rules import MLPRule
from neuroevo.tasks import DigitsConfig, FewShotClassification, FewShotInstance, build_task

import reference

N_INPUTS, N_OUTPUTS = 6, 3
ETA = 0.4

# (feedback, hidden layers, hidden activation, output activation)
STEP_CASES = [
    ("random_feedback", (4,), "tanh", "softmax"),
    ("random_feedback", (4,), "relu", "softmax"),
    ("random_feedback", (4, 3), "tanh", "softmax"),
    ("random_feedback", (4,), "tanh", "identity"),
    ("direct_random_feedback", (4,), "tanh", "softmax"),
    ("direct_random_feedback", (4, 3), "relu", "softmax"),
    ("symmetric", (4,), "tanh", "softmax"),
    ("symmetric", (4, 3), "tanh", "softmax"),
    ("symmetric", (4,), "sigmoid", "identity"),
    ("broadcast", (4,), "tanh", "softmax"),
    ("broadcast", (4, 3), "tanh", "softmax"),
    ("none", (4,), "tanh", "softmax"),
    ("none", (), "tanh", "softmax"),
]


def make_learner(rule, feedback="random_feedback", hidden=(4,), hidden_activation="tanh", output_activation="softmax", n_inputs=N_INPUTS, **options) -> Learner:
    topology = graph.layered_topology(
        n_inputs, hidden, N_OUTPUTS, hidden_activation=hidden_activation, output_activation=output_activation
    )
    return Learner(topology, rule, feedback=feedback, **options)


def example(seed: int = 0) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=N_INPUTS), jnp.float32), jnp.int32(1)


def labelled_step(learner: Learner):
    """One supervised step on a labelled example: (network, loss, correct) with the pre-update outputs."""

    def step(params, network, x, label):
        target = jax.nn.one_hot(label, learner.topology.n_outputs)
        stepped, states, activations = learner.supervised_step(params, network, x, target)
        correct = jnp.argmax(learner.output(activations)) == label
        return stepped, learner.loss(states, activations, target), correct

    return step


def assert_weights_close(actual, expected, rtol=1e-5, atol=1e-6):
    assert len(actual) == len(expected)
    for block, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"block {block}")


def delta_edge_rule(block, i, j, edge):
    return ETA * edge["error"] * edge["pre"]


@pytest.mark.parametrize(("feedback", "hidden", "hidden_activation", "output_activation"), STEP_CASES, ids=str)
def test_step_delta_rule_matches_numpy(feedback, hidden, hidden_activation, output_activation):
    learner = make_learner(reference.DeltaRule(ETA), feedback, hidden, hidden_activation, output_activation)
    params = learner.rule.init(jax.random.key(0))
    network = learner.init_network(jax.random.key(0))
    x, label = example()

    stepped, loss, correct = jax.jit(labelled_step(learner))(params, network, x, label)

    expected = reference.plastic_step(learner.topology, network.weights, feedback, network.feedback, x, int(label), delta_edge_rule)
    assert_weights_close(stepped.weights, expected.weights)
    assert float(loss) == pytest.approx(expected.loss, rel=1e-5)
    assert bool(correct) == expected.correct


def test_step_none_feedback_keeps_hidden_weights():
    learner = make_learner(reference.DeltaRule(ETA), "none", (4,))
    network = learner.init_network(jax.random.key(0))
    x, label = example()

    stepped, _, _ = jax.jit(labelled_step(learner))(learner.rule.init(jax.random.key(0)), network, x, label)

    for block, (src, dst) in enumerate(learner.topology.blocks):
        changed = not np.array_equal(stepped.weights[block], network.weights[block])
        assert changed == (dst == learner.topology.output_group), f"block {block} ({src} -> {dst})"


def test_step_keeps_masked_edges_zero():
    learner = make_learner(reference.DeltaRule(ETA), "random_feedback", (4,))
    network = learner.init_network(jax.random.key(0))
    rng = np.random.default_rng(3)
    masks = tuple(jnp.asarray(rng.random(mask.shape) < 0.5, jnp.float32) for mask in network.masks)
    network = network._replace(masks=masks, weights=tuple(w * m for w, m in zip(network.weights, masks)))
    x, label = example()

    stepped, _, _ = jax.jit(labelled_step(learner))(learner.rule.init(jax.random.key(0)), network, x, label)

    for block, (w, m) in enumerate(zip(stepped.weights, masks)):
        assert np.all(np.asarray(w)[np.asarray(m) == 0] == 0.0), f"block {block}"
    assert not np.array_equal(stepped.weights[0], network.weights[0])


def test_step_linear_mlp_rule_matches_numpy():
    # A rule MLP without hidden layers is linear: dw = scale * (k_pre * a_j + k_error * e_i + b).
    scale, k_pre, k_error, bias = 0.2, 0.7, -1.3, 0.05
    rule = MLPRule(("pre", "error"), hidden=(), output_scale=scale)
    params = {"params": {"Dense_0": {"kernel": jnp.array([[k_pre], [k_error]], jnp.float32), "bias": jnp.array([bias], jnp.float32)}}}
    learner = make_learner(rule, "random_feedback", (4,))
    network = learner.init_network(jax.random.key(1))
    x, label = example(1)

    stepped, _, _ = jax.jit(labelled_step(learner))(params, network, x, label)

    def linear(block, i, j, edge):
        return scale * (k_pre * edge["pre"] + k_error * edge["error"] + bias)

    expected = reference.plastic_step(learner.topology, network.weights, "random_feedback", network.feedback, x, int(label), linear)
    assert_weights_close(stepped.weights, expected.weights)


def test_step_every_feature_matches_numpy():
    names = ("pre", "post", "post_state", "weight", "error", "in_mean", "in_norm", "out_mean", "out_norm")
    coefficients = np.random.default_rng(2).normal(size=len(names)).astype(np.float32)
    rule = MLPRule(names, hidden=(), output_scale=0.1)
    params = {"params": {"Dense_0": {"kernel": jnp.asarray(coefficients[:, None]), "bias": jnp.array([0.02], jnp.float32)}}}
    learner = make_learner(rule, "random_feedback", (4, 3))
    network = learner.init_network(jax.random.key(2))
    x, label = example(2)

    stepped, _, _ = jax.jit(labelled_step(learner))(params, network, x, label)

    def linear(block, i, j, edge):
        return 0.1 * (sum(c * edge[name] for c, name in zip(coefficients, names)) + 0.02)

    expected = reference.plastic_step(learner.topology, network.weights, "random_feedback", network.feedback, x, int(label), linear)
    assert_weights_close(stepped.weights, expected.weights, rtol=1e-5, atol=1e-5)


def test_steps_traces_and_age_match_numpy():
    # Three steps, so traces decay, edge ages grow and the neighbour maxima see changed weights.
    names = ("pre_trace", "post_trace", "edge_age", "in_max", "out_max", "reward", "error")
    coefficients = np.random.default_rng(4).normal(size=len(names)).astype(np.float32)
    rule = MLPRule(names, hidden=(), output_scale=0.1)
    params = {"params": {"Dense_0": {"kernel": jnp.asarray(coefficients[:, None]), "bias": jnp.array([0.01], jnp.float32)}}}
    learner = make_learner(rule, "random_feedback", (4,), trace_decay=0.6)
    network = learner.init_network(jax.random.key(3))
    step = jax.jit(labelled_step(learner))

    def linear(block, i, j, edge):
        return 0.1 * (sum(c * edge[name] for c, name in zip(coefficients, names)) + 0.01)

    weights, traces = network.weights, None
    for age in range(3):
        x, label = example(10 + age)
        expected = reference.plastic_step(
            learner.topology, weights, "random_feedback", network.feedback, x, int(label), linear, traces=traces, trace_decay=0.6, age=age
        )
        network, _, _ = step(params, network, x, label)
        weights, traces = expected.weights, expected.traces
        assert_weights_close(network.weights, expected.weights, rtol=1e-5, atol=1e-5)
        for group, trace in traces.items():
            np.testing.assert_allclose(network.traces[group], trace, rtol=1e-5, atol=1e-6, err_msg=f"group {group}")
        for block, mask in enumerate(network.masks):
            np.testing.assert_array_equal(network.edge_age[block], (age + 1) * np.asarray(mask))
    assert float(np.abs(np.asarray(network.traces[learner.topology.input_group])).max()) > 0.1


def test_feedback_matrices_by_pathway():
    rule = reference.DeltaRule()
    learner = make_learner(rule, "random_feedback", (4, 3))
    topology = learner.topology

    matrices = learner.init_network(jax.random.key(0)).feedback
    other = learner.init_network(jax.random.key(1)).feedback

    for block, (src, dst) in enumerate(topology.blocks):
        assert (matrices[block] is not None) == (src in topology.hidden_groups), f"block {block}"
        if matrices[block] is not None:
            assert matrices[block].shape == topology.block_shape(block), f"block {block}"
    assert not np.allclose(matrices[1], other[1])  # drawn fresh for every lifetime
    for feedback in ("none", "broadcast", "symmetric"):
        unused = make_learner(rule, feedback, (4, 3)).init_network(jax.random.key(0)).feedback
        assert all(matrix is None for matrix in unused), feedback


# Whole lifetimes ----------------------------------------------------------------------------


def random_instance(n_inputs: int, n_train: int, n_query: int, seed: int = 0) -> FewShotInstance:
    rng = np.random.default_rng(seed)
    return FewShotInstance(
        train_x=jnp.asarray(rng.normal(size=(n_train, n_inputs)), jnp.float32),
        train_y=jnp.asarray(rng.integers(0, N_OUTPUTS, n_train), jnp.int32),
        query_x=jnp.asarray(rng.normal(size=(n_query, n_inputs)), jnp.float32),
        query_y=jnp.asarray(rng.integers(0, N_OUTPUTS, n_query), jnp.int32),
    )


class NumpyLifetime:
    """The delta-rule lifetime in NumPy: weights, online metrics and query scores after every step."""

    def __init__(self, learner: Learner, instance: FewShotInstance, key: jax.Array):
        network = learner.init_network(key)
        self.initial_weights = [np.asarray(w, np.float64) for w in network.weights]
        weights = self.initial_weights
        self.losses, self.correct, self.query_accuracy = [], [], []
        for x, label in zip(np.asarray(instance.train_x), np.asarray(instance.train_y)):
            step = reference.plastic_step(learner.topology, weights, learner.feedback, network.feedback, x, int(label), delta_edge_rule)
            weights = step.weights
            self.losses.append(step.loss)
            self.correct.append(float(step.correct))
            self.query_accuracy.append(reference.query_scores(learner.topology, weights, instance.query_x, instance.query_y)[0])
        self.final_weights = weights
        self.final_accuracy, self.final_loss = reference.query_scores(learner.topology, weights, instance.query_x, instance.query_y)


@pytest.fixture(scope="module")
def lifetime_setup():
    learner = make_learner(reference.DeltaRule(ETA), "random_feedback", (5,), n_inputs=8)
    instance = random_instance(8, n_train=12, n_query=9)
    key = jax.random.key(7)
    task = FewShotClassification(n_inputs=8, n_way=N_OUTPUTS, k_shot=4, n_query=3)
    run = jax.jit(lambda *args, **kwargs: task.lifetime(learner, *args, **kwargs), static_argnames=("plastic", "track_query"))
    return learner, instance, key, run, NumpyLifetime(learner, instance, key)


def test_run_matches_numpy(lifetime_setup):
    learner, instance, key, run, expected = lifetime_setup

    result = run(learner.rule.init(jax.random.key(0)), instance, key)

    np.testing.assert_allclose(result.curve.loss, expected.losses, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(result.curve.online, expected.correct)
    assert float(result.loss) == pytest.approx(expected.final_loss, rel=1e-4)
    assert float(result.metric) == pytest.approx(expected.final_accuracy, abs=1e-6)
    assert float(result.fitness) == pytest.approx(expected.final_accuracy, abs=1e-6)


def test_run_changes_weights(lifetime_setup):
    # Guards the reference comparison above against a lifetime in which nothing is learned.
    _, _, _, _, expected = lifetime_setup

    change = max(np.abs(after - before).max() for after, before in zip(expected.final_weights, expected.initial_weights))

    assert change > 0.1


def test_run_track_query_matches_numpy(lifetime_setup):
    learner, instance, key, run, expected = lifetime_setup

    result = run(learner.rule.init(jax.random.key(0)), instance, key, track_query=True)

    np.testing.assert_allclose(result.curve.query, expected.query_accuracy, atol=1e-6)
    assert float(result.curve.query[-1]) == pytest.approx(float(result.metric), abs=1e-6)


def test_run_untracked_query_nan(lifetime_setup):
    learner, instance, key, run, _ = lifetime_setup

    result = run(learner.rule.init(jax.random.key(0)), instance, key)

    assert np.all(np.isnan(np.asarray(result.curve.query)))


def test_run_not_plastic_keeps_weights(lifetime_setup):
    learner, instance, key, run, expected = lifetime_setup

    result = run(learner.rule.init(jax.random.key(0)), instance, key, plastic=False, track_query=True)

    initial_accuracy, initial_loss = reference.query_scores(learner.topology, expected.initial_weights, instance.query_x, instance.query_y)
    initial_losses = [
        reference.example_loss(learner.topology, *reference.forward(learner.topology, expected.initial_weights, x), int(label))
        for x, label in zip(np.asarray(instance.train_x), np.asarray(instance.train_y))
    ]
    assert float(result.loss) == pytest.approx(initial_loss, rel=1e-5)
    assert float(result.metric) == pytest.approx(initial_accuracy, abs=1e-6)
    np.testing.assert_allclose(result.curve.loss, initial_losses, rtol=1e-5)
    np.testing.assert_allclose(result.curve.query, np.full(len(initial_losses), initial_accuracy), atol=1e-6)


def test_run_fitness_neg_loss(lifetime_setup):
    learner, instance, key, _, expected = lifetime_setup
    learner = Learner(learner.topology, learner.rule, learner.feedback, fitness="neg_loss")
    task = FewShotClassification(n_inputs=8, n_way=N_OUTPUTS, k_shot=4, n_query=3)

    result = jax.jit(lambda *args: task.lifetime(learner, *args))(learner.rule.init(jax.random.key(0)), instance, key)

    assert float(result.fitness) == pytest.approx(-expected.final_loss, rel=1e-4)


def test_run_diverged_fitness_nan():
    # A diverging rule drives the weights to inf or NaN. argmax of NaN outputs is 0, so the
    # query accuracy alone would look like a finite, chance-level score.
    learner = make_learner(reference.DeltaRule(3e38), "none", ())
    instance = random_instance(N_INPUTS, n_train=12, n_query=9)
    task = FewShotClassification(n_inputs=N_INPUTS, n_way=N_OUTPUTS, k_shot=4, n_query=3)

    result = jax.jit(lambda *args: task.lifetime(learner, *args))(learner.rule.init(jax.random.key(0)), instance, jax.random.key(0))

    assert not np.isfinite(float(result.loss))  # the weights did diverge
    assert np.isnan(float(result.fitness))


@pytest.mark.parametrize("batch", [None, 2])
def test_run_population_matches_run(batch):
    task = build_task(DigitsConfig(n_way=3, k_shot=2, n_query=4))
    rule = MLPRule(("pre", "post", "weight", "error"), (4,))
    lifetimes = Lifetimes(make_learner(rule, "random_feedback", (5,), n_inputs=64), task)
    members = [rule.random_params(jax.random.key(seed)) for seed in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
    pools = task.data("train")
    keys = jax.random.split(jax.random.key(5), 3)  # batch 2 leaves a remainder of one lifetime

    result = jax.jit(lifetimes.run_population, static_argnums=3)(stacked, pools, keys, batch)
    run = jax.jit(lifetimes.run)

    assert result.loss.shape == (3, 3)
    for member, params in enumerate(members):
        expected = run(params, pools, keys)
        np.testing.assert_allclose(result.loss[member], expected.loss, rtol=1e-5, err_msg=f"member {member}")
        np.testing.assert_allclose(result.curve.loss[member], expected.curve.loss, rtol=1e-5, atol=1e-6, err_msg=f"member {member}")
    assert not np.allclose(result.loss[0], result.loss[1])  # members differ, so a swap of rows would fail above
