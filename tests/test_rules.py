"""MLP rule: factored evaluation, dense reference and initial parameters, and feature assembly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import features as feature_lib
from neuroevo.rules import MLPRule

import reference

N_DST, N_SRC = 5, 7

FEATURE_SETS = [
    ("pre", "post", "weight", "error", "in_mean"),  # the default
    ("pre", "error"),  # no edge feature
    ("post", "weight"),  # no pre feature
    ("weight",),  # only an edge feature
    ("error", "out_norm"),  # no edge feature, post before pre
    ("out_norm", "post_state", "weight", "pre", "in_norm", "out_mean"),
]
HIDDEN = [(), (8, 4)]


def random_features(names: tuple[str, ...], seed: int = 0) -> tuple[feature_lib.EdgeFeatures, np.ndarray]:
    """Return factored features with random values and the dense (n_dst, n_src, F) tensor built from them in NumPy."""
    rng = np.random.default_rng(seed)
    shapes = {"post": (N_DST,), "pre": (N_SRC,), "edge": (N_DST, N_SRC)}
    values = {name: rng.normal(size=shapes[reference.FEATURE_KINDS[name]]).astype(np.float32) for name in names}

    def stack(kind: str, rows: int) -> np.ndarray:
        columns = [values[name] for name in names if reference.FEATURE_KINDS[name] == kind]
        return np.stack(columns, axis=-1) if columns else np.zeros((rows, 0), np.float32)

    edge_columns = [values[name] for name in names if reference.FEATURE_KINDS[name] == "edge"]
    edge = np.stack(edge_columns, axis=-1) if edge_columns else np.zeros((N_DST, N_SRC, 0), np.float32)
    factored = feature_lib.EdgeFeatures.for_block(post=jnp.asarray(stack("post", N_DST)), pre=jnp.asarray(stack("pre", N_SRC)), edge=jnp.asarray(edge))

    def broadcast(name: str) -> np.ndarray:
        kind = reference.FEATURE_KINDS[name]
        if kind == "post":
            return np.broadcast_to(values[name][:, None], (N_DST, N_SRC))
        if kind == "pre":
            return np.broadcast_to(values[name][None, :], (N_DST, N_SRC))
        return values[name]

    dense = np.stack([broadcast(name) for name in names], axis=-1)
    return factored, dense


def perturbed_params(rule: MLPRule, seed: int = 0):
    """Return flax's random parameters plus noise on every leaf, so that biases are non-zero too."""
    params = rule.random_params(jax.random.key(seed))
    rng = np.random.default_rng(seed + 100)
    return jax.tree.map(lambda leaf: leaf + jnp.asarray(rng.normal(scale=0.3, size=leaf.shape), jnp.float32), params)


def numpy_mlp(params, dense: np.ndarray, activation: str, output: int = 0) -> np.ndarray:
    """Evaluate output unit ``output`` of the per-edge MLP of flax Dense layers Dense_0 ... Dense_L on features (..., F)."""
    layers = params["params"]
    x = np.asarray(dense, np.float64)
    count = len(layers)
    for index in range(count):
        layer = layers[f"Dense_{index}"]
        x = x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        if index < count - 1:
            x = reference.activation(activation, x)
    return x[..., output]


def test_feature_kinds_documented():
    assert {name: feature.kind for name, feature in feature_lib.FEATURES.items()} == reference.FEATURE_KINDS


@pytest.mark.parametrize("names", FEATURE_SETS, ids="-".join)
def test_dense_matches_numpy(names):
    factored, expected = random_features(names)

    dense = np.asarray(feature_lib.dense(names, factored))

    assert dense.shape == (N_DST, N_SRC, len(names))
    np.testing.assert_array_equal(dense, expected)


@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
@pytest.mark.parametrize("names", FEATURE_SETS, ids="-".join)
def test_apply_matches_apply_dense(names, hidden):
    rule = MLPRule(names, hidden, "tanh", output_scale=0.1)
    params = perturbed_params(rule)
    factored, dense = random_features(names)

    dw, state = jax.jit(rule.apply)(params, factored, ())
    dw_dense = jax.jit(rule.apply_dense)(params, jnp.asarray(dense))

    assert dw.shape == (N_DST, N_SRC)
    assert state == ()
    np.testing.assert_allclose(dw, dw_dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
@pytest.mark.parametrize("names", [FEATURE_SETS[0], FEATURE_SETS[2]], ids="-".join)
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_apply_matches_numpy_mlp(names, hidden, activation):
    rule = MLPRule(names, hidden, activation, output_scale=0.25)
    params = perturbed_params(rule, seed=1)
    factored, dense = random_features(names, seed=1)

    dw, _ = jax.jit(rule.apply)(params, factored, ())

    np.testing.assert_allclose(dw, 0.25 * numpy_mlp(params, dense, activation), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
def test_growth_output_matches_numpy_mlp(hidden):
    names = FEATURE_SETS[0]
    rule = MLPRule(names, hidden, "tanh", output_scale=0.25, growth_output=True)
    params = perturbed_params(rule, seed=2)
    factored, dense = random_features(names, seed=2)

    dw, growth, _ = jax.jit(rule.apply_with_growth)(params, factored, ())
    dw_only, _ = jax.jit(rule.apply)(params, factored, ())

    assert params["params"][f"Dense_{len(hidden)}"]["kernel"].shape[-1] == 2
    np.testing.assert_allclose(dw, 0.25 * numpy_mlp(params, dense, "tanh", output=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(growth, numpy_mlp(params, dense, "tanh", output=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, dw_only, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rule.apply_dense(params, jnp.asarray(dense)), dw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rule.growth_dense(params, jnp.asarray(dense)), growth, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
def test_init_changes_nothing(hidden):
    names = FEATURE_SETS[0]
    rule = MLPRule(names, hidden)
    factored, dense = random_features(names)

    apply = jax.jit(rule.apply)
    dw, _ = apply(rule.init(jax.random.key(0)), factored, ())
    dw_random, _ = apply(rule.random_params(jax.random.key(0)), factored, ())

    assert np.all(np.asarray(dw) == 0.0)
    assert np.any(np.asarray(dw_random) != 0.0)  # so the zero above comes from init()


@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
def test_init_params_float32(hidden):
    rule = MLPRule(FEATURE_SETS[0], hidden)

    for params in (rule.init(jax.random.key(0)), rule.random_params(jax.random.key(0))):
        dtypes = {str(leaf.dtype) for leaf in jax.tree.leaves(params)}
        assert dtypes == {"float32"}


def test_init_params_shapes():
    rule = MLPRule(("pre", "error", "weight"), (8, 4))
    params = rule.init(jax.random.key(0))["params"]

    shapes = {name: (layer["kernel"].shape, layer["bias"].shape) for name, layer in params.items()}

    assert shapes == {"Dense_0": ((3, 8), (8,)), "Dense_1": ((8, 4), (4,)), "Dense_2": ((4, 1), (1,))}


def test_init_depends_on_key():
    rule = MLPRule(FEATURE_SETS[0], (8,))

    first = rule.init(jax.random.key(0))["params"]["Dense_0"]["kernel"]
    other = rule.init(jax.random.key(1))["params"]["Dense_0"]["kernel"]

    assert not np.allclose(first, other)


def test_validate_names_rejects_unknown():
    with pytest.raises(ValueError, match="'spike'"):
        feature_lib.validate_names(("pre", "spike"))


def test_validate_names_rejects_repeat():
    with pytest.raises(ValueError, match="repeat"):
        feature_lib.validate_names(("pre", "pre"))
