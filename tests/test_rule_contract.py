"""The rule protocol, checked for every registered rule family on dense blocks and edge lists."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import features as feature_lib
from neuroevo import graph
from neuroevo.config import EvolutionConfig
from neuroevo.evolve import Evolution
from neuroevo.export import load_rule
from neuroevo.io import save_rule
from neuroevo.lifetime import Learner, Lifetimes
from neuroevo.rules import RULE_CONFIGS, bind, block_params, build_rule
from neuroevo.tasks import DigitsConfig, build_task

import reference

N_DST, N_SRC, N_EDGES = 5, 7, 11
LAYOUTS = {"dense": (N_DST, N_SRC), "edges": (N_EDGES,)}

# Every registered family with default options, plus options that change what a rule reads
# or how its params are shaped.
RULE_CASES = [(name, {}) for name in RULE_CONFIGS] + [
    ("abcd", {"modulated": True}),
    ("abcd", {"per_edge": True}),
    ("three_factor", {"modulator": "reward"}),
]
# Families whose initial params change no weight; the others start from their classic rule.
NO_OP_AT_INIT = {"mlp", "abcd", "gru", "polynomial"}


def case_id(case) -> str:
    name, options = case
    return "-".join([name, *(f"{key}={value}" for key, value in options.items())])


class Case:
    """One rule case bound to one block of edge shape ``shape``, with the block's params."""

    def __init__(self, name: str, options: dict, shape: tuple[int, ...]):
        self.name, self.options, self.shape = name, options, shape
        self.rule = bind(build_rule(RULE_CONFIGS[name](**options)), (shape,))

    def init(self, seed: int = 0):
        return block_params(self.rule, self.rule.init(jax.random.key(seed)), 0)

    def random(self, seed: int):
        return block_params(self.rule, self.rule.random_params(jax.random.key(seed)), 0)

    def state(self):
        return self.rule.init_state(self.shape)

    def features(self, seed: int) -> feature_lib.EdgeFeatures:
        return random_features(self.rule.feature_names, self.shape, seed)


@pytest.fixture(params=[(case, layout) for case in RULE_CASES for layout in LAYOUTS], ids=lambda param: f"{case_id(param[0])}-{param[1]}")
def case(request):
    (name, options), layout = request.param
    return Case(name, options, LAYOUTS[layout])


def random_features(names: tuple[str, ...], shape: tuple[int, ...], seed: int) -> feature_lib.EdgeFeatures:
    """Return factored features of one block with standard normal values: dense if ``shape`` is (n_dst, n_src), else an edge list."""
    rng = np.random.default_rng(seed)
    if len(shape) == 2:
        sizes = {"post": (shape[0],), "pre": (shape[1],), "edge": shape}
    else:
        sizes = {kind: shape for kind in ("post", "pre", "edge")}
    columns = {kind: [] for kind in sizes}
    for name in names:
        kind = reference.FEATURE_KINDS[name]
        columns[kind].append(rng.normal(size=sizes[kind]).astype(np.float32))

    def stack(kind: str) -> jax.Array:
        if not columns[kind]:
            return jnp.zeros((*sizes[kind], 0), jnp.float32)
        return jnp.asarray(np.stack(columns[kind], axis=-1))

    if len(shape) == 2:
        return feature_lib.EdgeFeatures.for_block(post=stack("post"), pre=stack("pre"), edge=stack("edge"))
    return feature_lib.EdgeFeatures(post=stack("post"), pre=stack("pre"), edge=stack("edge"))


def test_every_family_covered():
    assert {name for name, _ in RULE_CASES} == set(RULE_CONFIGS)


def test_feature_kinds_match_registry():
    assert {name: feature.kind for name, feature in feature_lib.FEATURES.items()} == reference.FEATURE_KINDS


def test_params_float32(case):
    for label, params in (("init", case.init()), ("random_params", case.random(0))):
        leaves = jax.tree.leaves(params)
        assert leaves, label
        assert {str(leaf.dtype) for leaf in leaves} == {"float32"}, label


def test_feature_names_registered(case):
    assert case.rule.feature_names
    feature_lib.validate_names(case.rule.feature_names)


def test_apply_finite_edge_shape(case):
    state = case.state()

    dw, new_state = jax.jit(case.rule.apply)(case.random(1), case.features(0), state)

    assert dw.shape == case.shape
    assert dw.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(dw)))
    assert np.any(np.asarray(dw) != 0.0)  # so the comparisons below can fail
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert jax.tree.map(jnp.shape, new_state) == jax.tree.map(jnp.shape, state)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(new_state))


def test_apply_matches_apply_dense(case):
    features = case.features(2)
    params = case.random(3)

    dw, _ = jax.jit(case.rule.apply)(params, features, case.state())
    dw_dense = jax.jit(case.rule.apply_dense)(params, feature_lib.dense(case.rule.feature_names, features))

    np.testing.assert_allclose(dw, dw_dense, rtol=1e-5, atol=1e-6)


def test_init_changes_weights_by_convention(case):
    dw, _ = jax.jit(case.rule.apply)(case.init(), case.features(4), case.state())

    if case.name in NO_OP_AT_INIT:
        assert np.all(np.asarray(dw) == 0.0)
    else:
        assert np.any(np.asarray(dw) != 0.0)


def test_jitted_apply_no_retrace(case):
    traces = []

    def apply(params, features, state):
        traces.append(1)  # runs only while JAX traces
        return case.rule.apply(params, features, state)

    jitted = jax.jit(apply)
    first, state = jitted(case.random(0), case.features(5), case.state())
    second, _ = jitted(case.random(1), case.features(6), state)

    assert len(traces) == 1
    assert not np.allclose(first, second)  # the second call did see the new values


def test_export_load_same_dw(case, tmp_path):
    params = case.rule.random_params(jax.random.key(7))
    path = tmp_path / "rule.safetensors"
    save_rule(path, jax.device_get(params), {"rule": {"name": case.name, **case.options}})

    loaded = load_rule(path)
    features = case.features(8)
    expected, expected_state = case.rule.apply(block_params(case.rule, params, 0), features, case.state())
    actual, actual_state = loaded.apply(features, case.state())

    assert type(loaded.rule) is type(case.rule)
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))
    for actual_leaf, expected_leaf in zip(jax.tree.leaves(actual_state), jax.tree.leaves(expected_state)):
        np.testing.assert_array_equal(np.asarray(actual_leaf), np.asarray(expected_leaf))

def tiny_learner_and_task(name: str, options: dict):
    rule = build_rule(RULE_CONFIGS[name](**options))
    task = build_task(DigitsConfig(n_way=3, k_shot=2, n_query=3))
    return Learner(graph.layered_topology(64, (), 3), rule, feedback="none"), task


# Rules with per-edge state or per-edge params, whose state and params the lifetime must thread.
LIFETIME_CASES = [("gru", {}), ("bcm", {}), ("three_factor", {}), ("abcd", {"per_edge": True})]


@pytest.mark.parametrize("case", LIFETIME_CASES, ids=case_id)
def test_lifetimes_finite(case):
    learner, task = tiny_learner_and_task(*case)
    lifetimes = Lifetimes(learner, task)
    keys = jax.random.split(jax.random.key(2), 3)

    result = lifetimes.evaluate(learner.rule.random_params(jax.random.key(1)), task.data("train"), keys)

    assert np.all(np.isfinite(np.asarray(result.fitness)))
    assert np.all((0.0 <= np.asarray(result.metric)) & (np.asarray(result.metric) <= 1.0))


# Evolution compiles slowly, so it runs for a shared rule and for a per-edge rule, whose
# params are one set per edge of the bound graph.
@pytest.mark.parametrize("case", [("mlp", {}), ("abcd", {"per_edge": True})], ids=case_id)
def test_tiny_evolution_runs(case):
    learner, task = tiny_learner_and_task(*case)
    config = EvolutionConfig(population=8, lifetimes_per_member=2, std=0.1, learning_rate=0.05)
    initial = learner.rule.init(jax.random.key(0))
    evolution = Evolution(learner, task, config, initial)
    pools = task.data("train")
    state = evolution.init(jax.random.key(1), pools)

    for _ in range(2):
        state, metrics = evolution.generation(state, pools)

    center = evolution.center(state)
    assert int(state.generation) == 2
    assert int(metrics.nan_count) == 0
    assert 0.0 <= float(metrics.mean_fitness) <= float(metrics.best_fitness) <= 1.0
    assert jax.tree.structure(center) == jax.tree.structure(initial)
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(center))
