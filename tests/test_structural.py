"""Structural plasticity: edge budgets, neuron resets, scores against NumPy, no recompilation."""

from __future__ import annotations

import dataclasses
from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import graph, structural
from neuroevo.config import config_from_dict
from neuroevo.errors import ConfigError
from neuroevo.evolve import Evolution
from neuroevo.experiment import build_experiment
from neuroevo.export import load_rule
from neuroevo.io import save_rule
from neuroevo.lifetime import Lifetimes
from neuroevo.rules import ABCDRule
from neuroevo.rules.base import block_params
from neuroevo.run import format_table, rule_metadata
from neuroevo.structural import StructureConfig


def small_config(structure: dict | None = None, topology: str = "layered", hidden: tuple[int, ...] = (6,), growth: bool | None = None):
    """A 3-way digits config with a small MLP rule; the rule has a growth output when ``growth``, by default when regrowth is ``rule``."""
    structure = structure or {}
    network = {"hidden": list(hidden), "topology": topology}
    if topology == "sparse":
        network["density"] = 0.5
    rule = {"hidden": [4], "features": ["pre", "post", "weight", "error", "in_mean"]}
    if growth or (growth is None and structure.get("regrow") == "rule"):
        rule["growth_output"] = True
    return config_from_dict(
        {
            "task": {"n_way": 3, "k_shot": 4, "n_query": 3},
            "rule": rule,
            "network": network,
            "signal": {"feedback": "random_feedback"},
            "evolution": {"population": 4, "lifetimes_per_member": 2, "std": 0.1},
            "structure": structure,
        }
    )


def random_stream(learner, steps: int, seed: int = 0):
    """Inputs (steps, n_in) and one-hot targets (steps, n_out) drawn at random."""
    key_x, key_y = jax.random.split(jax.random.key(seed))
    xs = jax.random.uniform(key_x, (steps, learner.topology.n_inputs))
    targets = jax.nn.one_hot(jax.random.randint(key_y, (steps,), 0, learner.topology.n_outputs), learner.topology.n_outputs)
    return xs, targets


@partial(jax.jit, static_argnums=0)
def run_steps(learner, params, xs, targets):
    """Run supervised steps from the network of key 3; returns the final network and the mask counts per block, each (steps,)."""

    def step(network, example):
        network, _, _ = learner.supervised_step(params, network, *example)
        return network, tuple(jnp.sum(mask) for mask in network.masks)

    return jax.lax.scan(step, learner.init_network(jax.random.key(3)), (xs, targets))


@pytest.mark.parametrize("topology, regrow", [("layered", "random"), ("layered", "coactivity"), ("sparse", "coactivity"), ("layered", "rule"), ("sparse", "rule")])
def test_edge_budget_kept_over_refreshes(topology, regrow):
    density = 0.5 if topology == "layered" else 1.0
    structure = {"every": 2, "density": density, "prune": True, "prune_threshold": 1.5, "prune_fraction": 0.3, "regrow": regrow}
    experiment = build_experiment(small_config(structure, topology))
    learner = experiment.learner
    params = learner.rule.random_params(jax.random.key(1))
    xs, targets = random_stream(learner, 60)

    final, counts = run_steps(learner, params, xs, targets)

    budgets = structural.edge_budgets(learner.topology, density)
    allowed = structural.allowed_masks(learner.topology)
    for block, block_counts in enumerate(counts):
        assert np.all(np.asarray(block_counts) <= budgets[block]), f"block {block} exceeded its budget {budgets[block]}"
        outside = np.asarray(final.masks[block]) * (1.0 - np.asarray(allowed[block]))
        assert outside.sum() == 0, f"block {block} grew an edge the topology does not allow"
        assert np.array_equal(np.asarray(final.weights[block]) * np.asarray(final.masks[block]), np.asarray(final.weights[block]))
    assert float(final.structure.pruned) > 0
    assert float(final.structure.grown) > 0


def test_initial_density_sets_budget():
    structure = {"every": 5, "density": 0.25}
    learner = build_experiment(small_config(structure)).learner
    network = learner.init_network(jax.random.key(0))

    budgets = structural.edge_budgets(learner.topology, 0.25)
    for block, mask in enumerate(network.masks):
        assert int(np.asarray(mask).sum()) == budgets[block]
    bias_blocks = [block for block, (src, _) in enumerate(learner.topology.blocks) if src == learner.topology.bias_group]
    for block in bias_blocks:
        assert np.all(np.asarray(network.masks[block]) == 1.0)


def refresh_with_growth(growth_scale: float, step: int = 4):
    """One refresh at ``step`` that prunes a quarter of each prunable block's budget and regrows by random growth sums.

    Returns (network before, refreshed, learner, growth sums).
    """
    structure = {"every": 4, "density": 0.5, "prune": True, "prune_threshold": 10.0, "prune_fraction": 0.25, "regrow": "rule"}
    learner = build_experiment(small_config(structure)).learner
    network = learner.init_network(jax.random.key(0))
    rng = np.random.default_rng(0)
    growth = tuple(jnp.asarray(growth_scale * rng.normal(size=learner.topology.edge_shape(block)), jnp.float32) for block in range(len(network.masks)))
    state = network.structure._replace(step=jnp.int32(step), growth=growth)
    old_enough = tuple(jnp.full_like(mask, 4.0) for mask in network.masks)
    before = structural.Refreshed(network.weights, network.masks, old_enough, state)
    refreshed = structural.refresh(
        learner.topology, learner.structure, learner.structure.values({}), before,
        lambda key, masks: graph.init_weights(key, learner.topology, masks, learner.weight_init, learner.weight_gain),
    )
    return before, refreshed, learner, growth


def grown_edges(before, refreshed, block: int) -> np.ndarray:
    return (np.asarray(before.masks[block]) == 0) & (np.asarray(refreshed.masks[block]) == 1)


def test_rule_regrowth_grows_where_growth_sums_are_largest():
    before, refreshed, learner, growth = refresh_with_growth(1.0)

    allowed = structural.allowed_masks(learner.topology)
    total = 0
    for block in structural.prunable_blocks(learner.topology):
        mask_before, mask_after = np.asarray(before.masks[block]), np.asarray(refreshed.masks[block])
        pruned = (mask_before == 1) & (mask_after == 0)
        grown = grown_edges(before, refreshed, block)
        count = int(grown.sum())
        assert count == int(pruned.sum()) > 0
        candidates = (np.asarray(allowed[block]) == 1) & (mask_before == 0)
        ranked = np.argsort(-np.where(candidates, np.asarray(growth[block]), -np.inf).ravel(), kind="stable")
        expected = np.zeros(mask_before.size, bool)
        expected[ranked[:count]] = True
        np.testing.assert_array_equal(grown, expected.reshape(grown.shape))
        np.testing.assert_array_equal(np.asarray(refreshed.weights[block])[grown], 0.0)
        total += count
    assert float(refreshed.structure.grown) == total
    for block_growth in refreshed.structure.growth:
        np.testing.assert_array_equal(np.asarray(block_growth), 0.0)


def test_rule_regrowth_with_constant_growth_is_random():
    # A zero growth output ties every candidate, so the refresh key decides: refreshes at two
    # steps prune the same edges but grow different ones.
    before, at_step_4, learner, _ = refresh_with_growth(0.0, step=4)
    _, at_step_8, _, _ = refresh_with_growth(0.0, step=8)

    block = structural.prunable_blocks(learner.topology)[0]
    np.testing.assert_array_equal(
        np.asarray(before.masks[block]) - np.asarray(at_step_4.masks[block]) == 1, np.asarray(before.masks[block]) - np.asarray(at_step_8.masks[block]) == 1
    )
    grown_4, grown_8 = grown_edges(before, at_step_4, block), grown_edges(before, at_step_8, block)
    assert grown_4.sum() == grown_8.sum() > 0
    assert not np.array_equal(grown_4, grown_8)


def test_rule_without_growth_output_regrows_at_random():
    # The held-out baselines (swept Hebbian, STDP) run on the learner of a regrow=rule run.
    structure = {"every": 2, "density": 0.5, "prune": True, "prune_threshold": 1.5, "prune_fraction": 0.3, "regrow": "rule"}
    learner = dataclasses.replace(build_experiment(small_config(structure)).learner, rule=ABCDRule(eta_init=0.1))
    params = learner.rule.random_params(jax.random.key(1))
    xs, targets = random_stream(learner, 12)

    final, _ = run_steps(learner, params, xs, targets)

    assert float(final.structure.grown) > 0
    for block_growth in final.structure.growth:
        np.testing.assert_array_equal(np.asarray(block_growth), 0.0)


def test_growth_output_summed_over_window():
    # A lifetime of small_config has 12 steps; the 10 steps below end before the first refresh.
    structure = {"every": 12, "density": 0.5, "prune": True, "regrow": "rule"}
    learner = build_experiment(small_config(structure)).learner
    params = learner.rule.init(jax.random.key(0))
    last = params["params"]["Dense_1"]
    params["params"]["Dense_1"] = {"kernel": last["kernel"], "bias": last["bias"].at[1].set(0.25)}
    xs, targets = random_stream(learner, 10)

    final, _ = run_steps(learner, params, xs, targets)

    for block, block_growth in enumerate(final.structure.growth):
        assert block_growth.shape == learner.topology.edge_shape(block)
        np.testing.assert_allclose(np.asarray(block_growth), 2.5, rtol=1e-6)


def refresh_once(config: StructureConfig, activity, update, seed: int = 0):
    """One refresh of a 64-6-3 network with the given window sums; returns (network before, refreshed, learner)."""
    learner = build_experiment(small_config({"every": config.every, "redo": config.redo, "grama": config.grama,
                                             "redo_threshold": config.redo_threshold, "grama_threshold": config.grama_threshold})).learner
    network = learner.init_network(jax.random.key(seed))
    state = network.structure._replace(step=jnp.int32(config.every), activity=activity, update=update)
    before = structural.Refreshed(network.weights, network.masks, network.edge_age, state)
    values = learner.structure.values({})
    refreshed = structural.refresh(
        learner.topology, learner.structure, values, before, lambda key, masks: graph.init_weights(key, learner.topology, masks, learner.weight_init, learner.weight_gain)
    )
    return before, refreshed, learner


def window_sums(topology, dormant_hidden: int | None, output_zero: bool = False):
    sums = [jnp.ones((size,), jnp.float32) for size in topology.group_sizes]
    hidden = topology.hidden_groups[0]
    if dormant_hidden is not None:
        sums[hidden] = sums[hidden].at[dormant_hidden].set(0.0)
    if output_zero:
        sums[topology.output_group] = jnp.zeros_like(sums[topology.output_group])
    return tuple(sums)


def expected_fresh(learner, before):
    """The fresh draw that the refresh at step ``every`` uses, by the key scheme documented in structural.refresh."""
    key = jax.random.fold_in(jax.random.wrap_key_data(before.structure.key), before.structure.step)
    key_reset, _ = jax.random.split(key)
    return graph.init_weights(key_reset, learner.topology, before.masks, learner.weight_init, learner.weight_gain)


def blocks_by_role(topology):
    hidden = topology.hidden_groups[0]
    incoming = [block for block, (_, dst) in enumerate(topology.blocks) if dst == hidden]
    outgoing = [block for block, (src, _) in enumerate(topology.blocks) if src == hidden]
    into_output = [block for block, (_, dst) in enumerate(topology.blocks) if dst == topology.output_group]
    return incoming, outgoing, into_output


def test_redo_reset_fresh_incoming_zero_outgoing():
    topology = build_experiment(small_config()).learner.topology
    neuron = 2
    config = StructureConfig(every=10, redo=True, redo_threshold=0.1)
    before, after, learner = refresh_once(config, window_sums(topology, neuron), window_sums(topology, None))
    fresh = expected_fresh(learner, before)
    incoming, outgoing, _ = blocks_by_role(topology)

    for block in incoming:
        np.testing.assert_array_equal(np.asarray(after.weights[block])[neuron], np.asarray(fresh[block])[neuron])
        assert not np.array_equal(np.asarray(after.weights[block])[neuron], np.asarray(before.weights[block])[neuron])
        others = np.delete(np.arange(topology.group_sizes[topology.hidden_groups[0]]), neuron)
        np.testing.assert_array_equal(np.asarray(after.weights[block])[others], np.asarray(before.weights[block])[others])
    for block in outgoing:
        np.testing.assert_array_equal(np.asarray(after.weights[block])[:, neuron], 0.0)
    assert float(after.structure.resets) == 1.0
    assert float(after.structure.dormant) == pytest.approx(1.0 / 6.0)


def test_grama_resets_incoming_only():
    topology = build_experiment(small_config()).learner.topology
    neuron = 4
    config = StructureConfig(every=10, grama=True, grama_threshold=0.1)
    before, after, learner = refresh_once(config, window_sums(topology, None), window_sums(topology, neuron))
    fresh = expected_fresh(learner, before)
    incoming, outgoing, _ = blocks_by_role(topology)

    for block in incoming:
        np.testing.assert_array_equal(np.asarray(after.weights[block])[neuron], np.asarray(fresh[block])[neuron])
    for block in outgoing:
        np.testing.assert_array_equal(np.asarray(after.weights[block]), np.asarray(before.weights[block]))
    assert float(after.structure.resets) == 1.0


@pytest.mark.parametrize("mechanism", ["redo", "grama"])
def test_silent_output_never_reset(mechanism):
    topology = build_experiment(small_config()).learner.topology
    config = StructureConfig(every=10, redo=mechanism == "redo", grama=mechanism == "grama", redo_threshold=0.5, grama_threshold=0.5)
    sums = window_sums(topology, None, output_zero=True)
    before, after, _ = refresh_once(config, sums, sums)

    for block in range(len(topology.blocks)):
        np.testing.assert_array_equal(np.asarray(after.weights[block]), np.asarray(before.weights[block]), err_msg=f"block {block}")
    assert float(after.structure.resets) == 0.0


@pytest.mark.parametrize("mechanism", ["redo", "grama"])
def test_output_kept_when_all_hidden_reset(mechanism):
    topology = build_experiment(small_config()).learner.topology
    config = StructureConfig(every=10, redo=mechanism == "redo", grama=mechanism == "grama", redo_threshold=10.0, grama_threshold=10.0)
    silent = tuple(jnp.zeros((size,), jnp.float32) for size in topology.group_sizes)
    before, after, _ = refresh_once(config, silent, silent)
    _, _, into_output = blocks_by_role(topology)

    # ReDo zeroes the hidden-to-output edges as outgoing edges of reset hidden neurons.
    # The output's bias edges change only if an output neuron is reset.
    for block in into_output:
        src, _ = topology.blocks[block]
        if src == topology.bias_group or mechanism == "grama":
            np.testing.assert_array_equal(np.asarray(after.weights[block]), np.asarray(before.weights[block]), err_msg=f"block {block}")
    assert float(after.structure.resets) == topology.group_sizes[topology.hidden_groups[0]]


def test_redo_score_matches_numpy():
    learner = build_experiment(small_config(hidden=(5, 4))).learner
    topology = learner.topology
    rng = np.random.default_rng(0)
    activations = [rng.normal(size=(7, size)).astype(np.float32) for size in topology.group_sizes]
    state = structural.init_state(topology, StructureConfig(every=7), jax.random.key(0))
    for step in range(7):
        updates = tuple(jnp.zeros(topology.edge_shape(block)) for block in range(len(topology.blocks)))
        state = structural.accumulate(topology, state, tuple(jnp.asarray(a[step]) for a in activations), updates)

    scores = structural.neuron_scores(topology, state.activity)

    for group in range(len(topology.group_sizes)):
        mean_abs = np.abs(activations[group]).mean(axis=0)
        expected = mean_abs / mean_abs.mean() if group in topology.hidden_groups else np.zeros_like(mean_abs)
        np.testing.assert_allclose(np.asarray(scores[group]), expected, rtol=1e-5, atol=1e-7)
    assert int(state.step) == 7


@pytest.mark.parametrize("topology_name", ["layered", "sparse"])
def test_grama_score_matches_numpy(topology_name):
    learner = build_experiment(small_config(topology=topology_name)).learner
    topology = learner.topology
    rng = np.random.default_rng(1)
    updates = tuple(rng.normal(size=topology.edge_shape(block)).astype(np.float32) for block in range(len(topology.blocks)))

    sums = structural.incoming_update_sums(topology, tuple(jnp.asarray(u) for u in updates))
    scores = structural.neuron_scores(topology, sums)

    expected = [np.zeros(size) for size in topology.group_sizes]
    for block, (_, dst) in enumerate(topology.blocks):
        edges = topology.edge_list(block)
        if edges is None:
            for i in range(updates[block].shape[0]):
                expected[dst][i] += np.abs(updates[block][i]).sum()
        else:
            for edge, i in enumerate(edges.dst):
                expected[dst][i] += abs(updates[block][edge])
    for group in range(len(topology.group_sizes)):
        np.testing.assert_allclose(np.asarray(sums[group]), expected[group], rtol=1e-5)
        reference = expected[group] / expected[group].mean() if group in topology.hidden_groups else np.zeros(topology.group_sizes[group])
        np.testing.assert_allclose(np.asarray(scores[group]), reference, rtol=1e-5)


def learn_without_structure(learner, params, network, states, activations, learning_signals):
    """Learner.learn as it was before structural plasticity existed: the reference for refresh off."""
    weights, rule_states = [], []
    for block, edge_features in enumerate(learner.edge_features(network, states, activations, learning_signals)):
        dw, rule_state = learner.rule.apply(block_params(learner.rule, params, block), edge_features, network.rule_state[block])
        weights.append(network.weights[block] + dw * network.masks[block])
        rule_states.append(rule_state)
    return network._replace(
        weights=tuple(weights),
        rule_state=tuple(rule_states),
        traces=learner.updated_traces(network, activations),
        edge_age=tuple(age + mask for age, mask in zip(network.edge_age, network.masks)),
    )


@partial(jax.jit, static_argnums=0)
def run_reference_steps(learner, params, xs, targets):
    def step(network, example):
        x, target = example
        states, activations = learner.present(network.weights, x)
        return learn_without_structure(learner, params, network, states, activations, learner.supervised_signals(activations, target)), None

    return jax.lax.scan(step, learner.init_network(jax.random.key(3)), (xs, targets))[0]


def test_refresh_off_bit_identical():
    learner = build_experiment(small_config()).learner
    params = learner.rule.random_params(jax.random.key(1))
    xs, targets = random_stream(learner, 20)

    final, _ = run_steps(learner, params, xs, targets)
    reference = run_reference_steps(learner, params, xs, targets)

    assert final.structure == ()
    for block, (w, w_reference) in enumerate(zip(final.weights, reference.weights)):
        assert np.array_equal(np.asarray(w), np.asarray(w_reference)), f"block {block} weights differ"


def test_measuring_only_changes_nothing():
    off = build_experiment(small_config()).learner
    measuring = build_experiment(small_config({"every": 3})).learner
    params = off.rule.random_params(jax.random.key(1))
    xs, targets = random_stream(off, 20)

    final_off, _ = run_steps(off, params, xs, targets)
    final_measuring, _ = run_steps(measuring, params, xs, targets)

    # XLA compiles a different program when the window sums are carried, so the weights
    # agree to float32 rounding rather than bit for bit.
    for block, (w_off, w_measuring) in enumerate(zip(final_off.weights, final_measuring.weights)):
        np.testing.assert_allclose(np.asarray(w_measuring), np.asarray(w_off), rtol=1e-5, atol=1e-6, err_msg=f"block {block}")
    assert int(final_measuring.structure.step) == 20


def test_structure_metrics_in_lifetime_result():
    experiment = build_experiment(small_config({"every": 3, "redo": True}))
    params = experiment.learner.rule.random_params(jax.random.key(1))
    keys = jax.random.split(jax.random.key(2), 3)

    result = Lifetimes(experiment.learner, experiment.task).evaluate(params, experiment.train_pools, keys)

    assert result.structure.dormant_fraction.shape == (3,)
    assert np.all((np.asarray(result.structure.dormant_fraction) >= 0) & (np.asarray(result.structure.dormant_fraction) <= 1))


def test_refresh_off_network_state_unchanged():
    learner = build_experiment(small_config()).learner
    network = learner.init_network(jax.random.key(0))

    assert network.structure == ()
    for mask, allowed in zip(network.masks, graph.init_masks(learner.topology)):
        np.testing.assert_array_equal(np.asarray(mask), np.asarray(allowed))


def test_no_recompilation_with_refresh():
    structure = {"every": 2, "density": 0.5, "prune": True, "regrow": "rule", "redo": True, "grama": True, "evolve": ["prune_threshold", "redo_threshold"]}
    experiment = build_experiment(small_config(structure))
    evolution = experiment.evolution()
    state = evolution.init(experiment.key(0), experiment.train_pools)
    cache_sizes = []

    for _ in range(2):
        state, metrics = evolution.generation(state, experiment.train_pools)
        jax.block_until_ready(metrics)
        cache_sizes.append(Evolution.generation._cache_size())

    assert cache_sizes[1] == cache_sizes[0]
    assert int(metrics.nan_count) == 0


def test_evolved_thresholds_in_params():
    structure = {"every": 2, "prune": True, "prune_threshold": 0.5, "regrow": "random", "evolve": ["prune_threshold"]}
    learner = build_experiment(small_config(structure)).learner
    params = learner.rule.init(jax.random.key(0))
    random_rule = learner.rule.random_params(jax.random.key(1))
    xs, targets = random_stream(learner, 20)

    assert set(params) == {"rule", "structure"}
    assert float(params["structure"]["prune_threshold"]) == pytest.approx(np.log(0.5))
    never = {**random_rule, "structure": {"prune_threshold": jnp.float32(-30.0)}}
    often = {**random_rule, "structure": {"prune_threshold": jnp.float32(np.log(3.0))}}
    pruned_never = float(run_steps(learner, never, xs, targets)[0].structure.pruned)
    pruned_often = float(run_steps(learner, often, xs, targets)[0].structure.pruned)
    assert pruned_never == 0.0
    assert pruned_often > 0.0


@pytest.mark.parametrize(
    "structure, message",
    [
        ({"redo": True}, "structure.every=0"),
        ({"every": 5, "evolve": ["every"]}, "structure.evolve"),
        ({"every": 5, "density": 0.0}, "structure.density"),
        ({"every": -1}, "structure.every"),
        ({"every": 5, "regrow": "random"}, "structure.regrow=random only refills edges that pruning removed"),
        ({"every": 5, "redo": True, "evolve": ["prune_threshold"]}, "structure.evolve contains prune_threshold, but structure.prune=false"),
        ({"every": 5, "prune": True, "evolve": ["redo_threshold"]}, "structure.evolve contains redo_threshold, but structure.redo=false"),
        ({"every": 5, "prune": True, "evolve": ["grama_threshold"]}, "structure.evolve contains grama_threshold, but structure.grama=false"),
    ],
)
def test_invalid_structure_config(structure, message):
    with pytest.raises(ConfigError, match=message):
        small_config(structure)


@pytest.mark.parametrize(
    "structure, growth, hidden, message",
    [
        ({"every": 5, "prune": True, "regrow": "rule"}, False, (6,), "rule.growth_output=true"),
        ({"every": 5, "prune": True, "regrow": "random"}, True, (6,), "structure.regrow=rule"),
        ({"every": 5, "redo": True}, None, (), "network.hidden"),
        ({"every": 5, "grama": True}, None, (), "structure.grama"),
        ({"every": 13, "prune": True, "redo": True}, None, (6,), "structure.every=13 is longer than the 12-step lifetime of the digits task, so no refresh ever runs structure.prune and structure.redo"),
    ],
)
def test_structure_needs_parts_of_network_and_rule(structure, growth, hidden, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(small_config(structure, hidden=hidden, growth=growth))


def test_refresh_period_may_equal_lifetime():
    experiment = build_experiment(small_config({"every": 12, "redo": True}))

    assert experiment.task.lifetime_length == 12


def test_refresh_period_unbounded_when_only_measuring():
    experiment = build_experiment(small_config({"every": 50}))

    assert experiment.config.structure.every > experiment.task.lifetime_length


def test_rule_file_keeps_growth_output(tmp_path):
    config = small_config({"every": 2, "prune": True, "regrow": "rule"})
    experiment = build_experiment(config)
    params = experiment.learner.rule.random_params(jax.random.key(0))
    path = tmp_path / "rule.safetensors"

    save_rule(path, jax.device_get(params), rule_metadata(config, experiment.learner.rule.feature_names, {}))
    loaded = load_rule(path)

    assert loaded.rule.growth_output
    features = jnp.ones((3, len(loaded.rule.feature_names)))
    np.testing.assert_allclose(loaded.rule.growth_dense(loaded.params, features), experiment.learner.rule.growth_dense(params, features), rtol=1e-6)


def test_rule_file_keeps_evolved_thresholds(tmp_path):
    config = small_config({"every": 2, "redo": True, "redo_threshold": 0.2, "evolve": ["redo_threshold"]})
    experiment = build_experiment(config)
    params = experiment.initial_rule_params()
    params = {**params, "structure": {"redo_threshold": jnp.float32(-0.5)}}
    path = tmp_path / "rule.safetensors"

    save_rule(path, jax.device_get(params), rule_metadata(config, experiment.learner.rule.feature_names, {}))
    loaded = load_rule(path)

    assert isinstance(loaded.rule, structural.WithStructureParams)
    assert float(loaded.params["structure"]["redo_threshold"]) == -0.5
    for got, expected in zip(jax.tree.leaves(loaded.params["rule"]), jax.tree.leaves(params["rule"])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize("metric", ["return", "accuracy"])
def test_table_lists_structure_metrics(metric):
    numbers = {"mean": 0.5, "ci95": [0.4, 0.6], "lifetimes": 4}
    heldout = {**numbers, "window_return": numbers, "window_return_perturbed": numbers}
    summary = {"metric": metric, "heldout": {"evolved": heldout}, "heldout_task_metrics": {"evolved": {"dormant_fraction": {**numbers, "mean": 0.25}}}}

    table = format_table(summary, {"evolved": SimpleNamespace(note="")})

    assert "dormant_fraction 0.2500" in table.splitlines()[-1]


def test_take_smallest_matches_stable_sort():
    rng = np.random.default_rng(0)
    cases, shape = 200, (5, 30)
    values = rng.normal(size=(cases, *shape)).astype(np.float32)
    values[1::2] = np.round(values[1::2], 1)  # ties, and -0.0 next to 0.0
    eligible = rng.random((cases, *shape)) < rng.random((cases, 1, 1))
    counts = rng.integers(0, values[0].size + 2, size=cases)

    chosen = np.asarray(jax.jit(jax.vmap(structural._take_smallest))(jnp.asarray(values), jnp.asarray(eligible), jnp.asarray(counts)))

    for case in range(cases):
        positions = np.flatnonzero(eligible[case])
        order = positions[np.argsort(values[case].ravel()[positions], kind="stable")]
        expected = np.zeros(values[case].size, bool)
        expected[order[: counts[case]]] = True
        np.testing.assert_array_equal(chosen[case], expected.reshape(shape), err_msg=f"case {case}")
