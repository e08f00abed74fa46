"""PNG plots of a run: fitness over generations and learning curves within a lifetime."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fitness(records: list[dict], path: Path, metric: str) -> None:
    """Best and mean member fitness per generation, and meta-train/meta-test evaluations of the strategy center."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    generations = [record["generation"] for record in records]
    axis.plot(generations, [record["best_fitness"] for record in records], lw=1, alpha=0.7, label="best member")
    axis.plot(generations, [record["mean_fitness"] for record in records], lw=1, label="population mean")
    evaluated = [record for record in records if "train_eval" in record]
    if evaluated:
        axis.plot([r["generation"] for r in evaluated], [r["train_eval"] for r in evaluated], "o-", label="center, meta-train")
        axis.plot([r["generation"] for r in evaluated], [r["test_eval"] for r in evaluated], "s-", label="center, meta-test")
    axis.set_xlabel("generation")
    axis.set_ylabel(f"fitness ({metric})")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_learning_curves(
    curves: dict[str, np.ndarray | None],
    finals: dict[str, float],
    path: Path,
    title: str,
    metric: str = "accuracy",
) -> None:
    """Plot the mean per-step ``metric`` of each method, one line per method.

    For supervised tasks a step is one training example, and the value is the query
    ``metric`` after it. For return tasks a step is one env step, and the value is its reward.

    ``curves`` maps a method to (lifetimes, steps) metric values; a method whose curve is None
    (multi-pass training) is drawn as a dashed line at its final value from ``finals``.
    """
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for method, curve in curves.items():
        if curve is None:
            axis.axhline(finals[method], ls="--", lw=1, color="gray", label=f"{method} (final)")
            continue
        steps = np.arange(1, curve.shape[1] + 1)
        mean = curve.mean(axis=0)
        half_width = 1.96 * curve.std(axis=0, ddof=1) / np.sqrt(curve.shape[0])
        axis.plot(steps, mean, label=method)
        axis.fill_between(steps, mean - half_width, mean + half_width, alpha=0.2)
    if metric == "return":
        axis.set_xlabel("env step")
        axis.set_ylabel("reward per step")
    else:
        axis.set_xlabel("training examples seen")
        axis.set_ylabel(f"query {metric}")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
