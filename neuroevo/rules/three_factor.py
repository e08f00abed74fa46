"""Three-factor rule: a per-edge eligibility trace gated by a neuromodulatory signal.

Gerstner, Lehmann, Liakoni, Corneil and Brea 2018, "Eligibility Traces and Plasticity on
Behavioral Time Scales: Experimental Support of NeoHebbian Three-Factor Learning Rules".
Pre- and postsynaptic activity leaves a decaying trace ``e_ij`` on each edge, and the weight
changes only when a third factor ``M_i`` (the postsynaptic error on supervised tasks, the
broadcast reward or reward-prediction error on reinforcement tasks) arrives:

    e_ij <- lambda * e_ij + (A * a_i * a_j + B * a_j + C * a_i + D)
    dw_ij = eta * M_i * e_ij                          (with the updated e_ij)

The coincidence term is the ABCD form of Najarro and Risi 2020; evolution starts from the
Hebbian term alone (``A = 1``). ``lambda = sigmoid(params["trace_logit"])`` is evolved on the
logit scale. With ``B = 1``, ``A = C = D = 0``, ``lambda`` near 0 and ``M`` the error, the rule is
the delta rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures, feature_columns
from neuroevo.rules.base import check_decay, logit

COEFFICIENTS = ("A", "B", "C", "D")


@dataclasses.dataclass(frozen=True)
class ThreeFactorRuleConfig:
    """Options of the three-factor rule (config section ``rule`` with ``name: three_factor``)."""

    modulator: Literal["error", "reward"] = "error"  # feature that gates the update
    eta_init: float = 1.0  # learning rate at the start of evolution
    trace_decay_init: float = 0.5  # eligibility decay lambda at the start of evolution

    def validate(self) -> None:
        if self.eta_init <= 0:
            raise ConfigError(f"rule.eta_init={self.eta_init} must be positive, e.g. 1.0")
        check_decay("rule.trace_decay_init", self.trace_decay_init)


@dataclasses.dataclass(frozen=True)
class ThreeFactorRule:
    """Params ``{"eta", "A", "B", "C", "D", "trace_logit"}`` (float32 scalars), state: eligibility (edge shape)."""

    modulator: str = "error"
    eta_init: float = 1.0
    trace_decay_init: float = 0.5

    @classmethod
    def from_config(cls, config: ThreeFactorRuleConfig) -> ThreeFactorRule:
        return cls(config.modulator, config.eta_init, config.trace_decay_init)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("pre", "post", self.modulator)

    def init(self, key: jax.Array) -> Any:
        """Hebbian eligibility (``A = 1``, ``B = C = D = 0``), ``eta = eta_init``, ``lambda = trace_decay_init``."""
        params = {name: jnp.float32(0.0) for name in COEFFICIENTS}
        params.update(A=jnp.float32(1.0), eta=jnp.float32(self.eta_init), trace_logit=jnp.float32(logit(self.trace_decay_init)))
        return params

    def random_params(self, key: jax.Array) -> Any:
        """A, B, C, D and the trace logit from N(0, 1); ``eta = eta_init``."""
        values = jax.random.normal(key, (len(COEFFICIENTS) + 1,), jnp.float32)
        params = {name: values[index] for index, name in enumerate(COEFFICIENTS)}
        params.update(eta=jnp.float32(self.eta_init), trace_logit=values[-1])
        return params

    def init_state(self, shape: tuple[int, ...]) -> jax.Array:
        """Zero eligibility traces: (n_dst, n_src) or (E,)."""
        return jnp.zeros(shape, jnp.float32)

    def _step(self, params: Any, pre: jax.Array, post: jax.Array, modulator: jax.Array, trace: jax.Array) -> tuple[jax.Array, jax.Array]:
        coincidence = params["A"] * pre * post + params["B"] * pre + params["C"] * post + params["D"]
        trace = jax.nn.sigmoid(params["trace_logit"]) * trace + coincidence
        return params["eta"] * modulator * trace, trace

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """dw of the first step from zero traces, on dense features (..., 3) in the order of ``feature_names``."""
        dw, _ = self._step(params, features[..., 0], features[..., 1], features[..., 2], jnp.zeros(features.shape[:-1], jnp.float32))
        return dw

    def apply(self, params: Any, features: EdgeFeatures, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """dw and the updated eligibility traces, both of the block's edge shape."""
        columns = feature_columns(self.feature_names, features)
        dw, trace = self._step(params, columns["pre"], columns["post"], columns[self.modulator], state)
        return jnp.broadcast_to(dw, features.edge_shape), jnp.broadcast_to(trace, features.edge_shape)
