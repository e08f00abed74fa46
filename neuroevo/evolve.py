"""The outer loop: an evosax strategy evolves the rule parameters.

One generation is one jitted call: ask the strategy for a population of rule parameters,
live ``lifetimes_per_member`` lifetimes per member (members and lifetimes are both
``vmap``ped, and every member is scored on the same task instances and initial weights, which
makes their fitness comparable), then tell the strategy. evosax minimises, so the
fitness (maximised here) is negated at that boundary. NaN or infinite fitness is replaced
by the worst finite fitness of the generation and counted.
"""

from __future__ import annotations

import dataclasses
import inspect
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from evosax.algorithms import algorithms as EVOSAX_ALGORITHMS
from evosax.algorithms import population_based_algorithms
from jax.flatten_util import ravel_pytree
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from neuroevo.config import EvolutionConfig
from neuroevo.errors import ConfigError
from neuroevo.lifetime import Learner, LifetimeResult, Lifetimes

# Constructor arguments that neuroevo fills in; a strategy that requires any other argument
# (a subspace size, a learned-ES parameter file, ...) is rejected with a clear message.
_FILLED_ARGUMENTS = {"population_size", "solution", "optimizer", "std_schedule", "fitness_shaping_fn", "metrics_fn"}
_EVEN_POPULATION = {"Open_ES", "PGPE", "ARS", "ESMC", "NoiseReuseES", "PersistentES", "GuidedES", "ASEBO"}


def make_strategy(config: EvolutionConfig, template: Any) -> tuple[Any, Any]:
    """Build the evosax strategy named in ``config`` for parameters shaped like ``template``.

    Returns ``(strategy, strategy_params)``. The search noise ``config.std`` sets
    ``std_schedule`` where the strategy takes one, else its ``std_init`` parameter; the
    optimizer is passed where the strategy takes one.
    """
    name = config.strategy
    if name not in EVOSAX_ALGORITHMS:
        raise ConfigError(f"evolution.strategy={name!r} is not an evosax algorithm; choose one of {', '.join(sorted(EVOSAX_ALGORITHMS))}")
    cls = EVOSAX_ALGORITHMS[name]
    signature = inspect.signature(cls.__init__)
    required = [
        parameter
        for parameter in list(signature.parameters.values())[1:]
        if parameter.default is inspect.Parameter.empty and parameter.name not in _FILLED_ARGUMENTS
    ]
    if required:
        names = ", ".join(parameter.name for parameter in required)
        raise ConfigError(f"evolution.strategy={name!r} needs constructor arguments neuroevo does not set ({names}); choose another strategy, e.g. Open_ES, SNES or CMA_ES")
    if name in _EVEN_POPULATION and config.population % 2:
        raise ConfigError(f"evolution.population={config.population} must be even for {name} (antithetic sampling); use {config.population + 1}")

    kwargs: dict[str, Any] = {}
    if "optimizer" in signature.parameters:
        optimizer = optax.adam if config.optimizer == "adam" else optax.sgd
        kwargs["optimizer"] = optimizer(config.learning_rate)
    if "std_schedule" in signature.parameters:
        kwargs["std_schedule"] = optax.constant_schedule(config.std)
    try:
        strategy = cls(config.population, template, **kwargs)
    except AssertionError as error:
        raise ConfigError(f"evosax rejected evolution.strategy={name!r} with population {config.population}: {error}") from None

    params = strategy.default_params
    if "std_schedule" not in kwargs and hasattr(params, "std_init"):
        params = params.replace(std_init=config.std)
    return strategy, params


def strongly_typed(tree: Any) -> Any:
    """Give every leaf a strong dtype.

    evosax states mix weakly typed leaves (Python floats from schedules and initial values)
    with strongly typed ones, and which leaf is weak changes after the first ``tell``. A
    state that changes weak types between generations makes jit compile the generation again.
    """

    def strong(leaf: Any) -> Any:
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return leaf
        return jax.lax.convert_element_type(leaf, leaf.dtype)

    return jax.tree.map(strong, tree)


class EvolutionState(NamedTuple):
    strategy_state: Any  # the evosax state (mean, std, optimizer state, best so far, ...)
    key: jax.Array  # () PRNG key for the next generation
    generation: jax.Array  # () int32, generations completed


class GenerationMetrics(NamedTuple):
    best_fitness: jax.Array  # () best member's fitness this generation
    mean_fitness: jax.Array  # () mean over members (invalid fitness counted as the worst)
    nan_count: jax.Array  # () members whose fitness was NaN or infinite


class Evolution:
    """A learner, a task and an evosax strategy; static, so its jitted methods compile once."""

    def __init__(self, learner: Learner, task: Any, config: EvolutionConfig, initial_params: Any):
        self.learner = learner
        self.task = task
        self.lifetimes = Lifetimes(learner, task)
        self.lifetimes_per_member = config.lifetimes_per_member
        self.population_size = config.population
        self.strategy, self.strategy_params = make_strategy(config, initial_params)
        self.population_based = config.strategy in population_based_algorithms
        self.std = config.std
        self.n_devices = jax.device_count()
        self.mesh = None
        if self.n_devices > 1:
            # Auto axes: with_sharding_constraint then moves data rather than only asserting its layout.
            self.mesh = jax.make_mesh((self.n_devices,), ("population",), axis_types=(AxisType.Auto,))
        flat, self.unravel = ravel_pytree(initial_params)
        self.n_params = flat.size
        self._initial_flat = flat

    def init(self, key: jax.Array) -> EvolutionState:
        """Start the strategy at the initial rule parameters."""
        key_init, key_population, key_run = jax.random.split(key, 3)
        if self.population_based:
            # Population-based strategies start from a population around the initial rule.
            noise = jax.random.normal(key_population, (self.strategy.population_size, self.n_params))
            population = jax.vmap(self.unravel)(self._initial_flat + self.std * noise)
            fitness = jnp.full((self.strategy.population_size,), jnp.inf)
            state = self.strategy.init(key_init, population, fitness, self.strategy_params)
        else:
            state = self.strategy.init(key_init, self.unravel(self._initial_flat), self.strategy_params)
        return EvolutionState(strategy_state=strongly_typed(state), key=key_run, generation=jnp.int32(0))

    def center(self, state: EvolutionState) -> Any:
        """Return the strategy's current estimate of the best rule: its mean, or its best member."""
        strategy_state = state.strategy_state
        flat = strategy_state.best_solution if self.population_based else strategy_state.mean
        return self.unravel(flat)

    def evaluate(self, params: Any, pools: Any, keys: jax.Array, plastic: bool = True, track_query: bool = False) -> LifetimeResult:
        """Score one rule on one lifetime per key (jitted; see :class:`~neuroevo.lifetime.Lifetimes`)."""
        return self.lifetimes.evaluate(params, pools, keys, plastic, track_query)

    def population_fitness(self, population: Any, pools: Any, lifetime_keys: jax.Array) -> jax.Array:
        """Mean fitness of every member over the same lifetimes; members are sharded over all devices.

        A population that does not divide the device count is padded with copies of its
        last member, whose scores are dropped again.
        """
        size = self.strategy.population_size
        padded = -(-size // self.n_devices) * self.n_devices
        if padded != size:
            population = jax.tree.map(lambda leaf: jnp.concatenate([leaf, jnp.repeat(leaf[-1:], padded - size, axis=0)]), population)
        if self.mesh is not None:
            population = jax.lax.with_sharding_constraint(population, NamedSharding(self.mesh, PartitionSpec("population")))

        results = self.lifetimes.run_population(population, pools, lifetime_keys)
        fitness = results.fitness.mean(axis=1)[:size]

        # evosax's tell expects an unsharded fitness array.
        if self.mesh is not None:
            fitness = jax.lax.with_sharding_constraint(fitness, NamedSharding(self.mesh, PartitionSpec()))
        return fitness

    @partial(jax.jit, static_argnames=("self",))
    def generation(self, state: EvolutionState, pools: Any) -> tuple[EvolutionState, GenerationMetrics]:
        """Ask, evaluate every member on the same lifetimes, tell."""
        key, key_ask, key_lifetimes, key_tell = jax.random.split(state.key, 4)
        population, strategy_state = self.strategy.ask(key_ask, state.strategy_state, self.strategy_params)

        lifetime_keys = jax.random.split(key_lifetimes, self.lifetimes_per_member)
        fitness = self.population_fitness(population, pools, lifetime_keys)  # (population,)

        invalid = ~jnp.isfinite(fitness)
        worst = jnp.min(jnp.where(invalid, jnp.inf, fitness))
        worst = jnp.where(jnp.isfinite(worst), worst, 0.0)
        fitness = jnp.where(invalid, worst, fitness)

        strategy_state, _ = self.strategy.tell(key_tell, population, -fitness, strategy_state, self.strategy_params)
        metrics = GenerationMetrics(
            best_fitness=fitness.max(),
            mean_fitness=fitness.mean(),
            nan_count=invalid.sum(),
        )
        return EvolutionState(strongly_typed(strategy_state), key, state.generation + 1), metrics
