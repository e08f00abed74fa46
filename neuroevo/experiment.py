"""Build the objects of a run from a validated config, and compare methods on held-out lifetimes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from neuroevo import graph
from neuroevo.baselines import GradientBaseline
from neuroevo.config import Config
from neuroevo.errors import ConfigError
from neuroevo.evolve import Evolution
from neuroevo.features import FEATURES
from neuroevo.lifetime import HIGHER_IS_BETTER, Learner, LifetimeResult, Lifetimes
from neuroevo.metagrad import MetaGradient
from neuroevo.rules import BCMRule, RewardSTDPRule, Rule, STDPRule, ThreeFactorRule, build_rule
from neuroevo.rules.classic import CLASSIC_RULES, ClassicRule
from neuroevo.spiking import SpikingLearner, spiking_learner
from neuroevo.stats import mean_ci95
from neuroevo.structural import StructureMetrics, WithStructureParams
from neuroevo.tasks import build_task, task_name
from neuroevo.topologies import build_topology

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

    def evolution(self) -> Evolution | MetaGradient:
        """Build the outer loop that ``evolution.method`` selects; both share one interface for :mod:`neuroevo.run`."""
        settings = self.config.evolution
        if settings.method == "meta_gradient":
            return MetaGradient.for_learner(self.learner, self.task, settings, self.initial_rule_params(), self.train_pools)
        return Evolution(self.learner, self.task, settings, self.initial_rule_params())

    def validation_keys(self) -> jax.Array:
        """Fixed lifetimes on which the strategy center is scored during evolution (both splits use them)."""
        return jax.random.split(self.key(_KEY_VALIDATION), self.config.evolution.eval_lifetimes)

    def heldout_keys(self, count: int | None = None) -> jax.Array:
        return jax.random.split(self.key(_KEY_HELDOUT), count or self.config.evaluation.lifetimes)

    def sweep_keys(self) -> jax.Array:
        return jax.random.split(self.key(_KEY_SWEEP), self.config.evaluation.sweep_lifetimes)


def check_signals(feature_names: tuple[str, ...], task: Any, label: str) -> None:
    """Raise ConfigError when the rule reads a feature whose learning signal the task does not provide."""
    provided = set(getattr(task, "signals", ()))
    missing = [name for name in feature_names if FEATURES[name].requires and FEATURES[name].requires not in provided]
    if missing:
        needs = sorted({FEATURES[name].requires for name in missing})
        raise ConfigError(
            f"rule features {', '.join(missing)} need the {' and '.join(needs)} signal{'s' if len(needs) > 1 else ''}, which task {label!r} does not provide "
            f"(it provides: {', '.join(sorted(provided)) or 'none'}); remove them from rule.features"
        )


def build_experiment(config: Config) -> Experiment:
    """Instantiate task, topology, rule and learner; impossible sizes raise ConfigError."""
    task = build_task(config.task)
    network = config.network
    check_task_fit(config, task)
    n_inputs = input_neurons(config, task)
    topology = build_topology(network, n_inputs, task.n_outputs, getattr(task, "image_shape", None), config.seed)
    rule = build_rule(config.rule)
    if hasattr(task, "prepare_rule"):
        rule = task.prepare_rule(rule, topology)
    if config.structure.evolve:
        rule = WithStructureParams(rule, config.structure)
    check_signals(rule.feature_names, task, task_name(config.task))
    check_neurons(config, task, rule.feature_names)
    check_structure(config, topology, rule, task)
    learner_options = dict(
        topology=topology,
        rule=rule,
        feedback=config.signal.feedback,
        weight_init=network.init,
        weight_gain=network.init_gain,
        fitness=config.evolution.fitness,
        trace_decay=network.trace_decay,
        structure=config.structure,
    )
    if network.neurons == "lif":
        learner = spiking_learner(learner_options, config.spiking, config.seed)
    else:
        learner = Learner(**learner_options)
    return Experiment(config, task, learner, task.data("train"), task.data("test"))


def input_neurons(config: Config, task: Any) -> int:
    """Return the size of the input group: ``task.n_inputs``, doubled for a spiking network with ``spiking.signed_inputs``."""
    if config.network.neurons == "lif" and config.spiking.signed_inputs:
        if config.network.topology == "local":
            raise ConfigError("spiking.signed_inputs=true doubles the input neurons, so they no longer form the task's image; use another network.topology or set spiking.signed_inputs=false")
        return 2 * task.n_inputs
    return task.n_inputs


def check_structure(config: Config, topology: graph.Topology, rule: Any, task: Any) -> None:
    """Raise ConfigError when the structure options need a part the network or the rule lacks, or never act in a lifetime of ``task``."""
    structure = config.structure
    mechanisms = [f"structure.{name}" for name, on in (("prune", structure.prune), ("redo", structure.redo), ("grama", structure.grama)) if on]
    if mechanisms and structure.every > task.lifetime_length:
        raise ConfigError(
            f"structure.every={structure.every} is longer than the {task.lifetime_length}-step lifetime of the "
            f"{task_name(config.task)} task, so no refresh ever runs {' and '.join(mechanisms)}; "
            f"set structure.every to at most {task.lifetime_length}"
        )
    if (structure.redo or structure.grama) and not topology.hidden_groups:
        mechanisms = " and ".join(name for name, on in (("redo", structure.redo), ("grama", structure.grama)) if on)
        raise ConfigError(f"structure.{mechanisms} resets hidden neurons, but this network has none; add network.hidden or switch it off")
    grows = bool(getattr(rule, "growth_output", False))
    if structure.regrow == "rule" and not grows:
        raise ConfigError("structure.regrow=rule reads the rule's growth output; use rule.name=mlp with rule.growth_output=true")
    if grows and structure.regrow != "rule":
        raise ConfigError(f"rule.growth_output=true is only read by structure.regrow=rule (now {structure.regrow!r}); set both, or remove rule.growth_output")


def check_neurons(config: Config, task: Any, feature_names: tuple[str, ...]) -> None:
    """Raise ConfigError when the neuron model, the input coding, the task and the rule's features do not fit together."""
    name = task_name(config.task)
    spike_features = [feature for feature in feature_names if FEATURES[feature].spiking]
    raster_task = getattr(task, "presents_spikes", False)
    if config.network.neurons == "rate":
        if spike_features:
            raise ConfigError(f"rule features {', '.join(spike_features)} describe spikes, which rate neurons do not emit; set network.neurons=lif or remove them")
        if raster_task:
            raise ConfigError(f"the {name} task presents spike rasters; set network.neurons=lif and spiking.encoder=raster")
        return
    if task.metric == "return":
        check_spiking_control(config, task)
        return
    if task.metric != "accuracy":
        raise ConfigError(f"network.neurons=lif supports classification and discrete-action control tasks only (spike-count readout), but {name} reports {task.metric}; use network.neurons=rate")
    if config.network.output_activation != "softmax":
        raise ConfigError("network.neurons=lif reads class probabilities from the output spikes; set network.output_activation=softmax")
    if raster_task and config.spiking.ticks != task.raster_ticks:
        raise ConfigError(f"spiking.ticks={config.spiking.ticks} differs from the {task.raster_ticks} ticks of the {name} task's rasters; set spiking.ticks={task.raster_ticks}")
    if raster_task != (config.spiking.encoder == "raster"):
        fix = "spiking.encoder=raster" if raster_task else "spiking.encoder=rate or latency"
        raise ConfigError(f"spiking.encoder={config.spiking.encoder} does not fit the {name} task, whose inputs are {'spike rasters' if raster_task else 'values to encode'}; set {fix}")
    # NOTE: signed_inputs still clips magnitudes above 1, which standardised features often reach.
    if not raster_task and not config.spiking.signed_inputs and not getattr(task, "inputs_in_unit_interval", False):
        scaling = getattr(config.task, "scaling", None)
        where = f" (task.scaling={scaling})" if scaling else ""
        alternative = " or task.scaling=minmax" if scaling else ""
        raise ConfigError(
            f"the {name} task's inputs can lie outside [0, 1]{where}, but the {config.spiking.encoder} encoder clips them "
            f"to [0, 1] and so drops negative values; set spiking.signed_inputs=true{alternative}"
        )


def check_spiking_control(config: Config, task: Any) -> None:
    """Raise ConfigError when a spiking network cannot run the control task: continuous actions, raster or unsigned inputs."""
    name = task_name(config.task)
    if not task.discrete_actions:
        raise ConfigError(
            f"network.neurons=lif reads actions as the argmax of output spike counts, but {task.config.env} has continuous actions; "
            "use network.neurons=rate, or a discrete environment (CartPole-v1, Acrobot-v1, MountainCar-v0)"
        )
    if config.spiking.encoder == "raster":
        raise ConfigError(f"spiking.encoder=raster does not fit the {name} task, whose inputs are observations; set spiking.encoder=rate or latency")
    if not config.spiking.signed_inputs:
        raise ConfigError(
            f"the {name} task's observations are signed, but the {config.spiking.encoder} encoder drops negative values; "
            "set spiking.signed_inputs=true"
        )


def check_task_fit(config: Config, task: Any) -> None:
    """Raise ConfigError when the network output or the fitness does not suit the task's metric."""
    name = task_name(config.task)
    if config.network.output_activation == "softmax" and task.output_activation != "softmax":
        raise ConfigError(
            f"network.output_activation=softmax does not fit the {name} task, whose outputs are not class "
            f"probabilities; set network.output_activation={task.output_activation}"
        )
    if task.metric == "return" and config.network.output_activation != task.output_activation:
        raise ConfigError(
            f"network.output_activation={config.network.output_activation} does not fit the {name} task, whose actions "
            f"are decoded from {task.output_activation} outputs; set network.output_activation={task.output_activation}"
        )
    # Return tasks always use the mean episode return as fitness, so evolution.fitness does not apply.
    if config.evolution.fitness == "accuracy" and task.metric not in ("accuracy", "return"):
        raise ConfigError(
            f"evolution.fitness=accuracy does not fit the {name} task, which reports {task.metric}; set evolution.fitness=neg_loss"
        )


@dataclasses.dataclass
class MethodResult:
    """Held-out lifetimes of one method."""

    values: np.ndarray  # (lifetimes,) the task metric after each lifetime
    curve: np.ndarray | None  # (lifetimes, steps) query metric after each example of the first pass
    note: str = ""
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # task-specific metrics, each (lifetimes,)

    def summary(self) -> dict:
        return mean_ci95(self.values)


def _method_result(task: Any, result: LifetimeResult, note: str = "") -> MethodResult:
    extra = task.extra_metrics(result) if hasattr(task, "extra_metrics") else {}
    extra = {name: np.asarray(values) for name, values in extra.items()}
    if isinstance(result.structure, StructureMetrics):
        extra.update({name: np.asarray(values) for name, values in result.structure._asdict().items()})
    return MethodResult(np.asarray(result.metric), np.asarray(result.curve.query), note, extra)


def _sweep_note(name: str, values: tuple[float, ...], scores: list[float], log: Callable[[str], None]) -> None:
    log(f"  {name}: meta-train sweep " + ", ".join(f"{value:g}: {score:.3f}" for value, score in zip(values, scores)))


def _best(values: tuple[float, ...], scores: list[float], higher_is_better: bool) -> float:
    """Return the value with the best finite score; NaN or infinite scores (diverged lifetimes) rank last."""
    signed = [score if higher_is_better else -score for score in scores]
    finite = [score if np.isfinite(score) else -np.inf for score in signed]
    return values[int(np.argmax(finite))]


def classic_baselines() -> list[tuple[str, Rule]]:
    """Fixed-coefficient rules compared in ``evaluate``: the classic one-eta rules, then the
    BCM and three-factor families at their initial coefficients. Only ``eta`` is tuned.
    """
    rules: list[tuple[str, Rule]] = [(kind, ClassicRule(kind)) for kind in CLASSIC_RULES]
    rules.append(("bcm", BCMRule()))
    rules.append(("three_factor", ThreeFactorRule()))
    return rules


def spiking_baselines() -> list[tuple[str, Rule]]:
    """Fixed STDP rules compared on spiking networks: pair-based STDP and error-modulated STDP; only ``eta`` is tuned."""
    return [("stdp", STDPRule()), ("reward_stdp", RewardSTDPRule(modulator="error"))]


def sweep_fixed_rule(experiment: Experiment, kind: str, rule: Rule, log: Callable[[str], None], keys: jax.Array, higher_is_better: bool) -> MethodResult:
    """Choose ``eta`` of a fixed rule on meta-train lifetimes, then score it on the meta-test lifetimes ``keys``."""
    evaluation = experiment.config.evaluation
    task = experiment.task
    lifetimes = Lifetimes(dataclasses.replace(experiment.learner, rule=rule), task)
    etas = evaluation.learning_rates
    fixed = rule.init(experiment.key(_KEY_RULE_INIT))
    swept = {**jax.tree.map(lambda value: jnp.broadcast_to(value, (len(etas),)), fixed), "eta": jnp.asarray(etas, jnp.float32)}
    scores = [float(score) for score in lifetimes.sweep(swept, experiment.train_pools, experiment.sweep_keys())]
    _sweep_note(f"{kind} eta", etas, scores, log)
    eta = _best(etas, scores, higher_is_better)
    result = lifetimes.evaluate({**fixed, "eta": jnp.float32(eta)}, experiment.test_pools, keys, track_query=True)
    return _method_result(task, result, f"eta={eta:g} from meta-train sweep")


def compare_heldout(
    experiment: Experiment,
    rule_params: Any,
    log: Callable[[str], None] = print,
    extended: bool = False,
) -> dict[str, MethodResult]:
    """Score the evolved rule and the baselines on the same meta-test lifetimes.

    Methods: ``evolved``, ``no_plasticity`` (initial weights kept), ``random_rule`` (a rule
    with freshly initialised parameters), ``sgd_one_pass`` and ``sgd_multi_pass`` (optax SGD).
    ``extended`` adds ``adam_one_pass`` and the fixed-coefficient rules of
    :func:`classic_baselines`. Every learning rate comes from a sweep on meta-train
    lifetimes; meta-test lifetimes only score. A spiking network has no gradient through
    its spike thresholds, so it gets the STDP rules of :func:`spiking_baselines` in place
    of the gradient methods.
    """
    evaluation = experiment.config.evaluation
    keys = experiment.heldout_keys()
    test, train, sweep_keys = experiment.test_pools, experiment.train_pools, experiment.sweep_keys()
    task = experiment.task
    higher_is_better = HIGHER_IS_BETTER[task.metric]
    lifetimes = Lifetimes(experiment.learner, task)

    results = {
        "evolved": _method_result(task, lifetimes.evaluate(rule_params, test, keys, track_query=True)),
        "no_plasticity": _method_result(task, lifetimes.evaluate(rule_params, test, keys, plastic=False, track_query=True)),
    }
    random_params = experiment.learner.rule.random_params(experiment.key(_KEY_RANDOM_RULE))
    results["random_rule"] = _method_result(task, lifetimes.evaluate(random_params, test, keys, track_query=True))

    if isinstance(experiment.learner, SpikingLearner):
        for kind, rule in spiking_baselines():
            results[kind] = sweep_fixed_rule(experiment, kind, rule, log, keys, higher_is_better)
        return results

    gradient_methods = [("sgd_one_pass", "sgd", 1), ("sgd_multi_pass", "sgd", evaluation.multi_pass_epochs)]
    if extended:
        gradient_methods.append(("adam_one_pass", "adam", 1))
    for name, optimizer, epochs in gradient_methods:
        baseline = GradientBaseline(experiment.learner, task, optimizer, epochs)
        scores = [float(score) for score in baseline.sweep(jnp.asarray(evaluation.learning_rates, jnp.float32), train, sweep_keys)]
        _sweep_note(f"{name} learning rate", evaluation.learning_rates, scores, log)
        learning_rate = _best(evaluation.learning_rates, scores, higher_is_better)
        result = baseline.evaluate(jnp.float32(learning_rate), test, keys, track_query=True)
        note = f"lr={learning_rate:g} from meta-train sweep" + (f", {epochs} epochs" if epochs > 1 else "")
        results[name] = _method_result(task, result, note)
        if epochs > 1:
            # Only the first pass has one example per step; later passes have no place on that axis.
            results[name].curve = None

    if extended:
        for kind, rule in classic_baselines():
            results[kind] = sweep_fixed_rule(experiment, kind, rule, log, keys, higher_is_better)
    return results
