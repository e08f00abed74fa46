"""Rule files (export, load_rule), evaluate and inspect, including their bad-input errors."""

import json

import jax
import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file as save_safetensors_file

import neuroevo
import neuroevo.io
from neuroevo.checkpoint import load_checkpoint
from neuroevo.cli import main
from neuroevo.config import config_from_dict, read_yaml
from neuroevo.errors import NeuroevoError
from neuroevo import evaluate as evaluate_module
from neuroevo import inspect_rule
from neuroevo.evaluate import check_features_available
from neuroevo.experiment import build_experiment
from neuroevo.inspect_rule import sample_control_features
from neuroevo.io import read_rule_file, save_rule, strict_json
from neuroevo.lifetime import Lifetimes
from neuroevo.rules.mlp import DEFAULT_FEATURES
from neuroevo.run import rule_metadata

TINY = {
    "task": {"name": "digits", "k_shot": 3, "n_query": 4},
    "rule": {"name": "mlp", "hidden": [4]},
    "signal": {"feedback": "none"},
    "evolution": {"population": 4, "generations": 4, "lifetimes_per_member": 2, "eval_every": 2, "eval_lifetimes": 4},
    "evaluation": {"lifetimes": 6, "sweep_lifetimes": 3, "multi_pass_epochs": 2, "learning_rates": [0.1, 1.0]},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_run")
    config_path = root / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    assert main(["evolve", str(config_path), "--out", str(root / "run")]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny.rule.safetensors"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    return out


def test_export_round_trip_gives_identical_dw(run_dir, exported):
    config = config_from_dict(read_yaml(run_dir / "config.yaml"))
    experiment = build_experiment(config)
    evolution = experiment.evolution()
    template = evolution.init(experiment.key(0), experiment.train_pools)
    checkpoint = load_checkpoint(run_dir, template, evolution.center(template))

    rule = neuroevo.load_rule(exported)
    features = jax.random.normal(jax.random.key(3), (257, len(rule.feature_names)))
    expected = experiment.learner.rule.apply_dense(checkpoint.best_params, features)
    np.testing.assert_array_equal(np.asarray(rule(features)), np.asarray(expected))


def test_export_metadata(exported, run_dir):
    _, metadata = read_rule_file(exported)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert metadata["format_version"] == 1
    assert metadata["rule"]["name"] == "mlp"
    assert metadata["features"] == list(DEFAULT_FEATURES)
    assert metadata["learning_signal"]["feedback"] == "none"
    assert metadata["source_config"]["evolution"]["population"] == 4
    assert metadata["meta_test_score"] == summary["heldout"]["evolved"]
    assert "meta_train_fitness" in metadata




def test_load_rule_rejects_truncated_file(exported, tmp_path, capsys):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(exported.read_bytes()[:-20])
    with pytest.raises(NeuroevoError, match="not a valid neuroevo rule file"):
        neuroevo.load_rule(truncated)
    assert main(["inspect", str(truncated)]) == 2
    assert "neuroevo: error:" in capsys.readouterr().err


def test_load_rule_rejects_garbage(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    with pytest.raises(NeuroevoError, match="not a valid neuroevo rule file"):
        neuroevo.load_rule(garbage)


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}], ids=["no_metadata", "other_metadata"])
def test_load_rule_explains_plain_safetensors(tmp_path, metadata):
    path = tmp_path / "plain.safetensors"
    save_safetensors_file({"kernel": np.zeros(3, np.float32)}, str(path), metadata=metadata)

    with pytest.raises(NeuroevoError) as error:
        neuroevo.load_rule(path)

    assert str(error.value).startswith(f"{str(path)!r} is a safetensors file but not a neuroevo rule file: its header has no 'neuroevo' metadata entry")
    assert "corrupt" not in str(error.value)


def test_load_rule_lists_known_rule_families(exported, tmp_path):
    params, metadata = read_rule_file(exported)
    metadata = {key: value for key, value in metadata.items() if key not in ("format", "format_version")}
    metadata["rule"] = {**metadata["rule"], "name": "nope"}
    path = tmp_path / "unknown.safetensors"
    save_rule(path, params, metadata)

    with pytest.raises(NeuroevoError) as error:
        neuroevo.load_rule(path)

    assert "rule family 'nope' is not known to this neuroevo version (valid families: abcd, bcm, gru, mlp," in str(error.value)
    assert "hidden" not in str(error.value)


def test_export_rejects_rule_file(exported, capsys):
    assert main(["export", str(exported)]) == 2

    assert f"export reads a run directory, but {str(exported)!r} is a file" in capsys.readouterr().err


def test_load_rule_rejects_newer_format(exported, tmp_path, monkeypatch):
    params, metadata = read_rule_file(exported)
    metadata = {key: value for key, value in metadata.items() if key not in ("format", "format_version")}
    newer = tmp_path / "newer.safetensors"
    with monkeypatch.context() as patch:
        patch.setattr(neuroevo.io, "RULE_FORMAT_VERSION", 99)
        save_rule(newer, params, metadata)
    with pytest.raises(NeuroevoError, match="newer than this neuroevo reads"):
        neuroevo.load_rule(newer)


def test_load_rule_rejects_mismatched_parameters(exported, tmp_path):
    params, metadata = read_rule_file(exported)
    metadata = {key: value for key, value in metadata.items() if key not in ("format", "format_version")}
    metadata["rule"] = {**metadata["rule"], "hidden": [7]}
    mismatched = tmp_path / "mismatched.safetensors"
    save_rule(mismatched, params, metadata)
    with pytest.raises(NeuroevoError, match="do not match"):
        neuroevo.load_rule(mismatched)


def test_missing_rule_file(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "absent.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_export_rejects_non_run_directory(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "is not a run directory" in error
    assert "Traceback" not in error


def test_evaluate_writes_table_json_and_plot(exported, tmp_path, capsys):
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(exported), "--lifetimes", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    evaluation = json.loads((out / "evaluation.json").read_text())
    expected = {"evolved", "no_plasticity", "random_rule", "sgd_one_pass", "sgd_multi_pass", "adam_one_pass", "hebbian", "supervised_hebbian", "oja", "delta", "bcm", "three_factor"}
    assert set(evaluation["heldout"]) == expected
    assert evaluation["metric"] == "accuracy"
    assert evaluation["heldout"]["evolved"]["lifetimes"] == 4
    assert (out / "learning_curves.png").stat().st_size > 0
    for method in expected:
        assert method in printed


def test_evaluate_rejects_impossible_size(exported, tmp_path, capsys):
    assert main(["evaluate", str(exported), "--set", "task.n_way=7", "--out", str(tmp_path / "e")]) == 2
    error = capsys.readouterr().err
    assert "task.n_way=7" in error
    assert "Traceback" not in error


def test_evaluate_rejects_unknown_task(exported, tmp_path, capsys):
    assert main(["evaluate", str(exported), "--task", "imagenet", "--out", str(tmp_path / "e")]) == 2
    assert "'imagenet' is not a registered task" in capsys.readouterr().err


def test_evaluate_task_takes_bundled_config_name(exported, tmp_path, capsys):
    assert main(["evaluate", str(exported), "--task", "cartpole", "--out", str(tmp_path / "e")]) == 2
    captured = capsys.readouterr()

    assert "cartpole is a bundled config, so its task section is used (control with its options)" in captured.out
    assert "this rule cannot run on task 'control'" in captured.err


def test_rule_needing_a_missing_signal_is_rejected():
    with pytest.raises(NeuroevoError) as error:
        check_features_available(("pre", "error"), "control")

    assert str(error.value).startswith("this rule cannot run on task 'control': it reads error, which needs the error signal")
    assert "and control provides reward" in str(error.value)
    assert "evaluate it on a task with error: breast_cancer, continual_digits, dataset, digits, iris, sinusoid, spike_patterns, wine" in str(error.value)


def test_rule_reading_provided_signals_is_accepted():
    check_features_available(("pre", "post", "error"), "digits")
    check_features_available(("pre", "reward"), "control")


def test_evaluate_explains_missing_signal(exported, tmp_path, capsys):
    assert main(["evaluate", str(exported), "--task", "control", "--out", str(tmp_path / "e")]) == 2
    error_lines = capsys.readouterr().err.splitlines()

    assert len(error_lines) == 1
    assert "this rule cannot run on task 'control'" in error_lines[0]
    assert "rule.features" not in error_lines[0]


def test_inspect_writes_plot(exported, tmp_path, capsys):
    out = tmp_path / "response.png"
    assert main(["inspect", str(exported), "--x", "pre", "--y", "error", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 0
    assert "presynaptic activation" in printed


def test_inspect_writes_next_to_rule_by_default(exported, tmp_path, monkeypatch, capsys):
    rule = tmp_path / "rules" / "tiny.rule.safetensors"
    rule.parent.mkdir()
    rule.write_bytes(exported.read_bytes())
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    assert main(["inspect", str(rule), "--x", "pre", "--y", "error"]) == 0

    plot = tmp_path / "rules" / "tiny.rule.pre-error.png"
    assert plot.stat().st_size > 0
    assert list(workdir.iterdir()) == []
    assert f"wrote {plot}" in capsys.readouterr().out


def test_inspect_rejects_unknown_feature(exported, capsys):
    assert main(["inspect", str(exported), "--x", "reward"]) == 2
    assert "'reward' is not a feature of this rule" in capsys.readouterr().err


def test_load_rule_rejects_nan_parameters(exported, tmp_path):
    params, metadata = read_rule_file(exported)
    metadata = {key: value for key, value in metadata.items() if key not in ("format", "format_version")}
    params["params"]["Dense_0"]["bias"][0] = np.nan
    broken = tmp_path / "nan.safetensors"
    save_rule(broken, params, metadata)
    with pytest.raises(NeuroevoError, match="NaN or infinite rule parameters"):
        neuroevo.load_rule(broken)


def test_inspect_rejects_rule_without_source_config(exported, tmp_path, capsys):
    params, metadata = read_rule_file(exported)
    metadata = {key: value for key, value in metadata.items() if key not in ("format", "format_version", "source_config")}
    bare = tmp_path / "bare.safetensors"
    save_rule(bare, params, metadata)
    assert main(["inspect", str(bare), "--out", str(tmp_path / "bare.png")]) == 2
    error = capsys.readouterr().err
    assert "carries no source config" in error
    assert "Traceback" not in error


def test_inspect_rejects_unsupported_plot_extension(exported, tmp_path, capsys):
    assert main(["inspect", str(exported), "--out", str(tmp_path / "response.txt")]) == 2
    assert "unsupported image extension" in capsys.readouterr().err


# CartPole with a shared rule that reads the reward, which is 1 at every step of an episode.
CONTROL = {
    "task": {
        "name": "control", "env": "CartPole-v1", "vary": ["length"], "train_ranges": [[0.4, 0.8]], "test_ranges": [[0.2, 0.4]],
        "episodes": 2, "max_steps": 30, "perturb_step": 10, "recovery_window": 10, "reward_signal": "reward",
    },
    "network": {"output_activation": "identity"},
    "rule": {"name": "mlp", "features": ["pre", "post", "weight", "reward"], "hidden": [4]},
    "signal": {"feedback": "none"},
}


def write_control_rule(path, rule_section) -> None:
    """Write a rule file with random parameters whose source config is CONTROL with ``rule_section``."""
    config = config_from_dict({**CONTROL, "rule": rule_section})
    experiment = build_experiment(config)
    params = experiment.learner.rule.random_params(jax.random.key(0))
    save_rule(path, jax.device_get(params), rule_metadata(config, experiment.learner.rule.feature_names, {}))


def test_inspect_samples_control_steps_while_episodes_run():
    experiment = build_experiment(config_from_dict(CONTROL))
    params = experiment.learner.rule.random_params(jax.random.key(0))
    key = jax.random.key(5)

    samples = sample_control_features(experiment.learner, experiment.task, experiment.train_pools, params, key, n_lifetimes=3)

    # CartPole pays 1 per step of an episode, so the returns count the steps that ran.
    result = Lifetimes(experiment.learner, experiment.task).evaluate(params, experiment.train_pools, jax.random.split(key, 3))
    steps = int(np.asarray(result.details.episode_returns).sum())
    rows_per_step = sum(w.size for w in experiment.learner.init_network(key).weights)
    assert samples.shape == (steps * rows_per_step, 4)
    np.testing.assert_array_equal(samples[:, 3], 1.0)


def test_inspect_plots_control_rule(tmp_path, capsys):
    path = tmp_path / "cartpole.rule.safetensors"
    write_control_rule(path, CONTROL["rule"])

    assert main(["inspect", str(path), "--x", "pre", "--y", "weight"]) == 0

    assert (tmp_path / "cartpole.rule.pre-weight.png").stat().st_size > 0
    assert "reward=1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--x", "nope"], "--x 'nope' is not a feature of this rule"),
        (["--x", "pre", "--y", "pre"], "--x and --y are both 'pre'"),
        (["--out", "{tmp}/missing/plot.png"], "cannot write plot '{tmp}/missing/plot.png': its directory does not exist"),
    ],
    ids=["unknown_feature", "same_feature", "missing_directory"],
)
def test_inspect_checks_arguments_before_lifetimes(exported, tmp_path, monkeypatch, capsys, arguments, message):
    def no_lifetimes(config):
        raise AssertionError("inspect built the experiment before checking its arguments")

    monkeypatch.setattr(inspect_rule, "build_experiment", no_lifetimes)
    arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]

    code = main(["inspect", str(exported), *arguments])
    output = capsys.readouterr()

    assert code == 2
    assert message.replace("{tmp}", str(tmp_path)) in output.err
    assert output.out == ""


def test_inspect_rejects_per_edge_rule(tmp_path, capsys):
    path = tmp_path / "abcd.rule.safetensors"
    write_control_rule(path, {"name": "abcd", "per_edge": True})

    assert main(["inspect", str(path)]) == 2
    error = capsys.readouterr().err
    assert "one parameter set per edge" in error
    assert "rule.per_edge=false" in error


def test_evaluate_rejects_rule_overrides(exported, tmp_path, capsys):
    assert main(["evaluate", str(exported), "--set", "rule.output_scale=1.0", "--out", str(tmp_path / "e")]) == 2
    assert "the rule is fixed by the rule file" in capsys.readouterr().err


def test_strict_json_writes_null_for_nan():
    text = strict_json({"mean": float("nan"), "ci95": [float("-inf"), 0.5], "lifetimes": 3})

    assert json.loads(text) == {"mean": None, "ci95": [None, 0.5], "lifetimes": 3}
    assert "NaN" not in text
    assert "Infinity" not in text


def test_load_rule_rejects_list_metadata(tmp_path):
    from safetensors.numpy import save

    path = tmp_path / "list.safetensors"
    path.write_bytes(save({"w": np.zeros(2, np.float32)}, metadata={"neuroevo": "[1, 2]"}))

    with pytest.raises(NeuroevoError, match="metadata is not a JSON object"):
        neuroevo.load_rule(path)


def test_load_rule_rejects_clashing_tensor_names(exported, tmp_path):
    from safetensors.numpy import save

    params, metadata = read_rule_file(exported)
    path = tmp_path / "clash.safetensors"
    header = json.dumps({"format": "neuroevo-rule", "format_version": 1, **{key: value for key, value in metadata.items() if key not in ("format", "format_version")}})
    path.write_bytes(save({"params": np.zeros(1, np.float32), "params/x": np.zeros(1, np.float32)}, metadata={"neuroevo": header}))

    with pytest.raises(NeuroevoError, match="both a leaf and a group"):
        neuroevo.load_rule(path)


@pytest.mark.parametrize(("task", "overrides"), [("continual_digits", []), ("sinusoid", ["network.output_activation=identity", "evolution.fitness=neg_loss"])])
def test_evaluate_reaches_comparison_on_tasks_without_n_way(exported, tmp_path, monkeypatch, task, overrides):
    # The comparison itself is stubbed out: this checks that everything before it accepts a
    # task whose config has no n_way or k_shot.
    class ComparisonReached(Exception):
        pass

    def stop(*args, **kwargs):
        raise ComparisonReached

    monkeypatch.setattr(evaluate_module, "compare_heldout", stop)
    with pytest.raises(ComparisonReached):
        evaluate_module.evaluate_rule(exported, task=task, overrides=overrides, out=tmp_path / "e", log=lambda line: None)
