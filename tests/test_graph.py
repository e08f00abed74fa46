"""Topology, weight initialisation and propagation of layered graph networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import graph

import reference

# Jitted functions compile once per topology (and distribution), which is cheaper than running op by op.
propagate = jax.jit(graph.propagate, static_argnums=0)
init_weights = jax.jit(graph.init_weights, static_argnums=(1, 3))

# Every pair of values of (hidden layers, hidden activation, bias, output activation) occurs
# in some case. The full product would compile 20 topologies.
PROPAGATE_CASES = [
    ((), "tanh", True, "softmax"),
    ((), "tanh", False, "identity"),
    ((7,), "tanh", True, "identity"),
    ((7,), "relu", False, "softmax"),
    ((7,), "relu", True, "softmax"),
    ((6, 5), "tanh", False, "softmax"),
    ((6, 5), "relu", True, "identity"),
    ((6, 5), "relu", False, "identity"),
]


def draw(topology: graph.Topology, seed: int = 0, gain: float = 1.5) -> graph.Weights:
    """Draw random weights with NumPy, independently of ``graph.init_weights``."""
    rng = np.random.default_rng(seed)
    return tuple(
        jnp.asarray(rng.normal(scale=gain / np.sqrt(topology.block_shape(b)[1] + 1), size=topology.block_shape(b)), jnp.float32)
        for b in range(len(topology.blocks))
    )


def random_input(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


@pytest.mark.parametrize(("hidden", "hidden_activation", "bias", "output_activation"), PROPAGATE_CASES, ids=str)
def test_propagate_matches_numpy_mlp(hidden, hidden_activation, bias, output_activation):
    topology = graph.layered_topology(
        9, hidden, 4, hidden_activation=hidden_activation, output_activation=output_activation, bias=bias
    )
    weights = draw(topology)
    x = random_input(9)

    states, activations = propagate(topology, weights, x)
    expected_states, expected_activations = reference.forward(topology, weights, x)

    for layer, group in enumerate(reference.layer_groups(topology)):
        np.testing.assert_allclose(states[group], expected_states[layer], rtol=1e-5, atol=1e-6, err_msg=f"states of group {group}")
        np.testing.assert_allclose(activations[group], expected_activations[layer], rtol=1e-5, atol=1e-6, err_msg=f"activations of group {group}")
    if bias:
        assert float(states[topology.bias_group][0]) == 1.0
        assert float(activations[topology.bias_group][0]) == 1.0


def test_propagate_softmax_output_sums_to_one():
    topology = graph.layered_topology(9, (6,), 4)
    _, activations = propagate(topology, draw(topology), random_input(9))

    assert float(activations[topology.output_group].sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("hidden", "extra_ticks"), [((), 2), ((5, 4), 1), ((5, 4), 4)], ids=str)
def test_propagate_extra_ticks_same_result(hidden, extra_ticks):
    layered = graph.layered_topology(9, hidden, 4)
    longer = graph.layered_topology(9, hidden, 4, ticks=len(hidden) + 1 + extra_ticks)
    weights = draw(layered)
    x = random_input(9)

    states, activations = propagate(layered, weights, x)
    states_longer, activations_longer = propagate(longer, weights, x)

    for group in range(len(layered.group_sizes)):
        np.testing.assert_allclose(states_longer[group], states[group], rtol=1e-6, atol=1e-7, err_msg=f"states of group {group}")
        np.testing.assert_allclose(activations_longer[group], activations[group], rtol=1e-6, atol=1e-7, err_msg=f"activations of group {group}")


def test_propagate_one_tick_reaches_first_layer():
    # One synchronous tick from rest: the hidden layer receives the input, and the output
    # receives only the bias, because the hidden activations it reads are still tanh(0) = 0.
    topology = graph.layered_topology(9, (5,), 4, output_activation="identity", ticks=1)
    weights = draw(topology)
    x = random_input(9)

    states, _ = propagate(topology, weights, x)

    expected_states, _ = reference.forward(graph.layered_topology(9, (5,), 4, output_activation="identity"), weights, x)
    output_bias = np.asarray(weights[reference.block_index(topology, topology.bias_group, topology.output_group)])[:, 0]
    np.testing.assert_allclose(states[1], expected_states[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states[topology.output_group], output_bias, rtol=1e-6)


def test_topology_sizes_with_bias():
    topology = graph.layered_topology(64, (32,), 5)

    assert topology.group_names == ("input", "hidden0", "output", "bias")
    assert topology.group_sizes == (64, 32, 5, 1)
    assert topology.blocks == ((0, 1), (1, 2), (3, 1), (3, 2))
    assert [topology.block_shape(b) for b in range(4)] == [(32, 64), (5, 32), (32, 1), (5, 1)]
    assert topology.n_edges == 64 * 32 + 32 * 5 + 32 + 5
    assert topology.n_neurons == 102
    assert topology.hidden_groups == (1,)
    assert (topology.input_group, topology.output_group, topology.bias_group) == (0, 2, 3)
    assert (topology.n_inputs, topology.n_outputs) == (64, 5)
    assert topology.ticks == 2


def test_topology_sizes_without_bias():
    topology = graph.layered_topology(10, (6, 4), 3, bias=False)

    assert topology.group_sizes == (10, 6, 4, 3)
    assert topology.blocks == ((0, 1), (1, 2), (2, 3))
    assert [topology.block_shape(b) for b in range(3)] == [(6, 10), (4, 6), (3, 4)]
    assert topology.n_edges == 10 * 6 + 6 * 4 + 4 * 3
    assert topology.bias_group is None
    assert topology.hidden_groups == (1, 2)
    assert topology.ticks == 3


def test_topology_activations():
    topology = graph.layered_topology(10, (6,), 3, hidden_activation="relu", output_activation="identity")

    assert topology.activations == ("identity", "relu", "identity", "identity")


def test_init_masks_full_blocks():
    topology = graph.layered_topology(10, (6,), 3)
    masks = graph.init_masks(topology)

    assert [mask.shape for mask in masks] == [topology.block_shape(b) for b in range(len(topology.blocks))]
    assert all(bool((mask == 1.0).all()) for mask in masks)


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_init_weights_std(distribution, gain):
    topology = graph.layered_topology(300, (200,), 100)
    weights = init_weights(jax.random.key(3), topology, graph.init_masks(topology), distribution, gain)
    fan_in = {1: 300 + 1, 2: 200 + 1}  # every incoming edge, the bias edge included

    for block, (src, dst) in enumerate(topology.blocks):
        if src == topology.bias_group:
            continue  # too few edges for a std estimate
        values = np.asarray(weights[block], np.float64).ravel()
        expected = gain / np.sqrt(fan_in[dst])
        # The sample std of n >= 20000 values has a relative standard error below 0.5%.
        assert values.std() == pytest.approx(expected, rel=0.03), f"std of block {block}"
        assert abs(values.mean()) < 5 * expected / np.sqrt(values.size), f"mean of block {block}"
        if distribution == "uniform":
            assert np.abs(values).max() <= np.sqrt(3.0) * expected * (1 + 1e-6), f"range of block {block}"


def test_init_weights_fan_in_counts_bias():
    # 3 inputs and the bias neuron feed each output, so fan_in is 4 and the std gain / 2.
    topology = graph.layered_topology(3, (), 2)
    masks = graph.init_masks(topology)
    keys = jax.random.split(jax.random.key(6), 4000)

    draws = jax.jit(jax.vmap(lambda key: graph.init_weights(key, topology, masks, "normal", 1.0)))(keys)

    assert float(np.asarray(draws[0]).std()) == pytest.approx(0.5, rel=0.03)
    assert float(np.asarray(draws[1]).std()) == pytest.approx(0.5, rel=0.03)


def test_init_weights_zero_where_masked():
    topology = graph.layered_topology(30, (20,), 10)
    rng = np.random.default_rng(4)
    masks = tuple(
        np.asarray(rng.random(topology.block_shape(b)) < 0.5, np.float32) for b in range(len(topology.blocks))
    )

    weights = init_weights(jax.random.key(5), topology, masks, "normal", 1.0)

    for block, (w, m) in enumerate(zip(weights, masks)):
        w = np.asarray(w)
        assert np.all(w[m == 0] == 0.0), f"masked edges of block {block}"
        assert np.all(w[m == 1] != 0.0), f"existing edges of block {block}"


def test_init_weights_zeros():
    topology = graph.layered_topology(10, (6,), 3)
    weights = init_weights(jax.random.key(0), topology, graph.init_masks(topology), "zeros", 1.0)

    assert all(bool((w == 0).all()) for w in weights)


def test_init_weights_unknown_distribution():
    topology = graph.layered_topology(10, (), 3)

    with pytest.raises(ValueError, match="laplace"):
        graph.init_weights(jax.random.key(0), topology, graph.init_masks(topology), "laplace", 1.0)


def test_init_weights_depend_on_key():
    topology = graph.layered_topology(10, (6,), 3)
    masks = graph.init_masks(topology)

    first = init_weights(jax.random.key(0), topology, masks, "normal", 1.0)
    again = init_weights(jax.random.key(0), topology, masks, "normal", 1.0)
    other = init_weights(jax.random.key(1), topology, masks, "normal", 1.0)

    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.allclose(first[0], other[0])


def test_sweep_equals_synchronous_ticks():
    topology = graph.layered_topology(7, (6, 5, 4), 3, hidden_activation="tanh", output_activation="softmax")
    assert topology.is_feedforward
    weights = graph.init_weights(jax.random.key(0), topology, graph.init_masks(topology), "normal", 1.0)
    x = jax.random.uniform(jax.random.key(1), (7,))

    swept_states, swept_activations = graph.propagate(topology, weights, x)

    rest = [jnp.zeros((size,), jnp.float32) for size in topology.group_sizes]
    activations = tuple(graph.clamp(topology, rest, x))
    for _ in range(topology.ticks):
        states, activations = graph.tick(topology, weights, activations)
    for group in topology.update_order:
        np.testing.assert_allclose(swept_states[group], states[group], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(swept_activations[group], activations[group], rtol=1e-6, atol=1e-6)


def test_too_few_ticks_is_not_feedforward_sweep():
    topology = graph.layered_topology(4, (3,), 2, ticks=1)
    assert not topology.is_feedforward
