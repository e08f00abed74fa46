"""Pre-flight memory check: the estimate, the two fixes it offers, and its place in Evolution."""

from __future__ import annotations

import pytest

from neuroevo import evolve, memory
from neuroevo.config import config_from_dict
from neuroevo.errors import ConfigError
from neuroevo.experiment import build_experiment
from neuroevo.memory import check_lifetime_memory, lifetime_weight_bytes

EDGES = 1000
PER_LIFETIME = 2 * 4 * 512 * EDGES  # current and updated float32 weights of 512 members in one lifetime


def test_weight_bytes_count_two_float32_copies():
    assert lifetime_weight_bytes(members=64, lifetimes=8, n_edges=325) == 2 * 4 * 64 * 8 * 325


def test_check_passes_when_weights_fit():
    check_lifetime_memory(512, 8, EDGES, n_devices=1, shared=True, batchable=True, available=8 * PER_LIFETIME)


def test_check_skipped_when_memory_unknown():
    check_lifetime_memory(512, 8, EDGES, n_devices=1, shared=True, batchable=True, available=None)


def test_check_offers_lifetime_batch_that_fits():
    with pytest.raises(ConfigError) as error:
        check_lifetime_memory(512, 8, EDGES, n_devices=1, shared=True, batchable=True, available=5 * PER_LIFETIME + 1)

    assert str(error.value).startswith("the weights of 512 members x 8 lifetimes that run at once (1000 edges each) need at least 0.03 GiB")
    assert str(error.value).endswith("set evolution.lifetime_batch=5 to run fewer lifetimes per member at once")


def test_population_fix_when_one_lifetime_too_big():
    with pytest.raises(ConfigError, match="lower evolution.population or use a smaller network$"):
        check_lifetime_memory(512, 8, EDGES, n_devices=1, shared=True, batchable=True, available=PER_LIFETIME - 1)


def test_population_fix_when_lifetimes_split():
    with pytest.raises(ConfigError, match="lower evolution.population"):
        check_lifetime_memory(512, 8, EDGES, n_devices=2, shared=False, batchable=False, available=5 * PER_LIFETIME)


def test_check_sums_cpu_devices_sharing_memory():
    check_lifetime_memory(512, 2, EDGES, n_devices=4, shared=False, batchable=True, available=2 * PER_LIFETIME)
    with pytest.raises(ConfigError, match="on each of 4 devices"):
        check_lifetime_memory(512, 2, EDGES, n_devices=4, shared=True, batchable=True, available=2 * PER_LIFETIME)


def test_meminfo_read_in_bytes(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:        1000 kB\nMemAvailable:   2000000 kB\n")
    monkeypatch.setattr(memory, "Path", lambda _: meminfo)

    assert memory._meminfo_available() == 2000000 * 1024


def test_meminfo_without_available_line(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\n")
    monkeypatch.setattr(memory, "Path", lambda _: meminfo)

    assert memory._meminfo_available() is None


def test_evolution_rejects_population_beyond_memory(monkeypatch):
    # The default digits network has 325 edges, so 64 members x 8 lifetimes need 8 x 166,400 bytes.
    monkeypatch.setattr(evolve, "available_memory_bytes", lambda: 3 * 2 * 4 * 64 * 325 + 1)
    experiment = build_experiment(config_from_dict({"evolution": {"lifetime_batch": 8}}))

    with pytest.raises(ConfigError, match="set evolution.lifetime_batch=3"):
        experiment.evolution()
