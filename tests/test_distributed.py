"""Two processes joined by jax.distributed on this machine evolve like one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROBE = Path(__file__).with_name("distributed_probe.py")
TIMEOUT = 240  # seconds; a process whose peer died blocks until its heartbeat timeout

# The tests start 2 or 3 JAX processes that compile the same generation at once, minutes of CPU time in all.
pytestmark = pytest.mark.skipif(
    os.environ.get("NEUROEVO_TEST_DISTRIBUTED") != "1", reason="starts several JAX processes; set NEUROEVO_TEST_DISTRIBUTED=1 to run"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(process_id: int, process_count: int, port: int) -> subprocess.Popen:
    environment = {**os.environ, "JAX_PLATFORMS": "cpu"}
    environment.pop("XLA_FLAGS", None)
    command = [sys.executable, str(PROBE), str(process_id), str(process_count), str(port)]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(process: subprocess.Popen) -> dict:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, stderr[-2000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
    port = free_port()
    processes = [start(0, 1, port), start(0, 2, port), start(1, 2, port)]
    return [result(process) for process in processes]


def test_two_processes_see_all_devices(runs):
    single, first, second = runs
    assert single["devices"] == 2
    assert first["devices"] == second["devices"] == 4
    assert first["main"] and not second["main"]


def test_two_processes_match_one(runs):
    single, first, second = runs
    assert first["mean_fitness"] == second["mean_fitness"]
    np.testing.assert_allclose(first["mean_fitness"], single["mean_fitness"], rtol=1e-5, atol=1e-6)


def test_cli_two_processes_write_one_run(tmp_path):
    # Each process runs `neuroevo evolve --distributed` as a user would start it. Only process 0
    # writes the run directory, which ends with the same files as a run on one process.
    port = free_port()
    out = tmp_path / "run"
    overrides = ["evolution.population=4", "evolution.generations=2", "evolution.eval_every=1", "evolution.eval_lifetimes=4"]
    overrides += ["evaluation.lifetimes=8", "evaluation.sweep_lifetimes=4", "evaluation.multi_pass_epochs=2", "evaluation.learning_rates=[0.1]"]
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    processes = []
    for process_id in range(2):
        command = [sys.executable, "-c", "from neuroevo.cli import main; main()", "evolve", "--out", str(out)]
        command += [argument for override in overrides for argument in ("--set", override)]
        command += ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(process_id)]
        processes.append(subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=TIMEOUT))
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, outputs[-1][1][-2000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["heldout"]["evolved"]["mean"] > 0.0
    assert {"config.yaml", "metrics.jsonl", "checkpoint.npz", "best_rule.safetensors"} <= {path.name for path in out.iterdir()}
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 2  # one record per generation, written once
    assert "neuroevo" in outputs[0][0]
    assert "neuroevo" not in outputs[1][0]  # process 1 logs nothing (its stdout has only Gloo's connection lines)
