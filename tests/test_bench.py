"""Helpers of scripts/bench.py on toy inputs with known results; nothing here is timed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import graph
from neuroevo.rules import ABCDRule, MLPRule

_SPEC = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_ceiling_ratio_counts_tanh_units():
    # 100 M edge updates/s with 16 tanh units each is 1.6 G tanh/s, half of a 3.2 G/s ceiling.
    assert bench.ceiling_ratio(100e6, 16, 3.2e9) == pytest.approx(0.5)


def test_tanh_units_by_rule():
    assert bench.tanh_units(MLPRule(("pre",), hidden=(16,))) == 16
    assert bench.tanh_units(MLPRule(("pre",), hidden=(8, 4))) == 12
    assert bench.tanh_units(MLPRule(("pre",), hidden=(16,), activation="relu")) is None
    assert bench.tanh_units(MLPRule(("pre",), hidden=())) is None
    assert bench.tanh_units(ABCDRule()) is None


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_power_law_exponent_exact(power):
    sizes = [16.0, 32.0, 64.0, 128.0]

    exponent = bench.power_law_exponent(sizes, [3.0 * size**power for size in sizes])

    assert exponent == pytest.approx(power, abs=1e-9)


def test_linear_fit_r2():
    sizes = [1.0, 2.0, 3.0, 4.0]

    assert bench.linear_fit_r2(sizes, [0.5 + 2.0 * size for size in sizes]) == pytest.approx(1.0)
    # y = x^2 has the fitted line 5x - 5, residuals (1, -1, -1, 1) and a total sum of squares of 129.
    assert bench.linear_fit_r2(sizes, [size**2 for size in sizes]) == pytest.approx(1.0 - 4.0 / 129.0)


@pytest.mark.parametrize("hidden", [(), (4,), (4, 3)], ids=str)
def test_dense_forward_matches_propagate(hidden):
    topology = graph.layered_topology(6, hidden, 3)
    weights = graph.init_weights(jax.random.key(0), topology, graph.init_masks(topology), "normal", 1.0)
    x = jax.random.normal(jax.random.key(1), (6,), jnp.float32)

    layers = bench.dense_layers(topology, weights)
    dense = bench.dense_forward(topology, layers, x)
    _, activations = graph.propagate(topology, weights, x)

    assert len(layers) == len(hidden) + 1
    np.testing.assert_allclose(dense, activations[topology.output_group], rtol=1e-6, atol=1e-7)


def _load_profiler():
    """Import scripts/profile_generation.py, which imports bench from its own directory."""
    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    spec = importlib.util.spec_from_file_location("profile_generation", Path(scripts) / "profile_generation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench", bench)
    spec.loader.exec_module(module)
    return module


def test_kernel_table_finds_tanh_fusion():
    profiler = _load_profiler()
    x = jnp.ones((4, 3))
    matrix = jnp.ones((3, 5))
    compiled = jax.jit(lambda x, matrix: (jnp.tanh(x * 2.0 + 1.0), x @ matrix)).lower(x, matrix).compile()

    table = profiler.kernel_table(compiled.as_text())

    tanh_kernels = [name for name, entry in table.items() if entry["tanh"] and entry["shape"] == (4, 3)]
    products = [name for name, entry in table.items() if entry["shape"] == (4, 5) and not entry["tanh"]]
    assert len(tanh_kernels) == 1
    assert len(products) >= 1
