"""Print one process's generation metrics as JSON; tests start it as 1 process or as 2 joined by jax.distributed.

Arguments: process id, process count, coordinator port. Each process has 2 simulated CPU devices.
"""

import json
import sys

import jax

process_id, process_count, port = (int(argument) for argument in sys.argv[1:4])
jax.config.update("jax_num_cpu_devices", 2)
if process_count > 1:
    address = f"127.0.0.1:{port}"
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=process_count,
        process_id=process_id,
        coordinator_bind_address=address,
        initialization_timeout=60,
        heartbeat_timeout_seconds=10,
    )

from neuroevo.config import config_from_dict  # noqa: E402  (after the backend is configured)
from neuroevo.distributed import is_main_process  # noqa: E402
from neuroevo.experiment import build_experiment  # noqa: E402

config = config_from_dict(
    {
        "task": {"n_way": 3, "k_shot": 2, "n_query": 3},
        "rule": {"hidden": [4]},
        "network": {"topology": "sparse", "hidden": [4], "density": 0.3},
        "signal": {"feedback": "random_feedback"},
        "evolution": {"population": 6, "lifetimes_per_member": 2, "std": 0.3, "fitness": "neg_loss"},
    }
)
experiment = build_experiment(config)
evolution = experiment.evolution()
state = evolution.init(jax.random.key(0), experiment.train_pools)
mean_fitness = []
for _ in range(2):
    state, metrics = evolution.generation(state, experiment.train_pools)
    mean_fitness.append(float(metrics.mean_fitness))
print(json.dumps({"devices": jax.device_count(), "main": is_main_process(), "mean_fitness": mean_fitness}))
