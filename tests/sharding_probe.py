"""Print, per population size, one generation's member fitness and device grid as JSON; tests run it with 1 and 4 simulated devices."""

import json
import sys

import jax
import numpy as np

from neuroevo.config import config_from_dict
from neuroevo.experiment import build_experiment

LIFETIMES = 3  # odd, so that two lifetime shards need padding


def probe(population: int) -> dict:
    config = config_from_dict(
        {
            "task": {"name": "digits", "k_shot": 3, "n_query": 5},
            "rule": {"name": "mlp", "hidden": [4]},
            "signal": {"feedback": "none"},
            "evolution": {"population": population, "lifetimes_per_member": LIFETIMES, "std": 0.3, "fitness": "neg_loss"},
        }
    )
    experiment = build_experiment(config)
    evolution = experiment.evolution()
    state = evolution.init(jax.random.key(0), experiment.train_pools)
    members, _ = evolution.strategy.ask(jax.random.key(1), state.strategy_state, evolution.strategy_params)
    keys = jax.random.split(jax.random.key(2), LIFETIMES)
    fitness = jax.jit(evolution.population_fitness)(members, experiment.train_pools, keys)
    state, _ = evolution.generation(state, experiment.train_pools)
    return {"grid": list(evolution.grid), "fitness": np.asarray(fitness).tolist(), "mean": np.asarray(state.strategy_state.mean).tolist()}


print(json.dumps({"devices": jax.device_count(), **{argument: probe(int(argument)) for argument in sys.argv[1:]}}))
