"""Spiking networks on control tasks: signed input coding, the spiking lifetime, config errors."""

from __future__ import annotations

import copy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import spiking
from neuroevo.config import SpikingConfig, config_from_dict, read_yaml
from neuroevo.errors import ConfigError
from neuroevo.experiment import build_experiment
from neuroevo.tasks.control import make_environment

SPIKING_CARTPOLE = {
    "task": {"name": "control", "env": "CartPole-v1", "max_steps": 40, "perturb_step": 10, "recovery_window": 20},
    "network": {"neurons": "lif", "output_activation": "identity", "init_gain": 3.0},
    "spiking": {"ticks": 8, "encoder": "rate", "max_rate": 1.0, "signed_inputs": True},
    "signal": {"feedback": "none"},
    "rule": {"name": "mlp", "features": ["pre", "post", "weight", "reward", "stdp_ltp"], "hidden": [4]},
    "evolution": {"population": 4, "lifetimes_per_member": 2, "std": 0.1},
}


def spiking_cartpole(**sections) -> dict:
    """Copy of SPIKING_CARTPOLE with the given sections updated key by key."""
    data = copy.deepcopy(SPIKING_CARTPOLE)
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def numpy_output_counts(raster: np.ndarray, weights: list[np.ndarray], config: SpikingConfig) -> np.ndarray:
    """Output spike counts of a single-layer LIF network (input, bias -> output), as a NumPy loop over ticks.

    Every tick the output receives the input spikes of the previous tick (none at tick 0)
    and the bias neuron's spike, which it emits on every tick.
    """
    w_in, w_bias = weights
    decay = np.float32(np.exp(-config.dt / config.tau_mem))
    v = np.zeros(w_in.shape[0], np.float32)
    previous = np.zeros(w_in.shape[1], np.float32)
    counts = np.zeros(w_in.shape[0])
    for tick_spikes in raster:
        v = decay * v + (w_in @ previous + w_bias[:, 0])
        fired = v >= config.v_threshold
        counts += fired
        v = np.where(fired, config.v_reset, v)
        previous = tick_spikes
    return counts


def test_split_signed_routes_each_sign():
    x = jnp.array([0.5, -0.25, 0.0, 1.5, -2.0])

    split = np.asarray(spiking.split_signed(x))

    np.testing.assert_array_equal(split[:5], [0.5, 0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(split[5:], [0.0, 0.25, 0.0, 0.0, 1.0])


def test_signed_latency_raster_exact():
    config = SpikingConfig(ticks=5, encoder="latency", signed_inputs=True)
    x = jnp.array([1.0, -0.5, 0.0])

    raster = np.asarray(spiking.encode(config, 0, x, 6))

    expected = np.zeros((5, 6))
    expected[0, 0] = 1.0  # +1.0 on the positive neuron of input 0, at tick round(0 * 4)
    expected[2, 4] = 1.0  # -0.5 on the negative neuron of input 1, at tick round(0.5 * 4)
    np.testing.assert_array_equal(raster, expected)


def test_signed_inputs_double_input_group():
    experiment = build_experiment(config_from_dict(SPIKING_CARTPOLE))

    assert experiment.task.n_inputs == 4
    assert experiment.learner.topology.n_inputs == 8
    assert isinstance(experiment.learner, spiking.SpikingLearner)


def test_bundled_config_builds():
    config = config_from_dict(read_yaml(Path(__file__).parents[1] / "configs" / "cartpole_spiking.yaml"))

    experiment = build_experiment(config)

    assert isinstance(experiment.learner, spiking.SpikingLearner)
    assert experiment.learner.topology.n_inputs == 8
    assert experiment.task.discrete_actions


def test_spiking_control_acts_on_spike_counts():
    """Without plasticity, the returns match a gymnax loop that acts on NumPy LIF spike counts.

    The test uses the latency encoder, because the rate encoder seeds its draws with
    the bits of the input, which jit may change in the last place.
    """
    data = spiking_cartpole(task={"episodes": 2, "weight_reset": "lifetime"}, spiking={"encoder": "latency"})
    experiment = build_experiment(config_from_dict(data))
    task, learner = experiment.task, experiment.learner
    params = experiment.initial_rule_params()
    instance = task.sample(jax.random.key(3), task.data("test"))
    key = jax.random.key(22)  # initial weights under which both actions occur

    result = jax.jit(lambda key: task.lifetime(learner, params, instance, key, plastic=False))(key)

    env, _ = make_environment("CartPole-v1")
    key_reset, key_network, key_steps = jax.random.split(key, 3)
    weights = [np.asarray(w) for w in learner.init_network(key_network).weights]  # blocks: input->output, bias->output
    observation, state = env.reset(key_reset, instance.env_params)
    returns, episode_return, actions = [], 0.0, set()
    for step_key in jax.random.split(key_steps, task.lifetime_length):
        key_env = jax.random.split(step_key, 3)[0]
        raster = np.asarray(spiking.encode(learner.spiking, learner.seed, task.observe(observation), 8))
        action = int(np.argmax(numpy_output_counts(raster, weights, learner.spiking)))
        actions.add(action)
        observation, state, reward, terminated, truncated, _ = env.step(key_env, state, action, instance.env_params)
        episode_return += float(reward)
        if bool(terminated) or bool(truncated):
            returns.append(episode_return)
            episode_return = 0.0
        if len(returns) == 2:
            break

    assert actions == {0, 1}  # both output neurons win at some step
    np.testing.assert_allclose(np.asarray(result.details.episode_returns), returns)


def test_spiking_control_lifetime_finite():
    experiment = build_experiment(config_from_dict(spiking_cartpole(task={"episodes": 2})))
    task, learner = experiment.task, experiment.learner
    params = learner.rule.random_params(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 4)

    def run(key):
        return task.lifetime(learner, params, task.sample(key, task.data("train")), key)

    result = jax.jit(jax.vmap(run))(keys)
    returns = np.asarray(result.details.episode_returns)

    assert np.all(np.isfinite(np.asarray(result.fitness)))
    assert np.all(returns >= 1.0)
    assert np.all(returns <= 40.0)
    np.testing.assert_allclose(np.asarray(result.curve.online).sum(axis=1), returns.sum(axis=1))


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"task": {"env": "Pendulum-v1", "vary": ["l"], "train_ranges": [[0.8, 1.2]], "test_ranges": [[1.2, 1.4]]}, "network": {"output_activation": "tanh"}}, "use network.neurons=rate"),
        ({"spiking": {"signed_inputs": False}}, "set spiking.signed_inputs=true"),
        ({"spiking": {"encoder": "raster"}}, "set spiking.signed_inputs=false"),
        ({"spiking": {"encoder": "raster", "signed_inputs": False}}, "set spiking.encoder=rate or latency"),
    ],
)
def test_spiking_control_config_errors(sections, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(config_from_dict(spiking_cartpole(**sections)))


def test_spiking_regression_rejected():
    data = {
        "task": {"name": "sinusoid"},
        "network": {"neurons": "lif", "output_activation": "identity"},
        "signal": {"feedback": "none"},
        "rule": {"name": "mlp", "features": ["pre", "post", "weight"]},
        "evolution": {"fitness": "neg_loss"},
    }

    with pytest.raises(ConfigError, match="classification and discrete-action control"):
        build_experiment(config_from_dict(data))


def test_signed_inputs_rejected_on_local_topology():
    data = {
        "task": {"name": "digits"},
        "network": {"neurons": "lif", "topology": "local", "output_activation": "softmax"},
        "spiking": {"signed_inputs": True},
        "signal": {"feedback": "none"},
        "rule": {"name": "mlp", "features": ["pre", "post", "weight", "error"]},
    }

    with pytest.raises(ConfigError, match="no longer form the task's image"):
        build_experiment(config_from_dict(data))
