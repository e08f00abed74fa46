"""Population and lifetime sharding: simulated CPU devices give the same fitness as one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuroevo.evolve import device_grid

PROBE = Path(__file__).with_name("sharding_probe.py")


def probe(devices: int) -> dict:
    environment = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(PROBE), "8", "6", "2"], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device():
    return probe(1)


@pytest.fixture(scope="module")
def four_devices():
    return probe(4)


def test_device_counts(one_device, four_devices):
    assert one_device["devices"] == 1
    assert four_devices["devices"] == 4


def test_four_devices_match_one(one_device, four_devices):
    one, four = one_device["8"], four_devices["8"]
    np.testing.assert_allclose(four["fitness"], one["fitness"], rtol=1e-5, atol=1e-6)
    assert np.argsort(four["fitness"]).tolist() == np.argsort(one["fitness"]).tolist()
    np.testing.assert_allclose(four["mean"], one["mean"], rtol=1e-5, atol=1e-6)


def test_population_not_divisible_by_devices_is_padded(one_device, four_devices):
    one, four = one_device["6"], four_devices["6"]
    assert len(four["fitness"]) == 6
    np.testing.assert_allclose(four["fitness"], one["fitness"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(four["mean"], one["mean"], rtol=1e-5, atol=1e-6)


def test_small_population_shards_lifetimes(one_device, four_devices):
    # Two members cannot fill four devices, so each member's three lifetimes (padded to four)
    # are split over two devices.
    one, four = one_device["2"], four_devices["2"]
    assert one["grid"] == [1, 1]
    assert four["grid"] == [2, 2]
    np.testing.assert_allclose(four["fitness"], one["fitness"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(four["mean"], one["mean"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "devices, population, grid",
    [(1, 5, (1, 1)), (4, 8, (4, 1)), (4, 6, (4, 1)), (4, 2, (2, 2)), (4, 3, (2, 2)), (8, 3, (2, 4)), (6, 4, (3, 2)), (4, 1, (1, 4))],
)
def test_device_grid(devices, population, grid):
    assert device_grid(devices, population) == grid
