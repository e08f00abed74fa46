"""Hebbian ABCD rule: the formula against NumPy, its options, and its bundled config."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import features as feature_lib
from neuroevo.config import config_from_dict, read_yaml
from neuroevo.errors import ConfigError
from neuroevo.experiment import build_experiment
from neuroevo.rules import ABCDRule, ABCDRuleConfig, build_rule

N_DST, N_SRC = 4, 6
PARAMS = {"eta": 0.5, "A": 1.5, "B": -0.7, "C": 0.3, "D": -0.2}
CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "digits_abcd.yaml"


def block(modulated: bool, seed: int = 0) -> tuple[feature_lib.EdgeFeatures, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pre, post, error = rng.normal(size=N_SRC), rng.normal(size=N_DST), rng.normal(size=N_DST)
    post_columns = [post, error] if modulated else [post]
    features = feature_lib.EdgeFeatures.for_block(
        post=jnp.asarray(np.stack(post_columns, axis=-1), jnp.float32),
        pre=jnp.asarray(pre[:, None], jnp.float32),
        edge=jnp.zeros((N_DST, N_SRC, 0), jnp.float32),
    )
    return features, {"pre": pre, "post": post, "error": error}


def numpy_abcd(values: dict[str, np.ndarray], modulated: bool) -> np.ndarray:
    """Compute dw_ij = eta * [e_i *] (A a_i a_j + B a_j + C a_i + D) edge by edge."""
    dw = np.zeros((N_DST, N_SRC))
    for i in range(N_DST):
        for j in range(N_SRC):
            pre, post = values["pre"][j], values["post"][i]
            hebbian = PARAMS["A"] * pre * post + PARAMS["B"] * pre + PARAMS["C"] * post + PARAMS["D"]
            factor = values["error"][i] if modulated else 1.0
            dw[i, j] = PARAMS["eta"] * factor * hebbian
    return dw


@pytest.mark.parametrize("modulated", [False, True])
def test_apply_matches_numpy(modulated):
    rule = ABCDRule(modulated=modulated)
    features, values = block(modulated)
    params = {name: jnp.float32(value) for name, value in PARAMS.items()}

    dw, state = jax.jit(rule.apply)(params, features, ())

    assert state == ()
    np.testing.assert_allclose(dw, numpy_abcd(values, modulated), rtol=1e-5, atol=1e-6)


def test_feature_names_by_option():
    assert ABCDRule(modulated=False).feature_names == ("pre", "post")
    assert ABCDRule(modulated=True).feature_names == ("pre", "post", "error")


def test_init_sets_eta_only():
    params = ABCDRule(eta_init=0.3).init(jax.random.key(0))

    assert float(params["eta"]) == pytest.approx(0.3)
    assert {name: float(params[name]) for name in "ABCD"} == {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0}


def test_random_params_depend_on_key():
    rule = ABCDRule()

    first = rule.random_params(jax.random.key(0))
    other = rule.random_params(jax.random.key(1))

    assert float(first["A"]) != float(other["A"])


def test_config_rejects_nonpositive_eta():
    with pytest.raises(ConfigError, match="rule.eta_init=0"):
        config_from_dict({"rule": {"name": "abcd", "eta_init": 0}})


def test_config_rejects_unknown_option():
    with pytest.raises(ConfigError, match="rule.per_neuron"):
        config_from_dict({"rule": {"name": "abcd", "per_neuron": True}})


def test_bundled_config_builds():
    config = config_from_dict(read_yaml(CONFIG_PATH))

    experiment = build_experiment(config)

    assert config.rule == ABCDRuleConfig(modulated=True, eta_init=1.0)
    assert experiment.learner.rule == build_rule(config.rule)
    assert experiment.learner.rule.feature_names == ("pre", "post", "error")
