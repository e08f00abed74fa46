"""Topologies from configs, and edge-list blocks against the same graph stored dense with a mask."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import graph, signals
from neuroevo.config import config_from_dict
from neuroevo.errors import ConfigError
from neuroevo.evolve import Evolution
from neuroevo.experiment import build_experiment
from neuroevo.features import FEATURES, dense
from neuroevo.lifetime import Learner, NetworkState
from neuroevo.rules import MLPRule
from neuroevo.topologies import receptive_field_mask, sparse_topology, watts_strogatz_edges

import reference

ALL_FEATURES = tuple(FEATURES)
RTOL, ATOL = 1e-5, 1e-6  # float32 sums of at most a few dozen terms

# Small configs of every topology on 3-way 2-shot digits.
TOPOLOGY_CASES = {
    "layered": {"hidden": [6]},
    "recurrent": {"hidden": [6], "recurrent": ["hidden0->hidden0", "output->hidden0"], "ticks": 4},
    "sparse": {"hidden": [6], "density": 0.3},
    "small_world": {"hidden": [8], "neighbours": 4, "rewire": 0.3, "ticks": 3},
    "local": {"hidden": [], "receptive_field": 4, "stride": 2, "channels": 2},
}


def small_config(topology: str, feedback: str = "random_feedback", **network):
    return config_from_dict(
        {
            "task": {"n_way": 3, "k_shot": 2, "n_query": 3},
            "rule": {"hidden": [4], "features": ["pre", "post", "weight", "error", "in_mean"]},
            "network": {"topology": topology, **TOPOLOGY_CASES[topology], **network},
            "signal": {"feedback": feedback},
            "evolution": {"population": 4, "lifetimes_per_member": 2, "std": 0.1},
        }
    )


def sparse_layered(seed: int = 0, density: float = 0.4) -> graph.Topology:
    layered = graph.layered_topology(7, (5,), 3)
    return sparse_topology(layered, density, np.random.default_rng(seed))


def dense_twin(topology: graph.Topology) -> graph.Topology:
    """The same graph with every edge-list block stored dense with a fixed mask."""
    connectivity = []
    for block in range(len(topology.blocks)):
        edges = topology.edge_list(block)
        if edges is None:
            connectivity.append(topology.block_connectivity(block))
            continue
        mask = np.zeros(topology.block_shape(block), np.float32)
        mask[edges.dst, edges.src] = 1.0
        connectivity.append(graph.FixedMask(mask))
    return dataclasses.replace(topology, connectivity=tuple(connectivity))


def to_dense(topology: graph.Topology, arrays) -> tuple:
    return tuple(None if array is None else graph.to_dense(topology, block, array) for block, array in enumerate(arrays))


def numpy_ticks(topology: graph.Topology, weights, x: np.ndarray) -> list[np.ndarray]:
    """Activations after ``topology.ticks`` synchronous ticks from rest, in float64."""
    dense_weights = [np.asarray(w, np.float64) for w in to_dense(topology, weights)]
    activations = [np.zeros(size) for size in topology.group_sizes]
    activations[topology.input_group] = np.asarray(x, np.float64)
    if topology.bias_group is not None:
        activations[topology.bias_group] = np.ones(1)
    for _ in range(topology.ticks):
        states = [np.zeros(size) for size in topology.group_sizes]
        for block, (src, dst) in enumerate(topology.blocks):
            states[dst] += dense_weights[block] @ activations[src]
        for group in (*topology.hidden_groups, topology.output_group):
            activations[group] = reference.activation(topology.activations[group], states[group])
    return activations


# Block operations -----------------------------------------------------------------------------


def test_edge_list_sums_match_numpy():
    topology = sparse_layered()
    block = 0
    edges = topology.edge_list(block)
    n_dst, n_src = topology.block_shape(block)
    rng = np.random.default_rng(1)
    values = rng.normal(size=edges.n_edges).astype(np.float32)
    source, target = rng.normal(size=n_src).astype(np.float32), rng.normal(size=n_dst).astype(np.float32)

    expected_rows, expected_columns = np.zeros(n_dst), np.zeros(n_src)
    expected_matvec, expected_transposed = np.zeros(n_dst), np.zeros(n_src)
    for value, i, j in zip(values, edges.dst, edges.src):
        expected_rows[i] += value
        expected_columns[j] += value
        expected_matvec[i] += value * source[j]
        expected_transposed[j] += value * target[i]

    np.testing.assert_allclose(graph.row_sums(topology, block, values), expected_rows, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(graph.column_sums(topology, block, values), expected_columns, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(graph.matvec(topology, block, values, source), expected_matvec, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(graph.transposed_matvec(topology, block, values, target), expected_transposed, rtol=RTOL, atol=ATOL)


def test_sparse_blocks_have_density():
    topology = sparse_layered(density=0.4)

    for block, (src, _) in enumerate(topology.blocks):
        n_dst, n_src = topology.block_shape(block)
        if src == topology.bias_group:
            assert topology.edge_list(block) is None, f"bias block {block} stays dense"
        else:
            assert topology.edge_shape(block) == (round(0.4 * n_dst * n_src),), f"block {block}"


@pytest.mark.parametrize("name", list(TOPOLOGY_CASES))
def test_propagate_matches_numpy_ticks(name):
    topology = build_experiment(small_config(name)).learner.topology
    weights = graph.init_weights(jax.random.key(0), topology, graph.init_masks(topology), "normal", 1.5)
    x = jax.random.uniform(jax.random.key(1), (topology.n_inputs,))

    _, activations = jax.jit(graph.propagate, static_argnums=0)(topology, weights, x)

    expected = numpy_ticks(topology, weights, np.asarray(x))
    for group in topology.update_order:
        np.testing.assert_allclose(activations[group], expected[group], rtol=RTOL, atol=ATOL, err_msg=topology.group_names[group])


def test_init_weights_use_real_fan_in():
    topology = sparse_layered(seed=2, density=0.5)
    masks = graph.init_masks(topology)
    keys = jax.random.split(jax.random.key(3), 4000)
    gain = 1.3

    draws = jax.jit(jax.vmap(lambda key: graph.init_weights(key, topology, masks, "normal", gain)))(keys)

    fan_in = [np.zeros(size) for size in topology.group_sizes]
    for block, (_, dst) in enumerate(topology.blocks):
        fan_in[dst] += np.asarray(graph.to_dense(topology, block, masks[block])).sum(axis=1)
    for block, (_, dst) in enumerate(topology.blocks):
        edges = topology.edge_list(block)
        if edges is None:
            continue
        expected = gain / np.sqrt(fan_in[dst][edges.dst])
        # 4000 draws per edge give a relative standard error of about 1.1% on each std.
        np.testing.assert_allclose(np.asarray(draws[block]).std(axis=0), expected, rtol=0.06, err_msg=f"block {block}")


# Features and one lifetime step: edge list versus dense with a mask ---------------------------


def twin_networks(learner: Learner, key: jax.Array) -> tuple[Learner, NetworkState, NetworkState]:
    """The learner's network and the same network on the dense twin topology."""
    network = learner.init_network(key)
    twin = dataclasses.replace(learner, topology=dense_twin(learner.topology))
    dense_network = NetworkState(
        weights=to_dense(learner.topology, network.weights),
        masks=graph.init_masks(twin.topology),
        # direct_random_feedback stores one matrix per group, which no layout changes.
        feedback=network.feedback if learner.feedback == "direct_random_feedback" else to_dense(learner.topology, network.feedback),
        rule_state=tuple(() for _ in network.rule_state),
        traces=network.traces,
        edge_age=to_dense(learner.topology, network.edge_age),
    )
    return twin, network, dense_network


def labelled_step(learner: Learner):
    """One supervised step on a labelled example: (network, loss of the example before the update)."""

    def step(params, network, x, label):
        target = jax.nn.one_hot(label, learner.topology.n_outputs)
        stepped, states, activations = learner.supervised_step(params, network, x, target)
        return stepped, learner.loss(states, activations, target)

    return step


def test_edge_list_features_match_dense():
    rule = MLPRule(ALL_FEATURES, hidden=(4,))
    learner = Learner(sparse_layered(seed=4), rule, feedback="random_feedback")
    twin, network, dense_network = twin_networks(learner, jax.random.key(5))
    x, label = jax.random.uniform(jax.random.key(6), (7,)), jnp.int32(2)

    def features(learner: Learner, network: NetworkState):
        states, activations = learner.present(network.weights, x)
        target = jax.nn.one_hot(label, learner.topology.n_outputs)
        return learner.edge_features(network, states, activations, learner.supervised_signals(activations, target))

    edge_blocks = jax.jit(features, static_argnums=0)(learner, network)
    dense_blocks = jax.jit(features, static_argnums=0)(twin, dense_network)

    for block, (edge_features, dense_features) in enumerate(zip(edge_blocks, dense_blocks)):
        edges = learner.topology.edge_list(block)
        expected = np.asarray(dense(ALL_FEATURES, dense_features))
        if edges is not None:
            n_post = sum(FEATURES[name].kind == "post" for name in ALL_FEATURES)
            assert edge_features.post.shape == (edges.n_edges, n_post), f"block {block}"
            expected = expected[edges.dst, edges.src]
        np.testing.assert_allclose(dense(ALL_FEATURES, edge_features), expected, rtol=RTOL, atol=ATOL, err_msg=f"block {block}")


@pytest.mark.parametrize("feedback", ["random_feedback", "symmetric", "direct_random_feedback"])
def test_edge_list_step_matches_dense(feedback):
    rule = MLPRule(ALL_FEATURES, hidden=(4,), output_scale=0.5)
    learner = Learner(sparse_layered(seed=7), rule, feedback=feedback)
    twin, network, dense_network = twin_networks(learner, jax.random.key(8))
    params = rule.random_params(jax.random.key(9))
    x, label = jax.random.uniform(jax.random.key(10), (7,)), jnp.int32(0)

    updated, loss = jax.jit(labelled_step(learner))(params, network, x, label)
    dense_updated, dense_loss = jax.jit(labelled_step(twin))(params, dense_network, x, label)

    assert float(loss) == pytest.approx(float(dense_loss), rel=RTOL)
    for block in range(len(learner.topology.blocks)):
        changed = np.asarray(graph.to_dense(learner.topology, block, updated.weights[block]))
        np.testing.assert_allclose(changed, dense_updated.weights[block], rtol=RTOL, atol=ATOL, err_msg=f"block {block}")
    assert not np.allclose(updated.weights[0], network.weights[0]), "the rule changed no weight"


# Recurrent graphs ------------------------------------------------------------------------------


def test_recurrent_config_builds_blocks():
    topology = build_experiment(small_config("recurrent")).learner.topology
    names = topology.group_names

    pairs = {(names[src], names[dst]) for src, dst in topology.blocks}

    assert ("hidden0", "hidden0") in pairs
    assert ("output", "hidden0") in pairs
    assert ("input", "hidden0") in pairs
    assert not topology.is_feedforward
    assert topology.ticks == 4


def test_recurrent_default_feeds_each_hidden_layer():
    config = config_from_dict({"network": {"topology": "recurrent", "hidden": [4, 3]}})
    topology = build_experiment(config).learner.topology
    names = topology.group_names

    recurrent = [(names[src], names[dst]) for src, dst in topology.blocks if src == dst]

    assert recurrent == [("hidden0", "hidden0"), ("hidden1", "hidden1")]


@pytest.mark.parametrize("feedback", ["random_feedback", "symmetric"])
def test_recurrent_errors_use_forward_blocks(feedback):
    topology = build_experiment(small_config("recurrent")).learner.topology
    weights = graph.init_weights(jax.random.key(11), topology, graph.init_masks(topology), "normal", 1.0)
    matrices = signals.init_feedback(jax.random.key(12), topology, feedback)
    states = tuple(jax.random.normal(jax.random.key(13 + group), (size,)) for group, size in enumerate(topology.group_sizes))
    error_out = jnp.asarray([0.3, -0.5, 0.2])

    errors = signals.neuron_errors(topology, feedback, matrices, weights, states, error_out)

    hidden, out = topology.hidden_groups[0], topology.output_group
    forward = topology.blocks.index((hidden, out))
    pathway = np.asarray(matrices[forward] if feedback == "random_feedback" else weights[forward], np.float64)
    expected = reference.activation_derivative("tanh", np.asarray(states[hidden], np.float64)) * (pathway.T @ np.asarray(error_out))
    np.testing.assert_allclose(errors[hidden], expected, rtol=RTOL, atol=ATOL)
    assert [matrix is None for matrix in matrices].count(False) == (1 if feedback == "random_feedback" else 0)


# Structure of the irregular and local topologies ------------------------------------------------


def test_watts_strogatz_without_rewiring_is_ring():
    edges = watts_strogatz_edges(10, 4, 0.0, np.random.default_rng(0))

    pairs = set(zip(edges.dst.tolist(), edges.src.tolist()))

    expected = {(i, (i + offset) % 10) for i in range(10) for offset in (-2, -1, 1, 2)}
    assert pairs == expected


def test_watts_strogatz_rewired_keeps_edge_count():
    edges = watts_strogatz_edges(20, 4, 0.5, np.random.default_rng(1))
    ring = watts_strogatz_edges(20, 4, 0.0, np.random.default_rng(1))

    pairs = set(zip(edges.dst.tolist(), edges.src.tolist()))

    assert edges.n_edges == 20 * 4
    assert len(pairs) == 20 * 4
    assert all(i != j for i, j in pairs)
    assert all((j, i) in pairs for i, j in pairs)
    assert pairs != set(zip(ring.dst.tolist(), ring.src.tolist()))


def test_small_world_block_is_edge_list():
    topology = build_experiment(small_config("small_world")).learner.topology
    hidden = topology.hidden_groups[0]

    block = topology.blocks.index((hidden, hidden))

    assert topology.edge_shape(block) == (8 * 4,)
    assert not topology.is_feedforward


def test_receptive_field_mask_patches():
    mask = receptive_field_mask((8, 8), 3, 2, 2)

    assert mask.shape == (3 * 3 * 2, 64)
    assert np.all(mask.sum(axis=1) == 9)
    # Neuron 11 is patch row 1, column 2, channel 1: pixel rows 2-4, columns 4-6.
    expected = np.zeros((8, 8))
    expected[2:5, 4:7] = 1.0
    np.testing.assert_array_equal(mask[11].reshape(8, 8), expected)


def test_local_config_builds_masked_layer():
    topology = build_experiment(small_config("local")).learner.topology
    masks = graph.init_masks(topology)

    assert topology.group_sizes[1] == 3 * 3 * 2
    assert topology.is_feedforward
    np.testing.assert_array_equal(masks[0], receptive_field_mask((8, 8), 4, 2, 2))


# Config validation -----------------------------------------------------------------------------

INVALID_NETWORKS = [
    ({"topology": "sparse", "density": 0.0}, "network.density=0.0"),
    ({"topology": "sparse", "density": 1.5}, "network.density=1.5"),
    ({"density": 0.5}, "network.density only applies"),
    ({"topology": "local", "neighbours": 6}, "network.neighbours only applies"),
    ({"topology": "small_world", "hidden": []}, "network.hidden is empty"),
    ({"topology": "small_world", "hidden": [8], "neighbours": 3}, "network.neighbours=3"),
    ({"topology": "small_world", "hidden": [8], "neighbours": 8}, "network.neighbours=8"),
    ({"topology": "small_world", "hidden": [8], "rewire": 1.5}, "network.rewire=1.5"),
    ({"topology": "recurrent", "hidden": [4], "recurrent": ["hidden0->output"]}, "leads forward"),
    ({"topology": "recurrent", "hidden": [4], "recurrent": ["hidden1->hidden0"]}, "not 'src->dst'"),
    ({"topology": "recurrent", "hidden": [4], "recurrent": ["output->hidden0", "output -> hidden0"]}, "twice"),
    ({"topology": "recurrent"}, "no hidden layer"),
    ({"topology": "local", "stride": 0}, "network.stride=0"),
    ({"topology": "local", "ticks": 1}, "fewer than the 2 weight layers"),
    ({"topology": "fancy"}, "network.topology='fancy'"),
]


@pytest.mark.parametrize(("network", "message"), INVALID_NETWORKS, ids=lambda case: str(case))
def test_invalid_topology_rejected(network, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"network": network})


def test_receptive_field_larger_than_image_rejected():
    config = config_from_dict({"network": {"topology": "local", "receptive_field": 9}})

    with pytest.raises(ConfigError, match="network.receptive_field=9 is larger than the 8x8"):
        build_experiment(config)


def test_local_on_non_image_task_rejected():
    config = config_from_dict({"task": {"name": "iris", "n_way": 3, "k_shot": 2, "n_query": 3}, "network": {"topology": "local"}})

    with pytest.raises(ConfigError, match="needs image inputs"):
        build_experiment(config)


def test_sparse_structure_depends_on_seed():
    first = build_experiment(small_config("sparse")).learner.topology
    again = build_experiment(small_config("sparse")).learner.topology
    other = build_experiment(dataclasses.replace(small_config("sparse"), seed=1)).learner.topology

    assert first == again
    assert hash(first) == hash(again)
    assert first != other


# Evolution on every topology --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TOPOLOGY_CASES))
def test_generations_compile_once(name):
    experiment = build_experiment(small_config(name))
    evolution = experiment.evolution()
    state = evolution.init(jax.random.key(0), experiment.train_pools)
    cache_sizes = []

    for _ in range(2):
        state, metrics = evolution.generation(state, experiment.train_pools)
        jax.block_until_ready(metrics)
        cache_sizes.append(Evolution.generation._cache_size())

    assert cache_sizes[1] == cache_sizes[0]
    assert int(metrics.nan_count) == 0


@pytest.mark.parametrize("name", list(TOPOLOGY_CASES))
def test_lifetime_weights_finite(name):
    experiment = build_experiment(small_config(name))
    learner = experiment.learner
    params = learner.rule.random_params(jax.random.key(1))
    instance = experiment.task.sample(jax.random.key(2), experiment.train_pools)
    network = learner.init_network(jax.random.key(3))

    step = labelled_step(learner)

    def scan_step(network, example):
        return step(params, network, *example)

    final, losses = jax.jit(lambda network: jax.lax.scan(scan_step, network, (instance.train_x, instance.train_y)))(network)

    for block, (before, after, mask) in enumerate(zip(network.weights, final.weights, final.masks)):
        assert bool(jnp.all(jnp.isfinite(after))), f"block {block}"
        assert bool(jnp.all(after * mask == after)), f"block {block} changed an absent edge"
    assert not np.allclose(final.weights[0], network.weights[0])
    assert bool(jnp.all(jnp.isfinite(losses)))


def test_per_edge_rule_on_edge_lists():
    config = config_from_dict(
        {
            "task": {"name": "digits", "n_way": 3, "k_shot": 2, "n_query": 3},
            "network": {"topology": "sparse", "hidden": [16], "density": 0.3},
            "rule": {"name": "abcd", "per_edge": True},
        }
    )
    experiment = build_experiment(config)
    params = experiment.learner.rule.random_params(jax.random.key(0))

    result = experiment.evolution().evaluate(params, experiment.train_pools, jax.random.split(jax.random.key(1), 2))

    for block in range(len(experiment.learner.topology.blocks)):
        assert params[f"block_{block}"]["A"].shape == experiment.learner.topology.edge_shape(block)
    assert np.all(np.isfinite(np.asarray(result.metric)))
