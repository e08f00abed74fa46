"""Control tasks on gymnax: the task protocol, held-out physics ranges, return accounting, evolution."""

from __future__ import annotations

import dataclasses

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import graph
from neuroevo.config import EvolutionConfig, config_from_dict
from neuroevo.errors import ConfigError
from neuroevo.evolve import Evolution
from neuroevo.experiment import build_experiment
from neuroevo.lifetime import Learner, LearningSignals
from neuroevo.rules.classic import ClassicRule
from neuroevo.rules import ABCDRule, ThreeFactorRule
from neuroevo.structural import StructureConfig
from neuroevo.tasks.control import ENVIRONMENTS, ControlConfig, ControlTask, make_environment

# One varied field per environment with disjoint meta-train and meta-test ranges.
ENV_CASES = {
    "CartPole-v1": ("length", (0.4, 0.8), (0.2, 0.4)),
    "Acrobot-v1": ("link_mass_2", (0.8, 1.2), (1.2, 1.5)),
    "MountainCar-v0": ("force", (0.001, 0.0012), (0.0008, 0.001)),
    "Pendulum-v1": ("l", (0.8, 1.2), (1.2, 1.4)),
}


def make_task(env: str = "CartPole-v1", **options) -> ControlTask:
    field, train, test = ENV_CASES[env]
    defaults = dict(env=env, vary=(field,), train_ranges=(train,), test_ranges=(test,), max_steps=40, perturb_step=10, recovery_window=20)
    config = ControlConfig(**{**defaults, **options})
    config.validate()
    return ControlTask.from_config(config)


def make_learner(task: ControlTask, rule=None) -> Learner:
    topology = graph.layered_topology(task.n_inputs, (), task.n_outputs, output_activation=task.output_activation)
    rule = rule or ABCDRule(eta_init=0.1, per_edge=True)
    return Learner(topology, rule, feedback="none")


def test_every_environment_covered():
    assert set(ENV_CASES) == set(ENVIRONMENTS)


@pytest.mark.parametrize("env", list(ENV_CASES))
def test_protocol_contract(env):
    task = make_task(env, episodes=2)
    learner = make_learner(task)
    gym_env, gym_params = make_environment(env)
    params = learner.rule.random_params(jax.random.key(0))

    assert task.metric == "return"
    assert task.signals == ("reward",)
    assert task.n_inputs == gym_env.observation_space(gym_params).shape[0]
    assert task.n_outputs == (gym_env.num_actions if ENVIRONMENTS[env].discrete else 1)
    assert task.output_activation == ("identity" if ENVIRONMENTS[env].discrete else "tanh")
    hash(task)

    instance = task.sample(jax.random.key(1), task.data("train"))
    result = jax.jit(lambda key: task.lifetime(learner, params, instance, key))(jax.random.key(2))

    assert result.curve.online.shape == (2 * 40,)
    assert result.details.episode_returns.shape == (2,)
    assert result.fitness.shape == result.metric.shape == result.details.window_return.shape == ()
    assert np.isfinite(float(result.fitness))
    np.testing.assert_allclose(float(result.metric), float(result.details.episode_returns.mean()), rtol=1e-6)
    np.testing.assert_allclose(float(result.curve.online.sum()), float(result.details.episode_returns.sum()), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("env", list(ENV_CASES))
def test_params_within_declared_ranges(env):
    task = make_task(env)
    field, train, test = ENV_CASES[env]
    keys = jax.random.split(jax.random.key(3), 500)

    for split, (low, high) in (("train", train), ("test", test)):
        instances = jax.vmap(lambda key: task.sample(key, task.data(split)))(keys)
        values = np.asarray(getattr(instances.env_params, field))
        assert values.min() >= np.float32(low), split
        assert values.max() <= np.float32(high), split
        assert values.max() - values.min() > 0.8 * (high - low), split  # the whole range is drawn
        assert np.all(np.asarray(instances.env_params.max_steps_in_episode) == 40)


def test_cartpole_derived_fields_follow_length():
    task = make_task("CartPole-v1", vary=("length", "masspole"), train_ranges=((0.4, 0.8), (0.05, 0.1)), test_ranges=((0.2, 0.4), (0.1, 0.2)))

    params = task.sample(jax.random.key(4), task.data("test")).env_params

    np.testing.assert_allclose(float(params.polemass_length), float(params.masspole * params.length), rtol=1e-6)
    np.testing.assert_allclose(float(params.total_mass), float(params.masscart + params.masspole), rtol=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"env": "Breakout-MinAtar"}, "not supported"),
        ({"vary": ("gravity_x",)}, "cannot vary"),
        ({"vary": ("max_steps_in_episode",)}, "cannot vary"),
        ({"vary": ("total_mass",)}, "cannot vary"),
        ({"train_ranges": ((0.3, 0.8),)}, "overlap"),
        ({"test_ranges": ((0.9, 0.5),)}, "low < high"),
        ({"test_ranges": ((-0.5, 0.2),)}, "must stay positive"),
        ({"train_ranges": ((0.4, 0.8), (1.0, 2.0))}, "one [low, high] per field"),
        ({"vary": ()}, "empty"),
        ({"perturb_step": 450, "recovery_window": 100}, "exceeds"),
    ],
)
def test_invalid_config_rejected(options, message):
    config = ControlConfig(**options)

    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config.validate()


def test_touching_ranges_accepted():
    ControlConfig(train_ranges=((0.4, 0.8),), test_ranges=((0.2, 0.4),)).validate()


def test_output_activation_mismatch_rejected():
    data = {"task": {"name": "control"}, "rule": {"name": "abcd", "per_edge": True}, "signal": {"feedback": "none"}, "network": {"output_activation": "softmax"}}

    with pytest.raises(ConfigError, match="output_activation"):
        build_experiment(config_from_dict(data))


def test_error_feature_rejected_on_reward_task():
    data = {"task": {"name": "control"}, "rule": {"name": "abcd", "modulated": True}, "network": {"output_activation": "identity"}}

    with pytest.raises(ConfigError, match="error"):
        build_experiment(config_from_dict(data))


def test_returns_match_python_loop():
    """Fixed policy (no plasticity), 3 episodes of at most 50 steps: returns as a step-by-step gymnax loop counts them."""
    task = make_task("CartPole-v1", episodes=3, max_steps=50, weight_reset="lifetime")
    learner = make_learner(task)
    params = learner.rule.init(jax.random.key(0))
    instance = task.sample(jax.random.key(5), task.data("test"))
    key = jax.random.key(6)

    result = jax.jit(lambda key: task.lifetime(learner, params, instance, key, plastic=False))(key)

    env, _ = make_environment("CartPole-v1")
    key_reset, key_network, key_steps = jax.random.split(key, 3)
    weights = [np.asarray(w) for w in learner.init_network(key_network).weights]  # blocks: input->output, bias->output
    spec = ENVIRONMENTS["CartPole-v1"]
    observation, state = env.reset(key_reset, instance.env_params)
    returns, rewards, episode_return = [], [], 0.0
    for step_key in jax.random.split(key_steps, 150):
        key_env = jax.random.split(step_key, 3)[0]
        x = (np.asarray(observation) - np.array(spec.observation_offset)) / np.array(spec.observation_scale)
        action = int(np.argmax(weights[0] @ x + weights[1][:, 0]))
        observation, state, reward, terminated, truncated, _ = env.step(key_env, state, action, instance.env_params)
        reward = float(reward) if len(returns) < 3 else 0.0
        rewards.append(reward)
        episode_return += reward
        if bool(terminated) or bool(truncated):
            if len(returns) < 3:
                returns.append(episode_return)
            episode_return = 0.0

    assert len(returns) == 3
    np.testing.assert_allclose(np.asarray(result.details.episode_returns), returns, atol=1e-5)
    np.testing.assert_allclose(np.asarray(result.curve.online), rewards, atol=1e-6)
    assert float(result.metric) == pytest.approx(np.mean(returns), abs=1e-4)


def test_reward_reaches_modulated_rule():
    task = make_task("CartPole-v1")
    topology = graph.layered_topology(task.n_inputs, (), task.n_outputs, output_activation="identity")
    learner = Learner(topology, ThreeFactorRule(modulator="reward"), feedback="none")
    params = learner.rule.random_params(jax.random.key(0))
    network = learner.init_network(jax.random.key(1))
    states, activations = graph.propagate(topology, network.weights, jnp.arange(4.0) / 4)
    zeros = jnp.zeros((2,))

    def weight_change(reward: float) -> list:
        learned = learner.learn(params, network, states, activations, LearningSignals(zeros, jnp.float32(reward)))
        return [learned.weights[block] - network.weights[block] for block in range(len(topology.blocks))]

    for unrewarded, rewarded, unit in zip(weight_change(0.0), weight_change(2.0), weight_change(1.0)):
        np.testing.assert_array_equal(unrewarded, 0.0)
        np.testing.assert_allclose(rewarded, 2.0 * unit, rtol=1e-5, atol=1e-6)
        assert np.any(np.asarray(rewarded) != 0.0)


def test_rerandomised_weights_cut_static_policy_window():
    """A good fixed policy loses its window reward when the weights are re-randomised and cannot relearn."""
    task = make_task("CartPole-v1", max_steps=120, perturb_step=20, recovery_window=100, weight_init="evolved")
    topology = graph.layered_topology(4, (), 2, output_activation="identity")
    learner = make_learner(task, rule=task.prepare_rule(ClassicRule("hebbian"), topology))
    params = learner.rule.init(jax.random.key(0))
    # Push right when the pole leans or turns right: score(right) - score(left) = theta + theta_dot.
    good = jnp.array([[0.0, 0.0, -1.0, -1.0], [0.0, 0.0, 1.0, 1.0]])
    params["initial_weights"]["block0"] = good
    keys = jax.random.split(jax.random.key(7), 16)

    def windows(task_variant):
        run = jax.vmap(lambda key: task_variant.lifetime(learner, params, task_variant.sample(key, task_variant.data("test")), key, plastic=False))
        return np.asarray(run(keys).details.window_return)

    clean = windows(task)
    perturbed = windows(dataclasses.replace(task, perturb=True))

    assert clean.mean() > 95.0
    assert perturbed.mean() < 0.5 * clean.mean()


def test_short_evolution_improves_cartpole():
    task = make_task("CartPole-v1", max_steps=100, perturb_step=10, recovery_window=20)
    learner = make_learner(task)
    config = EvolutionConfig(population=16, lifetimes_per_member=4, std=0.1, learning_rate=0.1)
    evolution = Evolution(learner, task, config, learner.rule.init(jax.random.key(0)))
    pools = task.data("train")
    state = evolution.init(jax.random.key(1), pools)

    means = []
    for _ in range(12):
        state, metrics = evolution.generation(state, pools)
        means.append(float(metrics.mean_fitness))

    assert int(metrics.nan_count) == 0
    # Random weights balance the pole for about 10-20 of the 100 steps.
    assert np.mean(means[:3]) < 30.0
    assert np.mean(means[-3:]) > np.mean(means[:3]) + 40.0


def count_conds(jaxpr) -> int:
    """Number of ``cond`` equations in ``jaxpr``, nested ones included."""
    own = sum(equation.primitive.name == "cond" for equation in jaxpr.eqns)
    return own + sum(count_conds(sub) for sub in jax.extend.core.subjaxprs(jaxpr))


def test_refresh_stays_a_branch_under_vmap():
    # The per-lifetime blends of a control step must not turn the refresh's lax.cond into a
    # select, which would run the refresh on every step.
    task = make_task(episodes=2)
    topology = graph.layered_topology(task.n_inputs, (6,), task.n_outputs, output_activation=task.output_activation)
    rule = ABCDRule(eta_init=0.1)
    instances = jax.vmap(lambda key: task.sample(key, task.data("train")))(jax.random.split(jax.random.key(0), 2))
    keys = jax.random.split(jax.random.key(1), 2)

    def conds(structure: StructureConfig) -> int:
        learner = Learner(topology, rule, feedback="none", structure=structure)
        params = learner.rule.init(jax.random.key(2))
        run = jax.vmap(lambda instance, key: task.lifetime(learner, params, instance, key).fitness)
        return count_conds(jax.make_jaxpr(run)(instances, keys).jaxpr)

    assert conds(StructureConfig(every=5, redo=True)) == conds(StructureConfig()) + 1
