"""Summary statistics reported for every method."""

from __future__ import annotations

import math

import numpy as np

# Two-sided 95% quantile of the standard normal distribution.
_Z95 = 1.959963984540054


def mean_ci95(values: np.ndarray) -> dict:
    """Mean with a 95% confidence interval (normal approximation, fine for the 100+ lifetimes reported).

    Returns ``{"mean": float, "ci95": [low, high], "lifetimes": int}``; NaN values count as
    failed lifetimes and make the mean NaN rather than being dropped.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.size
    mean = float(values.mean())
    half_width = _Z95 * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "ci95": [mean - half_width, mean + half_width], "lifetimes": int(n)}
