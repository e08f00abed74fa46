"""Build the objects of a run from a validated config, and compare methods on held-out lifetimes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from neuroevo.baselines import GradientBaseline
from neuroevo.config import Config
from neuroevo.evolve import Evolution
from neuroevo.lifetime import Learner, LifetimeResult, Lifetimes
from neuroevo.rules import build_rule
from neuroevo.rules.classic import CLASSIC_RULES, ClassicRule
from neuroevo.stats import mean_ci95
from neuroevo.topologies import build_topology
from neuroevo.tasks import build_task

# Fixed offsets folded into the run seed, so that each purpose draws its own keys.
_KEY_EVOLUTION, _KEY_VALIDATION, _KEY_HELDOUT, _KEY_SWEEP, _KEY_RULE_INIT, _KEY_RANDOM_RULE = range(6)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a run needs, built once from its config."""

    config: Config
    task: Any
    learner: Learner
    train_pools: Any  # meta-train split
    test_pools: Any  # meta-test split

    def key(self, purpose: int) -> jax.Array:
        return jax.random.fold_in(jax.random.key(self.config.seed), purpose)

    def initial_rule_params(self) -> Any:
        return self.learner.rule.init(self.key(_KEY_RULE_INIT))

    def evolution(self) -> Evolution:
        return Evolution(self.learner, self.task, self.config.evolution, self.initial_rule_params())

    def validation_keys(self) -> jax.Array:
        """Fixed lifetimes on which the strategy center is scored during evolution (both splits use them)."""
        return jax.random.split(self.key(_KEY_VALIDATION), self.config.evolution.eval_lifetimes)

    def heldout_keys(self, count: int | None = None) -> jax.Array:
        return jax.random.split(self.key(_KEY_HELDOUT), count or self.config.evaluation.lifetimes)

    def sweep_keys(self) -> jax.Array:
        return jax.random.split(self.key(_KEY_SWEEP), self.config.evaluation.sweep_lifetimes)


def build_experiment(config: Config) -> Experiment:
    """Instantiate task, topology, rule and learner; impossible sizes raise ConfigError."""
    task = build_task(config.task)
    network = config.network
    topology = build_topology(network, task.n_inputs, task.n_outputs, getattr(task, "image_shape", None), config.seed)
    learner = Learner(
        topology=topology,
        rule=build_rule(config.rule),
        feedback=config.signal.feedback,
        weight_init=network.init,
        weight_gain=network.init_gain,
        fitness=config.evolution.fitness,
    )
    return Experiment(config, task, learner, task.data("train"), task.data("test"))


@dataclasses.dataclass
class MethodResult:
    """Held-out lifetimes of one method."""

    accuracy: np.ndarray  # (lifetimes,) query accuracy after each lifetime
    curve: np.ndarray | None  # (lifetimes, steps) query accuracy after each example of the first pass
    note: str = ""

    def summary(self) -> dict:
        return mean_ci95(self.accuracy)


def _method_result(result: LifetimeResult, note: str = "") -> MethodResult:
    return MethodResult(np.asarray(result.query_accuracy), np.asarray(result.curve.query_accuracy), note)


def _sweep_note(name: str, values: tuple[float, ...], scores: list[float], log: Callable[[str], None]) -> None:
    log(f"  {name}: meta-train sweep " + ", ".join(f"{value:g}: {score:.3f}" for value, score in zip(values, scores)))


def _best(values: tuple[float, ...], scores: list[float]) -> float:
    finite = [score if np.isfinite(score) else -np.inf for score in scores]
    return values[int(np.argmax(finite))]


def compare_heldout(
    experiment: Experiment,
    rule_params: Any,
    log: Callable[[str], None] = print,
    extended: bool = False,
) -> dict[str, MethodResult]:
    """Score the evolved rule and the baselines on the same meta-test lifetimes.

    Methods: ``evolved``, ``no_plasticity`` (initial weights kept), ``random_rule`` (a rule
    with freshly initialised parameters), ``sgd_one_pass`` and ``sgd_multi_pass`` (optax SGD).
    ``extended`` adds ``adam_one_pass`` and the classic rules of
    :mod:`neuroevo.rules.classic`. Every learning rate comes from a sweep on meta-train
    lifetimes; meta-test lifetimes only score.
    """
    evaluation = experiment.config.evaluation
    keys = experiment.heldout_keys()
    test, train, sweep_keys = experiment.test_pools, experiment.train_pools, experiment.sweep_keys()
    lifetimes = Lifetimes(experiment.learner, experiment.task)

    results = {
        "evolved": _method_result(lifetimes.evaluate(rule_params, test, keys, track_query=True)),
        "no_plasticity": _method_result(lifetimes.evaluate(rule_params, test, keys, plastic=False, track_query=True)),
    }
    random_params = experiment.learner.rule.random_params(experiment.key(_KEY_RANDOM_RULE))
    results["random_rule"] = _method_result(lifetimes.evaluate(random_params, test, keys, track_query=True))

    gradient_methods = [("sgd_one_pass", "sgd", 1), ("sgd_multi_pass", "sgd", evaluation.multi_pass_epochs)]
    if extended:
        gradient_methods.append(("adam_one_pass", "adam", 1))
    for name, optimizer, epochs in gradient_methods:
        baseline = GradientBaseline(experiment.learner, experiment.task, optimizer, epochs)
        scores = [float(score) for score in baseline.sweep(jnp.asarray(evaluation.learning_rates, jnp.float32), train, sweep_keys)]
        _sweep_note(f"{name} learning rate", evaluation.learning_rates, scores, log)
        learning_rate = _best(evaluation.learning_rates, scores)
        result = baseline.evaluate(jnp.float32(learning_rate), test, keys, track_query=True)
        note = f"lr={learning_rate:g} from meta-train sweep" + (f", {epochs} epochs" if epochs > 1 else "")
        results[name] = _method_result(result, note)
        if epochs > 1:
            # Only the first pass has one example per step; later passes have no place on that axis.
            results[name].curve = None

    if extended:
        for kind in CLASSIC_RULES:
            classic = Lifetimes(dataclasses.replace(experiment.learner, rule=ClassicRule(kind)), experiment.task)
            etas = evaluation.learning_rates
            scores = [float(score) for score in classic.sweep({"eta": jnp.asarray(etas, jnp.float32)}, train, sweep_keys)]
            _sweep_note(f"{kind} eta", etas, scores, log)
            eta = _best(etas, scores)
            result = classic.evaluate({"eta": jnp.float32(eta)}, test, keys, track_query=True)
            results[kind] = _method_result(result, f"eta={eta:g} from meta-train sweep")
    return results
