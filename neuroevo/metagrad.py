"""Meta-gradient outer loop: train the rule parameters by backpropagating through lifetimes.

An alternative to the evolution strategies of :mod:`neuroevo.evolve` for the same rule and
task, in the spirit of differentiable plasticity (Miconi, Clune and Stanley, "Differentiable
plasticity: training plastic neural networks with backpropagation", ICML 2018), where the
parameters of a plasticity rule are trained by gradient descent through the inner loop.

One step is called a generation, so that :mod:`neuroevo.run` drives both outer loops alike.
It lives ``lifetimes_per_member`` lifetimes with the current rule and takes the mean of a
differentiable objective after each lifetime. For classification that objective is the
query-set loss: cross-entropy for softmax outputs, squared error otherwise. ``jax.grad``
differentiates the mean through the ``lax.scan`` of every lifetime, and the gradient,
clipped to a maximum global norm, feeds an optax optimizer.

Truncation: with ``truncation = K > 0`` gradients flow through the last K steps of each
lifetime only. The earlier steps run with the rule parameters under ``stop_gradient``, so
the backward pass neither stores nor revisits them (truncated backpropagation through time).
The gradient is then biased: it ignores how the rule shaped the weights before those K steps.

Limits of the gradient:

- accuracy is piecewise constant, so the objective is the query loss even when
  ``evolution.fitness`` is ``accuracy``; fitness is only logged;
- ``argmax`` (the prediction) has no gradient; it only feeds metrics here;
- relu has a zero gradient for negative inputs, and the ``in_norm``/``out_norm`` features
  (square roots) have an infinite gradient where all weights of a neuron are zero, e.g.
  with ``network.init: zeros``;
- a lifetime whose weights diverge makes the loss or the gradient non-finite. That step is
  skipped (parameters and optimizer state kept) and counted, since one such lifetime makes
  the gradient of the whole batch non-finite;
- memory grows with the differentiated steps times the lifetimes per step.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from neuroevo.config import EvolutionConfig
from neuroevo.errors import ConfigError
from neuroevo.evolve import strongly_typed
from neuroevo.lifetime import Learner, LifetimeResult, Lifetimes, NetworkState, split_lifetime_key
from neuroevo.tasks.supervised import Updater, rule_updater

# (params, pools, key) -> (loss (), fitness ()): one lifetime drawn from ``key``. The loss is
# minimised and must be differentiable in params; the fitness is only logged.
Objective = Callable[[Any, Any, jax.Array], tuple[jax.Array, jax.Array]]


def truncated_rule_updater(learner: Learner, params: Any, cut: int) -> Updater:
    """Learning by the rule with ``params``, where the first ``cut`` steps pass no gradient.

    Gradients reach ``params`` only through the steps from ``cut`` on, and the network
    state those steps start from counts as a constant (truncated backpropagation through
    the lifetime).
    """

    def init(key: jax.Array) -> tuple[NetworkState, jax.Array]:
        return learner.init_network(key), jnp.int32(0)

    def update(carry, x, target):
        network, step = carry
        frozen = step < cut

        def hold(tree: Any) -> Any:
            return jax.tree.map(lambda leaf: jnp.where(frozen, lax.stop_gradient(leaf), leaf), tree)

        network, states, activations = learner.supervised_step(hold(params), hold(network), x, target)
        return (network, step + 1), states, activations

    return Updater(init=init, weights=lambda carry: carry[0].weights, update=update, structure=lambda carry: learner.structure_metrics(carry[0]))


@dataclasses.dataclass(frozen=True)
class LifetimeObjective:
    """Query loss after one lifetime of ``learner`` on an instance of ``task``, differentiable in the rule parameters.

    ``task`` must be a supervised task (one with ``train``), whose query loss is smooth in
    the weights.
    """

    learner: Learner
    task: Any
    truncation: int = 0  # steps at the end of the lifetime that gradients flow through; 0 means all

    def __call__(self, params: Any, pools: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Return (query loss, fitness) after the lifetime of ``key`` (same instance and weights as :class:`Lifetimes`)."""
        key_instance, key_network = split_lifetime_key(key)
        instance = self.task.sample(key_instance, pools)
        steps = self.task.lifetime_length
        cut = steps - self.truncation if 0 < self.truncation < steps else 0
        updater = truncated_rule_updater(self.learner, params, cut) if cut else rule_updater(self.learner, params)
        result = self.task.train(updater, self.learner, instance, key_network)
        return result.loss, result.fitness


class MetaGradientState(NamedTuple):
    params: Any  # rule parameters, leaves shaped as rule.init returns them
    opt_state: Any  # optax state of clip_by_global_norm followed by the optimizer
    key: jax.Array  # () PRNG key for the next step
    generation: jax.Array  # () int32, steps completed (skipped steps included)
    skipped: jax.Array  # () int32, steps skipped so far because the loss or gradient was not finite


class MetaGradientMetrics(NamedTuple):
    best_fitness: jax.Array  # () equal to mean_fitness: the "population" is the one current rule
    mean_fitness: jax.Array  # () mean fitness of the current rule over the step's lifetimes (diverged ones left out)
    nan_count: jax.Array  # () int32, 1 when the step was skipped, else 0
    meta_loss: jax.Array  # () mean objective over the step's lifetimes, before the update
    grad_norm: jax.Array  # () global L2 norm of the gradient before clipping


class MetaGradient:
    """Gradient descent on the rule parameters through lifetimes; static, so its jitted step compiles once.

    ``objective`` maps (params, pools, lifetime key) to (loss, fitness); it must be hashable
    (a frozen dataclass or a function). ``lifetimes`` (optional) serves :meth:`evaluate`.
    """

    population_size = 1

    def __init__(self, objective: Objective, config: EvolutionConfig, initial_params: Any, lifetimes: Lifetimes | None = None):
        self.objective = objective
        self.lifetimes = lifetimes
        self.lifetimes_per_step = config.lifetimes_per_member
        optimizer = optax.adam if config.optimizer == "adam" else optax.sgd
        self.optimizer = optax.chain(optax.clip_by_global_norm(config.meta_gradient.clip_norm), optimizer(config.learning_rate))
        self.initial_params = initial_params
        self.n_params = ravel_pytree(initial_params)[0].size

    @classmethod
    def for_learner(cls, learner: Learner, task: Any, config: EvolutionConfig, initial_params: Any, pools: Any) -> MetaGradient:
        """Train on the query loss of ``learner``'s lifetimes on ``task``; ``pools`` only fixes the lifetime length.

        Raises ConfigError when ``config.meta_gradient.truncation`` is not shorter than a lifetime.
        """
        truncation = config.meta_gradient.truncation
        if not hasattr(task, "train"):
            raise ConfigError(
                f"evolution.method=meta_gradient needs a supervised task with a differentiable query loss; "
                f"task {type(task).__name__} is not one, so use evolution.method=es"
            )
        steps = task.lifetime_length
        if truncation >= steps:
            raise ConfigError(
                f"evolution.meta_gradient.truncation={truncation} is not shorter than a lifetime of {steps} steps; "
                f"use 0 to differentiate the whole lifetime, or a value from 1 to {steps - 1}"
            )
        objective = LifetimeObjective(learner, task, truncation)
        return cls(objective, config, initial_params, Lifetimes(learner, task))

    def init(self, key: jax.Array, pools: Any = None) -> MetaGradientState:
        """Start at the initial rule parameters.

        ``pools`` is unused because the start needs no scores. It keeps the signature of
        :meth:`neuroevo.evolve.Evolution.init`, so :mod:`neuroevo.run` starts both alike.
        """
        params = self.initial_params
        return MetaGradientState(
            params=params,
            opt_state=strongly_typed(self.optimizer.init(params)),
            key=key,
            generation=jnp.int32(0),
            skipped=jnp.int32(0),
        )

    def center(self, state: MetaGradientState) -> Any:
        """Return the current rule parameters (the counterpart of the strategy center)."""
        return state.params

    def evaluate(self, params: Any, pools: Any, keys: jax.Array, plastic: bool = True, track_query: bool = False) -> LifetimeResult:
        """Score one rule on one lifetime per key (jitted; see :class:`~neuroevo.lifetime.Lifetimes`)."""
        if self.lifetimes is None:
            raise ValueError("this MetaGradient was built without lifetimes, so it cannot evaluate; pass lifetimes=Lifetimes(learner, task)")
        return self.lifetimes.evaluate(params, pools, keys, plastic, track_query)

    def meta_loss(self, params: Any, pools: Any, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean objective over one lifetime per key (keys: (n,)); returns (loss (), fitness (n,))."""
        losses, fitness = jax.vmap(lambda key: self.objective(params, pools, key))(keys)
        return losses.mean(), fitness

    @partial(jax.jit, static_argnames=("self",))
    def generation(self, state: MetaGradientState, pools: Any) -> tuple[MetaGradientState, MetaGradientMetrics]:
        """Take one optimizer step on fresh lifetimes; a non-finite loss or gradient leaves params and optimizer state unchanged."""
        key, key_lifetimes = jax.random.split(state.key)
        keys = jax.random.split(key_lifetimes, self.lifetimes_per_step)
        (loss, fitness), grads = jax.value_and_grad(self.meta_loss, has_aux=True)(state.params, pools, keys)
        grad_norm = optax.tree.norm(grads)

        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def keep_if_invalid(new: jax.Array, old: jax.Array) -> jax.Array:
            return jnp.where(finite, new, old)

        params = jax.tree.map(keep_if_invalid, params, state.params)
        opt_state = jax.tree.map(keep_if_invalid, opt_state, state.opt_state)
        skipped = (~finite).astype(jnp.int32)

        mean_fitness = jnp.nanmean(fitness)
        metrics = MetaGradientMetrics(
            best_fitness=mean_fitness,
            mean_fitness=mean_fitness,
            nan_count=skipped,
            meta_loss=loss,
            grad_norm=grad_norm,
        )
        new_state = MetaGradientState(params, strongly_typed(opt_state), key, state.generation + 1, state.skipped + skipped)
        return new_state, metrics
