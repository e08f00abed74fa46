"""Spike-timing-dependent plasticity baselines for spiking networks (``network.neurons: lif``).

- ``stdp``: pair-based STDP with all-to-all pairing (Song, Miller and Abbott 2000,
  "Competitive Hebbian learning through spike-timing-dependent synaptic plasticity"), whose
  exponential window fits the measurements of Bi and Poo 1998, "Synaptic modifications in
  cultured hippocampal neurons": ``dw = eta * (A_plus * ltp - A_minus * ltd)``, with the sums
  ``ltp`` and ``ltd`` of :mod:`neuroevo.spiking` (features ``stdp_ltp``, ``stdp_ltd``).
- ``reward_stdp``: reward-modulated STDP (Izhikevich 2007, "Solving the distal reward problem
  through linkage of STDP and dopamine signaling"; Florian 2007, "Reinforcement learning
  through modulation of spike-timing-dependent synaptic plasticity"): the STDP term feeds a
  per-edge eligibility trace ``c <- decay * c + (A_plus * ltp - A_minus * ltd)``, and
  ``dw = eta * M * c``. ``M`` is the broadcast reward on reinforcement tasks or, on
  supervised tasks, the postsynaptic error, which makes the rule a supervised three-factor rule.

``A_plus``, ``A_minus`` and the eligibility decay are fixed; only ``eta`` is a parameter, swept
on meta-train lifetimes when the rules serve as baselines. The windows' time constants are
``spiking.tau_plus`` and ``spiking.tau_minus``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp

from neuroevo.errors import ConfigError
from neuroevo.features import EdgeFeatures, feature_columns
from neuroevo.rules.base import check_decay


def _check_amplitudes(a_plus: float, a_minus: float) -> None:
    for name, value in (("a_plus", a_plus), ("a_minus", a_minus)):
        if value < 0:
            raise ConfigError(f"rule.{name}={value} is negative; give the amplitude as a value >= 0 (depression is subtracted)")


@dataclasses.dataclass(frozen=True)
class STDPRuleConfig:
    """Options of pair-based STDP (config section ``rule`` with ``name: stdp``)."""

    a_plus: float = 1.0  # potentiation amplitude of a pre-then-post pair at zero lag
    a_minus: float = 1.05  # depression amplitude of a post-then-pre pair at zero lag; larger than a_plus, so uncorrelated spikes depress
    eta_init: float = 0.01

    def validate(self) -> None:
        _check_amplitudes(self.a_plus, self.a_minus)
        if self.eta_init <= 0:
            raise ConfigError(f"rule.eta_init={self.eta_init} must be positive, e.g. 0.01")


@dataclasses.dataclass(frozen=True)
class STDPRule:
    """Stateless pair-based STDP; params ``{"eta": ()}``."""

    a_plus: float = 1.0
    a_minus: float = 1.05
    eta_init: float = 0.01
    feature_names: tuple[str, ...] = ("stdp_ltp", "stdp_ltd")

    @classmethod
    def from_config(cls, config: STDPRuleConfig) -> STDPRule:
        return cls(config.a_plus, config.a_minus, config.eta_init)

    def init(self, key: jax.Array) -> Any:
        return {"eta": jnp.float32(self.eta_init)}

    def random_params(self, key: jax.Array) -> Any:
        """Draw ``eta`` log-uniformly from [eta_init / 10, eta_init * 10]."""
        return {"eta": jnp.float32(self.eta_init) * 10.0 ** jax.random.uniform(key, (), jnp.float32, -1.0, 1.0)}

    def init_state(self, shape: tuple[int, ...]) -> tuple:
        return ()

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """dw (edge shape) of one block."""
        ltp, ltd = features.edge[..., 0], features.edge[..., 1]
        return params["eta"] * (self.a_plus * ltp - self.a_minus * ltd), state

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """Reference evaluation on dense features (..., 2) in the order stdp_ltp, stdp_ltd."""
        return params["eta"] * (self.a_plus * features[..., 0] - self.a_minus * features[..., 1])


@dataclasses.dataclass(frozen=True)
class RewardSTDPRuleConfig:
    """Options of reward-modulated STDP (config section ``rule`` with ``name: reward_stdp``)."""

    modulator: Literal["error", "reward"] = "error"  # the third factor M
    a_plus: float = 1.0
    a_minus: float = 1.05
    eligibility_decay: float = 0.5  # per presentation
    eta_init: float = 0.1

    def validate(self) -> None:
        _check_amplitudes(self.a_plus, self.a_minus)
        check_decay("rule.eligibility_decay", self.eligibility_decay)
        if self.eta_init <= 0:
            raise ConfigError(f"rule.eta_init={self.eta_init} must be positive, e.g. 0.1")


@dataclasses.dataclass(frozen=True)
class RewardSTDPRule:
    """Params ``{"eta": ()}``; state: the eligibility trace (edge shape)."""

    modulator: str = "error"
    a_plus: float = 1.0
    a_minus: float = 1.05
    eligibility_decay: float = 0.5
    eta_init: float = 0.1

    @classmethod
    def from_config(cls, config: RewardSTDPRuleConfig) -> RewardSTDPRule:
        return cls(config.modulator, config.a_plus, config.a_minus, config.eligibility_decay, config.eta_init)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("stdp_ltp", "stdp_ltd", self.modulator)

    def init(self, key: jax.Array) -> Any:
        return {"eta": jnp.float32(self.eta_init)}

    def random_params(self, key: jax.Array) -> Any:
        """Draw ``eta`` log-uniformly from [eta_init / 10, eta_init * 10]."""
        return {"eta": jnp.float32(self.eta_init) * 10.0 ** jax.random.uniform(key, (), jnp.float32, -1.0, 1.0)}

    def init_state(self, shape: tuple[int, ...]) -> jax.Array:
        """Zero eligibility traces: (n_dst, n_src) or (E,)."""
        return jnp.zeros(shape, jnp.float32)

    def _step(self, params: Any, ltp: jax.Array, ltd: jax.Array, modulator: jax.Array, eligibility: jax.Array) -> tuple[jax.Array, jax.Array]:
        eligibility = self.eligibility_decay * eligibility + self.a_plus * ltp - self.a_minus * ltd
        return params["eta"] * modulator * eligibility, eligibility

    def apply(self, params: Any, features: EdgeFeatures, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """dw and the updated eligibility, both of the block's edge shape."""
        columns = feature_columns(self.feature_names, features)
        dw, eligibility = self._step(params, columns["stdp_ltp"], columns["stdp_ltd"], columns[self.modulator], state)
        return jnp.broadcast_to(dw, features.edge_shape), jnp.broadcast_to(eligibility, features.edge_shape)

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """dw of the first step from zero eligibility, on dense features (..., 3) in the order of ``feature_names``."""
        dw, _ = self._step(params, features[..., 0], features[..., 1], features[..., 2], jnp.zeros(features.shape[:-1], jnp.float32))
        return dw
