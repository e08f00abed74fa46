"""Measure the speed of one evolution generation and of the lifetime's hot path.

Prints one JSON object (``--json``) or a table: for each network size, the compile time of
a generation, its median wall time after warm-up, and edge updates per second (population
x lifetimes x steps x edges / generation time). It also measures this machine's tanh
throughput in the same run and reports the rule's hidden-unit evaluations per second as a
ratio of it, since an MLP rule with H tanh units cannot exceed tanh_per_second / H edge
updates per second.

    python scripts/bench.py            # networks of 70, 128 and 512 neurons
    python scripts/bench.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from neuroevo import graph
from neuroevo.config import EvolutionConfig
from neuroevo.evolve import Evolution
from neuroevo.lifetime import Learner
from neuroevo.rules import MLPRule
from neuroevo.tasks import DigitsConfig, DigitsTask

RULE_HIDDEN = 16


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tanh_per_second(repeats: int) -> float:
    """Elementwise tanh throughput of this machine, compute-bound.

    256 chained tanh passes over a 2**16-element float32 array that stays in cache, so
    memory bandwidth does not limit the count.
    """
    values = jax.random.normal(jax.random.key(0), (1 << 16,), jnp.float32)
    passes = 256
    chained = jax.jit(lambda x: lax.fori_loop(0, passes, lambda _, v: jnp.tanh(v) * 1.5, x))
    jax.block_until_ready(chained(values))
    return values.size * passes / median_seconds(lambda: chained(values), repeats)


def bench_generation(hidden: tuple[int, ...], population: int, lifetimes: int, repeats: int) -> dict:
    """Time one generation of the default digits setup with the given hidden layers."""
    task = DigitsTask.from_config(DigitsConfig())
    topology = graph.layered_topology(task.n_inputs, hidden, task.n_outputs)
    rule = MLPRule(("pre", "post", "weight", "error", "in_mean", "out_mean"), hidden=(RULE_HIDDEN,))
    feedback = "random_feedback" if hidden else "none"
    learner = Learner(topology, rule, feedback=feedback)
    config = EvolutionConfig(population=population, lifetimes_per_member=lifetimes)
    evolution = Evolution(learner, task, config, rule.random_params(jax.random.key(0)))
    pools = task.data("train")
    state = evolution.init(jax.random.key(1))

    start = time.perf_counter()
    state, metrics = evolution.generation(state, pools)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start

    def one_generation():
        nonlocal state
        state, metrics = evolution.generation(state, pools)
        return metrics

    seconds = median_seconds(one_generation, repeats)
    edge_updates = population * lifetimes * task.lifetime_length * topology.n_edges
    return {
        "neurons": topology.n_neurons,
        "edges": topology.n_edges,
        "population": population,
        "lifetimes_per_member": lifetimes,
        "steps": task.lifetime_length,
        "compile_seconds": round(compile_seconds, 2),
        "generation_seconds": round(seconds, 4),
        "edge_updates_per_second": edge_updates / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and only the 128-neuron network")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    repeats = 3 if args.quick else 7
    # Hidden widths giving 70 (no hidden layer), 128 and 512 neurons with 64 inputs, 5 outputs and the bias neuron.
    sizes = {128: (58,)} if args.quick else {70: (), 128: (58,), 512: (442,)}
    tanh_rate = tanh_per_second(repeats)
    rows = [bench_generation(hidden, population=64, lifetimes=8, repeats=repeats) for hidden in sizes.values()]
    for row in rows:
        row["rule_tanh_per_second"] = row["edge_updates_per_second"] * RULE_HIDDEN
        row["cum_tanh_ceiling_ratio"] = row["rule_tanh_per_second"] / tanh_rate

    result = {
        "machine": {"processor": platform.processor() or platform.machine(), "devices": [str(device) for device in jax.devices()], "jax": jax.__version__},
        "tanh_per_second": tanh_rate,
        "generations": rows,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"tanh ceiling: {tanh_rate / 1e9:.2f} G/s on {result['machine']['devices']}")
    print(f"{'neurons':>8}{'edges':>8}{'compile s':>11}{'gen s':>9}{'edge upd/s':>13}{'tanh ratio':>12}")
    for row in rows:
        print(
            f"{row['neurons']:>8}{row['edges']:>8}{row['compile_seconds']:>11.2f}{row['generation_seconds']:>9.3f}"
            f"{row['edge_updates_per_second'] / 1e6:>11.1f} M{row['cum_tanh_ceiling_ratio']:>12.3f}"
        )


if __name__ == "__main__":
    main()
