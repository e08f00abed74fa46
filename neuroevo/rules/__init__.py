"""Rule families behind one protocol (see :mod:`neuroevo.rules.base`), selected by name."""

from __future__ import annotations

from typing import Any

from neuroevo.rules.base import Rule, bind, block_params, is_per_edge
from neuroevo.rules.bcm import BCMRule, BCMRuleConfig
from neuroevo.rules.gru import GRURule, GRURuleConfig
from neuroevo.rules.hebbian import ABCDRule, ABCDRuleConfig
from neuroevo.rules.mlp import MLPRule, MLPRuleConfig
from neuroevo.rules.oja import OjaRule, OjaRuleConfig
from neuroevo.rules.polynomial import PolynomialRule, PolynomialRuleConfig
from neuroevo.rules.stdp import RewardSTDPRule, RewardSTDPRuleConfig, STDPRule, STDPRuleConfig
from neuroevo.rules.three_factor import ThreeFactorRule, ThreeFactorRuleConfig

RULE_CONFIGS: dict[str, type] = {
    "mlp": MLPRuleConfig,
    "abcd": ABCDRuleConfig,
    "gru": GRURuleConfig,
    "oja": OjaRuleConfig,
    "bcm": BCMRuleConfig,
    "three_factor": ThreeFactorRuleConfig,
    "polynomial": PolynomialRuleConfig,
    "stdp": STDPRuleConfig,
    "reward_stdp": RewardSTDPRuleConfig,
}
_RULE_CLASSES: dict[type, type] = {
    MLPRuleConfig: MLPRule,
    ABCDRuleConfig: ABCDRule,
    GRURuleConfig: GRURule,
    OjaRuleConfig: OjaRule,
    BCMRuleConfig: BCMRule,
    ThreeFactorRuleConfig: ThreeFactorRule,
    PolynomialRuleConfig: PolynomialRule,
    STDPRuleConfig: STDPRule,
    RewardSTDPRuleConfig: RewardSTDPRule,
}


def rule_name(config: Any) -> str:
    """Registry name of a rule config instance."""
    for name, cls in RULE_CONFIGS.items():
        if isinstance(config, cls):
            return name
    raise KeyError(f"unregistered rule config {type(config).__name__}")


def build_rule(config: Any) -> Rule:
    """Instantiate the rule family that ``config`` configures (unbound; see :func:`bind` for per-edge rules)."""
    return _RULE_CLASSES[type(config)].from_config(config)


__all__ = [
    "ABCDRule",
    "ABCDRuleConfig",
    "BCMRule",
    "BCMRuleConfig",
    "GRURule",
    "GRURuleConfig",
    "MLPRule",
    "MLPRuleConfig",
    "OjaRule",
    "OjaRuleConfig",
    "PolynomialRule",
    "PolynomialRuleConfig",
    "RULE_CONFIGS",
    "RewardSTDPRule",
    "RewardSTDPRuleConfig",
    "Rule",
    "STDPRule",
    "STDPRuleConfig",
    "ThreeFactorRule",
    "ThreeFactorRuleConfig",
    "bind",
    "block_params",
    "build_rule",
    "is_per_edge",
    "rule_name",
]
