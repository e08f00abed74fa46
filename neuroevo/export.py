"""Portable rules: export a run's best rule to one file, and load a rule file anywhere.

>>> rule = neuroevo.load_rule("digits.rule.safetensors")
>>> rule.feature_names
('pre', 'post', 'weight', 'error', 'in_mean')
>>> dw = rule(features)  # features: (..., len(rule.feature_names)) -> dw: (...)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from neuroevo.config import build_section
from neuroevo.errors import ConfigError, NeuroevoError
from neuroevo.features import EdgeFeatures
from neuroevo.io import read_rule_file, save_rule
from neuroevo.rules import RULE_CONFIGS, Rule, bind, block_params, build_rule, is_per_edge
from neuroevo.rules.base import block_key
from neuroevo.structural import StructureConfig, WithStructureParams

BEST_RULE_NAME = "best_rule.safetensors"


@dataclasses.dataclass(frozen=True)
class LoadedRule:
    """A rule read from a rule file: its family, parameters and metadata."""

    rule: Rule
    params: Any
    metadata: dict

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.rule.feature_names

    def __call__(self, features: jax.Array) -> jax.Array:
        """Weight change for dense features (..., F), columns in the order of ``feature_names``."""
        if is_per_edge(self.rule):
            raise NeuroevoError("this rule has one parameter set per edge, so dw depends on the edge; call rule.apply on one block's features instead")
        features = jnp.asarray(features, jnp.float32)
        if features.shape[-1] != len(self.feature_names):
            raise ValueError(f"features have {features.shape[-1]} columns, but the rule reads {len(self.feature_names)}: {', '.join(self.feature_names)}")
        return self.rule.apply_dense(self.params, features)

    def apply(self, features: EdgeFeatures, state: Any = (), block: int = 0) -> tuple[jax.Array, Any]:
        """Factored evaluation on one block of edges, as inside a lifetime; ``block`` matters only for per-edge rules."""
        return self.rule.apply(block_params(self.rule, self.params, block), features, state)


def rule_from_metadata(rule_section: Any, source: str) -> Rule:
    """Build the rule family described by a rule file's ``rule`` metadata (validated like a config section)."""
    if not isinstance(rule_section, dict):
        raise NeuroevoError(f"{source}: the rule metadata is not a mapping with a rule name; export the rule again")
    if rule_section.get("name") not in RULE_CONFIGS:
        raise NeuroevoError(
            f"{source}: rule family {rule_section.get('name')!r} is not known to this neuroevo version (valid families: "
            f"{', '.join(sorted(RULE_CONFIGS))}); upgrade neuroevo or export the rule again"
        )
    options = {key: value for key, value in rule_section.items() if key != "name"}
    try:
        return build_rule(build_section(RULE_CONFIGS[rule_section["name"]], options, "rule"))
    except ConfigError as error:
        raise NeuroevoError(f"{source}: invalid rule metadata: {error}") from None


def structure_from_metadata(section: dict, source: str) -> StructureConfig:
    """Build the ``structure`` section of a rule file's source config, whose evolved options the params hold."""
    try:
        return build_section(StructureConfig, section, "structure")
    except ConfigError as error:
        raise NeuroevoError(f"{source}: invalid structure metadata: {error}") from None


def stored_block_shapes(params: dict) -> tuple[tuple[int, ...], ...]:
    """Edge shape of every block in the stored params of a per-edge rule (empty if they have no block entries)."""
    shapes = []
    while isinstance(params.get(block_key(len(shapes))), dict) and "eta" in params[block_key(len(shapes))]:
        shapes.append(tuple(params[block_key(len(shapes))]["eta"].shape))
    return tuple(shapes)


def check_same_graph(loaded: LoadedRule, rule: Rule) -> None:
    """Raise NeuroevoError when a per-edge rule file's params do not fit ``rule``, the rule bound to the target graph."""
    if not is_per_edge(loaded.rule):
        return
    expected = jax.tree.map(jnp.shape, rule.init(jax.random.key(0)))
    stored = jax.tree.map(jnp.shape, loaded.params)
    if expected != stored:
        raise NeuroevoError(
            f"the rule has one parameter set per edge for blocks of edge shapes {list(loaded.rule.block_shapes)}, but this "
            f"network's blocks have edge shapes {list(rule.block_shapes)}; per-edge rules are not size-portable, so evaluate "
            "it on the task and network it was evolved on"
        )


def load_rule(path: str | Path) -> LoadedRule:
    """Read a rule file written by ``neuroevo export`` (or a run's best_rule.safetensors).

    Only JSON and raw arrays are read; nothing in the file is executed. A missing, corrupt,
    truncated or newer-format file raises :class:`NeuroevoError`.
    """
    params, metadata = read_rule_file(Path(path))
    rule = rule_from_metadata(metadata.get("rule"), str(path))
    source_task = metadata.get("source_config", {}).get("task", {}) if isinstance(metadata.get("source_config"), dict) else {}
    if isinstance(source_task, dict) and source_task.get("weight_init") == "evolved":
        raise NeuroevoError(
            f"{str(path)!r} contains evolved initial weights, which fit only the graph they were evolved on, so it "
            "cannot be loaded as a rule; its run's summary.json has its held-out scores"
        )
    source_structure = metadata.get("source_config", {}).get("structure") if isinstance(metadata.get("source_config"), dict) else None
    if isinstance(source_structure, dict) and source_structure.get("evolve"):
        rule = WithStructureParams(rule, structure_from_metadata(source_structure, str(path)))
    if is_per_edge(rule):
        rule = bind(rule, stored_block_shapes(params))
    template = rule.init(jax.random.key(0))
    template_shapes = jax.tree.map(jnp.shape, template)
    try:
        loaded_shapes = jax.tree.map(jnp.shape, params)
    except Exception:  # noqa: BLE001 - any structural surprise means the same thing here
        loaded_shapes = None
    if loaded_shapes != template_shapes:
        raise NeuroevoError(f"{str(path)!r}: the stored parameters do not match the {metadata['rule'].get('name')} rule described in its metadata; the file is damaged")
    params = jax.tree.map(lambda value: jnp.asarray(value, jnp.float32), params)
    if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params)):
        raise NeuroevoError(f"{str(path)!r} contains NaN or infinite rule parameters; export the rule again from a run that finished")
    return LoadedRule(rule, params, metadata)


def find_rule_file(rule_or_run: str | Path) -> Path:
    """Return ``rule_or_run`` if it is a rule file, or the best rule of a run directory."""
    path = Path(rule_or_run)
    if path.is_dir():
        candidate = path / BEST_RULE_NAME
        if not candidate.is_file():
            raise NeuroevoError(f"{str(path)!r} is not a run directory with a rule (no {BEST_RULE_NAME}); pass a run directory or a rule file")
        return candidate
    if not path.exists():
        raise NeuroevoError(f"{str(path)!r} not found; pass a run directory or a rule file")
    return path


def export_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's best rule, with its scores from ``summary.json`` if present, to one file."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise NeuroevoError(
            f"export reads a run directory, but {str(run_dir)!r} is a file; a rule file is already portable, so pass it "
            "to evaluate or inspect as it is"
        )
    if not run_dir.is_dir():
        raise NeuroevoError(f"run directory {str(run_dir)!r} not found")
    source = run_dir / BEST_RULE_NAME
    if not source.is_file():
        raise NeuroevoError(
            f"{str(run_dir)!r} has no {BEST_RULE_NAME}, so it is not a run directory or its run has not yet evaluated "
            "a center; pass the directory of a run that has, or resume this one"
        )
    loaded = load_rule(source)
    metadata = {key: value for key, value in loaded.metadata.items() if key not in ("format", "format_version")}
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
            metadata["meta_test_score"] = summary["heldout"]["evolved"]
            metadata["meta_test_baselines"] = {method: numbers for method, numbers in summary["heldout"].items() if method != "evolved"}
        except (json.JSONDecodeError, KeyError, TypeError):
            raise NeuroevoError(f"{str(summary_path)!r} is not a valid run summary; rerun the run or delete the file") from None
    out = Path(out) if out else Path(f"{run_dir.resolve().name}.rule.safetensors")
    try:
        save_rule(out, jax.device_get(loaded.params), metadata)
    except OSError as error:
        raise NeuroevoError(f"cannot write rule file {str(out)!r} ({error.strerror}); choose a writable --out") from None
    return out
