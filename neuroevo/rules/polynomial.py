"""Polynomial rule: ``dw`` is a polynomial of the selected features with evolved coefficients.

A Volterra-style expansion truncated at ``degree``: ``dw_ij = output_scale * sum_m c_m * m(f_ij)``
over every monomial ``m`` of the features of degree 0 to ``degree``, as in the rule search
of Confavreux, Zenke, Agnes, Lillicrap and Vogels 2020, "A meta-learning approach to
(re)discover plasticity rules that carve a desired function into a neural network". Over
(pre, post, weight), degree 2 contains the Hebbian term ``pre * post``; Oja's rule,
``post * pre - post^2 * weight``, needs degree 3. The rule starts with zero coefficients, so
the initial rule changes no weight.

``F`` features give ``binomial(F + degree, degree)`` monomials. Each is a product of
broadcastable columns, so a dense block never builds the (n_dst, n_src, F) tensor.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures, feature_columns
from neuroevo.rules.base import check_feature_names

DEFAULT_FEATURES = ("pre", "post", "weight", "error")
MAX_MONOMIALS = 1000  # more coefficients than evolution strategies here handle well


def monomials(n_features: int, degree: int) -> tuple[tuple[int, ...], ...]:
    """List every monomial up to ``degree`` as a tuple of feature indices, repeated for powers; ``()`` is the constant."""
    return tuple(term for order in range(degree + 1) for term in itertools.combinations_with_replacement(range(n_features), order))


@dataclasses.dataclass(frozen=True)
class PolynomialRuleConfig:
    """Options of the polynomial rule (config section ``rule`` with ``name: polynomial``)."""

    features: tuple[str, ...] = DEFAULT_FEATURES
    degree: int = 3  # highest total degree of a monomial
    output_scale: float = 0.1  # dw = output_scale * polynomial

    def validate(self) -> None:
        check_feature_names(self.features)
        if self.degree < 1:
            raise ConfigError(f"rule.degree={self.degree} must be at least 1")
        count = math.comb(len(self.features) + self.degree, self.degree)
        if count > MAX_MONOMIALS:
            raise ConfigError(
                f"rule.degree={self.degree} over {len(self.features)} features gives {count} monomials, more than {MAX_MONOMIALS}; "
                "lower rule.degree or select fewer rule.features"
            )
        if self.output_scale <= 0:
            raise ConfigError(f"rule.output_scale={self.output_scale} must be positive")


@dataclasses.dataclass(frozen=True)
class PolynomialRule:
    """Stateless polynomial rule with params ``{"coefficients": (n_monomials,)}``, ordered as :func:`monomials`."""

    feature_names: tuple[str, ...] = DEFAULT_FEATURES
    degree: int = 3
    output_scale: float = 0.1

    @classmethod
    def from_config(cls, config: PolynomialRuleConfig) -> PolynomialRule:
        return cls(config.features, config.degree, config.output_scale)

    @property
    def terms(self) -> tuple[tuple[int, ...], ...]:
        return monomials(len(self.feature_names), self.degree)

    def init(self, key: jax.Array) -> Any:
        """Zero coefficients: the initial rule changes no weight."""
        return {"coefficients": jnp.zeros((len(self.terms),), jnp.float32)}

    def random_params(self, key: jax.Array) -> Any:
        """Coefficients from N(0, 1)."""
        return {"coefficients": jax.random.normal(key, (len(self.terms),), jnp.float32)}

    def init_state(self, shape: tuple[int, ...]) -> tuple:
        return ()

    def _evaluate(self, coefficients: jax.Array, columns: list[jax.Array]) -> jax.Array:
        total = jnp.zeros(())
        for index, term in enumerate(self.terms):
            value = coefficients[index]
            for feature in term:
                value = value * columns[feature]
            total = total + value
        return self.output_scale * total

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """Reference evaluation on dense features (..., F) in the order of ``feature_names``."""
        columns = [features[..., index] for index in range(len(self.feature_names))]
        return self._evaluate(params["coefficients"], columns) * jnp.ones(features.shape[:-1])

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """dw (edge shape) of one block and the unchanged state."""
        by_name = feature_columns(self.feature_names, features)
        columns = [by_name[name] for name in self.feature_names]
        return jnp.broadcast_to(self._evaluate(params["coefficients"], columns), features.edge_shape), state
