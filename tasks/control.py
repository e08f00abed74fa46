"""Reinforcement-learning control tasks on gymnax environments, with held-out physics.

A task instance is one set of environment parameters (``EnvParams``: pole length, masses,
gravity, ...). Each varied field is drawn uniformly from its meta-train or its meta-test
range, and the two ranges of a field are disjoint. A lifetime is a fixed number of env steps,
one ``lax.scan``: the network acts on the normalised observation (argmax of the output
states for discrete actions, ``high * tanh(h_out)`` for continuous ones), and after each step the rule
updates every edge with the step's reward, or its reward-prediction error against a running
average, as the learning signal. Weights start random in every episode (or once per
lifetime, with ``weight_reset: lifetime``), or from evolved initial weights.

gymnax resets an environment automatically when an episode ends. A lifetime of ``episodes``
episodes runs ``episodes * max_steps`` steps, which always suffices; the steps after the
last episode ends change nothing and earn no reward. The return of an episode is the sum of
its rewards.

A spiking learner (``network.neurons: lif``) runs discrete environments only. Its output
states are the readout logits (spike counts or first-spike times), and
``spiking.signed_inputs`` gives each signed observation component two input neurons.

For recovery experiments, the weights can be perturbed at step ``perturb_step`` of every
episode (re-randomised, or multiplied by ``perturb_scale``); the reward collected in the
``recovery_window`` steps from there on measures recovery.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from neuroevo import graph
from neuroevo import lifetime as lifetime_lib  # neuroevo.lifetime imports this package, so only the module is bound here
from neuroevo.errors import ConfigError
from neuroevo.rules import base as rules_base

if TYPE_CHECKING:
    from neuroevo.lifetime import Learner, NetworkState

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Environment:
    """Per-environment constants: the kind of action and the observation normalisation."""

    discrete: bool
    observation_offset: tuple[float, ...]  # subtracted from each observation component
    observation_scale: tuple[float, ...]  # then divided by this, so typical values lie in [-1, 1]
    derived: tuple[str, ...] = ()  # EnvParams fields computed from others; set, never sampled


ENVIRONMENTS: dict[str, Environment] = {
    "CartPole-v1": Environment(True, (0.0, 0.0, 0.0, 0.0), (2.4, 2.0, 0.21, 2.0), derived=("total_mass", "polemass_length")),
    "Acrobot-v1": Environment(True, (0.0,) * 6, (1.0, 1.0, 1.0, 1.0, 4 * math.pi, 9 * math.pi)),
    "MountainCar-v0": Environment(True, (-0.3, 0.0), (0.9, 0.07)),
    "Pendulum-v1": Environment(False, (0.0, 0.0, 0.0), (1.0, 1.0, 8.0)),
}
_FIXED_FIELDS = ("max_steps_in_episode", "available_torque")  # set from the config or not a scalar


@functools.lru_cache(maxsize=None)
def make_environment(name: str) -> tuple[Any, Any]:
    """Return gymnax's ``(env, default EnvParams)`` for a supported environment name."""
    import gymnax

    if name not in ENVIRONMENTS:
        raise ConfigError(f"task.env={name!r} is not supported; choose one of {', '.join(ENVIRONMENTS)}")
    return gymnax.make(name)


def varied_fields(name: str) -> tuple[str, ...]:
    """EnvParams fields of environment ``name`` that a task may vary."""
    _, params = make_environment(name)
    excluded = set(_FIXED_FIELDS) | set(ENVIRONMENTS[name].derived)
    return tuple(field for field in params.__dataclass_fields__ if field not in excluded)


def with_derived_fields(name: str, params: Any) -> Any:
    """Recompute the EnvParams fields that depend on others (CartPole: total mass, pole mass times length)."""
    if name == "CartPole-v1":
        return params.replace(total_mass=params.masscart + params.masspole, polemass_length=params.masspole * params.length)
    return params


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    """Options of a control task (config section ``task`` with ``name: control``)."""

    env: str = "CartPole-v1"
    vary: tuple[str, ...] = ("length",)  # EnvParams fields drawn per task instance
    train_ranges: tuple[tuple[float, ...], ...] = ((0.4, 0.8),)  # [low, high] per varied field, meta-train
    test_ranges: tuple[tuple[float, ...], ...] = ((0.2, 0.4),)  # [low, high] per varied field, meta-test
    episodes: int = 1  # episodes per lifetime
    max_steps: int = 0  # steps per episode before truncation; 0 keeps the environment's own limit
    normalize: bool = True  # scale observations to about [-1, 1] with fixed per-environment constants
    reward_signal: Literal["reward", "rpe"] = "reward"  # rpe: reward minus its running average
    baseline_rate: float = 0.05  # step size of the running average for rpe
    weight_reset: Literal["episode", "lifetime"] = "episode"  # when the network draws fresh weights
    weight_init: Literal["random", "evolved"] = "random"  # evolved: initial weights are evolved with the rule
    perturb_step: int = 100  # step of each episode at which perturbed lifetimes change the weights
    perturb_kind: Literal["rerandomize", "scale"] = "rerandomize"
    perturb_scale: float = 0.5  # weight factor of perturb_kind=scale
    recovery_window: int = 100  # steps from perturb_step over which recovery is measured
    perturb_in_evolution: bool = False  # also perturb the lifetimes that evolution scores

    def validate(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"task.env={self.env!r} is not supported; choose one of {', '.join(ENVIRONMENTS)}")

        allowed = varied_fields(self.env)
        if not self.vary:
            raise ConfigError(f"task.vary is empty, so meta-train and meta-test would be the same; list fields of {self.env} to vary, from {', '.join(allowed)}")
        for field in self.vary:
            if field not in allowed:
                raise ConfigError(f"task.vary contains {field!r}, which {self.env} cannot vary; choose from {', '.join(allowed)}")
        if len(set(self.vary)) != len(self.vary):
            raise ConfigError(f"task.vary={list(self.vary)} repeats a field; list each once")

        for key in ("train_ranges", "test_ranges"):
            ranges = getattr(self, key)
            if len(ranges) != len(self.vary):
                raise ConfigError(f"task.{key} has {len(ranges)} ranges for {len(self.vary)} varied fields; give one [low, high] per field of task.vary")
            for field, bounds in zip(self.vary, ranges):
                if len(bounds) != 2 or not bounds[0] < bounds[1]:
                    raise ConfigError(f"task.{key} entry {list(bounds)} for {field!r} must be [low, high] with low < high")
        defaults = make_environment(self.env)[1]
        for key in ("train_ranges", "test_ranges"):
            for field, bounds in zip(self.vary, getattr(self, key)):
                # Masses, lengths, forces and time steps of these environments are positive. Zero or
                # negative values make the physics divide by zero or run backwards.
                if float(getattr(defaults, field)) > 0 and bounds[0] <= 0:
                    raise ConfigError(f"task.{key} entry {list(bounds)} for {field!r} reaches {bounds[0]}, but {field} must stay positive (default {float(getattr(defaults, field)):g}); use a low bound above 0")
        for field, train, test in zip(self.vary, self.train_ranges, self.test_ranges):
            if train[0] < test[1] and test[0] < train[1]:
                raise ConfigError(
                    f"the meta-train range {list(train)} and meta-test range {list(test)} of {field!r} overlap; "
                    "make them disjoint so meta-test physics are held out"
                )

        if self.episodes < 1:
            raise ConfigError(f"task.episodes={self.episodes} must be at least 1")
        if self.max_steps < 0:
            raise ConfigError(f"task.max_steps={self.max_steps} is negative; use 0 (the environment's limit) or a positive count")
        if not 0.0 < self.baseline_rate <= 1.0:
            raise ConfigError(f"task.baseline_rate={self.baseline_rate} must be in (0, 1]")
        if self.perturb_step < 0 or self.recovery_window < 1:
            raise ConfigError(f"task.perturb_step={self.perturb_step} must be >= 0 and task.recovery_window={self.recovery_window} >= 1")
        steps = self.max_steps or int(make_environment(self.env)[1].max_steps_in_episode)
        if self.perturb_step + self.recovery_window > steps:
            raise ConfigError(
                f"task.perturb_step + task.recovery_window = {self.perturb_step + self.recovery_window} exceeds the "
                f"{steps} steps of an episode; lower either"
            )


@dataclasses.dataclass(frozen=True)
class WithInitialWeights:
    """A rule whose parameters also hold the network's initial weights, so evolution tunes both.

    Parameters: ``{"rule": <the wrapped rule's params>, "initial_weights": {"block<b>": (n_dst, n_src)}}``.
    The initial weights fit one topology only.
    """

    rule: Any
    topology: graph.Topology

    per_edge = True  # the initial weights tie the parameters to one graph

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.rule.feature_names

    def bind(self, block_shapes: tuple[tuple[int, ...], ...]) -> WithInitialWeights:
        """Bind the wrapped rule to the graph's block shapes (it may be a per-edge rule itself)."""
        return dataclasses.replace(self, rule=rules_base.bind(self.rule, block_shapes))

    def _with_weights(self, rule_params: Any, key: jax.Array) -> Any:
        masks = graph.init_masks(self.topology)
        weights = graph.init_weights(key, self.topology, masks, "normal", 1.0)
        return {"rule": rule_params, "initial_weights": {f"block{block}": w for block, w in enumerate(weights)}}

    def init(self, key: jax.Array) -> Any:
        key_rule, key_weights = jax.random.split(key)
        return self._with_weights(self.rule.init(key_rule), key_weights)

    def random_params(self, key: jax.Array) -> Any:
        key_rule, key_weights = jax.random.split(key)
        return self._with_weights(self.rule.random_params(key_rule), key_weights)

    def initial_weights(self, params: Any) -> graph.Weights:
        return tuple(params["initial_weights"][f"block{block}"] for block in range(len(self.topology.blocks)))

    def block_params(self, params: Any, block: int) -> Any:
        """Select the wrapped rule's parameters for ``block``."""
        return rules_base.block_params(self.rule, params["rule"], block)

    def init_state(self, shape: tuple[int, ...]) -> Any:
        return self.rule.init_state(shape)

    @property
    def growth_output(self) -> bool:
        return bool(getattr(self.rule, "growth_output", False))

    def apply(self, params: Any, features: Any, state: Any) -> tuple[jax.Array, Any]:
        return self.rule.apply(params, features, state)

    def apply_with_growth(self, params: Any, features: Any, state: Any) -> tuple[jax.Array, jax.Array, Any]:
        return self.rule.apply_with_growth(params, features, state)


class ControlInstance(NamedTuple):
    """One task instance: environment parameters (a gymnax EnvParams pytree, scalar leaves)."""

    env_params: Any


class ControlDetails(NamedTuple):
    """Task-specific part of a control lifetime's result (``LifetimeResult.details``).

    The result's ``metric`` is the mean episode return, its ``fitness`` the same or NaN if
    the weights ever became non-finite, and ``curve.online`` the reward of every step
    (episodes * max_steps,), 0 after the last episode.
    """

    episode_returns: jax.Array  # (episodes,)
    window_return: jax.Array  # () mean over episodes of the reward collected in the recovery window


def with_refresh_clock(learner: Learner, network: NetworkState, time: jax.Array) -> NetworkState:
    """Set the structure step counter to ``time``, the env steps since the lifetime began.

    The blends below with ``active``, ``done`` and the perturbation make the counter carried
    in the network a batched value under ``vmap``. That would turn the ``lax.cond`` of the
    refresh into a select that runs the refresh on every step. ``time`` comes from the scan
    and is the same for every lifetime, so the refresh stays a branch.

    NOTE: refreshes therefore follow env steps, not learning steps. Steps after the last
    episode count too, and after a weight reset per episode the first window is partial.
    """
    if not learner.structure.active:
        return network
    return network._replace(structure=network.structure._replace(step=time))


class _Carry(NamedTuple):
    network: lifetime_lib.NetworkState
    env_state: Any  # gymnax EnvState
    observation: jax.Array  # (n_obs,)
    episode: jax.Array  # () int32, episodes completed
    step: jax.Array  # () int32, steps taken in the current episode
    episode_return: jax.Array  # () reward so far in the current episode
    window_return: jax.Array  # () reward so far in the current episode's recovery window
    baseline: jax.Array  # () running average of the reward
    returns: jax.Array  # (episodes,) return of each finished episode
    window_returns: jax.Array  # (episodes,) recovery-window reward of each finished episode
    finite: jax.Array  # () bool, every weight stayed finite


@dataclasses.dataclass(frozen=True)
class ControlTask:
    """Static description of a control task; the range arrays of a split are passed to :meth:`sample`."""

    config: ControlConfig
    n_inputs: int
    n_outputs: int
    max_steps: int
    perturb: bool = False  # perturb the weights in every episode (see the module docstring)

    metric = "return"
    signals = ("reward",)

    @classmethod
    def from_config(cls, config: ControlConfig) -> ControlTask:
        env, params = make_environment(config.env)
        n_outputs = env.num_actions if ENVIRONMENTS[config.env].discrete else int(env.action_space(params).shape[0] or 1)
        return cls(
            config=config,
            n_inputs=int(env.observation_space(params).shape[0]),
            n_outputs=int(n_outputs),
            max_steps=config.max_steps or int(params.max_steps_in_episode),
            perturb=config.perturb_in_evolution,
        )

    def prepare_rule(self, rule: Any, topology: graph.Topology) -> Any:
        """Wrap ``rule`` with evolved initial weights when ``weight_init: evolved``, else return it unchanged."""
        if self.config.weight_init == "evolved":
            return WithInitialWeights(rule, topology)
        return rule

    @property
    def discrete_actions(self) -> bool:
        """Whether the environment's actions are discrete (argmax of the outputs) rather than continuous."""
        return ENVIRONMENTS[self.config.env].discrete

    @property
    def output_activation(self) -> str:
        """Output activation the action decoding expects: linear scores for argmax, tanh for continuous actions."""
        return "identity" if self.discrete_actions else "tanh"

    @property
    def lifetime_length(self) -> int:
        return self.config.episodes * self.max_steps

    def describe(self) -> str:
        episodes = self.config.episodes
        return f"{self.config.env}, {episodes} episode{'' if episodes == 1 else 's'}"

    def data(self, split: str) -> jax.Array:
        """Ranges of the varied fields in ``split``: (n_varied, 2) float32 rows of [low, high]."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        ranges = self.config.train_ranges if split == "train" else self.config.test_ranges
        return jnp.asarray(ranges, jnp.float32)

    def sample(self, key: jax.Array, ranges: jax.Array) -> ControlInstance:
        """Draw environment parameters uniformly within ``ranges`` (one split)."""
        _, params = make_environment(self.config.env)
        values = jax.random.uniform(key, (len(self.config.vary),), minval=ranges[:, 0], maxval=ranges[:, 1])
        params = params.replace(max_steps_in_episode=self.max_steps, **{field: values[index] for index, field in enumerate(self.config.vary)})
        return ControlInstance(with_derived_fields(self.config.env, params))

    # Acting ------------------------------------------------------------------------------------

    def observe(self, observation: jax.Array) -> jax.Array:
        """Network input of one observation (normalised with the environment's constants when configured)."""
        if not self.config.normalize:
            return observation.astype(jnp.float32)
        spec = ENVIRONMENTS[self.config.env]
        return (observation - jnp.asarray(spec.observation_offset)) / jnp.asarray(spec.observation_scale)

    def act(self, output_state: jax.Array, env_params: Any) -> jax.Array:
        """Action from the output states (n_out,): argmax for discrete actions, ``high * tanh(h)`` for continuous ones."""
        env, _ = make_environment(self.config.env)
        if ENVIRONMENTS[self.config.env].discrete:
            return jnp.argmax(output_state)
        return env.action_space(env_params).high * jnp.tanh(output_state)

    def perturbed(self, learner: Learner, network: NetworkState, key: jax.Array) -> NetworkState:
        """Re-randomise or scale the network's weights, as configured."""
        if self.config.perturb_kind == "scale":
            weights = tuple(w * self.config.perturb_scale for w in network.weights)
        else:
            weights = graph.init_weights(key, learner.topology, network.masks, learner.weight_init, learner.weight_gain)
        return network._replace(weights=weights)

    # Lifetime ----------------------------------------------------------------------------------

    def initial_network(self, learner: Learner, params: Any, key: jax.Array) -> NetworkState:
        """Fresh network; with ``weight_init: evolved`` its weights are the evolved initial weights."""
        network = learner.init_network(key)
        if self.config.weight_init == "evolved":
            network = network._replace(weights=tuple(w * m for w, m in zip(learner.rule.initial_weights(params), network.masks)))
        return network

    def lifetime(
        self, learner: Learner, params: Any, instance: ControlInstance, key: jax.Array, plastic: bool = True, track_query: bool = False
    ) -> lifetime_lib.LifetimeResult:
        """Run ``episodes`` episodes in one ``lax.scan`` of ``episodes * max_steps`` env steps (see :meth:`rollout`).

        ``plastic=False`` keeps the initial weights of every episode (the no-plasticity
        baseline, same draws). A control task has no query set, so ``track_query`` changes
        nothing: the curve's ``online`` field is the reward of every step.
        """
        carry, (curve, _, _) = self.rollout(learner, params, instance, key, plastic)
        mean_return = carry.returns.mean()
        nan = jnp.full_like(curve, jnp.nan)
        return lifetime_lib.LifetimeResult(
            fitness=jnp.where(carry.finite, mean_return, jnp.nan),
            metric=mean_return,
            loss=jnp.float32(jnp.nan),
            curve=lifetime_lib.StepMetrics(loss=nan, online=curve, query=nan),
            details=ControlDetails(episode_returns=carry.returns, window_return=carry.window_returns.mean()),
            structure=learner.structure_metrics(carry.network) if plastic else (),
        )

    def rollout(
        self,
        learner: Learner,
        params: Any,
        instance: ControlInstance,
        key: jax.Array,
        plastic: bool = True,
        record: Callable[[NetworkState, tuple, tuple, lifetime_lib.LearningSignals], Any] | None = None,
    ) -> tuple[_Carry, tuple[jax.Array, jax.Array, Any]]:
        """Run the env steps of a lifetime in one ``lax.scan`` and return the final loop state and the per-step outputs.

        The per-step outputs are three. The reward (steps,) is 0 after the last episode. A bool
        (steps,) marks the steps while an episode runs. The third is ``record(network, states,
        activations, learning_signals)`` of each step's presentation, taken before the rule
        learns from it, or ``()`` when ``record`` is None. ``neuroevo inspect`` records the
        rule's features this way.
        """
        config = self.config
        env, _ = make_environment(config.env)
        env_params = instance.env_params
        key_reset, key_network, key_steps = jax.random.split(key, 3)

        observation, env_state = env.reset(key_reset, env_params)
        zeros = jnp.zeros((config.episodes,), jnp.float32)
        carry = _Carry(
            network=self.initial_network(learner, params, key_network),
            env_state=env_state,
            observation=observation,
            episode=jnp.int32(0),
            step=jnp.int32(0),
            episode_return=jnp.float32(0.0),
            window_return=jnp.float32(0.0),
            baseline=jnp.float32(0.0),
            returns=zeros,
            window_returns=zeros,
            finite=jnp.bool_(True),
        )

        def scan_step(carry: _Carry, inputs: tuple[jax.Array, jax.Array]) -> tuple[_Carry, tuple[jax.Array, jax.Array, Any]]:
            key, time = inputs
            key_env, key_fresh, key_perturb = jax.random.split(key, 3)
            active = carry.episode < config.episodes
            network = with_refresh_clock(learner, carry.network, time)

            if self.perturb:
                hit = carry.step == config.perturb_step
                network = jax.tree.map(lambda new, old: jnp.where(hit, new, old), self.perturbed(learner, network, key_perturb), network)

            # Act, then learn from the reward of this step.
            states, activations = learner.present(network.weights, self.observe(carry.observation))
            action = self.act(learner.output_state(states), env_params)
            observation, env_state, reward, terminated, truncated, _ = env.step(key_env, carry.env_state, action, env_params)
            done = jnp.logical_or(terminated, truncated)
            reward = jnp.where(active, reward.astype(jnp.float32), 0.0)
            signal = reward - carry.baseline if config.reward_signal == "rpe" else reward
            learning_signals = lifetime_lib.LearningSignals(jnp.zeros((learner.topology.n_outputs,)), signal)
            recorded = () if record is None else record(network, states, activations, learning_signals)
            if plastic:
                learned = learner.learn(params, network, states, activations, learning_signals)
                network = jax.tree.map(lambda new, old: jnp.where(active, new, old), learned, network)
            finite = carry.finite & jnp.all(jnp.stack([jnp.all(jnp.isfinite(w)) for w in network.weights]))

            # Episode bookkeeping: returns of finished episodes, fresh weights for the next one.
            in_window = (carry.step >= config.perturb_step) & (carry.step < config.perturb_step + config.recovery_window)
            episode_return = carry.episode_return + reward
            window_return = carry.window_return + jnp.where(in_window, reward, 0.0)
            finished = done & active
            slot = jnp.minimum(carry.episode, config.episodes - 1)
            returns = carry.returns.at[slot].set(jnp.where(finished, episode_return, carry.returns[slot]))
            window_returns = carry.window_returns.at[slot].set(jnp.where(finished, window_return, carry.window_returns[slot]))
            if config.weight_reset == "episode":
                fresh = self.initial_network(learner, params, key_fresh)
                network = jax.tree.map(lambda new, old: jnp.where(done, new, old), fresh, network)

            carry = _Carry(
                network=network,
                env_state=env_state,
                observation=observation,
                episode=carry.episode + finished.astype(jnp.int32),
                step=jnp.where(done, 0, carry.step + 1),
                episode_return=jnp.where(done, 0.0, episode_return),
                window_return=jnp.where(done, 0.0, window_return),
                baseline=jnp.where(active, carry.baseline + config.baseline_rate * (reward - carry.baseline), carry.baseline),
                returns=returns,
                window_returns=window_returns,
                finite=finite,
            )
            return carry, (reward, active, recorded)

        steps = jnp.arange(self.lifetime_length, dtype=jnp.int32)
        return lax.scan(scan_step, carry, (jax.random.split(key_steps, self.lifetime_length), steps))
