"""Closed-form NumPy references for the Oja, BCM, three-factor, polynomial, per-edge ABCD and GRU rules."""

from __future__ import annotations

import itertools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import features as feature_lib
from neuroevo.config import build_section, config_from_dict, read_yaml
from neuroevo.errors import ConfigError, NeuroevoError
from neuroevo.experiment import build_experiment
from neuroevo.export import LoadedRule, check_same_graph
from neuroevo.rules import RULE_CONFIGS, BCMRule, GRURule, OjaRule, PolynomialRule, ThreeFactorRule, bind, rule_name
from neuroevo.rules.hebbian import ABCDRule

N_DST, N_SRC = 4, 6


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def block(names: tuple[str, ...], seed: int) -> tuple[feature_lib.EdgeFeatures, dict[str, np.ndarray]]:
    """Random dense-block features and the same values as full (N_DST, N_SRC) float64 arrays per name."""
    rng = np.random.default_rng(seed)
    kinds = {"post": [], "pre": [], "edge": []}
    full = {}
    for name in names:
        kind = feature_lib.FEATURES[name].kind
        if kind == "post":
            values = rng.normal(size=N_DST)
            full[name] = np.repeat(values[:, None], N_SRC, axis=1)
        elif kind == "pre":
            values = rng.normal(size=N_SRC)
            full[name] = np.repeat(values[None, :], N_DST, axis=0)
        else:
            values = rng.normal(size=(N_DST, N_SRC))
            full[name] = values
        kinds[kind].append(values.astype(np.float32))

    def stack(kind: str, shape: tuple[int, ...]) -> jax.Array:
        return jnp.asarray(np.stack(kinds[kind], axis=-1)) if kinds[kind] else jnp.zeros((*shape, 0), jnp.float32)

    features = feature_lib.EdgeFeatures.for_block(stack("post", (N_DST,)), stack("pre", (N_SRC,)), stack("edge", (N_DST, N_SRC)))
    return features, {name: value.astype(np.float32).astype(np.float64) for name, value in full.items()}


def test_oja_one_step():
    rule = OjaRule()
    params = {"eta": jnp.float32(0.3), "alpha": jnp.float32(0.7)}
    features, f = block(rule.feature_names, 0)

    dw, _ = rule.apply(params, features, rule.init_state((N_DST, N_SRC)))

    expected = 0.3 * f["post"] * (f["pre"] - 0.7 * f["post"] * f["weight"])
    np.testing.assert_allclose(dw, expected, rtol=1e-5, atol=1e-6)


def test_bcm_three_steps():
    rule = BCMRule()
    params = {"eta": jnp.float32(0.2), "decay_logit": jnp.float32(1.5)}
    decay = sigmoid(1.5)
    state = rule.init_state((N_DST, N_SRC))
    theta = np.zeros((N_DST, N_SRC))

    for step in range(3):
        features, f = block(rule.feature_names, step)
        dw, state = rule.apply(params, features, state)
        theta = decay * theta + (1 - decay) * f["post"] ** 2
        np.testing.assert_allclose(state, theta, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
        np.testing.assert_allclose(dw, 0.2 * f["pre"] * f["post"] * (f["post"] - theta), rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


@pytest.mark.parametrize("modulator", ["error", "reward"])
def test_three_factor_three_steps(modulator):
    rule = ThreeFactorRule(modulator=modulator)
    params = {name: jnp.float32(value) for name, value in dict(eta=0.5, A=0.8, B=-0.3, C=0.2, D=0.1, trace_logit=-0.4).items()}
    decay = sigmoid(-0.4)
    state = rule.init_state((N_DST, N_SRC))
    trace = np.zeros((N_DST, N_SRC))

    for step in range(3):
        features, f = block(rule.feature_names, 10 + step)
        dw, state = rule.apply(params, features, state)
        trace = decay * trace + 0.8 * f["pre"] * f["post"] - 0.3 * f["pre"] + 0.2 * f["post"] + 0.1
        np.testing.assert_allclose(state, trace, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
        np.testing.assert_allclose(dw, 0.5 * f[modulator] * trace, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


def test_polynomial_matches_monomial_sum():
    rule = PolynomialRule(("pre", "post", "weight"), degree=2, output_scale=0.5)
    features, f = block(rule.feature_names, 3)
    coefficients = np.random.default_rng(4).normal(size=10).astype(np.float32)

    dw, _ = rule.apply({"coefficients": jnp.asarray(coefficients)}, features, ())

    pre, post, weight = f["pre"], f["post"], f["weight"]
    # The documented order: constant, then degree 1, then degree 2, each in combinations_with_replacement order.
    terms = [np.ones_like(pre), pre, post, weight, pre * pre, pre * post, pre * weight, post * post, post * weight, weight * weight]
    expected = 0.5 * sum(c * term for c, term in zip(coefficients, terms))
    np.testing.assert_allclose(dw, expected, rtol=1e-5, atol=1e-5)


def test_polynomial_degree_3_contains_oja():
    rule = PolynomialRule(("pre", "post", "weight"), degree=3, output_scale=1.0)
    terms = rule.terms
    coefficients = np.zeros(len(terms), np.float32)
    coefficients[terms.index((0, 1))] = 0.3  # pre * post
    coefficients[terms.index((1, 1, 2))] = -0.3  # post^2 * weight
    features, _ = block(rule.feature_names, 5)

    dw, _ = rule.apply({"coefficients": jnp.asarray(coefficients)}, features, ())
    oja, _ = OjaRule().apply({"eta": jnp.float32(0.3), "alpha": jnp.float32(1.0)}, features, ())

    assert len(terms) == 20
    np.testing.assert_allclose(dw, oja, rtol=1e-5, atol=1e-6)


def test_abcd_per_edge_matches_numpy_loop():
    rule = bind(ABCDRule(modulated=True, per_edge=True), ((N_DST, N_SRC), (N_DST, 1)))
    params = rule.random_params(jax.random.key(0))
    features, f = block(rule.feature_names, 6)

    dw, _ = rule.apply(params["block_0"], features, ())

    coefficients = {name: np.asarray(value, np.float64) for name, value in params["block_0"].items()}
    expected = np.zeros((N_DST, N_SRC))
    for i, j in itertools.product(range(N_DST), range(N_SRC)):
        c = {name: value[i, j] for name, value in coefficients.items()}
        pre, post, error = f["pre"][i, j], f["post"][i, j], f["error"][i, j]
        expected[i, j] = c["eta"] * error * (c["A"] * pre * post + c["B"] * pre + c["C"] * post + c["D"])
    assert params["block_1"]["A"].shape == (N_DST, 1)
    assert len(np.unique(coefficients["A"])) == N_DST * N_SRC  # one coefficient per edge
    np.testing.assert_allclose(dw, expected, rtol=1e-5, atol=1e-6)


def test_abcd_per_edge_rejects_other_shape():
    rule = bind(ABCDRule(per_edge=True), ((3, 2),))
    features, _ = block(rule.feature_names, 7)

    with pytest.raises(ValueError, match="evolved on"):
        rule.apply(rule.init(jax.random.key(0))["block_0"], features, ())


def test_abcd_per_edge_unbound_init_raises():
    with pytest.raises(ValueError, match="bind"):
        ABCDRule(per_edge=True).init(jax.random.key(0))


def test_check_same_graph_rejects_other_network():
    evolved = bind(ABCDRule(per_edge=True), ((5, 64), (5, 1)))
    loaded = LoadedRule(evolved, evolved.init(jax.random.key(0)), {})

    check_same_graph(loaded, bind(ABCDRule(per_edge=True), ((5, 64), (5, 1))))
    with pytest.raises(NeuroevoError, match="not size-portable"):
        check_same_graph(loaded, bind(ABCDRule(per_edge=True), ((3, 13), (3, 1))))


def test_gru_three_steps_match_flax_cell():
    rule = GRURule(("pre", "post", "weight", "error"), hidden_size=3, output_scale=0.2)
    params = rule.random_params(jax.random.key(1))
    cell = nn.GRUCell(features=3)
    readout = nn.Dense(1)
    state = rule.init_state((N_DST, N_SRC))
    hidden = jnp.zeros((N_DST, N_SRC, 3))

    for step in range(3):
        features, _ = block(rule.feature_names, 20 + step)
        dw, state = rule.apply(params, features, state)
        hidden, _ = cell.apply({"params": params["cell"]}, hidden, feature_lib.dense(rule.feature_names, features))
        expected = 0.2 * readout.apply({"params": params["readout"]}, hidden)[..., 0]
        np.testing.assert_allclose(state, hidden, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
        np.testing.assert_allclose(dw, expected, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
    assert float(jnp.abs(state).max()) > 0.05


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("polynomial", {"degree": 0}, "rule.degree=0"),
        ("polynomial", {"degree": 12}, "monomials"),
        ("polynomial", {"features": ["pre", "nope"]}, "unknown feature 'nope'"),
        ("gru", {"hidden_size": 0}, "rule.hidden_size=0"),
        ("gru", {"features": []}, "rule.features is empty"),
        ("bcm", {"decay_init": 1.0}, "rule.decay_init=1.0"),
        ("three_factor", {"modulator": "dopamine"}, "rule.modulator='dopamine'"),
        ("three_factor", {"trace_decay_init": 0.0}, "rule.trace_decay_init=0.0"),
        ("oja", {"eta_init": -1.0}, "rule.eta_init=-1.0"),
        ("abcd", {"per_edge": "yes"}, "rule.per_edge='yes'"),
    ],
)
def test_config_rejects_bad_option(name, options, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        build_section(RULE_CONFIGS[name], options, "rule")


CONFIG_FAMILIES = {
    "digits_gru": "gru",
    "digits_abcd_per_edge": "abcd",
    "digits_oja": "oja",
    "digits_bcm": "bcm",
    "digits_three_factor": "three_factor",
    "digits_polynomial": "polynomial",
}


@pytest.mark.parametrize("config_name", sorted(CONFIG_FAMILIES))
def test_bundled_config_builds(config_name):
    config = config_from_dict(read_yaml(Path(__file__).parents[1] / "configs" / f"{config_name}.yaml"))

    experiment = build_experiment(config)

    assert rule_name(config.rule) == CONFIG_FAMILIES[config_name]
    params = experiment.initial_rule_params()
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))
