"""Checkpoint and resume: a run killed with SIGKILL and resumed ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from neuroevo import run
from neuroevo.checkpoint import CHECKPOINT_NAME
from neuroevo.cli import main
from neuroevo.experiment import MethodResult

TINY = {
    "task": {"name": "digits", "k_shot": 2, "n_query": 3},
    "rule": {"name": "mlp", "hidden": [4]},
    "signal": {"feedback": "none"},
    "evolution": {
        "population": 4,
        "generations": 400,
        "lifetimes_per_member": 1,
        "eval_every": 100,
        "eval_lifetimes": 2,
        "checkpoint_every": 10,
    },
    "evaluation": {"lifetimes": 4, "sweep_lifetimes": 2, "multi_pass_epochs": 2, "learning_rates": [0.1, 1.0]},
}


def checkpoint_info(run_dir):
    with np.load(run_dir / CHECKPOINT_NAME, allow_pickle=False) as archive:
        return json.loads(archive["info"].tobytes()), archive["state_0000"].copy()


def logged_generations(run_dir):
    return [json.loads(line)["generation"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    # A persistent compilation cache shared by the subprocesses keeps the three runs fast.
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def evolve_command(config_path, out):
    return [sys.executable, "-m", "neuroevo.cli", "evolve", str(config_path), "--out", str(out)]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, environment):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))

    reference = tmp_path / "reference"
    subprocess.run(evolve_command(config_path, reference), env=environment, check=True, capture_output=True, timeout=600)
    reference_info, reference_mean = checkpoint_info(reference)
    assert reference_info["generation"] == 400

    killed = tmp_path / "killed"
    process = subprocess.Popen(evolve_command(config_path, killed), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (killed / CHECKPOINT_NAME).exists() and len(logged_generations(killed)) > 25:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    info_at_kill, _ = checkpoint_info(killed)
    assert 0 < info_at_kill["generation"] < 400, "the run must be killed mid-evolution for this test to mean anything"
    assert len(logged_generations(killed)) < 400

    result = subprocess.run([sys.executable, "-m", "neuroevo.cli", "evolve", "--resume", str(killed)], env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"after generation {info_at_kill['generation']}" in result.stdout

    final_info, final_mean = checkpoint_info(killed)
    assert final_info["generation"] == 400
    np.testing.assert_allclose(final_mean, reference_mean, rtol=1e-5, atol=1e-6)
    assert logged_generations(killed) == list(range(1, 401))
    assert final_info["best"] == reference_info["best"]
    assert (killed / "summary.json").is_file()


def test_resume_rejects_non_run_directory(tmp_path, capsys):
    assert main(["evolve", "--resume", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_resume_rejects_a_corrupt_checkpoint(tmp_path, capsys):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(TINY))
    (run_dir / CHECKPOINT_NAME).write_bytes(b"PK\x03\x04 truncated")
    assert main(["evolve", "--resume", str(run_dir)]) == 2
    assert "is corrupt" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"hello world, not an archive", bytes(range(256)) * 4], ids=["text", "binary"])
def test_resume_explains_a_garbage_checkpoint(tmp_path, capsys, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(TINY))
    (run_dir / CHECKPOINT_NAME).write_bytes(content)

    code = main(["evolve", "--resume", str(run_dir)])
    error_lines = capsys.readouterr().err.splitlines()

    assert code == 2
    assert len(error_lines) == 1
    assert f"checkpoint {str(run_dir / CHECKPOINT_NAME)!r} is corrupt" in error_lines[0]
    assert "delete it to restart the run from generation 0, or start a new run directory" in error_lines[0]
    assert "pickle" not in error_lines[0]


def test_resume_with_set_is_rejected(tmp_path, capsys):
    assert main(["evolve", "--resume", str(tmp_path), "--set", "seed=1"]) == 2
    assert "only --set evolution.generations=N" in capsys.readouterr().err


def test_resume_with_out_is_rejected(tmp_path, capsys):
    assert main(["evolve", "--resume", str(tmp_path), "--out", str(tmp_path / "other")]) == 2
    assert "drop CONFIG and --out" in capsys.readouterr().err


def test_resume_rejects_an_empty_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(TINY))
    (run_dir / CHECKPOINT_NAME).write_bytes(b"")
    assert main(["evolve", "--resume", str(run_dir)]) == 2
    assert "is corrupt" in capsys.readouterr().err


def test_resume_rejects_a_checkpoint_of_another_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "compare_heldout", stub_comparison)
    short = {**TINY, "evolution": {**TINY["evolution"], "generations": 2, "checkpoint_every": 1}}
    config_path = tmp_path / "short.yaml"
    config_path.write_text(yaml.safe_dump(short))
    run_dir = tmp_path / "run"
    assert main(["evolve", str(config_path), "--out", str(run_dir)]) == 0
    other = {**short, "seed": 5}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(other))
    capsys.readouterr()
    assert main(["evolve", "--resume", str(run_dir)]) == 2
    assert "different config" in capsys.readouterr().err


def test_resume_rejects_edited_checkpoint_info(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(TINY))
    info = np.frombuffer(json.dumps({"generation": "three"}).encode(), dtype=np.uint8)
    np.savez(run_dir / CHECKPOINT_NAME, info=info)

    assert main(["evolve", "--resume", str(run_dir)]) == 2
    assert "has no integer generation" in capsys.readouterr().err


def test_resume_rejects_an_empty_config(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("")

    assert main(["evolve", "--resume", str(run_dir)]) == 2
    assert "config.yaml is empty" in capsys.readouterr().err


def test_interrupt_names_the_resume_command(tmp_path, monkeypatch, capsys):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "run"
    save_checkpoint = run.save_checkpoint

    def save_then_interrupt(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "save_checkpoint", save_then_interrupt)
    code = main(["evolve", str(config_path), "--out", str(run_dir)])
    error_lines = capsys.readouterr().err.splitlines()

    assert code == 130
    assert error_lines == [f"neuroevo: interrupted; continue the run from its last checkpoint with: neuroevo evolve --resume {run_dir}"]
    assert checkpoint_info(run_dir)[0]["generation"] == TINY["evolution"]["checkpoint_every"]


def test_interrupt_before_checkpoint_says_restart(tmp_path, monkeypatch, capsys):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "run"

    def interrupt(record):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "strict_json", interrupt)  # writing generation 1's metrics, before any checkpoint
    code = main(["evolve", str(config_path), "--out", str(run_dir)])
    error_lines = capsys.readouterr().err.splitlines()

    assert code == 130
    assert error_lines == [f"neuroevo: interrupted; no checkpoint was written yet, so the run restarts from generation 0 with: neuroevo evolve --resume {run_dir}"]
    assert not (run_dir / "checkpoint.npz").exists()


def test_sigint_exits_130_with_resume_command(tmp_path, environment):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "run"
    process = subprocess.Popen(evolve_command(config_path, run_dir), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((run_dir / "metrics.jsonl").exists() and len(logged_generations(run_dir)) > 2):
        time.sleep(0.005)

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr
    # The signal may come before or after the first checkpoint, so the message may be either.
    assert stderr.splitlines() in (
        [f"neuroevo: interrupted; continue the run from its last checkpoint with: neuroevo evolve --resume {run_dir}"],
        [f"neuroevo: interrupted; no checkpoint was written yet, so the run restarts from generation 0 with: neuroevo evolve --resume {run_dir}"],
    )


def stub_comparison(experiment, rule_params, log=print):
    """Stand-in for the held-out comparison, whose baselines take most of a short run's time."""
    return {"evolved": MethodResult(np.array([0.5, 0.75]), np.zeros((2, 3)))}


def write_config(tmp_path, **evolution):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**TINY, "evolution": {**TINY["evolution"], **evolution}}))
    return path


def state_arrays(run_dir):
    with np.load(run_dir / CHECKPOINT_NAME, allow_pickle=False) as archive:
        return {name: archive[name].copy() for name in archive.files if name.startswith("state_")}


def test_extended_run_matches_longer_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "compare_heldout", stub_comparison)
    config_path = write_config(tmp_path, generations=2, checkpoint_every=1, eval_every=1)
    extended, reference = tmp_path / "extended", tmp_path / "reference"
    assert main(["evolve", str(config_path), "--out", str(extended)]) == 0

    assert main(["evolve", "--resume", str(extended), "--set", "evolution.generations=4"]) == 0
    assert main(["evolve", str(config_path), "--set", "evolution.generations=4", "--out", str(reference)]) == 0

    assert "resuming" in capsys.readouterr().out
    assert logged_generations(extended) == [1, 2, 3, 4]
    extended_state, reference_state = state_arrays(extended), state_arrays(reference)
    assert extended_state.keys() == reference_state.keys()
    for name in extended_state:
        np.testing.assert_array_equal(extended_state[name], reference_state[name], err_msg=name)
    extended_records = [json.loads(line) for line in (extended / "metrics.jsonl").read_text().splitlines()]
    reference_records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    for got, expected in zip(extended_records, reference_records):
        assert {key: value for key, value in got.items() if key != "wall_time"} == {key: value for key, value in expected.items() if key != "wall_time"}
    assert yaml.safe_load((extended / "config.yaml").read_text())["evolution"]["generations"] == 4
    assert json.loads((extended / "summary.json").read_text())["generations"] == 4


def test_resume_of_finished_run_names_extension(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "compare_heldout", stub_comparison)
    run_dir = tmp_path / "run"
    assert main(["evolve", str(write_config(tmp_path, generations=2)), "--out", str(run_dir)]) == 0
    capsys.readouterr()

    assert main(["evolve", "--resume", str(run_dir)]) == 0
    finished = capsys.readouterr().out
    assert main(["evolve", "--resume", str(run_dir), "--set", "evolution.generations=1"]) == 2
    shortened = capsys.readouterr().err

    assert f"run {run_dir} is already complete (2 generations)" in finished
    assert f"neuroevo evolve --resume {run_dir} --set evolution.generations=N (N > 2)" in finished
    assert "evolution.generations=1 is fewer than the 2 generations" in shortened


def test_extension_rejected_for_scheduled_strategy(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "compare_heldout", stub_comparison)
    run_dir = tmp_path / "run"
    config_path = write_config(tmp_path, generations=1, strategy="DiffusionEvolution")
    assert main(["evolve", str(config_path), "--out", str(run_dir)]) == 0
    capsys.readouterr()

    code = main(["evolve", "--resume", str(run_dir), "--set", "evolution.generations=2"])

    assert code == 2
    assert "spreads its schedule over the run's evolution.generations=1" in capsys.readouterr().err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["evolution"]["generations"] == 1
