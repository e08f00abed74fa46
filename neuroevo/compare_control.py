"""Held-out comparison for tasks scored by return (reinforcement learning).

Every method runs the same meta-test lifetimes (same environment parameters, same initial
weights) twice: once as configured, and once with the weights perturbed at
``task.perturb_step`` of every episode. The reward in the recovery window can then be
compared with and without the perturbation. The methods are:

- ``evolved``: the evolved rule;
- ``no_plasticity``: the initial weights, kept for the whole episode;
- ``random_rule``: a rule with random parameters;
- ``hebbian``: ``dw = eta * pre * post``, with ``eta`` of either sign chosen by a sweep on
  meta-train lifetimes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from neuroevo.experiment import _KEY_RANDOM_RULE
from neuroevo.lifetime import Lifetimes
from neuroevo.rules.classic import ClassicRule
from neuroevo.stats import mean_ci95
from neuroevo.structural import StructureMetrics

@dataclasses.dataclass
class ControlMethodResult:
    """Held-out lifetimes of one method on a return task."""

    returns: np.ndarray  # (lifetimes,) mean episode return of each lifetime
    curve: np.ndarray  # (lifetimes, steps) reward of every step
    window_return: np.ndarray  # (lifetimes,) reward in the recovery window, unperturbed
    window_return_perturbed: np.ndarray  # (lifetimes,) the same with the weights perturbed at perturb_step
    note: str = ""
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # structure metrics of the unperturbed lifetimes, each (lifetimes,)

    def summary(self) -> dict:
        return {
            **mean_ci95(self.returns),
            "window_return": mean_ci95(self.window_return),
            "window_return_perturbed": mean_ci95(self.window_return_perturbed),
        }


def _evaluate(lifetimes: Lifetimes, params: Any, pools: Any, keys: jax.Array, plastic: bool, note: str) -> ControlMethodResult:
    clean = lifetimes.evaluate(params, pools, keys, plastic)
    perturbed_task = dataclasses.replace(lifetimes.task, perturb=True)
    perturbed = Lifetimes(lifetimes.learner, perturbed_task).evaluate(params, pools, keys, plastic)
    return ControlMethodResult(
        returns=np.asarray(clean.metric),
        curve=np.asarray(clean.curve.online),
        window_return=np.asarray(clean.details.window_return),
        window_return_perturbed=np.asarray(perturbed.details.window_return),
        note=note,
        extra={name: np.asarray(values) for name, values in clean.structure._asdict().items()} if isinstance(clean.structure, StructureMetrics) else {},
    )


def compare_control(experiment: Any, rule_params: Any, log: Callable[[str], None] = print) -> dict[str, ControlMethodResult]:
    """Score the evolved rule and the baselines on the same meta-test lifetimes (see the module docstring)."""
    task = dataclasses.replace(experiment.task, perturb=False)
    learner = experiment.learner
    keys = experiment.heldout_keys()
    test, train = experiment.test_pools, experiment.train_pools
    lifetimes = Lifetimes(learner, task)

    results = {
        "evolved": _evaluate(lifetimes, rule_params, test, keys, True, ""),
        "no_plasticity": _evaluate(lifetimes, rule_params, test, keys, False, "initial weights kept"),
    }
    random_params = learner.rule.random_params(experiment.key(_KEY_RANDOM_RULE))
    results["random_rule"] = _evaluate(lifetimes, random_params, test, keys, True, "rule parameters drawn at random")

    # The classic rule starts from random weights even where the evolved rule evolves them.
    classic_task = dataclasses.replace(task, config=dataclasses.replace(task.config, weight_init="random"))
    classic = Lifetimes(dataclasses.replace(learner, rule=ClassicRule("hebbian")), classic_task)
    rates = experiment.config.evaluation.learning_rates
    etas = tuple(-rate for rate in reversed(rates)) + tuple(rates)
    sweep_keys = experiment.sweep_keys()
    scores = [float(np.mean(np.asarray(classic.evaluate({"eta": jnp.float32(eta)}, train, sweep_keys).fitness))) for eta in etas]
    log("  hebbian eta: meta-train sweep " + ", ".join(f"{eta:g}: {score:.1f}" for eta, score in zip(etas, scores)))
    # A diverged lifetime makes a score NaN, which ranks last.
    finite = [score if np.isfinite(score) else -np.inf for score in scores]
    eta = etas[int(np.argmax(finite))]
    results["hebbian"] = _evaluate(classic, {"eta": jnp.float32(eta)}, test, keys, True, f"eta={eta:g} from meta-train sweep")
    return results
