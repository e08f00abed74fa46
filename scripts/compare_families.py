"""Evolve every rule family on held-out digits with one budget, and tabulate the results.

Each cell of the grid is one ``neuroevo evolve`` run in its own directory under ``--out``
(finished runs are reused, so an interrupted comparison resumes where it stopped):

- every family in ``FAMILIES`` on the single-layer network (64 pixels + bias -> 5 softmax
  outputs, no feedback pathway needed), 5-way 1-shot and 5-way 10-shot;
- the MLP rule on a 64-32-5 network with each feedback pathway, 5-way 10-shot.

Every run uses the same evolution budget (``--generations``, ``--population``,
``--lifetimes``) and reports meta-test accuracy over ``--eval-lifetimes`` lifetimes next
to one-pass and multi-pass SGD, whose learning rates the run sweeps on meta-train.

    python scripts/compare_families.py --out runs/families             # runs and table
    python scripts/compare_families.py --out runs/families --table-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# family label -> bundled config that selects it on the single-layer digits network
FAMILIES = {
    "mlp": "digits.yaml",
    "gru": "digits_gru.yaml",
    "abcd": "digits_abcd.yaml",
    "abcd_per_edge": "digits_abcd_per_edge.yaml",
    "oja": "digits_oja.yaml",
    "bcm": "digits_bcm.yaml",
    "three_factor": "digits_three_factor.yaml",
    "polynomial": "digits_polynomial.yaml",
}
FEEDBACK = ("none", "broadcast", "random_feedback", "direct_random_feedback", "symmetric")
SHOTS = (1, 10)


def grid() -> list[dict]:
    """List every run of the comparison: a label, the config file and its overrides."""
    runs = []
    for family, config in FAMILIES.items():
        for shots in SHOTS:
            runs.append({"label": f"{family}-{shots}shot", "family": family, "feedback": "n/a (no hidden layer)", "shots": shots, "config": config, "set": [f"task.k_shot={shots}"]})
    for feedback in FEEDBACK:
        runs.append(
            {
                "label": f"mlp-hidden-{feedback}",
                "family": "mlp, 64-32-5",
                "feedback": feedback,
                "shots": 10,
                "config": "digits_hidden.yaml",
                "set": [f"signal.feedback={feedback}"],
            }
        )
    return runs


def budget_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"evolution.generations={args.generations}",
        f"evolution.population={args.population}",
        f"evolution.lifetimes_per_member={args.lifetimes}",
        f"evolution.eval_every={args.generations}",
        f"evolution.checkpoint_every={args.generations}",
        f"evaluation.lifetimes={args.eval_lifetimes}",
        f"evaluation.sweep_lifetimes={args.eval_lifetimes}",
        f"seed={args.seed}",
    ]


def run_one(run: dict, args: argparse.Namespace) -> None:
    out_dir = args.out / run["label"]
    if (out_dir / "summary.json").is_file():
        return
    config = CONFIGS / run["config"]
    if not config.is_file():
        print(f"skip {run['label']}: {config.name} does not exist", flush=True)
        return
    command = [sys.executable, "-m", "neuroevo.cli", "evolve", str(config), "--out", str(out_dir)]
    for override in [*run["set"], *budget_overrides(args)]:
        command += ["--set", override]
    print("$ " + " ".join(command[2:]), flush=True)
    log_path = args.out / f"{run['label']}.log"
    with log_path.open("w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        print(f"  run {run['label']} failed with exit code {result.returncode}; read {log_path} for the error", flush=True)


def cell(numbers: dict | None) -> str:
    if numbers is None:
        return ""
    low, high = numbers["ci95"]
    return f"{numbers['mean']:.3f} [{low:.3f}, {high:.3f}]"


def collect(args: argparse.Namespace) -> list[dict]:
    rows = []
    for run in grid():
        path = args.out / run["label"] / "summary.json"
        if not path.is_file():
            continue
        heldout = json.loads(path.read_text())["heldout"]
        rows.append({**run, "heldout": heldout})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| rule family | feedback | shots | evolved | SGD, one pass | SGD, multi-pass | no plasticity |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        heldout = row["heldout"]
        lines.append(
            f"| {row['family']} | {row['feedback']} | {row['shots']} | {cell(heldout.get('evolved'))} | "
            f"{cell(heldout.get('sgd_one_pass'))} | {cell(heldout.get('sgd_multi_pass'))} | {cell(heldout.get('no_plasticity'))} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Draw grouped bars of evolved accuracy per family at 1 and 10 shots, with one-pass SGD as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [family for family in FAMILIES if any(row["family"] == family for row in rows)]
    feedback_rows = [row for row in rows if row["family"] == "mlp, 64-32-5"]
    labels = families + [f"mlp 64-32-5\n{row['feedback']}" for row in feedback_rows]
    figure, axis = plt.subplots(figsize=(max(8, 0.9 * len(labels)), 4.5))
    width = 0.38
    for offset, shots in ((-width / 2, 1), (width / 2, 10)):
        means, errors, sgd, positions = [], [], [], []
        for position, family in enumerate(families):
            match = [row for row in rows if row["family"] == family and row["shots"] == shots]
            if match:
                positions.append(position + offset)
                evolved, baseline = match[0]["heldout"]["evolved"], match[0]["heldout"]["sgd_one_pass"]
                means.append(evolved["mean"])
                errors.append(evolved["mean"] - evolved["ci95"][0])
                sgd.append(baseline["mean"])
        if shots == 10:
            for index, row in enumerate(feedback_rows):
                positions.append(len(families) + index + offset)
                means.append(row["heldout"]["evolved"]["mean"])
                errors.append(row["heldout"]["evolved"]["mean"] - row["heldout"]["evolved"]["ci95"][0])
                sgd.append(row["heldout"]["sgd_one_pass"]["mean"])
        axis.bar(positions, means, width, yerr=errors, capsize=2, label=f"evolved, {shots}-shot")
        axis.plot(positions, sgd, "k_", markersize=14, label=f"SGD one pass, {shots}-shot")
    axis.axhline(0.2, color="gray", lw=0.8, ls=":", label="chance")
    axis.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("meta-test query accuracy (5-way)")
    axis.set_ylim(0, 1)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7, ncols=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/families"))
    parser.add_argument("--generations", type=int, default=150)
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--lifetimes", type=int, default=4, help="lifetimes per member per generation")
    parser.add_argument("--eval-lifetimes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="labels to run (default: the whole grid)")
    parser.add_argument("--table-only", action="store_true", help="tabulate finished runs without starting any")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/families.png"))
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for run in grid():
            if args.only and run["label"] not in args.only:
                continue
            run_one(run, args)

    rows = collect(args)
    print(markdown(rows))
    if rows:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
