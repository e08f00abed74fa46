"""Opt-in multi-process runs: ``jax.distributed`` start-up and the one process that writes files.

Each process of a multi-host run executes the same program. After
:func:`initialize`, ``jax.devices()`` lists the devices of every process, so the mesh that
:class:`~neuroevo.evolve.Evolution` builds over them shards the population across hosts.
Inputs such as the data pools are host-local NumPy arrays, which jit treats as replicated,
so every process must hold the same ones (the same config and seed give the same pools).
Every process computes the same replicated results (strategy state, metrics), and only
process 0 writes run files and logs. On a single process nothing here changes behaviour.
"""

from __future__ import annotations

import jax

from neuroevo.errors import NeuroevoError


def initialize(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Join a multi-process JAX run; call it before any JAX computation.

    Arguments left as None are read by ``jax.distributed.initialize`` from the environment
    (``JAX_COORDINATOR_ADDRESS``) or detected on the clusters JAX supports (SLURM, Open MPI, TPU pods).
    """
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    except (RuntimeError, ValueError) as error:
        raise NeuroevoError(
            f"jax.distributed.initialize failed ({error}); pass --coordinator HOST:PORT, --num-processes and --process-id, "
            "or run under a cluster manager that JAX detects"
        ) from None


def is_main_process() -> bool:
    """True in process 0, the process that writes run files (and in every single-process run)."""
    return jax.process_index() == 0

