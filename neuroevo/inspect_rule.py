"""The ``neuroevo inspect`` job: what a rule reads, and its response to two of its features.

The response plot varies two features over their 5th-95th percentile range and holds the
others at their medians. Percentiles and medians come from the features the rule actually
meets: every edge at every step of a few lifetimes of its source task (on control tasks,
every step while an episode runs).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from neuroevo.config import config_from_dict
from neuroevo.errors import NeuroevoError
from neuroevo.experiment import build_experiment
from neuroevo.export import LoadedRule, find_rule_file, load_rule
from neuroevo.features import FEATURES, dense
from neuroevo.lifetime import Learner, LearningSignals, NetworkState, split_lifetime_key
from neuroevo.rules import is_per_edge

_PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def dense_rows(learner: Learner, network: NetworkState, states: tuple, activations: tuple, learning_signals: LearningSignals) -> jax.Array:
    """Dense features (edges, F) of every block's edges after one presentation, in the order of the rule's features."""
    names = learner.rule.feature_names
    blocks = learner.edge_features(network, states, activations, learning_signals)
    return jnp.concatenate([dense(names, block).reshape(-1, len(names)) for block in blocks])


def sample_features(learner: Learner, task, pools, params, key: jax.Array, n_lifetimes: int = 8) -> np.ndarray:
    """Dense features of every edge at every step of ``n_lifetimes`` lifetimes of a supervised task: (rows, F)."""

    def one_lifetime(key: jax.Array) -> jax.Array:
        key_instance, key_network = split_lifetime_key(key)
        xs, targets = task.training_stream(task.sample(key_instance, pools))

        def scan_step(network, example):
            x, target = example
            states, activations = learner.present(network.weights, x)
            learning_signals = learner.supervised_signals(activations, target)
            rows = dense_rows(learner, network, states, activations, learning_signals)
            network = learner.learn(params, network, states, activations, learning_signals)
            return network, rows

        _, rows = lax.scan(scan_step, learner.init_network(key_network), (xs, targets))
        return rows.reshape(-1, rows.shape[-1])

    rows = jax.jit(jax.vmap(one_lifetime))(jax.random.split(key, n_lifetimes))
    return np.asarray(rows.reshape(-1, rows.shape[-1]))


def sample_control_features(learner: Learner, task, ranges, params, key: jax.Array, n_lifetimes: int = 8) -> np.ndarray:
    """Dense features of every edge at every step while an episode runs, over ``n_lifetimes`` lifetimes of a control task: (rows, F)."""

    def one_lifetime(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        key_instance, key_network = split_lifetime_key(key)
        record = partial(dense_rows, learner)
        _, (_, active, rows) = task.rollout(learner, params, task.sample(key_instance, ranges), key_network, record=record)
        return rows, active  # (steps, edges, F), (steps,)

    rows, active = jax.jit(jax.vmap(one_lifetime))(jax.random.split(key, n_lifetimes))
    rows = np.asarray(rows)[np.asarray(active)]
    return rows.reshape(-1, rows.shape[-1])


def response_grid(rule: LoadedRule, samples: np.ndarray, x_name: str, y_name: str, resolution: int = 41) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dw on a grid of two features (5th-95th percentiles), others at their medians."""
    names = rule.feature_names
    x_index, y_index = names.index(x_name), names.index(y_name)
    x_values = np.linspace(*np.percentile(samples[:, x_index], [5, 95]), resolution)
    y_values = np.linspace(*np.percentile(samples[:, y_index], [5, 95]), resolution)
    grid = np.tile(np.median(samples, axis=0), (resolution, resolution, 1))
    grid[:, :, x_index] = x_values[None, :]
    grid[:, :, y_index] = y_values[:, None]
    return x_values, y_values, np.asarray(rule(grid))


def inspect(rule_or_run: str | Path, x_name: str | None, y_name: str | None, out: str | Path | None, log: Callable[[str], None] = print) -> Path:
    """Print what the rule reads and write its response plot; returns the plot's path.

    The plot goes to ``out``, or by default next to the rule file as ``<rule>.<x>-<y>.png``.
    """
    out = Path(out) if out else None
    if out is not None and out.suffix.lower().lstrip(".") not in _PLOT_FORMATS:
        raise NeuroevoError(f"--out {str(out)!r} has an unsupported image extension; use one of .{', .'.join(_PLOT_FORMATS)}")
    rule_path = find_rule_file(rule_or_run)
    loaded = load_rule(rule_path)
    names = loaded.feature_names
    metadata = loaded.metadata
    if not isinstance(metadata.get("source_config"), dict):
        raise NeuroevoError(f"{str(rule_path)!r} carries no source config, which inspect needs to find typical feature values; export the rule from its run again")
    if is_per_edge(loaded.rule):
        raise NeuroevoError(
            f"{str(rule_path)!r} contains the {metadata['rule'].get('name')} rule with one parameter set per edge, so its response "
            "differs from edge to edge and inspect cannot plot one; inspect a rule shared by every edge, e.g. from a run with rule.per_edge=false"
        )
    # Check the arguments before the lifetimes run, which take seconds to minutes.
    x_name = x_name or names[0]
    y_name = y_name or (names[1] if len(names) > 1 else names[0])
    for axis, name in (("--x", x_name), ("--y", y_name)):
        if name not in names:
            raise NeuroevoError(f"{axis} {name!r} is not a feature of this rule; choose one of {', '.join(names)}")
    if x_name == y_name:
        raise NeuroevoError(f"--x and --y are both {x_name!r}; choose two different features")
    out = out or rule_path.with_name(f"{rule_path.stem}.{x_name}-{y_name}.png")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise NeuroevoError(f"cannot write plot {str(out)!r}: its directory does not exist or is not writable; choose a writable --out")

    log(f"rule file {rule_path}: {metadata['rule'].get('name')} rule, format version {metadata.get('format_version')}, neuroevo {metadata.get('neuroevo_version')}")
    log("options: " + ", ".join(f"{key}={value}" for key, value in metadata["rule"].items() if key != "name"))
    log(f"learning signal: {metadata.get('learning_signal')}")
    log("features (per edge j -> i):")
    for name in names:
        log(f"  {name:<11} {FEATURES[name].kind:<5} {FEATURES[name].doc}")
    for key in ("generation", "meta_train_fitness", "meta_test_fitness", "meta_test_score"):
        if key in metadata:
            log(f"{key}: {metadata[key]}")

    experiment = build_experiment(config_from_dict({**metadata["source_config"], "rule": metadata["rule"]}))
    sample = sample_features if hasattr(experiment.task, "training_stream") else sample_control_features
    samples = sample(experiment.learner, experiment.task, experiment.train_pools, loaded.params, experiment.key(99))
    samples = samples[np.all(np.isfinite(samples), axis=1)]
    if len(samples) == 0:
        raise NeuroevoError("every lifetime of the rule's source task diverged (NaN features), so the rule has no typical feature values to plot")
    log("typical values (median over edges and steps of 8 meta-train lifetimes): " + ", ".join(f"{name}={value:.3g}" for name, value in zip(names, np.median(samples, axis=0))))
    x_values, y_values, dw = response_grid(loaded, samples, x_name, y_name)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.8))
    limit = float(np.abs(dw).max()) or 1.0
    image = axis.pcolormesh(x_values, y_values, dw, cmap="RdBu_r", vmin=-limit, vmax=limit, shading="auto")
    figure.colorbar(image, ax=axis, label="dw")
    others = [name for name in names if name not in (x_name, y_name)]
    axis.set_xlabel(x_name)
    axis.set_ylabel(y_name)
    axis.set_title(f"rule response; {', '.join(others) or 'no other features'} at median", fontsize=9)
    figure.tight_layout()
    try:
        figure.savefig(out, dpi=120)
    except OSError as error:
        raise NeuroevoError(f"cannot write plot {str(out)!r} ({error.strerror}); choose a writable --out") from None
    finally:
        plt.close(figure)
    log(f"wrote {out}")
    return out
