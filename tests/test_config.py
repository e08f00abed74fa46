"""Config validation, impossible sizes, --set overrides and the dict round trip."""

from __future__ import annotations

import pytest
import yaml

from neuroevo.config import (
    Config,
    EvolutionConfig,
    NetworkConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    parse_override,
    read_yaml,
)
from neuroevo.errors import ConfigError
from neuroevo.rules import MLPRuleConfig
from neuroevo.tasks import DigitsConfig, build_task


def test_defaults_build():
    config = config_from_dict({})

    assert isinstance(config, Config)
    assert isinstance(config.task, DigitsConfig)
    assert isinstance(config.rule, MLPRuleConfig)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bogus": 1}, "'bogus'"),
        ({"network": {"hiden": [4]}}, "'network.hiden'"),
        ({"evolution": {"populaton": 8}}, "'evolution.populaton'"),
        ({"evaluation": {"lifetime": 8}}, "'evaluation.lifetime'"),
        ({"signal": {"pathway": "none"}}, "'signal.pathway'"),
        ({"task": {"n_shot": 3}}, "'task.n_shot'"),
        ({"rule": {"featurez": ["pre"]}}, "'rule.featurez'"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_unknown_key_named(data, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(data)


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        config_from_dict({"network": {"hiden": [4]}})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"evolution": {"population": "abc"}}, "evolution.population='abc'"),
        ({"evolution": {"population": 2.5}}, "evolution.population=2.5"),
        ({"evolution": {"population": True}}, "evolution.population=True"),
        ({"evolution": {"std": "wide"}}, "evolution.std='wide'"),
        ({"evolution": {"optimizer": "rmsprop"}}, "evolution.optimizer='rmsprop'"),
        ({"network": {"bias": "yes"}}, "network.bias='yes'"),
        ({"network": {"hidden": 4}}, "network.hidden=4"),
        ({"network": {"hidden": [4.5]}}, r"network.hidden\[0\]=4.5"),
        ({"network": {"init": "orthogonal"}}, "network.init='orthogonal'"),
        ({"signal": {"feedback": "backprop"}}, "signal.feedback='backprop'"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"task": {"k_shot": "ten"}}, "task.k_shot='ten'"),
        ({"task": {"train_classes": 3}}, "task.train_classes=3"),
        ({"rule": {"features": "pre"}}, "rule.features='pre'"),
        ({"rule": {"hidden": [8, "x"]}}, r"rule.hidden\[1\]='x'"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_wrong_type_named(data, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"network": 5}, "network"),
        ({"task": [1, 2]}, "task"),
        ({"task": {"name": "imagenet"}}, "task.name='imagenet'"),
        ({"rule": {"name": "hebb9000"}}, "rule.name='hebb9000'"),
    ],
    ids=["section_not_mapping", "task_not_mapping", "unknown_task", "unknown_rule"],
)
def test_invalid_section_named(data, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(data)


def test_config_not_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        config_from_dict([1, 2])


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"network": {"hidden": [8, -2]}}, "network.hidden"),
        ({"network": {"hidden": [0]}}, "network.hidden"),
        ({"rule": {"hidden": [-1]}}, "rule.hidden"),
        ({"network": {"hidden": [8], "ticks": 1}}, "network.ticks=1"),
        ({"network": {"ticks": -1}}, "network.ticks=-1"),
        ({"network": {"init_gain": -1.0}}, "network.init_gain"),
        ({"evolution": {"population": 0}}, "evolution.population=0"),
        ({"evolution": {"std": 0.0}}, "evolution.std"),
        ({"evolution": {"lifetime_batch": 0}}, "evolution.lifetime_batch=0"),
        ({"evolution": {"strategy": "CMA_ES", "population": 1}}, "evolution.population=1"),
        ({"evaluation": {"lifetimes": 1}}, "evaluation.lifetimes"),
        ({"evaluation": {"learning_rates": []}}, "evaluation.learning_rates"),
        ({"task": {"n_way": 1}}, "task.n_way=1"),
        ({"task": {"k_shot": 0}}, "task.k_shot=0"),
        ({"task": {"train_classes": [0, 1, 5]}}, "share"),
        ({"task": {"train_classes": [0, 1, 10]}}, "task.train_classes"),
        ({"task": {"train_classes": [0, 1, 1]}}, "task.train_classes"),
        ({"task": {"query_fraction": 1.0}}, "task.query_fraction"),
        ({"rule": {"features": []}}, "rule.features"),
        ({"rule": {"features": ["pre", "spike"]}}, "'spike'"),
        ({"rule": {"features": ["pre", "pre"]}}, "rule.features"),
        ({"rule": {"output_scale": 0.0}}, "rule.output_scale"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_value_named(data, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("task", "key"),
    [
        ({"n_way": 6}, "task.n_way=6"),
        ({"n_way": 3, "train_classes": [0, 1]}, "task.n_way=3"),
        ({"k_shot": 500}, "task.k_shot=500"),
        ({"n_query": 500}, "task.n_query=500"),
    ],
    ids=["n_way_above_classes", "n_way_above_listed_classes", "k_shot_above_support", "n_query_above_pool"],
)
def test_impossible_task_size_named(task, key):
    # These sizes depend on the data, so the task rejects them when it is built.
    config = config_from_dict({"task": task})

    with pytest.raises(ConfigError, match=key):
        build_task(config.task)


def test_possible_task_size_builds():
    task = build_task(config_from_dict({"task": {"n_way": 5, "k_shot": 80, "n_query": 80}}).task)

    assert (task.n_way, task.k_shot, task.n_query) == (5, 80, 80)


# --set overrides ----------------------------------------------------------------------------


def test_parse_override_yaml_values():
    assert parse_override("evolution.population=32") == (["evolution", "population"], 32)
    assert parse_override("rule.hidden=[16, 8]") == (["rule", "hidden"], [16, 8])
    assert parse_override("network.bias=false") == (["network", "bias"], False)
    assert parse_override("evolution.std=0.05") == (["evolution", "std"], 0.05)
    assert parse_override("rule.features=[pre, error]") == (["rule", "features"], ["pre", "error"])
    assert parse_override("task.name=digits") == (["task", "name"], "digits")


def test_parse_override_value_keeps_equals():
    assert parse_override("task.name=a=b") == (["task", "name"], "a=b")


def test_parse_override_empty_value_null():
    assert parse_override("network.ticks=") == (["network", "ticks"], None)


@pytest.mark.parametrize(
    "text",
    ["evolution.population", "evolution..population=3", ".population=3", "evolution.population=[1,"],
    ids=["no_equals", "empty_part", "leading_dot", "invalid_yaml"],
)
def test_parse_override_rejects(text):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


def test_apply_overrides_nested_and_lists():
    base = {"evolution": {"population": 64}, "rule": {"hidden": [16]}}

    data = apply_overrides(
        base,
        ["evolution.population=32", "rule.hidden=[8, 4]", "network.hidden=[5]", "task.train_classes=[0, 1, 2]", "seed=3"],
    )

    assert data == {
        "evolution": {"population": 32},
        "rule": {"hidden": [8, 4]},
        "network": {"hidden": [5]},
        "task": {"train_classes": [0, 1, 2]},
        "seed": 3,
    }


def test_apply_overrides_leaves_input_unchanged():
    base = {"rule": {"hidden": [16]}}

    apply_overrides(base, ["rule.hidden=[8]", "rule.activation=relu"])

    assert base == {"rule": {"hidden": [16]}}


def test_apply_overrides_later_wins():
    data = apply_overrides({}, ["evolution.population=8", "evolution.population=16"])

    assert data == {"evolution": {"population": 16}}


def test_apply_overrides_fills_empty_section():
    data = apply_overrides({"network": None}, ["network.hidden=[4]"])

    assert data == {"network": {"hidden": [4]}}


def test_apply_overrides_rejects_key_below_value():
    with pytest.raises(ConfigError, match="'seed' is a value"):
        apply_overrides({"seed": 0}, ["seed.value=1"])


@pytest.mark.parametrize(
    "overrides, section",
    [
        (["evolution=5", "evolution.population=8"], "evolution"),
        (["structure=[1, 2]"], "structure"),
        (["evolution.meta_gradient=3"], "evolution.meta_gradient"),
        (["task=digits"], "task"),
    ],
)
def test_apply_overrides_rejects_value_for_section(overrides, section):
    with pytest.raises(ConfigError) as error:
        apply_overrides({}, overrides)

    assert str(error.value).startswith(f"--set '{overrides[0]}': {section} is a section with keys (")
    assert f"--set {section}.KEY=VALUE" in str(error.value)


def test_apply_overrides_names_section_keys():
    with pytest.raises(ConfigError, match=r"keys \(truncation, clip_norm\)"):
        apply_overrides({}, ["evolution.meta_gradient=3"])


def test_overrides_reach_config():
    config = config_from_dict(apply_overrides({}, ["rule.hidden=[8, 4]", "evolution.population=32", "network.bias=false"]))

    assert config.rule.hidden == (8, 4)
    assert config.evolution.population == 32
    assert config.network.bias is False


def test_override_unknown_key_named():
    with pytest.raises(ConfigError, match="'evolution.bogus'"):
        config_from_dict(apply_overrides({}, ["evolution.bogus=1"]))


# Round trip and files --------------------------------------------------------------------


CUSTOM = {
    "seed": 7,
    "task": {"name": "digits", "n_way": 4, "k_shot": 3, "train_classes": [0, 1, 2, 3, 4], "query_fraction": 0.4},
    "network": {"hidden": [12, 6], "hidden_activation": "relu", "ticks": 4, "init": "uniform", "init_gain": 0.5},
    "rule": {"name": "mlp", "features": ["pre", "error", "weight"], "hidden": [4], "activation": "sigmoid", "output_scale": 0.3},
    "signal": {"feedback": "broadcast"},
    "evolution": {"strategy": "SNES", "population": 12, "std": 0.02, "optimizer": "sgd", "fitness": "neg_loss"},
    "evaluation": {"lifetimes": 10, "learning_rates": [0.5, 2]},
}


@pytest.mark.parametrize("data", [{}, CUSTOM], ids=["defaults", "custom"])
def test_config_dict_round_trip(data):
    config = config_from_dict(data)

    assert config_from_dict(config_to_dict(config)) == config


def test_config_yaml_round_trip():
    config = config_from_dict(CUSTOM)

    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)

    assert config_from_dict(yaml.safe_load(text)) == config


def test_config_to_dict_plain():
    data = config_to_dict(config_from_dict(CUSTOM))

    assert data["task"]["name"] == "digits"
    assert data["rule"]["name"] == "mlp"
    assert data["network"]["hidden"] == [12, 6]
    assert data["evaluation"]["learning_rates"] == [0.5, 2.0]


def test_custom_values_kept():
    config = config_from_dict(CUSTOM)

    assert config.network == NetworkConfig(hidden=(12, 6), hidden_activation="relu", ticks=4, init="uniform", init_gain=0.5)
    assert config.evolution.strategy == "SNES"
    assert isinstance(config.evolution.std, float)
    assert config.evaluation.learning_rates == (0.5, 2.0)
    assert config.task.train_classes == (0, 1, 2, 3, 4)


def test_config_hashable():
    # Config sections are static arguments of jitted functions.
    assert hash(config_from_dict(CUSTOM)) == hash(config_from_dict(CUSTOM))
    assert hash(EvolutionConfig()) == hash(EvolutionConfig())


def test_read_yaml_missing(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "absent.yaml")


def test_read_yaml_malformed(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("evolution: [1, 2\n")

    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(path)


def test_read_yaml_not_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")

    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(path)


def test_read_yaml_empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")

    assert read_yaml(path) == {}


@pytest.mark.parametrize("key", ["train_classes", "test_classes"])
def test_empty_class_list_rejected(key):
    with pytest.raises(ConfigError, match=f"task.{key}"):
        build_task(config_from_dict({"task": {key: []}}).task)


# A range check such as "std <= 0" is False for NaN, so non-finite numbers need their own check.
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize(
    ("section", "key"),
    [("evolution", "std"), ("evolution", "learning_rate"), ("rule", "output_scale"), ("network", "init_gain")],
    ids=lambda value: value,
)
def test_non_finite_value_rejected(section, key, value):
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        config_from_dict({section: {key: value}})


def test_repeated_yaml_key_rejected(tmp_path):
    path = tmp_path / "repeated.yaml"
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match="'seed' appears twice") as raised:
        read_yaml(path)
    assert "\n" not in str(raised.value)


def test_exponent_string_read_as_float():
    # PyYAML reads 1e-3 (no dot) as the string "1e-3".
    config = config_from_dict({"evolution": {"learning_rate": "1e-3"}})
    assert config.evolution.learning_rate == pytest.approx(0.001)


@pytest.mark.parametrize("value", [2**31, -(2**31), 10**23])
def test_integer_out_of_int32_range_rejected(value):
    with pytest.raises(ConfigError, match="out of range"):
        config_from_dict({"evolution": {"population": value}})


@pytest.mark.parametrize("n_way", [0, 1, -3])
def test_n_way_below_two_names_bound(n_way):
    with pytest.raises(ConfigError, match=rf"^task.n_way={n_way} must be at least 2 for a classification task$"):
        config_from_dict({"task": {"n_way": n_way}})


@pytest.mark.parametrize("seed", [2**31, -(2**31), -(2**40)])
def test_seed_out_of_range_asks_for_valid_seed(seed):
    with pytest.raises(ConfigError) as error:
        config_from_dict({"seed": seed})

    assert str(error.value) == f"seed={seed} is out of range; use an integer between 0 and {2**31 - 1}"


def test_negative_seed_rejected():
    with pytest.raises(ConfigError, match="seed=-1 is negative"):
        config_from_dict({"seed": -1})
