"""Pre-flight check that the weights of a generation's lifetimes fit in memory.

A generation keeps the weights of every member in every lifetime that runs at once: for
each of them the current and the updated weights, ``n_edges`` float32 values each. That
lower bound is cheap to compute before anything compiles, and a config that exceeds it
would otherwise fail only after compiling, or make the machine swap.

NOTE: the bound counts only the weights. Activations, features, XLA's temporary buffers and
compilation come on top, so a config that passes can still run out of memory: a
100,000-neuron hidden layer passed and then compiled for over 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import jax

from neuroevo.errors import ConfigError

_WEIGHT_COPIES = 2  # current and updated weights of one lifetime step
_BYTES_PER_WEIGHT = 4  # float32


def available_memory_bytes() -> int | None:
    """Return the memory one device can allocate, or ``None`` where it cannot be read.

    An accelerator reports its own limit. CPU devices share the host's available RAM, read
    with psutil if it is installed, else from ``MemAvailable`` in Linux's /proc/meminfo.
    """
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        return stats.get("bytes_limit")
    try:
        import psutil
    except ImportError:
        return _meminfo_available()
    return int(psutil.virtual_memory().available)


def _meminfo_available() -> int | None:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def lifetime_weight_bytes(members: int, lifetimes: int, n_edges: int) -> int:
    """Return a lower bound on the bytes of weights held by ``members x lifetimes`` lifetimes that run at once."""
    return _WEIGHT_COPIES * _BYTES_PER_WEIGHT * members * lifetimes * n_edges


def check_lifetime_memory(
    members_per_device: int, lifetimes_at_once: int, n_edges: int, n_devices: int, shared: bool, batchable: bool, available: int | None
) -> None:
    """Raise ConfigError when the lifetimes that run at once need more memory for their weights than ``available``.

    ``available`` is the memory of one device, or with ``shared`` (CPU devices, which share
    the host's RAM) of all devices together. ``batchable`` is true when
    ``evolution.lifetime_batch`` sets ``lifetimes_at_once``, which it does not when
    lifetimes are split over devices.
    """
    if available is None:
        return
    devices_sharing = n_devices if shared else 1
    per_lifetime = devices_sharing * lifetime_weight_bytes(members_per_device, 1, n_edges)
    needed = per_lifetime * lifetimes_at_once
    if needed <= available:
        return
    fitting = available // per_lifetime
    if batchable and fitting >= 1:
        fix = f"set evolution.lifetime_batch={fitting} to run fewer lifetimes per member at once"
    else:
        fix = "lower evolution.population or use a smaller network"
    where = f" on each of {n_devices} devices" if n_devices > 1 else ""
    raise ConfigError(
        f"the weights of {_count(members_per_device, 'member')} x {_count(lifetimes_at_once, 'lifetime')} that run at once "
        f"({n_edges} edges each){where} need at least {_gib(needed)}, but only {_gib(available)} of memory is available; {fix}"
    )


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"
