"""The rule protocol, checked for every registered rule family with its default options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroevo import features as feature_lib
from neuroevo import graph
from neuroevo.config import EvolutionConfig
from neuroevo.evolve import Evolution
from neuroevo.lifetime import Learner
from neuroevo.rules import RULE_CONFIGS, build_rule
from neuroevo.tasks import DigitsConfig, build_task

import reference

N_DST, N_SRC = 5, 7

# Every registered family with default options, plus non-default options that change what a rule reads.
RULE_CASES = [(name, {}) for name in RULE_CONFIGS] + [("abcd", {"modulated": True})]


def case_id(case) -> str:
    name, options = case
    return "-".join([name, *(f"{key}={value}" for key, value in options.items())])


class OneBlock:
    """A rule with per-block parameters (abcd_per_edge), sized for one (N_DST, N_SRC) block and seen through the shared-rule protocol."""

    def __init__(self, rule):
        self.rule = rule.for_topology(graph.layered_topology(N_SRC, (), N_DST, bias=False))
        self.feature_names = self.rule.feature_names

    def init(self, key):
        return self.rule.block_params(self.rule.init(key), 0)

    def random_params(self, key):
        return self.rule.block_params(self.rule.random_params(key), 0)

    def init_state(self, shape):
        return self.rule.init_state(shape)

    def apply(self, params, features, state):
        return self.rule.apply(params, features, state)

    def apply_dense(self, params, features):
        return self.rule.apply_dense(params, features)


@pytest.fixture(params=RULE_CASES, ids=case_id)
def rule(request):
    name, options = request.param
    built = build_rule(RULE_CONFIGS[name](**options))
    return OneBlock(built) if hasattr(built, "block_params") else built


def random_features(names: tuple[str, ...], seed: int) -> feature_lib.EdgeFeatures:
    """Return factored features of one (N_DST, N_SRC) block with standard normal values."""
    rng = np.random.default_rng(seed)
    sizes = {"post": (N_DST,), "pre": (N_SRC,), "edge": (N_DST, N_SRC)}
    columns = {kind: [] for kind in sizes}
    for name in names:
        kind = reference.FEATURE_KINDS[name]
        columns[kind].append(rng.normal(size=sizes[kind]).astype(np.float32))

    def stack(kind: str) -> jax.Array:
        if not columns[kind]:
            return jnp.zeros((*sizes[kind], 0), jnp.float32)
        return jnp.asarray(np.stack(columns[kind], axis=-1))

    return feature_lib.EdgeFeatures.for_block(post=stack("post"), pre=stack("pre"), edge=stack("edge"))


def test_every_family_covered():
    assert {name for name, _ in RULE_CASES} == set(RULE_CONFIGS)


def test_params_float32(rule):
    for label, params in (("init", rule.init(jax.random.key(0))), ("random_params", rule.random_params(jax.random.key(0)))):
        leaves = jax.tree.leaves(params)
        assert leaves, label
        assert {str(leaf.dtype) for leaf in leaves} == {"float32"}, label


def test_feature_names_registered(rule):
    assert rule.feature_names
    feature_lib.validate_names(rule.feature_names)


def test_apply_finite_block_shape(rule):
    features = random_features(rule.feature_names, seed=0)
    params = rule.random_params(jax.random.key(1))

    dw, state = jax.jit(rule.apply)(params, features, rule.init_state((N_DST, N_SRC)))

    assert dw.shape == (N_DST, N_SRC)
    assert dw.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(dw)))
    assert np.any(np.asarray(dw) != 0.0)  # so the comparisons below can fail
    assert jax.tree.structure(state) == jax.tree.structure(rule.init_state((N_DST, N_SRC)))


def test_apply_matches_apply_dense(rule):
    features = random_features(rule.feature_names, seed=2)
    params = rule.random_params(jax.random.key(3))

    dw, _ = jax.jit(rule.apply)(params, features, rule.init_state((N_DST, N_SRC)))
    dw_dense = jax.jit(rule.apply_dense)(params, feature_lib.dense(rule.feature_names, features))

    np.testing.assert_allclose(dw, dw_dense, rtol=1e-5, atol=1e-6)


def test_apply_edge_list_matches_block(rule):
    features = random_features(rule.feature_names, seed=7)
    params = rule.random_params(jax.random.key(8))
    shape = (N_DST, N_SRC)
    edge_list = feature_lib.EdgeFeatures(
        post=jnp.broadcast_to(features.post, (*shape, features.post.shape[-1])).reshape(N_DST * N_SRC, -1),
        pre=jnp.broadcast_to(features.pre, (*shape, features.pre.shape[-1])).reshape(N_DST * N_SRC, -1),
        edge=features.edge.reshape(N_DST * N_SRC, -1),
    )

    dw_block, _ = jax.jit(rule.apply)(params, features, rule.init_state(shape))
    dw_list, _ = jax.jit(rule.apply)(params, edge_list, rule.init_state((N_DST * N_SRC,)))

    assert dw_list.shape == (N_DST * N_SRC,)
    np.testing.assert_allclose(dw_list, np.asarray(dw_block).reshape(-1), rtol=1e-5, atol=1e-6)


def test_init_changes_no_weight(rule):
    features = random_features(rule.feature_names, seed=4)

    dw, _ = jax.jit(rule.apply)(rule.init(jax.random.key(0)), features, rule.init_state((N_DST, N_SRC)))

    assert np.all(np.asarray(dw) == 0.0)


def test_jitted_apply_no_retrace(rule):
    traces = []

    def apply(params, features):
        traces.append(1)  # runs only while JAX traces
        return rule.apply(params, features, rule.init_state((N_DST, N_SRC)))[0]

    jitted = jax.jit(apply)
    first = jitted(rule.random_params(jax.random.key(0)), random_features(rule.feature_names, seed=5))
    second = jitted(rule.random_params(jax.random.key(1)), random_features(rule.feature_names, seed=6))

    assert len(traces) == 1
    assert not np.allclose(first, second)  # the second call did see the new values


def test_tiny_evolution_runs(rule):
    task = build_task(DigitsConfig(n_way=3, k_shot=2, n_query=3))
    topology = graph.layered_topology(64, (), 3)
    rule = rule.rule.for_topology(topology) if isinstance(rule, OneBlock) else rule
    learner = Learner(topology, rule, feedback="none")
    config = EvolutionConfig(population=8, lifetimes_per_member=2, std=0.1, learning_rate=0.05)
    evolution = Evolution(learner, task, config, rule.init(jax.random.key(0)))
    state = evolution.init(jax.random.key(1))
    pools = task.data("train")

    for _ in range(2):
        state, metrics = evolution.generation(state, pools)

    center = evolution.center(state)
    assert int(state.generation) == 2
    assert int(metrics.nan_count) == 0
    assert 0.0 <= float(metrics.mean_fitness) <= float(metrics.best_fitness) <= 1.0
    assert jax.tree.structure(center) == jax.tree.structure(rule.init(jax.random.key(0)))
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(center))
