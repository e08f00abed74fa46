"""Rediscovery checks: meta-gradient training of a polynomial rule recovers two classic rules.

- Oja's rule (E. Oja, "A simplified neuron model as a principal component analyzer", J. Math.
  Biology 1982): one linear neuron ``y = w . x`` with no error signal. A rule trained to
  minimise the reconstruction error ``E||x - w y||^2`` after a lifetime must leave ``w``
  on the first principal component of the inputs, as ``dw = eta y (x - y w)`` does.
- The delta rule (Widrow and Hoff, 1960): online linear regression with the output error
  ``e = t - y`` available. A rule trained to minimise the error after a lifetime must change
  each weight in proportion to ``e * pre``.

The rule is a test fixture, not a rule family: a polynomial in the edge features, so that
both classic rules lie in its span. The lifetimes are defined here too:
each is a few lines of ``lax.scan``, independent of the classification tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from neuroevo.config import EvolutionConfig
from neuroevo.features import EdgeFeatures, dense
from neuroevo.metagrad import MetaGradient


@dataclasses.dataclass(frozen=True)
class PolynomialRule:
    """``dw = sum_k c_k prod_i f_i^(p_ki)`` over every monomial of degree 1 to ``degree``."""

    feature_names: tuple[str, ...]
    degree: int

    @property
    def exponents(self) -> np.ndarray:
        """(terms, F) exponent of every feature in every monomial."""
        count = len(self.feature_names)
        rows = [
            np.bincount(combination, minlength=count)
            for total in range(1, self.degree + 1)
            for combination in itertools.combinations_with_replacement(range(count), total)
        ]
        return np.stack(rows)

    def init(self, key: jax.Array) -> dict:
        return {"coefficients": jnp.zeros(len(self.exponents), jnp.float32)}

    def init_state(self, shape: tuple[int, ...]) -> tuple:
        return ()

    def apply(self, params: dict, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        values = dense(self.feature_names, features)  # (*edge_shape, F)
        monomials = []
        for powers in self.exponents:
            # Only factors with a positive power: the gradient of 0.0 ** 0 is NaN.
            factors = [values[..., index] ** int(power) for index, power in enumerate(powers) if power]
            monomials.append(functools.reduce(jnp.multiply, factors))
        return jnp.stack(monomials, axis=-1) @ params["coefficients"], state


def train(objective, rule: PolynomialRule, pools, steps: int, learning_rate: float) -> dict:
    # Plain SGD on the clipped gradient: Adam's first steps move every coefficient by the
    # learning rate, which puts cubic terms where lifetimes diverge.
    config = EvolutionConfig(method="meta_gradient", lifetimes_per_member=8, optimizer="sgd", learning_rate=learning_rate)
    trainer = MetaGradient(objective, config, rule.init(jax.random.key(0)))
    state = trainer.init(jax.random.key(1))
    for _ in range(steps):
        state, _ = trainer.generation(state, pools)
    return state.params


# Oja's rule --------------------------------------------------------------------------------

N_INPUTS = 8
PCA_STEPS = 100
OJA_RULE = PolynomialRule(("pre", "post", "weight"), degree=3)


def pca_inputs() -> tuple[jax.Array, jax.Array]:
    """A fixed input distribution x = L z (z standard normal) with one dominant principal direction.

    Returns L (N_INPUTS, N_INPUTS) and the unit first principal component (N_INPUTS,).
    """
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(N_INPUTS, N_INPUTS)))
    variances = np.array([1.0, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03])
    return jnp.asarray(rotation * np.sqrt(variances), jnp.float32), jnp.asarray(rotation[:, 0], jnp.float32)


def pca_lifetime(rule: PolynomialRule, params: dict, mixing: jax.Array, key: jax.Array) -> jax.Array:
    """Weights (N_INPUTS,) of one linear neuron after PCA_STEPS unlabelled inputs, from random weights."""
    key_weights, key_inputs = jax.random.split(key)
    weights = 0.3 * jax.random.normal(key_weights, (N_INPUTS,))
    inputs = jax.random.normal(key_inputs, (PCA_STEPS, N_INPUTS)) @ mixing.T

    def step(weights: jax.Array, x: jax.Array) -> tuple[jax.Array, None]:
        y = weights @ x
        features = EdgeFeatures.for_block(post=y[None, None], pre=x[:, None], edge=weights[None, :, None])
        dw, _ = rule.apply(params, features, ())
        return weights + dw[0], None

    weights, _ = lax.scan(step, weights, inputs)
    return weights


def reconstruction_objective(params: dict, pools, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Relative reconstruction error E||x - w (w . x)||^2 / E||x||^2 (closed form), and |cos(w, PC1)|."""
    mixing, first_component = pools
    w = pca_lifetime(OJA_RULE, params, mixing, key)
    covariance = mixing @ mixing.T
    variance_along_w = w @ covariance @ w
    error = jnp.trace(covariance) - 2.0 * variance_along_w + (w @ w) * variance_along_w
    cosine = jnp.abs(w @ first_component) / jnp.linalg.norm(w)
    return error / jnp.trace(covariance), cosine


def held_out_cosines(params: dict, pools) -> np.ndarray:
    keys = jax.random.split(jax.random.key(100), 32)
    return np.asarray(jax.vmap(lambda key: reconstruction_objective(params, pools, key)[1])(keys))


def test_pca_rediscovers_oja():
    pools = pca_inputs()
    initial = OJA_RULE.init(jax.random.key(0))

    trained = train(reconstruction_objective, OJA_RULE, pools, steps=200, learning_rate=0.01)

    # The initial rule changes nothing, so w keeps its random direction.
    assert held_out_cosines(initial, pools).mean() < 0.8
    assert held_out_cosines(trained, pools).mean() >= 0.95
    # Oja's terms: the largest positive coefficient is pre * post, the most negative post^2 * weight.
    values = np.asarray(trained["coefficients"])
    exponents = [tuple(int(power) for power in row) for row in OJA_RULE.exponents]
    assert exponents[int(np.argmax(values))] == (1, 1, 0)
    assert exponents[int(np.argmin(values))] == (0, 2, 1)


# The delta rule ----------------------------------------------------------------------------

N_REGRESSION_INPUTS = 5
REGRESSION_STEPS = 30
DELTA_RULE = PolynomialRule(("pre", "post", "weight", "error"), degree=2)


def regression_lifetime(rule: PolynomialRule, params: dict, key: jax.Array) -> tuple[jax.Array, jax.Array, tuple]:
    """Online linear regression of t = a . x from zero weights.

    Returns the target weights a (n,), the final weights (n,) and, for every step, the
    features seen by the rule (pre, post, weight, error) and its dw.
    """
    key_target, key_inputs = jax.random.split(key)
    target_weights = jax.random.normal(key_target, (N_REGRESSION_INPUTS,))
    inputs = jax.random.normal(key_inputs, (REGRESSION_STEPS, N_REGRESSION_INPUTS))

    def step(weights: jax.Array, x: jax.Array) -> tuple[jax.Array, tuple]:
        y = weights @ x
        error = target_weights @ x - y
        post = jnp.stack([y, error])[None, :]  # (1, 2): the post-kind features in rule order
        features = EdgeFeatures.for_block(post=post, pre=x[:, None], edge=weights[None, :, None])
        dw, _ = rule.apply(params, features, ())
        return weights + dw[0], (x, jnp.broadcast_to(y, x.shape), weights, jnp.broadcast_to(error, x.shape), dw[0])

    weights, trace = lax.scan(step, jnp.zeros(N_REGRESSION_INPUTS), inputs)
    return target_weights, weights, trace


def regression_objective(params: dict, pools, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Expected squared error after the lifetime, ||a - w||^2 for standard normal inputs."""
    target_weights, weights, _ = regression_lifetime(DELTA_RULE, params, key)
    loss = jnp.sum((target_weights - weights) ** 2)
    return loss, -loss


def correlation_with_delta(params: dict) -> float:
    """Pearson correlation of the rule's dw with error * pre over every edge and step of 16 lifetimes."""
    keys = jax.random.split(jax.random.key(200), 16)
    pre, _, _, error, dw = jax.vmap(lambda key: regression_lifetime(DELTA_RULE, params, key)[2])(keys)
    return float(np.corrcoef(np.ravel(dw), np.ravel(error * pre))[0, 1])


def coefficients(rule: PolynomialRule, terms: dict[tuple[int, ...], float]) -> dict:
    """Rule parameters with the given coefficient per monomial (exponent tuple) and zero elsewhere."""
    exponents = [tuple(int(power) for power in row) for row in rule.exponents]
    values = np.zeros(len(exponents), np.float32)
    for term, value in terms.items():
        values[exponents.index(term)] = value
    return {"coefficients": jnp.asarray(values)}


def test_regression_rediscovers_delta_rule():
    # Hebbian learning towards the target, dw = 0.05 pre (post + error) = 0.05 pre t, also
    # learns from the error signal but is not the delta rule.
    target_hebbian = coefficients(DELTA_RULE, {(1, 1, 0, 0): 0.05, (1, 0, 0, 1): 0.05})

    trained = train(regression_objective, DELTA_RULE, None, steps=150, learning_rate=0.005)

    assert correlation_with_delta(target_hebbian) < 0.9
    assert correlation_with_delta(trained) >= 0.9


def test_polynomial_rule_terms():
    # Degree 2 over 4 features: 4 linear terms and 10 products.
    assert DELTA_RULE.exponents.shape == (14, 4)
    assert OJA_RULE.exponents.shape == (19, 3)
    oja = coefficients(OJA_RULE, {(1, 1, 0): 1.0})
    features = EdgeFeatures.for_block(post=jnp.array([[2.0]]), pre=jnp.array([[3.0], [5.0]]), edge=jnp.ones((1, 2, 1)))

    dw, _ = OJA_RULE.apply(oja, features, ())

    np.testing.assert_allclose(dw, [[6.0, 10.0]])
