"""Spiking networks: LIF dynamics, spike coding, traces, STDP sums, delays, and one compiled generation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from neuroevo import graph, spiking
from neuroevo.config import SpikingConfig, config_from_dict
from neuroevo.errors import ConfigError
from neuroevo.evolve import Evolution
from neuroevo.experiment import build_experiment
from neuroevo.features import EdgeFeatures
from neuroevo.lifetime import Lifetimes
from neuroevo.rules import RewardSTDPRule, STDPRule
from neuroevo.tasks import build_task
from neuroevo.tasks.fewshot import ClassPools
from neuroevo.tasks.spike_patterns import SpikePatternsConfig, SpikePatternsTask, perfect_matchings


def numpy_lif(config: SpikingConfig, currents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference LIF loop over currents (ticks, n); returns potentials and spikes, both (ticks, n)."""
    decay = np.exp(-config.dt / config.tau_mem)
    v = np.zeros(currents.shape[1])
    left = np.zeros(currents.shape[1], int)
    potentials, spikes = [], []
    for current in currents:
        spike = np.zeros_like(v)
        for i in range(v.size):
            if left[i] > 0:
                v[i] = config.v_reset
                left[i] -= 1
                continue
            v[i] = decay * v[i] + current[i]
            if v[i] >= config.v_threshold:
                spike[i] = 1.0
                v[i] = config.v_reset
                left[i] = config.refractory
        potentials.append(v.copy())
        spikes.append(spike)
    return np.array(potentials), np.array(spikes)


def run_lif(config: SpikingConfig, currents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def step(state, current):
        state, spikes = spiking.lif_step(config, state, current)
        return state, (state.v, spikes)

    _, (potentials, spikes) = lax.scan(step, spiking.lif_rest(currents.shape[1]), jnp.asarray(currents, jnp.float32))
    return np.asarray(potentials), np.asarray(spikes)


@pytest.mark.parametrize("refractory", [0, 3])
def test_lif_matches_numpy_loop(refractory):
    config = SpikingConfig(tau_mem=5.0, v_threshold=1.0, v_reset=-0.2, refractory=refractory)
    currents = np.random.default_rng(0).uniform(-0.1, 0.5, size=(60, 6))

    potentials, spikes = run_lif(config, currents)
    expected_potentials, expected_spikes = numpy_lif(config, currents)

    assert expected_spikes.sum() >= 10  # the threshold, reset and refractory branches all run
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(potentials, expected_potentials, rtol=1e-5, atol=1e-5)


def test_lif_refractory_blocks_spikes():
    config = SpikingConfig(refractory=2)
    _, spikes = run_lif(config, np.full((9, 1), 5.0))

    assert spikes[:, 0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0]


def test_rate_encoder_binomial_counts():
    ticks, max_rate, dt = 4000, 0.2, 1.0
    x = jnp.array([0.0, 0.1, 0.5, 1.0, 2.0])
    raster = np.asarray(spiking.rate_encode(jax.random.key(3), x, ticks, max_rate, dt))
    counts = raster.sum(axis=0)
    probabilities = np.clip(np.asarray(x) * max_rate * dt, 0.0, 1.0)

    assert raster.shape == (ticks, 5)
    assert set(np.unique(raster)) <= {0.0, 1.0}
    assert counts[0] == 0
    for count, p in zip(counts[1:], probabilities[1:]):
        # 99.9% normal-approximation interval of a Binomial(ticks, p) count.
        half_width = 3.29 * np.sqrt(ticks * p * (1 - p))
        assert abs(count - ticks * p) <= half_width, (count, p)


def test_input_key_depends_on_input():
    x = jnp.linspace(0.0, 1.0, 8)
    same = spiking.input_key(0, x)
    other = spiking.input_key(0, x.at[3].set(0.9))

    assert jnp.array_equal(jax.random.key_data(same), jax.random.key_data(spiking.input_key(0, x)))
    assert not jnp.array_equal(jax.random.key_data(same), jax.random.key_data(other))


def test_latency_encoder_exact_times():
    ticks = 11
    x = jnp.array([1.0, 0.5, 0.1, 0.0, 0.05])
    raster = np.asarray(spiking.latency_encode(x, ticks))

    np.testing.assert_array_equal(raster.sum(axis=0), [1, 1, 1, 0, 1])
    assert np.argmax(raster[:, 0]) == 0
    assert np.argmax(raster[:, 1]) == 5
    assert np.argmax(raster[:, 2]) == 9
    assert np.argmax(raster[:, 4]) == round(0.95 * 10)


def test_traces_decay_per_tick():
    config = SpikingConfig(dt=0.5, tau_plus=4.0, tau_minus=7.0)
    raster = np.zeros((12, 2), np.float32)
    raster[2, 0] = 1.0
    raster[[3, 5], 1] = 1.0

    traces = np.asarray(spiking.spike_traces(jnp.asarray(raster), np.exp(-config.dt / config.tau_plus)))
    decay = np.exp(-config.dt / config.tau_plus)
    expected = np.zeros(12)
    expected[2:] = decay ** np.arange(10)
    np.testing.assert_allclose(traces[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(traces[2:, 0][1:] / traces[2:, 0][:-1], decay, rtol=1e-6)

    summary = spiking.summarise_spikes(config, jnp.asarray(raster))
    np.testing.assert_allclose(summary.trace_minus[1], np.exp(-8 * 0.5 / 7.0) + np.exp(-6 * 0.5 / 7.0), rtol=1e-6)
    np.testing.assert_allclose(summary.first_spike, [2 / 12, 3 / 12], rtol=1e-6)
    np.testing.assert_array_equal(summary.count, [1, 2])


def single_edge(layout: str) -> graph.Topology:
    topology = graph.layered_topology(1, (), 1, output_activation="softmax", bias=False)
    if layout == "edges":
        topology = dataclasses.replace(topology, connectivity=(graph.EdgeList([0], [0]),))
    return topology


def pair_rasters(t_pre: int, t_post: int, ticks: int = 20) -> tuple[jax.Array, jax.Array]:
    pre, post = np.zeros((ticks, 1), np.float32), np.zeros((ticks, 1), np.float32)
    pre[t_pre, 0], post[t_post, 0] = 1.0, 1.0
    return jnp.asarray(pre), jnp.asarray(post)


@pytest.mark.parametrize("layout", ["dense", "edges"])
def test_stdp_single_pair_closed_form(layout):
    config = SpikingConfig(dt=1.0, tau_plus=8.0, tau_minus=12.0)
    topology = single_edge(layout)
    rule = STDPRule(a_plus=0.7, a_minus=0.4)

    # Pre 5 ticks before post: potentiation A+ exp(-dt / tau+) per tick of lag.
    ltp, ltd = spiking.stdp_sums(config, topology, 0, None, *pair_rasters(3, 8))
    np.testing.assert_allclose(np.asarray(ltp).reshape(-1), [np.exp(-5 / 8.0)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ltd).reshape(-1), [0.0])
    features = EdgeFeatures(post=jnp.zeros(ltp.shape + (0,)), pre=jnp.zeros(ltp.shape + (0,)), edge=jnp.stack([ltp, ltd], axis=-1))
    dw, _ = rule.apply({"eta": jnp.float32(0.5)}, features, ())
    np.testing.assert_allclose(np.asarray(dw).reshape(-1), [0.5 * 0.7 * np.exp(-5 / 8.0)], rtol=1e-6)

    # Post 4 ticks before pre: depression A- exp(-dt / tau-) per tick of lag.
    ltp, ltd = spiking.stdp_sums(config, topology, 0, None, *pair_rasters(10, 6))
    np.testing.assert_allclose(np.asarray(ltp).reshape(-1), [0.0])
    np.testing.assert_allclose(np.asarray(ltd).reshape(-1), [np.exp(-4 / 12.0)], rtol=1e-6)

    # Simultaneous spikes count as causal.
    ltp, ltd = spiking.stdp_sums(config, topology, 0, None, *pair_rasters(5, 5))
    np.testing.assert_allclose(np.asarray(ltp).reshape(-1), [1.0])
    np.testing.assert_allclose(np.asarray(ltd).reshape(-1), [0.0])


def test_stdp_uses_arrival_time_with_delay():
    config = SpikingConfig(tau_plus=8.0, tau_minus=12.0)
    topology = single_edge("dense")
    delays = np.array([[3]], np.int32)

    # Pre at 3 arrives at 6, two ticks before the post spike at 8.
    ltp, _ = spiking.stdp_sums(config, topology, 0, delays, *pair_rasters(3, 8))
    np.testing.assert_allclose(np.asarray(ltp).reshape(-1), [np.exp(-2 / 8.0)], rtol=1e-6)

    # Pre at 6 arrives at 9, after the post spike at 8: depression by one tick of lag.
    ltp, ltd = spiking.stdp_sums(config, topology, 0, delays, *pair_rasters(6, 8))
    np.testing.assert_allclose(np.asarray(ltp).reshape(-1), [0.0])
    np.testing.assert_allclose(np.asarray(ltd).reshape(-1), [np.exp(-1 / 12.0)], rtol=1e-6)


def test_reward_stdp_gates_eligibility():
    rule = RewardSTDPRule(modulator="error", a_plus=1.0, a_minus=0.5, eligibility_decay=0.5)
    edge = jnp.array([[[2.0, 1.0]]])  # ltp, ltd of one edge
    features = EdgeFeatures(post=jnp.array([[[0.3]]]), pre=jnp.zeros((1, 1, 0)), edge=edge)

    dw, eligibility = rule.apply({"eta": jnp.float32(2.0)}, features, jnp.full((1, 1), 4.0))

    np.testing.assert_allclose(np.asarray(eligibility), [[0.5 * 4.0 + 2.0 - 0.5]])
    np.testing.assert_allclose(np.asarray(dw), [[2.0 * 0.3 * 3.5]], rtol=1e-6)


@pytest.mark.parametrize("delay", [0, 1, 4])
def test_delays_shift_spikes_exactly(delay):
    config = SpikingConfig(ticks=20, refractory=0, max_delay=4)
    topology = single_edge("dense")
    weights = (jnp.array([[1.5]]),)  # every arriving input spike makes the output spike
    raster = np.zeros((20, 1), np.float32)
    raster[[2, 7, 8], 0] = 1.0

    undelayed = spiking.simulate(config, topology, weights, jnp.asarray(raster), None)[topology.output_group]
    delayed = spiking.simulate(config, topology, weights, jnp.asarray(raster), spiking.Delays([np.array([[delay]])]))[topology.output_group]

    assert np.flatnonzero(np.asarray(undelayed)[:, 0]).tolist() == [3, 8, 9]
    assert np.flatnonzero(np.asarray(delayed)[:, 0]).tolist() == [3 + delay, 8 + delay, 9 + delay]


@pytest.mark.parametrize("layout", ["dense", "edges"])
def test_zero_delays_match_plain_ticks(layout):
    config = SpikingConfig(ticks=15)
    topology = graph.layered_topology(6, (5,), 3)
    if layout == "edges":
        first = np.array([(i, j) for i in range(5) for j in range(6) if (i + j) % 2 == 0])
        topology = dataclasses.replace(topology, connectivity=(graph.EdgeList(first[:, 0], first[:, 1]), None, None, None))
    masks = graph.init_masks(topology)
    weights = graph.init_weights(jax.random.key(0), topology, masks, "normal", 3.0)
    raster = spiking.rate_encode(jax.random.key(1), jnp.full((6,), 0.9), 15, 0.5, 1.0)
    zero_delays = spiking.Delays([np.zeros(topology.edge_shape(block), np.int32) for block in range(len(topology.blocks))])

    plain = spiking.simulate(config, topology, weights, raster, None)
    gathered = spiking.simulate(config, topology, weights, raster, zero_delays)

    assert float(plain[1].sum()) > 0  # the hidden layer spikes
    for group in range(len(plain)):
        np.testing.assert_array_equal(np.asarray(plain[group]), np.asarray(gathered[group]))


SMALL_SPIKING = {
    "task": {"name": "digits", "n_way": 3, "k_shot": 2, "n_query": 3},
    "network": {"neurons": "lif"},
    "signal": {"feedback": "none"},
    "rule": {"name": "reward_stdp"},
    "spiking": {"ticks": 6, "max_delay": 2},
    "evolution": {"population": 4, "lifetimes_per_member": 2, "std": 0.1},
}


def test_spiking_generation_compiles_once():
    experiment = build_experiment(config_from_dict(SMALL_SPIKING))
    evolution = experiment.evolution()
    state = evolution.init(jax.random.key(0), experiment.train_pools)

    cache_sizes = []
    for _ in range(2):
        state, metrics = evolution.generation(state, experiment.train_pools)
        jax.block_until_ready(metrics)
        cache_sizes.append(Evolution.generation._cache_size())

    assert cache_sizes[1] == cache_sizes[0]
    assert int(metrics.nan_count) == 0
    assert 0.0 <= float(metrics.best_fitness) <= 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"network": {"neurons": "rate"}}, "spiking section only applies"),
        ({"network": {"neurons": "rate"}, "spiking": {}}, "describe spikes"),
        ({"spiking": {"encoder": "raster"}}, "spiking.encoder=raster does not fit"),
        ({"spiking": {"v_reset": 2.0}}, "must be below spiking.v_threshold"),
        ({"spiking": {"max_rate": 2.0}}, "above 1"),
        ({"spiking": {"ticks": 6, "max_delay": 6}}, "spiking.max_delay=6"),
    ],
)
def test_spiking_config_errors(change, message):
    data = {**SMALL_SPIKING, **change}
    with pytest.raises(ConfigError, match=message):
        build_experiment(config_from_dict(data))


SPIKING_WINE = {**SMALL_SPIKING, "task": {"name": "wine", "n_way": 3, "k_shot": 2, "n_query": 3}}


@pytest.mark.parametrize("scaling", ["standard", "none"])
def test_signed_tabular_inputs_need_signed_encoding(scaling):
    data = {**SPIKING_WINE, "task": {**SPIKING_WINE["task"], "scaling": scaling}}
    with pytest.raises(ConfigError, match=f"task.scaling={scaling}.*set spiking.signed_inputs=true or task.scaling=minmax"):
        build_experiment(config_from_dict(data))

    signed = build_experiment(config_from_dict({**data, "spiking": {**data["spiking"], "signed_inputs": True}}))
    assert signed.learner.topology.n_inputs == 2 * signed.task.n_inputs


def test_minmax_tabular_inputs_need_no_signed_encoding():
    experiment = build_experiment(config_from_dict(SPIKING_WINE))

    assert experiment.learner.topology.n_inputs == experiment.task.n_inputs


@pytest.mark.parametrize(
    "task, in_unit_interval",
    [
        ({"name": "digits"}, True),
        ({"name": "continual_digits"}, True),
        ({"name": "wine", "scaling": "minmax"}, True),
        ({"name": "wine", "scaling": "standard"}, False),
        ({"name": "sinusoid"}, False),
    ],
)
def test_inputs_in_unit_interval_matches_data(task, in_unit_interval):
    built = build_task(config_from_dict({"task": task}).task)
    assert built.inputs_in_unit_interval == in_unit_interval

    pools = [built.data(split) for split in ("train", "test")]
    if isinstance(pools[0], ClassPools):
        values = np.concatenate([np.asarray(array).ravel() for pool in pools for array in pool])
        assert bool(np.all((values >= 0.0) & (values <= 1.0))) == in_unit_interval


def test_perfect_matchings_counts():
    assert len(perfect_matchings(4)) == 3
    assert len(perfect_matchings(6)) == 15
    for matching in perfect_matchings(6):
        assert sorted(group for pair in matching for group in pair) == list(range(6))
    assert len(set(perfect_matchings(6))) == 15


def test_spike_patterns_differ_only_in_coincidences():
    config = SpikePatternsConfig(n_groups=6, channels_per_group=2, ticks=20, slot_ticks=5, jitter=0)
    task = SpikePatternsTask.from_config(config)
    pools = task.data("train")
    rasters = np.asarray(pools.support).reshape(*pools.support.shape[:2], config.ticks, task.n_inputs)

    # Every channel fires exactly once in every pattern of every class.
    np.testing.assert_array_equal(rasters.sum(axis=2), 1.0)

    # Without jitter, two groups fire at the same tick exactly when the class pairs them.
    matchings = perfect_matchings(6)
    for position, label in enumerate(config.train_classes):
        pairs = {frozenset(pair) for pair in matchings[label]}
        spike_ticks = rasters[position, 0].argmax(axis=0)[:: config.channels_per_group]  # one channel per group
        for a in range(6):
            for b in range(a + 1, 6):
                assert (spike_ticks[a] == spike_ticks[b]) == (frozenset((a, b)) in pairs)


def test_spike_patterns_lifetime_runs():
    data = {
        "task": {"name": "spike_patterns", "n_way": 3, "k_shot": 2, "n_query": 3, "ticks": 8, "slot_ticks": 3, "jitter": 0, "patterns_per_class": 10},
        "network": {"neurons": "lif"},
        "signal": {"feedback": "none"},
        "spiking": {"ticks": 8, "encoder": "raster"},
        "rule": {"name": "reward_stdp"},
    }
    experiment = build_experiment(config_from_dict(data))
    result = Lifetimes(experiment.learner, experiment.task).evaluate(experiment.initial_rule_params(), experiment.test_pools, jax.random.split(jax.random.key(0), 4))

    assert np.all(np.isfinite(np.asarray(result.fitness)))
    assert np.all((0.0 <= np.asarray(result.metric)) & (np.asarray(result.metric) <= 1.0))

    with pytest.raises(ConfigError, match="spiking.ticks=9 differs"):
        build_experiment(config_from_dict({**data, "spiking": {"ticks": 9, "encoder": "raster"}}))
