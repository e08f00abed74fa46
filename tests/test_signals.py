"""Feedback pathways: direct random feedback and symmetric feedback against NumPy and jax.grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import features as feature_lib
from neuroevo import graph, signals
from neuroevo.config import config_from_dict

import reference

N_INPUTS, HIDDEN, N_OUTPUTS = 6, (5, 4), 3
ACTIVATIONS = ["tanh", "sigmoid", "relu"]


def make_topology(hidden_activation: str = "tanh", output_activation: str = "softmax") -> graph.Topology:
    return graph.layered_topology(N_INPUTS, HIDDEN, N_OUTPUTS, hidden_activation=hidden_activation, output_activation=output_activation)


def random_weights(topology: graph.Topology, seed: int = 0) -> graph.Weights:
    masks = graph.init_masks(topology)
    return graph.init_weights(jax.random.key(seed), topology, masks, "normal", 1.5)


def random_input(seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=N_INPUTS), jnp.float32)


def library_errors(topology, feedback, matrices, weights, x, label):
    """Propagate ``x`` and return the library's errors per group and the NumPy errors per layer."""
    states, activations = graph.propagate(topology, weights, x)
    target = jax.nn.one_hot(label, N_OUTPUTS, dtype=jnp.float32)
    error_out = signals.output_error(target, activations[topology.output_group])
    errors = signals.neuron_errors(topology, feedback, matrices, weights, states, error_out)

    ref_states, ref_activations = reference.forward(topology, weights, x)
    ref_error_out = np.eye(N_OUTPUTS)[label] - ref_activations[-1]
    expected = reference.hidden_errors(topology, feedback, matrices, ref_states, ref_error_out, weights)
    return errors, expected


@pytest.mark.parametrize("feedback", ["direct_random_feedback", "symmetric"])
@pytest.mark.parametrize("hidden_activation", ACTIVATIONS)
def test_neuron_errors_match_numpy(feedback, hidden_activation):
    topology = make_topology(hidden_activation)
    weights = random_weights(topology)
    matrices = signals.init_feedback(jax.random.key(1), topology, feedback)

    errors, expected = library_errors(topology, feedback, matrices, weights, random_input(), 2)

    for layer, group in enumerate(reference.layer_groups(topology)):
        np.testing.assert_allclose(errors[group], expected[layer], rtol=1e-5, atol=1e-6, err_msg=f"group {group}")
    assert np.all(np.asarray(errors[topology.bias_group]) == 0.0)


def test_direct_feedback_matrices_per_hidden_group():
    topology = make_topology()

    matrices = signals.init_feedback(jax.random.key(0), topology, "direct_random_feedback")
    other = signals.init_feedback(jax.random.key(1), topology, "direct_random_feedback")

    assert len(matrices) == len(topology.group_sizes)
    for group, size in enumerate(topology.group_sizes):
        if group in topology.hidden_groups:
            assert matrices[group].shape == (size, N_OUTPUTS), f"group {group}"
            assert matrices[group].dtype == jnp.float32, f"group {group}"
            assert not np.allclose(matrices[group], other[group]), f"group {group} is not drawn per lifetime"
        else:
            assert matrices[group] is None, f"group {group}"


def test_direct_feedback_skips_layers():
    # Every hidden group gets B e_out: zeroing the later layers' weights changes nothing.
    topology = make_topology()
    weights = random_weights(topology)
    matrices = signals.init_feedback(jax.random.key(1), topology, "direct_random_feedback")
    states, activations = graph.propagate(topology, weights, random_input())
    error_out = signals.output_error(jax.nn.one_hot(0, N_OUTPUTS), activations[topology.output_group])
    first_hidden = topology.hidden_groups[0]
    zeroed = tuple(jnp.zeros_like(w) if src == first_hidden + 1 else w for w, (src, _) in zip(weights, topology.blocks))

    errors = signals.neuron_errors(topology, "direct_random_feedback", matrices, weights, states, error_out)
    errors_zeroed = signals.neuron_errors(topology, "direct_random_feedback", matrices, zeroed, states, error_out)

    expected = reference.activation_derivative("tanh", np.asarray(states[first_hidden], np.float64)) * (np.asarray(matrices[first_hidden], np.float64) @ np.asarray(error_out))
    np.testing.assert_allclose(errors[first_hidden], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(errors[first_hidden], errors_zeroed[first_hidden])


@pytest.mark.parametrize("hidden_activation", ACTIVATIONS)
@pytest.mark.parametrize("label", [0, 2])
def test_symmetric_errors_equal_negative_gradient(hidden_activation, label):
    topology = make_topology(hidden_activation)
    weights = random_weights(topology, seed=3)
    x = random_input(seed=4)
    label = jnp.int32(label)

    def loss_after_shift(shift: jax.Array, group: int) -> jax.Array:
        # The bias neuron is 1, so adding ``shift`` to the bias weights into ``group`` adds
        # ``shift`` to that group's states. The gradient in ``shift`` is d(loss)/d(h_group).
        bias_block = topology.blocks.index((topology.bias_group, group))
        shifted = list(weights)
        shifted[bias_block] = shifted[bias_block] + shift[:, None]
        states, _ = graph.propagate(topology, tuple(shifted), x)
        logits = states[topology.output_group]
        return jax.nn.logsumexp(logits) - logits[label]

    states, activations = graph.propagate(topology, weights, x)
    error_out = signals.output_error(jax.nn.one_hot(label, N_OUTPUTS), activations[topology.output_group])
    errors = signals.neuron_errors(topology, "symmetric", signals.init_feedback(jax.random.key(0), topology, "symmetric"), weights, states, error_out)

    for group in (*topology.hidden_groups, topology.output_group):
        gradient = jax.grad(loss_after_shift)(jnp.zeros(topology.group_sizes[group], jnp.float32), group)
        assert np.any(np.asarray(gradient) != 0.0), f"group {group}"
        np.testing.assert_allclose(errors[group], -gradient, rtol=1e-5, atol=1e-5, err_msg=f"group {group}")


def test_symmetric_reads_current_weights():
    topology = make_topology()
    weights = random_weights(topology)
    states, activations = graph.propagate(topology, weights, random_input())
    error_out = signals.output_error(jax.nn.one_hot(1, N_OUTPUTS), activations[topology.output_group])
    scaled = tuple(2.0 * w for w in weights)
    last_hidden = topology.hidden_groups[-1]

    errors = signals.neuron_errors(topology, "symmetric", (), weights, states, error_out)
    errors_scaled = signals.neuron_errors(topology, "symmetric", (), scaled, states, error_out)

    np.testing.assert_allclose(errors_scaled[last_hidden], 2.0 * np.asarray(errors[last_hidden]), rtol=1e-5, atol=1e-7)


def test_neuron_errors_rejects_unknown_pathway():
    topology = make_topology()
    weights = random_weights(topology)
    states, _ = graph.propagate(topology, weights, random_input())

    with pytest.raises(ValueError, match="'backprop'"):
        signals.neuron_errors(topology, "backprop", (), weights, states, jnp.zeros(N_OUTPUTS))


@pytest.mark.parametrize("feedback", ["direct_random_feedback", "symmetric"])
def test_config_accepts_pathway(feedback):
    config = config_from_dict({"signal": {"feedback": feedback}})

    assert config.signal.feedback == feedback
    assert feedback in signals.FEEDBACK_PATHWAYS


# Reward signals ------------------------------------------------------------------------------


def test_reward_prediction_error_matches_numpy_loop():
    rewards = np.random.default_rng(5).normal(loc=1.0, size=20).astype(np.float32)

    def step(baseline, reward):
        error, baseline = signals.reward_prediction_error(baseline, reward)
        return baseline, error

    baseline, errors = jax.jit(lambda rewards: jax.lax.scan(step, signals.init_reward_baseline(0.9, 0.5), rewards))(rewards)

    mean, expected = 0.5, []
    for reward in rewards.astype(np.float64):
        expected.append(reward - mean)
        mean = 0.9 * mean + 0.1 * reward
    np.testing.assert_allclose(errors, expected, rtol=1e-5, atol=1e-6)
    assert float(baseline.mean) == pytest.approx(mean, rel=1e-5)


def test_reward_feature_reaches_every_edge():
    topology = make_topology()
    weights = random_weights(topology)
    masks = graph.init_masks(topology)
    states, activations = graph.propagate(topology, weights, random_input())
    errors = tuple(jnp.zeros_like(state) for state in states)

    contexts = feature_lib.neuron_contexts(topology, weights, masks, states, activations, errors, reward=0.7)
    src, dst = topology.blocks[0]
    edge_features = feature_lib.block_features(("pre", "reward"), contexts[dst], contexts[src], weights[0])

    for group, context in enumerate(contexts):
        np.testing.assert_array_equal(context.reward, np.full(topology.group_sizes[group], 0.7, np.float32))
    np.testing.assert_array_equal(feature_lib.dense(("pre", "reward"), edge_features)[..., 1], np.full(topology.block_shape(0), 0.7, np.float32))
