"""Evolve a rule with each structural-plasticity mechanism switched on or off, and tabulate the results.

Every row is one ``neuroevo evolve`` run in its own directory under ``--out`` (finished
runs are reused, so an interrupted comparison resumes where it stopped). All rows share
the base config and the evolution budget (``--generations``, ``--population``,
``--lifetimes``), and differ only in the ``structure`` switches of ``ROWS``:

- ``none``: no refresh edits the network, but the dormant fraction is still measured;
- ``prune_regrow``: pruning with co-activity regrowth; ``prune_random``: with random regrowth;
  ``prune_rule``: with regrowth chosen by the rule's growth output (an MLP rule only);
- ``redo``: dormant-neuron reset (ReDo); ``grama``: update-magnitude reset (GraMa);
- ``all``: pruning, co-activity regrowth, ReDo and GraMa together.

The table reports the evolved rule on meta-test lifetimes (mean and 95% CI as the run's
``summary.json`` gives them): the task metric, and for continual digits the final accuracy
on the last task, plus the structure metrics of :mod:`neuroevo.structural`.

    python scripts/compare_refresh.py --out runs/refresh                      # continual digits
    python scripts/compare_refresh.py --config configs/cartpole_refresh.yaml --out runs/refresh_cartpole
    python scripts/compare_refresh.py --config configs/continual_digits.yaml --set structure.every=20 \
        --set structure.density=0.5 --only none prune_regrow prune_random --out runs/refresh_single_layer
    python scripts/compare_refresh.py --out runs/refresh --table-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

ROWS = {
    "none": [],
    "prune_regrow": ["structure.prune=true", "structure.regrow=coactivity"],
    "prune_random": ["structure.prune=true", "structure.regrow=random"],
    "prune_rule": ["structure.prune=true", "structure.regrow=rule", "rule.growth_output=true"],
    "redo": ["structure.redo=true"],
    "grama": ["structure.grama=true"],
    "all": ["structure.prune=true", "structure.regrow=coactivity", "structure.redo=true", "structure.grama=true"],
}


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """Overrides that give every row the same evolution and evaluation budget; options left unset keep the config's value."""
    overrides = [
        f"evolution.lifetimes_per_member={args.lifetimes}",
        f"evaluation.lifetimes={args.eval_lifetimes}",
        f"seed={args.seed}",
    ]
    if args.population is not None:
        overrides.append(f"evolution.population={args.population}")
    if args.generations is not None:
        overrides += [f"evolution.generations={args.generations}", f"evolution.eval_every={args.generations}", f"evolution.checkpoint_every={args.generations}"]
    return overrides


def run_one(label: str, args: argparse.Namespace) -> None:
    """Start the evolution of one row unless its summary exists; the log goes to ``<out>/<label>.log``."""
    out_dir = args.out / label
    if (out_dir / "summary.json").is_file():
        return
    command = [sys.executable, "-m", "neuroevo.cli", "evolve", str(args.config), "--out", str(out_dir)]
    for override in [*args.set, *ROWS[label], *budget_overrides(args)]:
        command += ["--set", override]
    print("$ " + " ".join(command[2:]), flush=True)
    log_path = args.out / f"{label}.log"
    with log_path.open("w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        print(f"  run {label} failed with exit code {result.returncode}; read {log_path} for the error", flush=True)


def cell(numbers: dict | None, digits: int = 3) -> str:
    if numbers is None:
        return "n/a"
    low, high = numbers["ci95"]
    return f"{numbers['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def mean(numbers: dict | None, digits: int = 1) -> str:
    return "n/a" if numbers is None else f"{numbers['mean']:.{digits}f}"


def collect(args: argparse.Namespace) -> list[dict]:
    """Read the summary of every finished row, in the order of ``ROWS``."""
    rows = []
    for label in ROWS:
        path = args.out / label / "summary.json"
        if path.is_file():
            rows.append({"label": label, "summary": json.loads(path.read_text())})
    return rows


def markdown(rows: list[dict]) -> str:
    """Table of the evolved rule per row: metric, last-task accuracy (continual tasks), structure metrics."""
    if not rows:
        return "no finished runs"
    metric = rows[0]["summary"]["metric"]
    lines = [
        f"| refresh | {metric} (mean over tasks for continual digits) | last task accuracy | dormant fraction | pruned | grown | turnover | neurons reset |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        summary = row["summary"]
        extra = summary.get("heldout_task_metrics", {}).get("evolved", {})
        lines.append(
            f"| {row['label']} | {cell(summary['heldout']['evolved'], 3 if metric != 'return' else 1)} | {cell(extra.get('last_task_accuracy'))} | "
            f"{cell(extra.get('dormant_fraction'))} | {mean(extra.get('pruned'))} | {mean(extra.get('grown'))} | "
            f"{mean(extra.get('turnover'), 3)} | {mean(extra.get('resets'))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIGS / "continual_digits_refresh.yaml", help="base config; rows add structure switches")
    parser.add_argument("--out", type=Path, default=Path("runs/refresh"))
    parser.add_argument("--generations", type=int, help="generations per row (default: the config's)")
    parser.add_argument("--population", type=int, help="population per row (default: the config's)")
    parser.add_argument("--lifetimes", type=int, default=8, help="lifetimes per member per generation")
    parser.add_argument("--eval-lifetimes", type=int, default=200, help="meta-test lifetimes per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override applied to every row, as with neuroevo evolve --set, e.g. structure.every=20")
    parser.add_argument("--only", nargs="*", choices=list(ROWS), help="rows to run (default: all)")
    parser.add_argument("--table-only", action="store_true", help="tabulate finished runs without starting any")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for label in ROWS:
            if not args.only or label in args.only:
                run_one(label, args)
    print(markdown(collect(args)))


if __name__ == "__main__":
    main()
