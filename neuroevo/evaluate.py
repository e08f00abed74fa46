"""The ``neuroevo evaluate`` job: apply a saved rule to fresh lifetimes of any registered task.

The rule's source config (stored in the rule file) supplies the network, learning signal
and evaluation settings; ``--task`` swaps in another task with its default options, and
``--set`` overrides any key. Network input and output sizes follow the task, which works
because one rule is shared by every edge whatever the graph's size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from neuroevo.compare_control import compare_control
from neuroevo.config import apply_overrides, config_from_dict, read_yaml
from neuroevo.errors import NeuroevoError
from neuroevo.experiment import build_experiment, compare_heldout
from neuroevo.export import check_same_graph, find_rule_file, load_rule
from neuroevo.features import FEATURES
from neuroevo.run import format_table, prepare_output_dir, write_summary
from neuroevo.tasks import TASK_CONFIGS, task_name, task_signals


def check_features_available(feature_names: tuple[str, ...], task_label: str) -> None:
    """Raise NeuroevoError when the rule reads a feature whose learning signal the task ``task_label`` does not provide."""
    provided = set(task_signals(task_label))
    missing = [name for name in feature_names if FEATURES[name].requires and FEATURES[name].requires not in provided]
    if not missing:
        return
    needs = sorted({FEATURES[name].requires for name in missing})
    suitable = [name for name in sorted(TASK_CONFIGS) if set(needs) <= set(task_signals(name))]
    raise NeuroevoError(
        f"this rule cannot run on task {task_label!r}: it reads {', '.join(missing)}, which needs the {' and '.join(needs)} "
        f"signal{'s' if len(needs) > 1 else ''}, "
        f"and {task_label} provides {', '.join(sorted(provided)) or 'no signal'}; evaluate it on a task with "
        f"{' and '.join(needs)}: {', '.join(suitable) or 'none is registered'}"
    )


def bundled_task_section(name: str, log: Callable[[str], None]) -> dict | None:
    """Return the task section of the bundled config ``name`` when ``name`` is not a task name, else None.

    Bundled configs such as ``cartpole`` set up a registered task (``control``) with options,
    so ``--task cartpole`` means that setup.
    """
    from neuroevo.cli import bundled_configs

    configs = bundled_configs()
    if name in TASK_CONFIGS or name not in configs:
        return None
    section = read_yaml(configs[name]).get("task")
    if not isinstance(section, dict):
        return None
    log(f"--task {name}: {name} is a bundled config, so its task section is used ({section.get('name')} with its options)")
    return section


def evaluate_rule(
    rule_or_run: str | Path,
    task: str | None = None,
    overrides: list[str] | None = None,
    lifetimes: int | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Compare a saved rule with every baseline on meta-test lifetimes; returns ``evaluation.json``'s content."""
    rule_path = find_rule_file(rule_or_run)
    loaded = load_rule(rule_path)
    source = loaded.metadata.get("source_config")
    if not isinstance(source, dict):
        raise NeuroevoError(f"{str(rule_path)!r} carries no source config; it was not written by neuroevo evolve or export")

    for override in overrides or []:
        if override.strip().startswith("rule.") or override.strip().startswith("rule="):
            raise NeuroevoError(f"--set {override!r}: the rule is fixed by the rule file and cannot be overridden; drop this --set")
    data = dict(source)
    data["rule"] = loaded.metadata["rule"]
    if task is not None and task != source.get("task", {}).get("name"):
        data["task"] = bundled_task_section(task, log) or {"name": task}
    data = apply_overrides(data, list(overrides or []))
    if lifetimes is not None:
        if lifetimes < 2:
            raise NeuroevoError(f"--lifetimes {lifetimes} is too few for a confidence interval; use at least 2")
        data = apply_overrides(data, [f"evaluation.lifetimes={lifetimes}"])
    config = config_from_dict(data)

    check_features_available(loaded.feature_names, task_name(config.task))
    experiment = build_experiment(config)
    check_same_graph(loaded, experiment.learner.rule)
    out_dir = Path(out) if out else Path("evaluations") / f"{rule_path.stem}-{task_name(config.task)}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = prepare_output_dir(out_dir)

    topology = experiment.learner.topology
    task = experiment.task
    log(
        f"evaluating {rule_path} on {task_name(config.task)} ({experiment.task.describe()}, "
        f"network {' -> '.join(str(size) for size in (topology.n_inputs, *config.network.hidden, topology.n_outputs))}, "
        f"{config.evaluation.lifetimes} meta-test lifetimes)"
    )
    if task.metric == "return":
        results = compare_control(experiment, loaded.params, log)
    else:
        results = compare_heldout(experiment, loaded.params, log, extended=True)
    summary = write_summary(experiment, results, out_dir, "evaluation.json", extra={"rule_file": str(rule_path)})
    log(format_table(summary, results))
    log(f"wrote {out_dir / 'evaluation.json'} and {out_dir / 'learning_curves.png'}")
    return summary
