"""The meta-gradient outer loop: gradients, compilation, skipped steps, training, resume, config."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from jax import lax
from jax.flatten_util import ravel_pytree

from neuroevo import graph, run
from neuroevo.checkpoint import load_checkpoint, save_checkpoint
from neuroevo.cli import main
from neuroevo.config import EvolutionConfig, MetaGradientConfig, config_from_dict
from neuroevo.errors import ConfigError
from neuroevo.experiment import MethodResult, build_experiment
from neuroevo.lifetime import Learner, split_lifetime_key
from neuroevo.metagrad import LifetimeObjective, MetaGradient
from neuroevo.rules import MLPRule
from neuroevo.tasks import DigitsConfig, build_task
from neuroevo.tasks.fewshot import classification_scores

TASK = build_task(DigitsConfig(n_way=3, k_shot=2, n_query=3))  # lifetimes of 6 steps
POOLS = TASK.data("train")
RULE = MLPRule(("pre", "post", "weight", "error"), hidden=(4,), output_scale=0.3)
LEARNER = Learner(graph.layered_topology(64, (), 3), RULE, feedback="none")
KEYS = jax.random.split(jax.random.key(2), 4)


def meta_gradient(objective, **options) -> MetaGradient:
    config = EvolutionConfig(method="meta_gradient", lifetimes_per_member=4, **options)
    return MetaGradient(objective, config, objective.learner.rule.init(jax.random.key(0)))


def central_difference(f, flat: jax.Array, direction: jax.Array, eps: float = 1e-2) -> float:
    return float((f(flat + eps * direction) - f(flat - eps * direction)) / (2 * eps))


@pytest.fixture(scope="module")
def random_point():
    """A random rule (non-zero output layer, so every parameter matters) and a unit direction."""
    flat, unravel = ravel_pytree(RULE.random_params(jax.random.key(1)))
    direction = jax.random.normal(jax.random.key(3), flat.shape)
    return flat, unravel, direction / jnp.linalg.norm(direction)


def directional_gradient(trainer: MetaGradient, random_point) -> float:
    flat, unravel, direction = random_point
    gradient = jax.jit(jax.grad(lambda vector: trainer.meta_loss(unravel(vector), POOLS, KEYS)[0]))(flat)
    return float(gradient @ direction)


@pytest.fixture(scope="module")
def full_gradient(random_point) -> float:
    """Directional derivative of the meta-loss, differentiated through whole lifetimes."""
    return directional_gradient(meta_gradient(LifetimeObjective(LEARNER, TASK)), random_point)


def test_gradient_matches_finite_differences(random_point, full_gradient):
    flat, unravel, direction = random_point
    trainer = meta_gradient(LifetimeObjective(LEARNER, TASK))
    loss = jax.jit(lambda vector: trainer.meta_loss(unravel(vector), POOLS, KEYS)[0])

    numeric = central_difference(loss, flat, direction)

    assert abs(numeric) > 0.1, "the direction must change the loss for the check to mean anything"
    assert full_gradient == pytest.approx(numeric, rel=2e-3)


def test_truncated_gradient_ignores_early_steps(random_point, full_gradient):
    # With truncation 3 of 6 steps, the gradient is that of the loss with respect to the rule
    # parameters used in the last 3 steps, the first 3 steps keeping the unperturbed rule.
    flat, unravel, direction = random_point
    objective = LifetimeObjective(LEARNER, TASK, truncation=3)

    def live(params, network, xs, targets):
        def scan_step(network, example):
            network, _, _ = LEARNER.supervised_step(params, network, *example)
            return network, None

        return lax.scan(scan_step, network, (xs, targets))[0]

    def tail_loss(vector: jax.Array) -> jax.Array:
        def one(key):
            key_instance, key_network = split_lifetime_key(key)
            instance = TASK.sample(key_instance, POOLS)
            xs, targets = TASK.training_stream(instance)
            network = LEARNER.init_network(key_network)
            network = live(unravel(flat), network, xs[:3], targets[:3])
            network = live(unravel(vector), network, xs[3:], targets[3:])
            return classification_scores(LEARNER, network.weights, instance.query_x, instance.query_y)[1]

        return jax.vmap(one)(KEYS).mean()

    truncated = directional_gradient(meta_gradient(objective), random_point)

    assert truncated == pytest.approx(central_difference(jax.jit(tail_loss), flat, direction), rel=2e-3)
    assert abs(truncated - full_gradient) > 0.1 * abs(full_gradient)


def nan_above_zero(params, pools, key):
    """Toy objective ``(x - 1)^2``, NaN wherever ``x > 0``; the fitness is ``-x``."""
    x = params["x"]
    return jnp.where(x > 0, jnp.nan, (x - 1.0) ** 2), -x


def test_non_finite_step_skipped():
    config = EvolutionConfig(method="meta_gradient", lifetimes_per_member=2, optimizer="sgd", learning_rate=0.3)
    trainer = MetaGradient(nan_above_zero, config, {"x": jnp.float32(-0.5)})
    state = trainer.init(jax.random.key(5))
    steps = []

    # sgd moves x from -0.5 towards 1 by 0.3 per step (gradient norm clipped from 3 to 1):
    # -0.2, then 0.1 > 0. From there every loss is NaN, so the last two steps are skipped.
    for _ in range(4):
        state, metrics = trainer.generation(state, None)
        steps.append((float(state.params["x"]), int(metrics.nan_count)))

    assert [count for _, count in steps] == [0, 0, 1, 1]
    assert [x for x, _ in steps] == pytest.approx([-0.2, 0.1, 0.1, 0.1])
    assert int(state.skipped) == 2
    assert int(state.generation) == 4


@pytest.fixture(scope="module")
def trainer():
    """One trainer for the tests below, so that its step compiles once."""
    return meta_gradient(LifetimeObjective(LEARNER, TASK), learning_rate=0.03)


def test_generation_compiles_once(trainer):
    state = trainer.init(jax.random.key(4))
    cache_sizes = []

    for _ in range(3):
        state, metrics = trainer.generation(state, POOLS)
        jax.block_until_ready(metrics)
        cache_sizes.append(MetaGradient.generation._cache_size())

    assert cache_sizes[-1] == cache_sizes[0]


def test_short_run_lowers_meta_loss(trainer):
    state = trainer.init(jax.random.key(6))
    held_keys = jax.random.split(jax.random.key(7), 64)
    meta_loss = jax.jit(lambda params: trainer.meta_loss(params, POOLS, held_keys)[0])
    before = float(meta_loss(state.params))

    for _ in range(30):
        state, metrics = trainer.generation(state, POOLS)

    after = float(meta_loss(state.params))
    assert int(state.skipped) == 0
    assert after < before - 0.1


def test_checkpoint_resume_identical(trainer, tmp_path):
    uninterrupted = trainer.init(jax.random.key(8))
    for _ in range(6):
        uninterrupted, _ = trainer.generation(uninterrupted, POOLS)

    state = trainer.init(jax.random.key(8))
    for _ in range(3):
        state, _ = trainer.generation(state, POOLS)
    save_checkpoint(tmp_path, state, state.params, {"generation": 3})
    template = trainer.init(jax.random.key(0))
    state = load_checkpoint(tmp_path, template, template.params).state
    for _ in range(3):
        state, _ = trainer.generation(state, POOLS)

    for resumed, reference_leaf in zip(jax.tree.leaves(state), jax.tree.leaves(uninterrupted)):
        if jnp.issubdtype(resumed.dtype, jax.dtypes.prng_key):
            resumed, reference_leaf = jax.random.key_data(resumed), jax.random.key_data(reference_leaf)
        np.testing.assert_array_equal(resumed, reference_leaf)


# A meta-gradient run writes the files of an evolution run ----------------------------------

TINY = {
    "task": {"name": "digits", "k_shot": 2, "n_query": 3},
    "rule": {"name": "mlp", "hidden": [4]},
    "signal": {"feedback": "none"},
    "evolution": {
        "method": "meta_gradient",
        "generations": 4,
        "lifetimes_per_member": 2,
        "learning_rate": 0.01,
        "eval_every": 2,
        "eval_lifetimes": 2,
        "checkpoint_every": 2,
        "meta_gradient": {"truncation": 5},
    },
}


def evolved_only(experiment, rule_params, log):
    """Stand-in for the held-out comparison, whose baselines do not depend on the outer loop."""
    result = experiment.evolution().evaluate(rule_params, experiment.test_pools, experiment.heldout_keys(4), track_query=True)
    return {"evolved": MethodResult(np.asarray(result.metric), np.asarray(result.curve.query))}


def test_meta_gradient_run_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "compare_heldout", evolved_only)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "run"

    assert main(["evolve", str(config_path), "--out", str(run_dir)]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["generation"] for record in records] == [1, 2, 3, 4]
    assert {"best_fitness", "mean_fitness", "nan_count", "meta_loss", "grad_norm", "wall_time"} <= set(records[0])
    assert "train_eval" in records[1]
    for name in ("checkpoint.npz", "best_rule.safetensors", "summary.json"):
        assert (run_dir / name).is_file(), name

    assert main(["evolve", "--resume", str(run_dir)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(["export", str(run_dir), "--out", str(tmp_path / "rule.safetensors")]) == 0


# Config validation -------------------------------------------------------------------------


def config_with(evolution: dict):
    return config_from_dict({"signal": {"feedback": "none"}, "evolution": evolution})


@pytest.mark.parametrize("key, value", [("population", 32), ("std", 0.1), ("strategy", "SNES")])
def test_config_rejects_es_options_for_meta_gradient(key, value):
    with pytest.raises(ConfigError, match=f"evolution.{key}="):
        config_with({"method": "meta_gradient", key: value})


def test_config_rejects_meta_gradient_options_for_es():
    with pytest.raises(ConfigError, match="evolution.meta_gradient options"):
        config_with({"meta_gradient": {"truncation": 5}})


@pytest.mark.parametrize("options, message", [({"truncation": -1}, "truncation=-1"), ({"clip_norm": 0.0}, "clip_norm=0.0")])
def test_config_rejects_bad_meta_gradient_options(options, message):
    with pytest.raises(ConfigError, match=message):
        config_with({"method": "meta_gradient", "meta_gradient": options})


def test_truncation_longer_than_lifetime_rejected():
    # The default digits task has 5-way 10-shot lifetimes of 50 steps.
    experiment = build_experiment(config_with({"method": "meta_gradient", "meta_gradient": {"truncation": 50}}))

    with pytest.raises(ConfigError, match="from 1 to 49"):
        experiment.evolution()


def test_meta_gradient_config_defaults():
    config = config_with({"method": "meta_gradient"})

    assert config.evolution.meta_gradient == MetaGradientConfig(truncation=0, clip_norm=1.0)
    assert isinstance(build_experiment(config).evolution(), MetaGradient)
