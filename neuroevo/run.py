"""The ``neuroevo evolve`` job: evolve a rule, log every generation, compare on held-out lifetimes.

A run directory contains:

- ``config.yaml``: the resolved config (defaults filled in);
- ``metrics.jsonl``: one JSON line per generation (best and mean fitness, NaN count, wall
  time; meta-train and meta-test scores of the strategy center every ``eval_every``);
- ``best_rule.safetensors``: the center with the best meta-train score so far (the
  meta-test split never selects a rule);
- ``fitness.png``, ``learning_curves.png`` and ``summary.json``: written at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from neuroevo import __version__
from neuroevo.config import Config, config_to_dict
from neuroevo.errors import NeuroevoError
from neuroevo.experiment import Experiment, MethodResult, build_experiment, compare_heldout
from neuroevo.io import atomic_write_text, save_rule
from neuroevo.plots import plot_fitness, plot_learning_curves
from neuroevo.rules import rule_name
from neuroevo.tasks import task_name

HELDOUT_METHODS = ("evolved", "no_plasticity", "random_rule", "sgd_one_pass", "sgd_multi_pass")


def prepare_run_dir(path: Path) -> Path:
    """Create ``path`` and check that it is writable and holds no earlier run."""
    path = Path(path)
    if (path / "metrics.jsonl").exists():
        raise NeuroevoError(f"output directory {str(path)!r} already holds a run (metrics.jsonl); choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise NeuroevoError(f"cannot write to output directory {str(path)!r} ({error.strerror}); choose a writable --out") from None
    return path


def rule_metadata(experiment: Experiment, extra: dict) -> dict:
    """Metadata stored beside the parameters in a rule file."""
    config = experiment.config
    return {
        "neuroevo_version": __version__,
        "rule": {"name": rule_name(config.rule), **config_to_dict(config)["rule"]},
        "features": list(experiment.learner.rule.feature_names),
        "learning_signal": {"feedback": config.signal.feedback, "output_error": "target - activation"},
        "source_config": config_to_dict(config),
        **extra,
    }


def _format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def evolve(config: Config, out_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Run evolution and the held-out comparison; returns the summary written to ``summary.json``."""
    out_dir = prepare_run_dir(out_dir)
    experiment = build_experiment(config)
    evolution_config = config.evolution
    atomic_write_text(out_dir / "config.yaml", _dump_yaml(config_to_dict(config)))

    evolution = experiment.evolution()
    state = evolution.init(experiment.key(0))
    validation_keys = experiment.validation_keys()
    n_params = evolution.n_params
    log(
        f"neuroevo {__version__}: evolving a {rule_name(config.rule)} rule ({n_params} parameters) with "
        f"{evolution_config.strategy} on {task_name(config.task)}; population {evolution_config.population}, "
        f"{evolution_config.lifetimes_per_member} lifetimes per member, {evolution_config.generations} generations; "
        f"{jax.device_count()} {jax.default_backend()} device(s); run directory {out_dir}"
    )

    records: list[dict] = []
    best = {"train_eval": -np.inf, "generation": 0, "params": evolution.center(state), "test_eval": float("nan")}
    started = time.perf_counter()
    report_every = max(1, evolution_config.generations // 20)
    with open(out_dir / "metrics.jsonl", "a") as metrics_file:
        for generation in range(1, evolution_config.generations + 1):
            state, metrics = evolution.generation(state, experiment.train_pools)
            record = {
                "generation": generation,
                "best_fitness": float(metrics.best_fitness),
                "mean_fitness": float(metrics.mean_fitness),
                "nan_count": int(metrics.nan_count),
            }

            if generation % evolution_config.eval_every == 0 or generation == evolution_config.generations:
                center = evolution.center(state)
                record["train_eval"] = float(evolution.evaluate(center, experiment.train_pools, validation_keys).fitness.mean())
                record["test_eval"] = float(evolution.evaluate(center, experiment.test_pools, validation_keys).fitness.mean())
                if record["train_eval"] > best["train_eval"]:
                    best = {"train_eval": record["train_eval"], "generation": generation, "params": center, "test_eval": record["test_eval"]}
                    save_rule(
                        out_dir / "best_rule.safetensors",
                        jax.device_get(center),
                        rule_metadata(experiment, {"generation": generation, "meta_train_fitness": best["train_eval"], "meta_test_fitness": best["test_eval"]}),
                    )

            elapsed = time.perf_counter() - started
            record["wall_time"] = round(elapsed, 3)
            records.append(record)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()

            if generation % report_every == 0 or "train_eval" in record or generation == 1:
                remaining = elapsed / generation * (evolution_config.generations - generation)
                line = f"gen {generation:>5}/{evolution_config.generations}  best {record['best_fitness']:.4f}  mean {record['mean_fitness']:.4f}"
                if record["nan_count"]:
                    line += f"  invalid {record['nan_count']}"
                if "train_eval" in record:
                    line += f"  center: meta-train {record['train_eval']:.4f} meta-test {record['test_eval']:.4f}"
                log(line + f"  [{_format_seconds(elapsed)} elapsed, ~{_format_seconds(remaining)} left]")

    plot_fitness(records, out_dir / "fitness.png", evolution_config.fitness)
    log(f"evolution finished in {_format_seconds(time.perf_counter() - started)}; best center from generation {best['generation']} (meta-train {best['train_eval']:.4f})")

    log(f"held-out comparison on {config.evaluation.lifetimes} meta-test lifetimes:")
    results = compare_heldout(experiment, best["params"], log)
    summary = write_summary(experiment, results, out_dir, extra={"evolved_generation": best["generation"], "evolution_seconds": round(time.perf_counter() - started, 1)})
    log(format_table(summary, results))
    log(f"wrote {out_dir / 'summary.json'}, {out_dir / 'best_rule.safetensors'} and plots")
    return summary


def write_summary(experiment: Experiment, results: dict[str, MethodResult], out_dir: Path, extra: dict | None = None) -> dict:
    """Write ``summary.json`` and ``learning_curves.png``; returns the summary."""
    config = experiment.config
    summary: dict[str, Any] = {
        "task": task_name(config.task),
        "metric": "accuracy",
        "heldout": {method: result.summary() for method, result in results.items()},
        "notes": {method: result.note for method, result in results.items() if result.note},
        "split": "meta-test",
        "task_config": config_to_dict(config)["task"],
        **(extra or {}),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    task = experiment.task
    plot_learning_curves(
        {method: result.curve for method, result in results.items()},
        out_dir / "learning_curves.png",
        f"{task_name(config.task)}: {task.n_way}-way {task.k_shot}-shot, meta-test, {len(next(iter(results.values())).accuracy)} lifetimes",
    )
    return summary


def format_table(summary: dict, results: dict[str, MethodResult]) -> str:
    rows = [f"{'method':<16}{'accuracy':>10}   {'95% CI':<18} notes"]
    for method, numbers in summary["heldout"].items():
        low, high = numbers["ci95"]
        rows.append(f"{method:<16}{numbers['mean']:>10.4f}   [{low:.4f}, {high:.4f}]  {results[method].note}")
    return "\n".join(rows)


def _dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
