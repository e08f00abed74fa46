"""The outer loop: evolution on digits, compilation, invalid fitness, strategy construction."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import evolve, graph
from neuroevo.config import EvolutionConfig, config_from_dict
from neuroevo.errors import ConfigError
from neuroevo.evolve import Evolution, make_strategy
from neuroevo.experiment import build_experiment
from neuroevo.lifetime import Learner
from neuroevo.rules import ABCDRule, MLPRule
from neuroevo.tasks import DigitsConfig, build_task

import reference

GENERATIONS = 25


@pytest.fixture(scope="module")
def evolved():
    """A short Open_ES run of an MLP rule on 5-way 5-shot digits, scored on fixed lifetimes."""
    config = config_from_dict(
        {
            "task": {"k_shot": 5, "n_query": 10},
            "rule": {"hidden": [8]},
            "signal": {"feedback": "none"},
            "evolution": {"population": 16, "lifetimes_per_member": 4, "std": 0.1, "learning_rate": 0.05},
        }
    )
    experiment = build_experiment(config)
    evolution = experiment.evolution()
    state = evolution.init(jax.random.key(0), experiment.train_pools)
    keys = jax.random.split(jax.random.key(123), 64)

    def score(state) -> float:
        return float(evolution.evaluate(evolution.center(state), experiment.train_pools, keys).fitness.mean())

    initial = score(state)
    metrics = []
    for _ in range(GENERATIONS):
        state, generation_metrics = evolution.generation(state, experiment.train_pools)
        metrics.append(jax.tree.map(float, generation_metrics._asdict()))
    return SimpleNamespace(initial=initial, final=score(state), state=state, metrics=metrics, evolution=evolution)


def test_evolution_improves_center(evolved):
    # The initial rule changes no weight, so it scores what the random initial network scores.
    assert evolved.initial == pytest.approx(0.2, abs=0.05)
    assert evolved.final > evolved.initial + 0.2


def test_evolution_counts_generations(evolved):
    assert int(evolved.state.generation) == GENERATIONS


def test_evolution_metrics_valid(evolved):
    for index, metrics in enumerate(evolved.metrics):
        assert metrics["nan_count"] == 0, f"generation {index + 1}"
        assert 0.0 <= metrics["mean_fitness"] <= metrics["best_fitness"] <= 1.0, f"generation {index + 1}"


# A tiny setup with a hand-written rule, for invalid fitness, compilation and other strategies.

POPULATION = 8


def tiny_evolution(rule, fitness="accuracy", strategy="Open_ES", std=0.5) -> tuple[Evolution, object]:
    task = build_task(DigitsConfig(n_way=3, k_shot=2, n_query=3))
    learner = Learner(graph.layered_topology(64, (), 3), rule, feedback="none", fitness=fitness)
    config = EvolutionConfig(strategy=strategy, population=POPULATION, lifetimes_per_member=2, std=std, learning_rate=0.1)
    return Evolution(learner, task, config, rule.init(jax.random.key(0))), task.data("train")


@pytest.fixture(scope="module")
def switch_run():
    """Run four generations of a rule that outputs NaN in members with ``switch > 0``."""
    evolution, pools = tiny_evolution(reference.SwitchRule())
    state = evolution.init(jax.random.key(1), pools)
    traces, cache_sizes, metrics = [], [], []
    for _ in range(4):
        state, generation_metrics = evolution.generation(state, pools)
        jax.block_until_ready(generation_metrics)
        metrics.append(jax.tree.map(float, generation_metrics._asdict()))
        traces.append(reference.TRACE_COUNTS["SwitchRule"])
        cache_sizes.append(Evolution.generation._cache_size())
    return SimpleNamespace(evolution=evolution, state=state, traces=traces, cache_sizes=cache_sizes, metrics=metrics)


def test_nan_members_counted(switch_run):
    # The mean starts at switch = 0 and antithetic sampling pairs z with -z, so in the first
    # generation exactly one member of each pair has switch > 0. Later the mean moves away.
    counts = [metrics["nan_count"] for metrics in switch_run.metrics]

    assert counts[0] == POPULATION // 2
    assert all(count <= POPULATION // 2 for count in counts)


def test_nan_members_metrics_finite(switch_run):
    for index, metrics in enumerate(switch_run.metrics):
        assert np.isfinite(metrics["best_fitness"]), f"generation {index + 1}"
        assert np.isfinite(metrics["mean_fitness"]), f"generation {index + 1}"


def test_nan_members_center_finite(switch_run):
    center = switch_run.evolution.center(switch_run.state)

    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(center))


def test_nan_members_ranked_worst():
    # With a continuous fitness every valid member scores differently. If NaN members rank
    # worst, the strategy mean moves away from switch > 0. Ranked best, it would move towards it.
    evolution, pools = tiny_evolution(reference.SwitchRule(), fitness="neg_loss")
    state = evolution.init(jax.random.key(2), pools)

    state, metrics = evolution.generation(state, pools)

    assert int(metrics.nan_count) == POPULATION // 2
    assert float(metrics.mean_fitness) < float(metrics.best_fitness)
    assert float(evolution.center(state)["switch"]) < 0.0


def test_generation_compiles_once(switch_run):
    # SwitchRule.apply runs Python only while JAX traces, so its count grows on every trace.
    assert switch_run.traces[-1] == switch_run.traces[0]
    assert switch_run.cache_sizes[-1] == switch_run.cache_sizes[0]


@pytest.mark.parametrize("strategy", ["SNES", "CMA_ES"])
def test_other_strategy_runs(strategy):
    rule = reference.SwitchRule(switch=-5.0)  # far from the NaN region
    evolution, pools = tiny_evolution(rule, strategy=strategy, std=0.1)
    state = evolution.init(jax.random.key(3), pools)
    initial = evolution.center(state)

    for _ in range(2):
        state, metrics = evolution.generation(state, pools)

    center = evolution.center(state)
    assert int(state.generation) == 2
    assert int(metrics.nan_count) == 0
    assert np.isfinite(float(metrics.mean_fitness))
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(center))
    assert float(center["gain"]) != float(initial["gain"])


@pytest.mark.parametrize("strategy", ["DiffusionEvolution", "LGA"])
def test_population_based_strategy_finite(strategy):
    # Both normalise the fitness of their population, so an unscored start (+inf) gave NaN
    # members, which the generation counts in nan_count.
    rule = reference.SwitchRule(switch=-5.0)  # far from the NaN region
    evolution, pools = tiny_evolution(rule, strategy=strategy, std=0.1)
    state = evolution.init(jax.random.key(4), pools)

    assert np.isfinite(float(state.strategy_state.best_fitness))
    for generation in range(2):
        state, metrics = evolution.generation(state, pools)
        assert int(metrics.nan_count) == 0, f"generation {generation + 1}"

    center = evolution.center(state)
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(center))


# make_strategy ------------------------------------------------------------------------------

TEMPLATE = {"w": jnp.zeros(3, jnp.float32)}


@pytest.mark.parametrize("strategy", ["Open_ES", "PGPE"])
def test_make_strategy_rejects_odd_population(strategy):
    with pytest.raises(ConfigError, match="evolution.population=7"):
        make_strategy(EvolutionConfig(strategy=strategy, population=7), TEMPLATE)


def test_make_strategy_rejects_large_lm_ma_es_population():
    # TEMPLATE has 3 parameters, so LM_MA_ES accepts populations up to 6.
    with pytest.raises(ConfigError, match="evolution.population=7 is too large for LM_MA_ES"):
        make_strategy(EvolutionConfig(strategy="LM_MA_ES", population=7), TEMPLATE)

    strategy, _ = make_strategy(EvolutionConfig(strategy="LM_MA_ES", population=6), TEMPLATE)
    assert strategy.population_size == 6


def test_make_strategy_spreads_diffusion_schedule():
    strategy, params = make_strategy(EvolutionConfig(strategy="DiffusionEvolution", population=6, generations=300), TEMPLATE)

    assert strategy.num_generations == 300
    assert params.alphas.shape == (300,)


def test_make_strategy_rejects_unknown_name():
    with pytest.raises(ConfigError, match="evolution.strategy='Nope'"):
        make_strategy(EvolutionConfig(strategy="Nope"), TEMPLATE)


def test_make_strategy_rejects_extra_arguments():
    with pytest.raises(ConfigError, match="sampling_fn"):
        make_strategy(EvolutionConfig(strategy="RandomSearch"), TEMPLATE)


def test_make_strategy_sets_std_init():
    _, params = make_strategy(EvolutionConfig(strategy="SNES", population=6, std=0.07), TEMPLATE)

    assert float(params.std_init) == pytest.approx(0.07)


def test_make_strategy_even_population():
    strategy, _ = make_strategy(EvolutionConfig(strategy="Open_ES", population=6), TEMPLATE)

    assert strategy.population_size == 6


def test_cpu_lifetime_batch_fits_cache(monkeypatch):
    monkeypatch.setattr(evolve, "cpu_cache_bytes", lambda level=2: {2: 2**20, 3: 32 * 2**20}[level])

    # Compute-bound rules: all at once while the weights fit the 32 MiB L3.
    assert evolve.cpu_lifetime_batch(64, 4065, 8, compute_bound=True) == 8  # 8.3 MB in all
    assert evolve.cpu_lifetime_batch(64, 30_945, 8, compute_bound=True) == 1  # 63 MB in all, 7.9 MB per lifetime
    assert evolve.cpu_lifetime_batch(16, 4065, 512, compute_bound=True) == 2  # 260 kB per lifetime, 133 MB in all

    # Other rules: all at once within three 1 MiB L2 caches, else half an L2 per batch.
    assert evolve.cpu_lifetime_batch(64, 4065, 8) == 1  # 8.3 MB in all, 1.04 MB per lifetime
    assert evolve.cpu_lifetime_batch(64, 1000, 8) == 8  # 2.0 MB in all
    assert evolve.cpu_lifetime_batch(4, 4065, 64) == 8  # 65 kB per lifetime, 4.2 MB in all


def test_evolution_batches_mlp_rule_by_l3(monkeypatch):
    monkeypatch.setattr(evolve, "cpu_cache_bytes", lambda level=2: {2: 2**20, 3: 32 * 2**20}[level])
    task = build_task(DigitsConfig())
    topology = graph.layered_topology(task.n_inputs, (58,), task.n_outputs)
    config = EvolutionConfig(population=64, lifetimes_per_member=8)

    mlp = MLPRule(("pre", "post", "weight"), hidden=(16,))
    abcd = ABCDRule()
    batches = {
        name: evolve.Evolution(Learner(topology, rule), task, config, rule.init(jax.random.key(0))).lifetime_batch
        for name, rule in (("mlp", mlp), ("abcd", abcd))
    }

    assert batches["mlp"] == 8
    assert batches["abcd"] == 1


def test_cpu_cache_bytes_positive():
    assert evolve.cpu_cache_bytes(2) >= 2**16
    assert evolve.cpu_cache_bytes(3) >= evolve.cpu_cache_bytes(2)
