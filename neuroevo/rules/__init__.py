"""Rule families behind one protocol (see :mod:`neuroevo.rules.base`), selected by name."""

from __future__ import annotations

from typing import Any

from neuroevo.rules.base import Rule
from neuroevo.rules.hebbian import ABCDRule, ABCDRuleConfig
from neuroevo.rules.mlp import MLPRule, MLPRuleConfig
from neuroevo.rules.per_edge import PerEdgeABCDRule, PerEdgeABCDRuleConfig

RULE_CONFIGS: dict[str, type] = {"mlp": MLPRuleConfig, "abcd": ABCDRuleConfig, "abcd_per_edge": PerEdgeABCDRuleConfig}
_RULE_CLASSES: dict[type, type] = {MLPRuleConfig: MLPRule, ABCDRuleConfig: ABCDRule, PerEdgeABCDRuleConfig: PerEdgeABCDRule}


def rule_name(config: Any) -> str:
    """Registry name of a rule config instance."""
    for name, cls in RULE_CONFIGS.items():
        if isinstance(config, cls):
            return name
    raise KeyError(f"unregistered rule config {type(config).__name__}")


def build_rule(config: Any) -> Rule:
    """Instantiate the rule family that ``config`` configures."""
    return _RULE_CLASSES[type(config)].from_config(config)


__all__ = ["ABCDRule", "ABCDRuleConfig", "MLPRule", "MLPRuleConfig", "PerEdgeABCDRule", "PerEdgeABCDRuleConfig", "RULE_CONFIGS", "Rule", "build_rule", "rule_name"]
