"""The ``neuroevo evolve`` job: evolve a rule, log every generation, compare on held-out lifetimes.

A run directory contains:

- ``config.yaml``: the resolved config (defaults filled in); ``--resume`` reads it back;
- ``metrics.jsonl``: one JSON line per generation (best and mean fitness, NaN count, wall
  time; meta-train and meta-test scores of the strategy center every ``eval_every``);
- ``checkpoint.npz``: evolution state and best rule, every ``checkpoint_every`` generations;
- ``best_rule.safetensors``: the center with the best meta-train score so far (the
  meta-test split never selects a rule);
- ``fitness.png``, ``learning_curves.png`` and ``summary.json``: written at the end.

With ``evolution.method: meta_gradient`` a generation is one optimizer step of
:class:`~neuroevo.metagrad.MetaGradient`, the center is the current rule, and each line of
``metrics.jsonl`` also has ``meta_loss`` and ``grad_norm``.

In a multi-process run (``--distributed``) every process evolves, and only process 0 logs
and writes the run directory.

A resumed run continues from its checkpoint with the same PRNG keys, so it ends with the
same strategy state as an uninterrupted run, and its ``metrics.jsonl`` is cut back to the
checkpoint so no generation is logged twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from neuroevo import __version__
from neuroevo.checkpoint import CHECKPOINT_NAME, corrupt_checkpoint_error, load_checkpoint, save_checkpoint
from neuroevo.compare_control import compare_control
from neuroevo.config import Config, apply_overrides, config_from_dict, config_to_dict, parse_override, read_yaml
from neuroevo.distributed import is_main_process
from neuroevo.errors import NeuroevoError, RunInterrupted
from neuroevo.evolve import Evolution, EvolutionState, schedule_spans_generations
from neuroevo.experiment import Experiment, build_experiment, compare_heldout
from neuroevo.io import atomic_write_text, save_rule, strict_json
from neuroevo.metagrad import MetaGradient, MetaGradientState
from neuroevo.plots import plot_fitness, plot_learning_curves
from neuroevo.rules import rule_name
from neuroevo.stats import mean_ci95
from neuroevo.tasks import task_name

HELDOUT_METHODS = ("evolved", "no_plasticity", "random_rule", "sgd_one_pass", "sgd_multi_pass")
Log = Callable[[str], None]


def print_progress(message: str) -> None:
    """Print ``message`` to stdout, and keep the run going once stdout's reader has gone.

    When the output is piped into a program that exits early (``neuroevo evolve | head``),
    the next print raises BrokenPipeError. The run then sends this and every later message
    to /dev/null instead of dying before its next checkpoint.
    """
    try:
        print(message, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
_MAX_ALL_INVALID_GENERATIONS = 5  # a run stops when every member fails this many generations in a row


@dataclasses.dataclass
class BestRule:
    """The strategy center with the best meta-train evaluation so far."""

    params: Any
    train_eval: float = -float("inf")
    test_eval: float = float("nan")
    generation: int = 0

    def info(self) -> dict:
        return {"train_eval": self.train_eval, "test_eval": self.test_eval, "generation": self.generation}


def prepare_run_dir(path: Path) -> Path:
    """Create ``path`` and check that it is writable and contains no earlier run."""
    path = Path(path)
    if (path / "metrics.jsonl").exists() or (path / "config.yaml").exists():
        raise NeuroevoError(f"output directory {str(path)!r} already contains a run; choose another --out, or continue it with --resume {path}")
    return prepare_output_dir(path)


def prepare_output_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that it is writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise NeuroevoError(f"cannot write to output directory {str(path)!r} ({error.strerror}); choose a writable --out") from None
    return path


def rule_metadata(config: Config, feature_names: tuple[str, ...], extra: dict) -> dict:
    """Metadata stored beside the parameters in a rule file."""
    return {
        "neuroevo_version": __version__,
        "rule": config_to_dict(config)["rule"],
        "features": list(feature_names),
        "learning_signal": {"feedback": config.signal.feedback, "output_error": "target - activation"},
        "source_config": config_to_dict(config),
        **extra,
    }


def _count(count: int, noun: str) -> str:
    """Return ``count`` and ``noun``, with the plural ``s`` unless ``count`` is 1."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def evolve(config: Config, out_dir: Path, log: Log = print_progress) -> dict:
    """Start a run in ``out_dir``; returns the summary written to ``summary.json``."""
    out_dir = Path(out_dir)
    main = is_main_process()
    if main and ((out_dir / "metrics.jsonl").exists() or (out_dir / "config.yaml").exists()):
        prepare_run_dir(out_dir)  # raises with the --resume hint before any work
    # Sizes are checked (and may raise) before anything is written, so a rejected config
    # leaves --out free for the corrected run.
    experiment = build_experiment(config)
    evolution = experiment.evolution()
    if main:
        out_dir = prepare_run_dir(out_dir)
        atomic_write_text(out_dir / "config.yaml", _dump_yaml(config_to_dict(config)))
    with _resume_hint_on_interrupt(out_dir):
        state = evolution.init(experiment.key(0), experiment.train_pools)
        return _run(experiment, evolution, out_dir, state, BestRule(evolution.center(state)), [], log)


def resume(run_dir: Path, log: Log = print_progress, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Continue the run in ``run_dir`` from its last checkpoint (or from the start if it has none).

    ``overrides`` may only set ``evolution.generations``, which extends a run (finished or
    not) to that many generations. Generations after the checkpoint are the same as in an
    uninterrupted run of the new length, because the strategy state and the PRNG key do
    not depend on the length, and strategies whose schedule does are rejected. The best
    rule can still differ: the old last generation keeps its center evaluation, which an
    uninterrupted run makes only when ``eval_every`` divides that generation.
    """
    _check_resume_overrides(overrides)
    run_dir = Path(run_dir)
    if not is_main_process():
        log = _discard
    if not run_dir.is_dir():
        raise NeuroevoError(f"--resume {str(run_dir)!r}: no such directory")
    if not (run_dir / "config.yaml").is_file():
        raise NeuroevoError(f"--resume {str(run_dir)!r} is not a run directory (it has no config.yaml)")
    data = read_yaml(run_dir / "config.yaml")
    if not data:
        raise NeuroevoError(f"{run_dir / 'config.yaml'} is empty, so the run's config is lost; restore it (evolve writes the resolved config there)")
    config = config_from_dict(apply_overrides(data, list(overrides)))
    experiment = build_experiment(config)
    evolution = experiment.evolution()
    state = evolution.init(experiment.key(0), experiment.train_pools)
    best = BestRule(evolution.center(state))

    checkpoint = load_checkpoint(run_dir, state, best.params)
    generation = 0
    if checkpoint is not None:
        generation = int(checkpoint.info["generation"])
        _check_checkpoint_config(run_dir, checkpoint.info.get("config"), config, generation)
        state = checkpoint.state
        try:
            best = BestRule(checkpoint.best_params, **checkpoint.info["best"])
        except (KeyError, TypeError):
            raise corrupt_checkpoint_error(run_dir / "checkpoint.npz", "its best-rule record is missing or has unexpected fields") from None
    records = _read_records(run_dir / "metrics.jsonl", generation)
    if len(records) != generation:
        raise NeuroevoError(f"{run_dir / 'metrics.jsonl'} has {len(records)} of the {_count(generation, 'generation')} in the checkpoint; the run directory is damaged")
    if is_main_process():
        atomic_write_text(run_dir / "metrics.jsonl", "".join(strict_json(record) + "\n" for record in records))
        if overrides:
            atomic_write_text(run_dir / "config.yaml", _dump_yaml(config_to_dict(config)))

    if generation == config.evolution.generations and _has_final_summary(run_dir, generation):
        extend = "" if schedule_spans_generations(config.evolution) else (
            f", or extend it with: neuroevo evolve --resume {shlex.quote(str(run_dir))} --set evolution.generations=N (N > {generation})"
        )
        log(f"run {run_dir} is already complete ({_count(generation, 'generation')}); see its summary.json{extend}")
        return json.loads((run_dir / "summary.json").read_text())
    log(f"resuming {run_dir} after generation {generation} of {config.evolution.generations}")
    with _resume_hint_on_interrupt(run_dir):
        return _run(experiment, evolution, run_dir, state, best, records, log)


def _check_resume_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    for text in overrides:
        path, _ = parse_override(text)
        if path != ["evolution", "generations"]:
            raise NeuroevoError(
                f"--resume continues a run with its own config.yaml, so --set {text!r} is not allowed; "
                "only --set evolution.generations=N (to extend the run) is"
            )


def _check_checkpoint_config(run_dir: Path, stored: dict | None, config: Config, generation: int) -> None:
    """Raise NeuroevoError unless the checkpoint's config equals ``config`` up to a longer ``evolution.generations``."""
    requested = config.evolution.generations
    if stored is not None:
        # Refill defaults, so a checkpoint written before a config option existed still matches.
        stored_config = config_from_dict(stored)
        stored_length = stored_config.evolution.generations
        same_length = dataclasses.replace(config, evolution=dataclasses.replace(config.evolution, generations=stored_length))
        if config_to_dict(stored_config) != config_to_dict(same_length):
            raise NeuroevoError(f"{run_dir / 'checkpoint.npz'} was written by a run with a different config than {run_dir / 'config.yaml'}; restore the matching checkpoint or start a new run")
        if requested != stored_length and schedule_spans_generations(config.evolution):
            raise NeuroevoError(
                f"evolution.strategy={config.evolution.strategy} spreads its schedule over the run's "
                f"evolution.generations={stored_length}, so the run cannot change its length; start a new run with "
                f"evolution.generations={requested}"
            )
    if generation > requested:
        raise NeuroevoError(
            f"evolution.generations={requested} is fewer than the {generation} generations that {run_dir} has completed; "
            f"a run cannot be shortened, so set evolution.generations to at least {generation}"
        )


def _has_final_summary(run_dir: Path, generation: int) -> bool:
    """Return whether ``summary.json`` was written at the end of a run of ``generation`` generations.

    NOTE: summaries written before they recorded ``generations`` count as final, so such a
    run, extended and then interrupted during its held-out comparison, reports itself complete.
    """
    path = run_dir / "summary.json"
    if not path.is_file():
        return False
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return summary.get("generations", generation) == generation


@contextlib.contextmanager
def _resume_hint_on_interrupt(run_dir: Path):
    """Turn Ctrl-C into :class:`RunInterrupted`, whose message names the command that continues the run."""
    try:
        yield
    except KeyboardInterrupt:
        command = f"neuroevo evolve --resume {shlex.quote(str(run_dir))}"
        if jax.process_count() > 1:
            command += " --distributed, in every process with its launch options"
        if (run_dir / CHECKPOINT_NAME).exists():
            raise RunInterrupted(f"continue the run from its last checkpoint with: {command}") from None
        raise RunInterrupted(f"no checkpoint was written yet, so the run restarts from generation 0 with: {command}") from None


def _read_records(path: Path, up_to: int) -> list[dict]:
    """Generation records 1..up_to from metrics.jsonl, skipping a line cut off by a crash."""
    records = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("generation"), int) and record["generation"] <= up_to:
                # strict_json wrote NaN and infinite values as null.
                records[record["generation"]] = {key: float("nan") if value is None else value for key, value in record.items()}
    return [records[generation] for generation in sorted(records)]


def _describe_outer_loop(settings: Any) -> str:
    if settings.method == "meta_gradient":
        options = settings.meta_gradient
        truncation = f"last {_count(options.truncation, 'step')}" if options.truncation else "whole lifetimes"
        return (
            f"meta-gradient descent ({settings.optimizer} {settings.learning_rate:g}, gradient clipped to norm "
            f"{options.clip_norm:g}, through {truncation}); {_count(settings.lifetimes_per_member, 'lifetime')} per step, "
            f"{_count(settings.generations, 'step')}"
        )
    return (
        f"{settings.strategy}; population {settings.population}, {_count(settings.lifetimes_per_member, 'lifetime')} per member, "
        f"{_count(settings.generations, 'generation')}"
    )


def _all_invalid_message(settings: Any, streak: int, generation: int) -> str:
    if settings.method == "meta_gradient":
        return (
            f"the meta-loss or its gradient was NaN or infinite for {streak} steps in a row (up to step {generation}); "
            "lower evolution.learning_rate, evolution.meta_gradient.clip_norm or rule.output_scale"
        )
    alternative = "" if settings.strategy == "Open_ES" else ", or choose another evolution.strategy such as Open_ES"
    return (
        f"every member's fitness was NaN or infinite for {streak} generations in a row "
        f"(up to generation {generation}), so {settings.strategy} gets no signal; lower evolution.std "
        f"or rule.output_scale{alternative}"
    )


def _progress_time(seconds: float, first_seconds: float, after_first: int, left: int) -> str:
    """Describe the elapsed time and estimate the rest from the generations after the first.

    The first generation also compiles, so it predicts nothing about the others.
    """
    elapsed = f"{_format_seconds(seconds)} elapsed"
    if after_first == 0:
        return f"{elapsed}, including compilation"
    remaining = (seconds - first_seconds) / after_first * left
    return f"{elapsed}, ~{_format_seconds(remaining)} left"


def _run(
    experiment: Experiment,
    evolution: Evolution | MetaGradient,
    out_dir: Path,
    state: EvolutionState | MetaGradientState,
    best: BestRule,
    records: list[dict],
    log: Log,
) -> dict:
    config = experiment.config
    settings = config.evolution
    main = is_main_process()
    if not main:
        log = _discard
    validation_keys = experiment.validation_keys()
    first = len(records) + 1
    log(
        f"neuroevo {__version__}: training the {rule_name(config.rule)} rule ({_count(evolution.n_params, 'parameter')}) on "
        f"{task_name(config.task)} with {_describe_outer_loop(settings)}; "
        f"{jax.device_count()} {jax.default_backend()} device(s); run directory {out_dir}"
    )

    log("compiling and running the first generation; on a large network compilation can take minutes")
    started = time.perf_counter()
    first_seconds = 0.0
    earlier_seconds = records[-1]["wall_time"] if records else 0.0
    report_every = max(1, settings.generations // 20)
    all_invalid_streak = 0
    with open(out_dir / "metrics.jsonl", "a") if main else contextlib.nullcontext() as metrics_file:
        for generation in range(first, settings.generations + 1):
            state, metrics = evolution.generation(state, experiment.train_pools)
            record = {
                "generation": generation,
                "best_fitness": float(metrics.best_fitness),
                "mean_fitness": float(metrics.mean_fitness),
                "nan_count": int(metrics.nan_count),
            }
            if isinstance(evolution, MetaGradient):
                record["meta_loss"] = float(metrics.meta_loss)
                record["grad_norm"] = float(metrics.grad_norm)

            last = generation == settings.generations
            if generation % settings.eval_every == 0 or last:
                center = evolution.center(state)
                record["train_eval"] = float(evolution.evaluate(center, experiment.train_pools, validation_keys).fitness.mean())
                record["test_eval"] = float(evolution.evaluate(center, experiment.test_pools, validation_keys).fitness.mean())
                if record["train_eval"] > best.train_eval:
                    best = BestRule(center, record["train_eval"], record["test_eval"], generation)
                    if main:
                        _save_best_rule(experiment, out_dir, best)

            seconds = time.perf_counter() - started
            if generation == first:
                first_seconds = seconds
            record["wall_time"] = round(earlier_seconds + seconds, 3)
            records.append(record)
            if main:
                metrics_file.write(strict_json(record) + "\n")
                metrics_file.flush()

            all_invalid_streak = all_invalid_streak + 1 if record["nan_count"] == evolution.population_size else 0
            if all_invalid_streak == _MAX_ALL_INVALID_GENERATIONS:
                raise NeuroevoError(_all_invalid_message(settings, all_invalid_streak, generation))

            if main and (generation % settings.checkpoint_every == 0 or last):
                save_checkpoint(out_dir, state, best.params, {"generation": generation, "best": best.info(), "config": config_to_dict(config)})

            if generation % report_every == 0 or "train_eval" in record or generation == first:
                line = f"gen {generation:>5}/{settings.generations}  best {record['best_fitness']:.4f}  mean {record['mean_fitness']:.4f}"
                if record["nan_count"]:
                    line += f"  invalid {record['nan_count']}"
                if "train_eval" in record:
                    line += f"  center: meta-train {record['train_eval']:.4f} meta-test {record['test_eval']:.4f}"
                log(line + f"  [{_progress_time(seconds, first_seconds, generation - first, settings.generations - generation)}]")

    if main:
        plot_fitness(records, out_dir / "fitness.png", "return" if experiment.task.metric == "return" else settings.fitness)
    log(f"evolution finished; best center from generation {best.generation} (meta-train {best.train_eval:.4f})")
    if main and best.generation == 0:
        _save_best_rule(experiment, out_dir, best)

    log(f"held-out comparison on {config.evaluation.lifetimes} meta-test lifetimes:")
    if experiment.task.metric == "return":
        results = compare_control(experiment, best.params, log)
    else:
        results = compare_heldout(experiment, best.params, log)
    summary = write_summary(
        experiment,
        results,
        out_dir,
        "summary.json",
        extra={"generations": settings.generations, "evolved_generation": best.generation, "evolution_seconds": records[-1]["wall_time"]},
        write=main,
    )
    log(format_table(summary, results))
    log(f"wrote {out_dir / 'summary.json'}, {out_dir / 'best_rule.safetensors'} and plots")
    return summary


def _save_best_rule(experiment: Experiment, out_dir: Path, best: BestRule) -> None:
    metadata = rule_metadata(
        experiment.config,
        experiment.learner.rule.feature_names,
        {"generation": best.generation, "meta_train_fitness": best.train_eval, "meta_test_fitness": best.test_eval},
    )
    save_rule(out_dir / "best_rule.safetensors", jax.device_get(best.params), metadata)


def write_summary(
    experiment: Experiment,
    results: dict[str, Any],
    out_dir: Path,
    filename: str,
    extra: dict | None = None,
    write: bool = True,
) -> dict:
    """Write the summary JSON (``filename``) and ``learning_curves.png``; returns the summary.

    With ``write=False`` only the summary is built, for processes other than process 0.
    """
    config = experiment.config
    task = experiment.task
    summary: dict[str, Any] = {
        "task": task_name(config.task),
        "metric": task.metric,
        "heldout": {method: result.summary() for method, result in results.items()},
        "notes": {method: result.note for method, result in results.items() if result.note},
        "split": "meta-test",
        "task_config": config_to_dict(config)["task"],
        **(extra or {}),
    }
    task_metrics = {method: {name: mean_ci95(values) for name, values in result.extra.items()} for method, result in results.items() if getattr(result, "extra", None)}
    if task_metrics:
        summary["heldout_task_metrics"] = task_metrics
    if not write:
        return summary
    atomic_write_text(out_dir / filename, strict_json(summary, indent=2) + "\n")
    lifetimes = next(iter(summary["heldout"].values()))["lifetimes"]
    plot_learning_curves(
        {method: result.curve for method, result in results.items()},
        {method: numbers["mean"] for method, numbers in summary["heldout"].items()},
        out_dir / "learning_curves.png",
        f"{task_name(config.task)}: {task.describe()}, meta-test, {lifetimes} lifetimes",
        task.metric,
    )
    return summary


def format_table(summary: dict, results: dict[str, Any]) -> str:
    """Text table of the held-out metric per method, then any task-specific metrics (such as structure metrics); return tasks add the recovery-window rewards."""
    if summary["metric"] == "return":
        rows = [f"{'method':<16}{'return':>8}   {'95% CI':<16}{'window':>8}{'perturbed':>11}   notes"]
        for method, numbers in summary["heldout"].items():
            low, high = numbers["ci95"]
            interval = f"[{low:.1f}, {high:.1f}]"
            window, perturbed = numbers["window_return"]["mean"], numbers["window_return_perturbed"]["mean"]
            rows.append(f"{method:<16}{numbers['mean']:>8.1f}   {interval:<16}{window:>8.1f}{perturbed:>11.1f}   {results[method].note}")
    else:
        rows = [f"{'method':<20}{summary['metric']:>10}   {'95% CI':<18} notes"]
        for method, numbers in summary["heldout"].items():
            low, high = numbers["ci95"]
            rows.append(f"{method:<20}{numbers['mean']:>10.4f}   [{low:.4f}, {high:.4f}]  {results[method].note}")
    for method, metrics in summary.get("heldout_task_metrics", {}).items():
        rows.append(f"{method:<20}" + "  ".join(f"{name} {numbers['mean']:.4f}" for name, numbers in metrics.items()))
    return "\n".join(rows)


def _discard(message: str) -> None:
    """Log function of processes other than process 0, which stay silent."""


def _dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
