"""The outer loop: an evosax strategy evolves the rule parameters.

One generation is one jitted call: ask the strategy for a population of rule parameters,
live ``lifetimes_per_member`` lifetimes per member (members are ``vmap``ped, lifetimes run in
batches of ``lifetime_batch``, and every member is scored on the same task instances and
initial weights, which makes their fitness comparable), then tell the strategy. evosax minimises, so the
fitness (maximised here) is negated at that boundary. NaN or infinite fitness is replaced
by the worst finite fitness of the generation and counted.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from functools import partial
from pathlib import Path
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
from neuroevo.memory import available_memory_bytes, check_lifetime_memory

# Constructor arguments that neuroevo fills in; a strategy that requires any other argument
# (a subspace size, a learned-ES parameter file, ...) is rejected with a clear message.
_FILLED_ARGUMENTS = {"population_size", "solution", "optimizer", "std_schedule", "fitness_shaping_fn", "metrics_fn"}
_EVEN_POPULATION = {"Open_ES", "PGPE", "ARS", "ESMC", "NoiseReuseES", "PersistentES", "GuidedES", "ASEBO"}


def make_strategy(config: EvolutionConfig, template: Any) -> tuple[Any, Any]:
    """Build the evosax strategy named in ``config`` for parameters shaped like ``template``.

    Returns ``(strategy, strategy_params)``. The search noise ``config.std`` sets
    ``std_schedule`` where the strategy takes one, else its ``std_init`` parameter; the
    optimizer and ``config.generations`` are passed where the strategy takes them.
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
    n_params = ravel_pytree(template)[0].size
    # evosax 0.3 LM_MA_ES sets its first path rate c_c = population / n_params and takes sqrt(c_c * (2 - c_c)).
    if name == "LM_MA_ES" and config.population > 2 * n_params:
        raise ConfigError(
            f"evolution.population={config.population} is too large for LM_MA_ES on a rule with {n_params} parameters: "
            f"above 2 * {n_params} its matrix update is NaN; use evolution.population <= {2 * n_params} or another strategy, e.g. CMA_ES"
        )

    kwargs: dict[str, Any] = {}
    if "optimizer" in signature.parameters:
        optimizer = optax.adam if config.optimizer == "adam" else optax.sgd
        kwargs["optimizer"] = optimizer(config.learning_rate)
    if "std_schedule" in signature.parameters:
        kwargs["std_schedule"] = optax.constant_schedule(config.std)
    if "num_generations" in signature.parameters:
        # DiffusionEvolution spreads its denoising schedule over this many generations and stops moving after them.
        kwargs["num_generations"] = config.generations
    try:
        strategy = cls(config.population, template, **kwargs)
    except AssertionError as error:
        raise ConfigError(f"evosax rejected evolution.strategy={name!r} with population {config.population}: {error}") from None

    params = strategy.default_params
    if "std_schedule" not in kwargs and hasattr(params, "std_init"):
        params = params.replace(std_init=config.std)
    return strategy, params


def schedule_spans_generations(config: EvolutionConfig) -> bool:
    """Return whether the strategy's schedule depends on ``config.generations`` (it takes ``num_generations``).

    A run of such a strategy cannot change its length on resume, because its earlier
    generations followed the schedule of the old length.
    """
    if config.method != "es" or config.strategy not in EVOSAX_ALGORITHMS:
        return False
    return "num_generations" in inspect.signature(EVOSAX_ALGORITHMS[config.strategy].__init__).parameters


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


def device_grid(n_devices: int, population: int) -> tuple[int, int]:
    """Split ``n_devices`` into (population shards, lifetime shards).

    The population is split over every device when it has at least one member per device.
    A smaller population is split over the largest divisor of ``n_devices`` that it can
    fill, and the lifetimes of each member over the remaining factor, so that no device idles.
    """
    if population >= n_devices:
        return n_devices, 1
    population_shards = max(d for d in range(1, population + 1) if n_devices % d == 0)
    return population_shards, n_devices // population_shards


@functools.cache
def cpu_cache_bytes(level: int = 2) -> int:
    """Return the size of cpu0's unified cache of ``level`` (2 or 3), read from Linux sysfs.

    Where sysfs does not list it, return 1 MiB for L2 and 16 MiB for L3.
    """
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if int((index / "level").read_text()) != level or (index / "type").read_text().strip() != "Unified":
                continue
            text = (index / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
        except (OSError, ValueError):
            continue
    return {2: 2**20, 3: 16 * 2**20}[level]


def cpu_lifetime_batch(members: int, n_weights: int, n_lifetimes: int, compute_bound: bool = False) -> int:
    """Lifetimes per member to run at once on a CPU when ``evolution.lifetime_batch`` is null.

    A lifetime's weights take ``members x n_weights`` float32 values. All lifetimes run at
    once while the weights of all of them fit in a budget of cache: the last-level (L3)
    cache for a ``compute_bound`` rule, whose per-edge work (the MLP rule's tanh units)
    outweighs reading and writing the weights, else three L2 caches. Beyond the budget,
    batches hold as many lifetimes as fit in half an L2 cache (each step reads the weights
    and writes new ones), and at least one.

    Generation times with population 64 and 8 lifetimes, fastest of 5 to 9 interleaved calls
    on a 2-core AMD EPYC (1 MiB of L2 per core, 32 MiB of L3):

    - reference MLP rule, 128-neuron benchmark network, 1 MB per lifetime, quiet machine:
      0.376 s all at once, 0.387 s in batches of 2, 0.403 s in batches of 1;
    - the same rule on the 512-neuron network, 7.9 MB per lifetime: 3.00 s all at once,
      2.76 s in batches of 2, 2.69 s in batches of 1;
    - cheap rules on the 128-neuron network, with another job on the machine: BCM took
      0.196 s all at once against 0.077 s in batches of 1, three-factor 0.077 s against
      0.073 s, while Oja (0.034 s against 0.046 s) and ABCD (0.042 s against 0.046 s) ran
      faster all at once.

    On a 2-core Intel Xeon (2 MiB of L2 per core), batches of 1 took 1.20 of the time of all
    at once on a 64-32-5 network, and 1.43 on the default digits config.
    NOTE: on that Xeon the MLP rule's 128-neuron generation ran 7% faster in batches of 1,
    which this rule does not choose. Set ``evolution.lifetime_batch`` where it matters.
    """
    bytes_per_lifetime = members * n_weights * 4
    budget = cpu_cache_bytes(3) if compute_bound else 3 * cpu_cache_bytes(2)
    if bytes_per_lifetime * n_lifetimes <= budget:
        return n_lifetimes
    return max(1, cpu_cache_bytes(2) // 2 // bytes_per_lifetime)


def _pad(tree: Any, size: int) -> Any:
    """Pad the leading axis of every leaf to ``size`` with copies of its last entry."""

    def pad(leaf: jax.Array) -> jax.Array:
        if leaf.shape[0] == size:
            return leaf
        return jnp.concatenate([leaf, jnp.repeat(leaf[-1:], size - leaf.shape[0], axis=0)])

    return jax.tree.map(pad, tree)


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
        self.grid = device_grid(self.n_devices, config.population)
        self.lifetime_batch = config.lifetime_batch
        members_per_device = -(-config.population // self.grid[0])
        if self.lifetime_batch is None and jax.default_backend() == "cpu":
            compute_bound = bool(getattr(learner.rule, "compute_bound", False))
            self.lifetime_batch = cpu_lifetime_batch(members_per_device, learner.topology.n_edges, config.lifetimes_per_member, compute_bound)
        self._check_memory(members_per_device, learner.topology.n_edges)
        self.mesh = None
        if self.n_devices > 1:
            # Auto axes: with_sharding_constraint then moves data rather than only asserting its layout.
            self.mesh = jax.make_mesh(self.grid, ("population", "lifetimes"), axis_types=(AxisType.Auto, AxisType.Auto))
        flat, self.unravel = ravel_pytree(initial_params)
        self.n_params = flat.size
        self._initial_flat = flat

    def _check_memory(self, members_per_device: int, n_edges: int) -> None:
        """Reject a population whose lifetimes that run at once cannot hold their weights in memory."""
        lifetime_shards = self.grid[1]
        batchable = lifetime_shards == 1
        lifetimes_at_once = -(-self.lifetimes_per_member // lifetime_shards)
        if batchable and self.lifetime_batch is not None:
            lifetimes_at_once = min(self.lifetime_batch, self.lifetimes_per_member)
        shared = jax.default_backend() == "cpu"
        check_lifetime_memory(members_per_device, lifetimes_at_once, n_edges, self.n_devices, shared, batchable, available_memory_bytes())

    def init(self, key: jax.Array, pools: Any) -> EvolutionState:
        """Start the strategy at the initial rule parameters.

        Population-based strategies start from a population around the initial rule, scored
        like a generation's members on lifetimes drawn from ``pools``. They need real scores,
        because DiffusionEvolution and LGA normalise the fitness of the population and turn a
        placeholder of +inf into NaN members.
        """
        key_init, key_population, key_run = jax.random.split(key, 3)
        if self.population_based:
            key_noise, key_lifetimes = jax.random.split(key_population)
            noise = jax.random.normal(key_noise, (self.strategy.population_size, self.n_params))
            population = jax.vmap(self.unravel)(self._initial_flat + self.std * noise)
            fitness, _ = self.score_population(population, pools, key_lifetimes)
            state = self.strategy.init(key_init, population, -fitness, self.strategy_params)
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
        """Mean fitness of every member over the same lifetimes, sharded over all devices.

        Members are split over the mesh axis ``population`` and, when the population is
        smaller than the device count, lifetimes over the axis ``lifetimes`` (see
        :func:`device_grid`). A population or a number of lifetimes that does not divide its
        axis is padded with copies of its last entry, whose scores are dropped again.
        """
        size, n_lifetimes = self.strategy.population_size, lifetime_keys.shape[0]
        population_shards, lifetime_shards = self.grid
        padded_size = -(-size // population_shards) * population_shards
        padded_lifetimes = -(-n_lifetimes // lifetime_shards) * lifetime_shards
        population = _pad(population, padded_size)
        lifetime_keys = _pad(lifetime_keys, padded_lifetimes)
        if self.mesh is not None:
            population = jax.lax.with_sharding_constraint(population, NamedSharding(self.mesh, PartitionSpec("population")))
            lifetime_keys = jax.lax.with_sharding_constraint(lifetime_keys, NamedSharding(self.mesh, PartitionSpec("lifetimes")))

        # Sequential batches of lifetimes would serialise the lifetime shards, so they run at once then.
        batch = self.lifetime_batch if lifetime_shards == 1 else None
        results = self.lifetimes.run_population(population, pools, lifetime_keys, batch)
        fitness = results.fitness[:size, :n_lifetimes].mean(axis=1)

        # evosax's tell expects an unsharded fitness array.
        if self.mesh is not None:
            fitness = jax.lax.with_sharding_constraint(fitness, NamedSharding(self.mesh, PartitionSpec()))
        return fitness

    @partial(jax.jit, static_argnames=("self",))
    def score_population(self, population: Any, pools: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Score every member on ``lifetimes_per_member`` lifetimes drawn with ``key``.

        Returns ``(fitness, invalid)``, each (population,). NaN or infinite fitness is
        replaced by the worst finite fitness (0 when none is finite), and ``invalid`` marks
        the replaced members.
        """
        lifetime_keys = jax.random.split(key, self.lifetimes_per_member)
        fitness = self.population_fitness(population, pools, lifetime_keys)
        invalid = ~jnp.isfinite(fitness)
        worst = jnp.min(jnp.where(invalid, jnp.inf, fitness))
        worst = jnp.where(jnp.isfinite(worst), worst, 0.0)
        return jnp.where(invalid, worst, fitness), invalid

    @partial(jax.jit, static_argnames=("self",))
    def generation(self, state: EvolutionState, pools: Any) -> tuple[EvolutionState, GenerationMetrics]:
        """Ask, evaluate every member on the same lifetimes, tell."""
        key, key_ask, key_lifetimes, key_tell = jax.random.split(state.key, 4)
        population, strategy_state = self.strategy.ask(key_ask, state.strategy_state, self.strategy_params)
        fitness, invalid = self.score_population(population, pools, key_lifetimes)

        strategy_state, _ = self.strategy.tell(key_tell, population, -fitness, strategy_state, self.strategy_params)
        metrics = GenerationMetrics(
            best_fitness=fitness.max(),
            mean_fitness=fitness.mean(),
            nan_count=invalid.sum(),
        )
        return EvolutionState(strongly_typed(strategy_state), key, state.generation + 1), metrics
