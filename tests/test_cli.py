"""The ``neuroevo evolve`` command: invalid input, in process and as a subprocess, and a tiny run."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from neuroevo import cli, run
from neuroevo.cli import claim_default_dir, load_config, main
from neuroevo.config import config_from_dict
from neuroevo.io import read_rule_file
from neuroevo.rules import build_rule

# Each case: (name, arguments after "evolve", text the error line must contain). "{file}"
# stands for a regular file, so a path below it cannot be created.
ERROR_CASES = [
    ("unknown_key", ["--set", "evolution.bogus=1"], "evolution.bogus"),
    ("unknown_section", ["--set", "bogus.key=1"], "'bogus'"),
    ("wrong_type", ["--set", "evolution.population=abc"], "evolution.population='abc'"),
    ("n_way_too_large", ["--set", "task.n_way=6"], "task.n_way=6"),
    ("odd_population", ["--set", "evolution.population=7"], "evolution.population=7"),
    ("unknown_strategy", ["--set", "evolution.strategy=Nope"], "evolution.strategy='Nope'"),
    ("malformed_set", ["--set", "evolution.population"], "evolution.population"),
    ("missing_config", ["missing.yaml"], "missing.yaml"),
    ("unwritable_out", ["--out", "{file}/run"], "{file}/run"),
    ("empty_classes", ["--set", "task.train_classes=[]"], "task.train_classes"),
]


# Each subprocess imports JAX (seconds of CPU), so only these cases also run as subprocesses.
# They are listed in the order of ERROR_CASES.
SUBPROCESS_CASES = ["unknown_key", "wrong_type", "n_way_too_large", "odd_population", "missing_config", "unwritable_out"]


def command_line(name: str, arguments: list[str], folder: Path) -> list[str]:
    """Return the arguments of one case, with "{file}" resolved and --out set inside ``folder`` unless given."""
    regular_file = folder / "regular_file"
    regular_file.write_text("")
    resolved = [argument.replace("{file}", str(regular_file)) for argument in arguments]
    if "--out" not in resolved:
        resolved += ["--out", str(folder / f"{name}-run")]
    return ["evolve", *resolved]


def check_error_output(code: int, stderr: str, expected: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("neuroevo: error:"), stderr
    assert expected in lines[0], stderr


@pytest.mark.parametrize(("name", "arguments", "expected"), ERROR_CASES, ids=[case[0] for case in ERROR_CASES])
def test_error_in_process(name, arguments, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = command_line(name, arguments, tmp_path)
    expected = expected.replace("{file}", str(tmp_path / "regular_file"))

    code = main(argv)

    check_error_output(code, capsys.readouterr().err, expected)


@pytest.fixture(scope="module")
def subprocess_errors(tmp_path_factory):
    """Run the SUBPROCESS_CASES in parallel as ``python -m neuroevo.cli`` and collect their outputs."""
    processes = {}
    for case in ERROR_CASES:
        name, arguments, _ = case
        if name not in SUBPROCESS_CASES:
            continue
        folder = tmp_path_factory.mktemp(name)
        processes[name] = (
            folder,
            subprocess.Popen(
                [sys.executable, "-m", "neuroevo.cli", *command_line(name, arguments, folder)],
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    outputs = {}
    for name, (folder, process) in processes.items():
        _, stderr = process.communicate(timeout=300)
        outputs[name] = (folder, process.returncode, stderr)
    return outputs


@pytest.mark.parametrize(("name", "arguments", "expected"), [case for case in ERROR_CASES if case[0] in SUBPROCESS_CASES], ids=SUBPROCESS_CASES)
def test_error_in_subprocess(name, arguments, expected, subprocess_errors):
    folder, code, stderr = subprocess_errors[name]

    check_error_output(code, stderr, expected.replace("{file}", str(folder / "regular_file")))


def test_missing_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])

    assert exit_info.value.code == 2
    assert "neuroevo: error:" in capsys.readouterr().err


def test_failed_run_leaves_out_reusable(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "run")
    assert main(["evolve", "--set", "task.n_way=6", "--out", out]) == 2
    capsys.readouterr()

    code = main(["evolve", "--set", "evolution.population=7", "--out", out])

    check_error_output(code, capsys.readouterr().err, "evolution.population=7")


# A tiny end-to-end run ----------------------------------------------------------------------

TINY_RUN = [
    "evolution.generations=3",
    "evolution.population=4",
    "evolution.lifetimes_per_member=2",
    "evolution.eval_every=2",
    "evolution.eval_lifetimes=4",
    "evaluation.lifetimes=8",
    "evaluation.sweep_lifetimes=4",
    "evaluation.multi_pass_epochs=2",
    "evaluation.learning_rates=[0.1, 1.0]",
    "task.k_shot=3",
    "task.n_query=4",
    "rule.hidden=[4]",
]
METHODS = {"evolved", "no_plasticity", "random_rule", "sgd_one_pass", "sgd_multi_pass"}
RUN_FILES = ["config.yaml", "metrics.jsonl", "best_rule.safetensors", "fitness.png", "learning_curves.png", "summary.json"]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    overrides = [argument for item in TINY_RUN for argument in ("--set", item)]
    code, stdout, stderr = run_main(["evolve", *overrides, "--out", str(run_dir)])
    return run_dir, code, stdout, stderr


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_succeeds(tiny_run):
    _, code, _, stderr = tiny_run

    assert code == 0, stderr


@pytest.mark.parametrize("name", RUN_FILES)
def test_run_writes_file(tiny_run, name):
    run_dir = tiny_run[0]

    assert (run_dir / name).is_file()
    assert (run_dir / name).stat().st_size > 0


@pytest.mark.parametrize("name", ["fitness.png", "learning_curves.png"])
def test_run_plots_png(tiny_run, name):
    assert (tiny_run[0] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_metrics_one_line_per_generation(tiny_run):
    records = read_metrics(tiny_run[0])

    assert [record["generation"] for record in records] == [1, 2, 3]


def test_run_metrics_fields(tiny_run):
    for record in read_metrics(tiny_run[0]):
        generation = record["generation"]
        assert {"best_fitness", "mean_fitness", "nan_count", "wall_time"} <= set(record), f"generation {generation}"
        assert 0.0 <= record["mean_fitness"] <= record["best_fitness"] <= 1.0, f"generation {generation}"


def test_run_metrics_evaluations(tiny_run):
    # eval_every=2, and the last generation is always evaluated.
    evaluated = [record["generation"] for record in read_metrics(tiny_run[0]) if "train_eval" in record]

    assert evaluated == [2, 3]


def test_run_summary_shape(tiny_run):
    summary = json.loads((tiny_run[0] / "summary.json").read_text())

    assert summary["task"] == "digits"
    assert summary["metric"] == "accuracy"
    assert set(summary["heldout"]) == METHODS
    for method, result in summary["heldout"].items():
        low, high = result["ci95"]
        assert result["lifetimes"] == 8, method
        assert 0.0 <= result["mean"] <= 1.0, method
        assert low <= result["mean"] <= high, method


def test_run_config_yaml_resolved(tiny_run):
    _, expected = load_config(None, TINY_RUN)

    written = config_from_dict(yaml.safe_load((tiny_run[0] / "config.yaml").read_text()))

    assert written == expected


def test_run_best_rule_readable(tiny_run):
    params, metadata = read_rule_file(tiny_run[0] / "best_rule.safetensors")
    _, config = load_config(None, TINY_RUN)
    template = build_rule(config.rule).init(jax.random.key(0))

    assert jax.tree.structure(params) == jax.tree.structure(template)
    assert [leaf.shape for leaf in jax.tree.leaves(params)] == [leaf.shape for leaf in jax.tree.leaves(template)]
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
    assert metadata["format"] == "neuroevo-rule"


def test_run_again_rejected(tiny_run):
    run_dir = tiny_run[0]
    before = (run_dir / "metrics.jsonl").read_text()

    code, _, stderr = run_main(["evolve", "--set", "evolution.generations=1", "--out", str(run_dir)])

    check_error_output(code, stderr, str(run_dir))
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_run_again_rejected_subprocess(tiny_run):
    run_dir = tiny_run[0]

    process = subprocess.run(
        [sys.executable, "-m", "neuroevo.cli", "evolve", "--out", str(run_dir)],
        cwd=run_dir.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )

    check_error_output(process.returncode, process.stderr, str(run_dir))


def test_run_files_share_permissions(tiny_run):
    run_dir = tiny_run[0]
    reference_mode = (run_dir / "metrics.jsonl").stat().st_mode & 0o777

    modes = {name: oct((run_dir / name).stat().st_mode & 0o777) for name in RUN_FILES}

    assert modes == {name: oct(reference_mode) for name in RUN_FILES}


def test_out_of_memory_is_a_clear_error(monkeypatch, capsys):
    def exhausted(args):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 2674689604272 bytes.")

    monkeypatch.setattr(cli, "command_evolve", exhausted)
    assert cli.main(["evolve"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("neuroevo: error: out of memory; lower evolution.population")
    assert "Traceback" not in error


def test_unexpected_error_still_raises(monkeypatch):
    def broken(args):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(cli, "command_evolve", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["evolve"])


def test_all_invalid_generations_stop_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["evolve", "--out", str(out), "--set", "evolution.population=4", "--set", "evolution.lifetimes_per_member=1"]
    arguments += ["--set", "evolution.generations=20", "--set", "task.k_shot=2", "--set", "task.n_query=2"]
    # A rule whose output scale overflows float32 makes every member diverge once the zero
    # output layer is perturbed.
    arguments += ["--set", "rule.output_scale=1.0e+38", "--set", "evolution.std=1.0"]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "for 5 generations in a row" in error
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [1, 2, 3, 4, 5]


def test_default_run_dirs_never_collide(tmp_path):
    base = tmp_path / "runs" / "digits-20261205-000000"

    first = claim_default_dir(base)
    second = claim_default_dir(base)

    assert first == base
    assert second == base.with_name(base.name + "-2")
    assert first.is_dir()
    assert second.is_dir()


def test_progress_counts_read_as_singular():
    settings = config_from_dict({"evolution": {"generations": 1, "lifetimes_per_member": 1}}).evolution

    description = run._describe_outer_loop(settings)

    assert description.endswith("population 64, 1 lifetime per member, 1 generation")


def test_progress_time_skips_first_generation():
    from neuroevo.run import _progress_time

    assert _progress_time(10.0, 10.0, 0, 99) == "10s elapsed, including compilation"
    # Two generations after a first one of 8 s took 4 s together, so 99 more take 198 s.
    assert _progress_time(12.0, 8.0, 2, 99) == "12s elapsed, ~3m18s left"


def test_progress_survives_closed_pipe():
    script = "\n".join(
        [
            "import sys",
            "from neuroevo.run import print_progress",
            "for _ in range(20000):",
            "    print_progress('x' * 100)",
            "print('done', file=sys.stderr)",
        ]
    )
    reader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()
    _, stderr = reader.communicate(timeout=120)

    assert reader.returncode == 0
    assert stderr.decode().strip() == "done"
