"""Measure the speed of evolution generations, the rule families and propagation.

Prints one JSON object (``--json``) or markdown tables with:

- this machine's ceilings, measured in the same run: compute-bound tanh evaluations per
  second and float32 matmul FLOP/s;
- for networks of 32, 128 and 512 neurons with the reference MLP rule (6 features, 16 tanh
  hidden units): compile time, generation time, edge updates per second (population x
  lifetimes x steps x edges / generation time) and ``cum_tanh_ceiling_ratio``, the rule's
  tanh evaluations per second in its fastest generation over the tanh ceiling, timed in
  turn with the generation (an MLP rule with H tanh units cannot exceed tanh_per_second / H
  edge updates per second);
- one row per registered rule family with its default options;
- ``layered_vs_dense_ratio``: graph.propagate on a layered topology over the plain dense-layer
  forward pass of the same sizes, both jitted and batched the same way;
- peak memory of a generation with population 64, 512 neurons and lifetimes of 50 steps;
- how generation time grows with population, lifetime length and network size (full run only).

Wall-clock times are medians after one warm-up call; ceilings are the fastest of the repeats,
and a ratio to a ceiling takes the fastest repeat on both sides. Ratios computed from process CPU time are reported as well, because they are less disturbed
by other jobs on a shared machine.

    python scripts/bench.py                  # everything, with markdown tables
    python scripts/bench.py --quick --json   # 128 neurons only, no scaling sweep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from neuroevo import graph
from neuroevo.config import EvolutionConfig
from neuroevo.evolve import Evolution
from neuroevo.lifetime import Learner
from neuroevo.neurons import activate
from neuroevo.rules import RULE_CONFIGS, MLPRule, build_rule
from neuroevo.tasks import DigitsConfig, WineConfig, build_task

REFERENCE_FEATURES = ("pre", "post", "weight", "error", "in_mean", "out_mean")
REFERENCE_HIDDEN = 16
REFERENCE_NEURONS = 128
REFERENCE_REPEATS = 9  # timed repeats of each reference row, with or without --quick

# Network size -> (task config, hidden layer widths). Digits has 64 inputs and 5 outputs, so
# with the bias neuron a 128-neuron network has 58 hidden neurons. 32 neurons need a task
# with fewer inputs: wine, with 13 inputs, 3 outputs and lifetimes of 30 steps.
NETWORKS = {
    32: (WineConfig(), (15,)),
    128: (DigitsConfig(), (58,)),
    256: (DigitsConfig(), (186,)),
    512: (DigitsConfig(), (442,)),
}


# Timing --------------------------------------------------------------------------------------


def time_interleaved(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Call each function once to warm up, then all of them in turn ``repeats`` times.

    Returns wall and process CPU seconds per function. Interleaving gives every function
    the same share of the machine's load over time, so ratios between them stay fair on a
    busy machine.
    """
    for function in functions.values():
        jax.block_until_ready(function())
    wall = {name: [] for name in functions}
    cpu = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            jax.block_until_ready(function())
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
    return {
        name: {"wall_median": statistics.median(wall[name]), "wall_min": min(wall[name]), "cpu_median": statistics.median(cpu[name]), "cpu_min": min(cpu[name])}
        for name in functions
    }


def time_calls(function: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Call ``function`` once to warm up, then ``repeats`` times; returns wall and process CPU seconds."""
    return time_interleaved({"function": function}, repeats)["function"]


def ceiling_ratio(edge_updates_per_second: float, tanh_per_edge: int, tanh_per_second: float) -> float:
    """Fraction of the tanh ceiling that a rule with ``tanh_per_edge`` tanh units per edge reaches."""
    return edge_updates_per_second * tanh_per_edge / tanh_per_second


def power_law_exponent(sizes: list[float], seconds: list[float]) -> float:
    """Slope of log(seconds) against log(sizes): 1.0 for time proportional to size."""
    slope, _ = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(slope)


def linear_fit_r2(sizes: list[float], seconds: list[float]) -> float:
    """Coefficient of determination of the straight line ``seconds = a + b * size``."""
    sizes, seconds = np.asarray(sizes, float), np.asarray(seconds, float)
    slope, intercept = np.polyfit(sizes, seconds, 1)
    residual = np.sum((seconds - (intercept + slope * sizes)) ** 2)
    total = np.sum((seconds - seconds.mean()) ** 2)
    return float(1.0 - residual / total)


# Ceilings -----------------------------------------------------------------------------------


def tanh_kernels() -> dict[str, tuple[Callable[[], Any], int]]:
    """Two compute-bound tanh kernels, each as (call, tanh evaluations per call).

    ``chained``: 2048 dependent tanh passes over 2**16 float32 values that stay in cache.
    ``fused``: 16 independent tanh of each of 2**18 values summed in one fused loop, the shape
    of the MLP rule's per-edge work with nothing else in it, called 24 times in a row.

    Each call takes tens of milliseconds on a 2-core CPU, because process CPU time on some
    machines advances in scheduler ticks of several milliseconds. A call of 1 ms could then
    measure zero CPU time and an absurd ceiling.
    """
    values = jax.random.normal(jax.random.key(0), (1 << 16,), jnp.float32)
    passes = 2048
    chained = jax.jit(lambda x: lax.fori_loop(0, passes, lambda _, v: jnp.tanh(v) * 1.5, x))

    wide = jax.random.normal(jax.random.key(1), (1 << 18,), jnp.float32)
    offsets = jnp.linspace(-1.0, 1.0, 16)
    fused = jax.jit(lambda x, c: sum(jnp.tanh(x + c[unit]) for unit in range(16)))
    fused_calls = 24
    return {
        "chained": (lambda: chained(values), values.size * passes),
        "fused": (lambda: [fused(wide, offsets) for _ in range(fused_calls)], wide.size * 16 * fused_calls),
    }


def tanh_rates(timings: dict[str, dict[str, float]]) -> dict[str, float]:
    """tanh evaluations per second of each kernel in ``timings`` (fastest repeat) and the ceiling, the faster kernel."""
    rates = {}
    for name, (_, count) in tanh_kernels().items():
        rates[name] = count / timings[name]["wall_min"]
        rates[f"{name}_cpu"] = count / timings[name]["cpu_min"]
    rates["tanh_per_second"] = max(rates["chained"], rates["fused"])
    rates["tanh_per_cpu_second"] = max(rates["chained_cpu"], rates["fused_cpu"])
    return rates


def tanh_ceiling(repeats: int) -> dict[str, float]:
    """Compute-bound tanh evaluations per second, the faster of the two :func:`tanh_kernels`."""
    return tanh_rates(time_interleaved({name: call for name, (call, _) in tanh_kernels().items()}, repeats))


def matmul_ceiling(repeats: int, size: int = 2048) -> float:
    """float32 FLOP/s of one (size x size) matrix product."""
    key_a, key_b = jax.random.split(jax.random.key(2))
    a = jax.random.normal(key_a, (size, size), jnp.float32)
    b = jax.random.normal(key_b, (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    return 2 * size**3 / time_calls(lambda: product(a, b), repeats)["wall_min"]


# Generations --------------------------------------------------------------------------------


def build_evolution(task_config: Any, hidden: tuple[int, ...], rule: Any, population: int, lifetimes: int) -> tuple[Evolution, Any, Any]:
    """An Evolution of ``rule`` on a layered network; returns (evolution, state, train pools)."""
    task = build_task(task_config)
    topology = graph.layered_topology(task.n_inputs, hidden, task.n_outputs)
    learner = Learner(topology, rule, feedback="random_feedback" if hidden else "none")
    config = EvolutionConfig(population=population, lifetimes_per_member=lifetimes)
    evolution = Evolution(learner, task, config, rule.random_params(jax.random.key(0)))
    pools = task.data("train")
    return evolution, evolution.init(jax.random.key(1), pools), pools


def tanh_units(rule: Any) -> int | None:
    """tanh evaluations per edge update of ``rule``, or None for a rule without tanh units."""
    if isinstance(rule, MLPRule) and rule.activation == "tanh" and rule.hidden:
        return sum(rule.hidden)
    return None


def bench_generation(task_config: Any, hidden: tuple[int, ...], rule: Any, population: int, lifetimes: int, repeats: int) -> dict:
    """Compile one generation ahead of time, then time it; returns one result row.

    For an MLP rule with tanh units the tanh kernels are timed in turn with the generation,
    and the row gets its own ceiling and ``cum_tanh_ceiling_ratio`` (wall and CPU time). Both
    sides of a ratio take their fastest repeat: the ceiling is a best case, and a median
    generation against it would count the machine's noise against the rule.
    """
    evolution, state, pools = build_evolution(task_config, hidden, rule, population, lifetimes)
    start = time.perf_counter()
    compiled = Evolution.generation.lower(evolution, state, pools).compile()
    compile_seconds = time.perf_counter() - start

    def one_generation():
        nonlocal state
        state, metrics = compiled(state, pools)
        return metrics

    units = tanh_units(rule)
    functions = {"generation": one_generation}
    if units is not None:
        functions.update({name: call for name, (call, _) in tanh_kernels().items()})
    timings = time_interleaved(functions, repeats)
    timing = timings["generation"]

    topology = evolution.learner.topology
    steps = evolution.task.lifetime_length
    edge_updates = population * lifetimes * steps * topology.n_edges
    row = {
        "neurons": topology.n_neurons,
        "edges": topology.n_edges,
        "population": population,
        "lifetimes_per_member": lifetimes,
        "steps": steps,
        "compile_seconds": compile_seconds,
        "lifetime_batch": evolution.lifetime_batch,
        "generation_seconds": timing["wall_median"],
        "generation_cpu_seconds": timing["cpu_median"],
        "edge_updates_per_second": edge_updates / timing["wall_median"],
        "edge_updates_per_cpu_second": edge_updates / timing["cpu_median"],
    }
    if units is not None:
        ceilings = tanh_rates(timings)
        row["tanh_ceiling"] = ceilings
        row["cum_tanh_ceiling_ratio"] = ceiling_ratio(edge_updates / timing["wall_min"], units, ceilings["tanh_per_second"])
        row["cum_tanh_ceiling_ratio_cpu_time"] = ceiling_ratio(edge_updates / timing["cpu_min"], units, ceilings["tanh_per_cpu_second"])
    return row


def reference_rule() -> MLPRule:
    return MLPRule(REFERENCE_FEATURES, hidden=(REFERENCE_HIDDEN,))


def bench_networks(sizes: list[int], repeats: int) -> list[dict]:
    """Reference MLP rule, population 64 with 8 lifetimes each, on each network size."""
    rows = []
    for neurons in sizes:
        task_config, hidden = NETWORKS[neurons]
        rows.append(bench_generation(task_config, hidden, reference_rule(), population=64, lifetimes=8, repeats=repeats))
    return rows


def bench_families(repeats: int) -> tuple[list[dict], dict[str, str]]:
    """Time every registered rule family with default options on the 128-neuron digits setup.

    Returns the rows and, for each family that could not run that setup, the error.
    """
    task_config, hidden = NETWORKS[REFERENCE_NEURONS]
    rows, skipped = [], {}
    for name, config_class in RULE_CONFIGS.items():
        try:
            rule = build_rule(config_class())
            row = bench_generation(task_config, hidden, rule, population=64, lifetimes=8, repeats=repeats)
        except Exception as error:  # a family added later may need options or signals this setup lacks
            skipped[name] = f"{type(error).__name__}: {error}"
            print(f"skipped rule family {name!r}: {skipped[name]}", file=sys.stderr)
            continue
        rows.append({"family": name, "features": list(rule.feature_names), **row})
    return rows, skipped


# Propagation --------------------------------------------------------------------------------


def dense_layers(topology: graph.Topology, weights: graph.Weights) -> list[tuple[jax.Array, jax.Array]]:
    """(kernel, bias) of each layer of a layered topology, taken from its weight blocks."""
    layers = []
    for dst in topology.update_order:
        kernel = next(weights[b] for b, (src, d) in enumerate(topology.blocks) if d == dst and src != topology.bias_group)
        bias = next(weights[b][:, 0] for b, (src, d) in enumerate(topology.blocks) if d == dst and src == topology.bias_group)
        layers.append((kernel, bias))
    return layers


def dense_forward(topology: graph.Topology, layers: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    """Plain MLP forward pass ``a = act(W a + b)`` layer by layer; returns the output activations."""
    a = x
    for group, (kernel, bias) in zip(topology.update_order, layers):
        a = activate(topology.activations[group], kernel @ a + bias)
    return a


def bench_layered_vs_dense(neurons: int, repeats: int, networks: int = 512, inputs: int = 20) -> dict:
    """Time graph.propagate against the dense forward pass on ``networks`` networks (vmap), each
    with its own weights, presented ``inputs`` inputs in sequence (scan), as in a generation."""
    task_config, hidden = NETWORKS[neurons]
    task = build_task(task_config)
    topology = graph.layered_topology(task.n_inputs, hidden, task.n_outputs)
    masks = graph.init_masks(topology)
    keys = jax.random.split(jax.random.key(3), networks)
    weights = jax.vmap(lambda key: graph.init_weights(key, topology, masks, "normal", 1.0))(keys)
    layers = jax.vmap(lambda w: dense_layers(topology, w))(weights)
    xs = jax.random.normal(jax.random.key(4), (networks, inputs, task.n_inputs), jnp.float32)

    def over_inputs(forward: Callable[[jax.Array], jax.Array], xs: jax.Array) -> jax.Array:
        # Summing the outputs keeps every presentation live, so XLA cannot drop any.
        return lax.scan(lambda total, x: (total + forward(x), None), jnp.zeros(task.n_outputs), xs)[0]

    layered = jax.jit(jax.vmap(lambda w, xs: over_inputs(lambda x: graph.propagate(topology, w, x)[1][topology.output_group], xs)))
    dense = jax.jit(jax.vmap(lambda layers, xs: over_inputs(lambda x: dense_forward(topology, layers, x), xs)))
    np.testing.assert_allclose(layered(weights, xs), dense(layers, xs), rtol=1e-4, atol=1e-5)

    layered_time = time_calls(lambda: layered(weights, xs), repeats)
    dense_time = time_calls(lambda: dense(layers, xs), repeats)
    return {
        "neurons": topology.n_neurons,
        "networks": networks,
        "inputs": inputs,
        "layered_seconds": layered_time["wall_min"],
        "dense_seconds": dense_time["wall_min"],
        "layered_vs_dense_ratio": layered_time["wall_min"] / dense_time["wall_min"],
    }


# Memory -------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far.

    Reads VmHWM from /proc/self/status, which starts afresh at exec. ``ru_maxrss`` would
    instead report at least the parent's peak, which Linux carries into a child process.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM missing from /proc/self/status; peak memory needs Linux")


def memory_probe() -> None:
    """Run one generation (population 64, 512 neurons, 50 steps) and print its memory figures as JSON."""
    baseline = peak_rss_bytes()
    task_config, hidden = NETWORKS[512]
    evolution, state, pools = build_evolution(task_config, hidden, reference_rule(), population=64, lifetimes=8)
    compiled = Evolution.generation.lower(evolution, state, pools).compile()
    jax.block_until_ready(compiled(state, pools))
    analysis = compiled.memory_analysis()
    print(
        json.dumps(
            {
                "neurons": evolution.learner.topology.n_neurons,
                "population": 64,
                "lifetimes_per_member": 8,
                "steps": evolution.task.lifetime_length,
                "max_rss_bytes": peak_rss_bytes(),
                "rss_after_imports_bytes": baseline,
                "xla_temp_bytes": analysis.temp_size_in_bytes,
                "xla_argument_bytes": analysis.argument_size_in_bytes,
            }
        )
    )


def measure_peak_memory() -> dict:
    """Peak resident memory of :func:`memory_probe` run in a fresh process (includes compilation and the jax runtime)."""
    output = subprocess.run([sys.executable, __file__, "--memory-probe"], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


# Scaling ------------------------------------------------------------------------------------


def bench_scaling(repeats: int) -> dict:
    """Generation time against population, lifetime length and network size, each varied alone.

    Base point: 128 neurons, population 16, 2 lifetimes per member, 5-way 10-shot (50 steps).
    """
    rule = reference_rule()
    sweeps = {
        "population": [(DigitsConfig(), (58,), population, 2) for population in (16, 32, 64)],
        "steps": [(DigitsConfig(k_shot=k_shot), (58,), 16, 2) for k_shot in (2, 5, 10)],
        "neurons": [(*NETWORKS[neurons], 16, 2) for neurons in (128, 256, 512)],
    }
    result = {}
    for name, points in sweeps.items():
        rows = [bench_generation(task_config, hidden, rule, population, lifetimes, repeats) for task_config, hidden, population, lifetimes in points]
        sizes = [row[name] for row in rows]
        seconds = [row["generation_seconds"] for row in rows]
        cpu_seconds = [row["generation_cpu_seconds"] for row in rows]
        result[name] = {
            "sizes": sizes,
            "generation_seconds": seconds,
            "exponent": power_law_exponent(sizes, seconds),
            "linear_fit_r2": linear_fit_r2(sizes, seconds),
            "generation_cpu_seconds": cpu_seconds,
            "exponent_cpu_time": power_law_exponent(sizes, cpu_seconds),
            "linear_fit_r2_cpu_time": linear_fit_r2(sizes, cpu_seconds),
        }
    return result


# Output -------------------------------------------------------------------------------------


def print_tables(result: dict) -> None:
    """Print the results as markdown tables."""
    ceilings = result["ceilings"]
    print(f"tanh ceiling {ceilings['tanh_per_second'] / 1e9:.2f} G/s, matmul ceiling {result['matmul_flops'] / 1e9:.0f} GFLOP/s, devices {result['machine']['devices']}\n")

    print("| rule | neurons | edges | steps | compile (s) | generation (s) | edge updates/s | tanh ceiling ratio | ratio (CPU time) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [("mlp reference", row) for row in result["generations"]] + [(row["family"], row) for row in result["families"]]
    for label, row in rows:
        ratio = f"{row['cum_tanh_ceiling_ratio']:.2f}" if "cum_tanh_ceiling_ratio" in row else "-"
        ratio_cpu = f"{row['cum_tanh_ceiling_ratio_cpu_time']:.2f}" if "cum_tanh_ceiling_ratio_cpu_time" in row else "-"
        print(
            f"| {label} | {row['neurons']} | {row['edges']:,} | {row['steps']} | {row['compile_seconds']:.1f} | "
            f"{row['generation_seconds']:.3f} | {row['edge_updates_per_second'] / 1e6:.0f} M | {ratio} | {ratio_cpu} |"
        )
    for name, reason in result["skipped_families"].items():
        print(f"\nskipped rule family {name}: {reason}")

    print("\n| neurons | graph.propagate (ms) | dense forward (ms) | layered / dense |")
    print("|---|---|---|---|")
    for row in result["layered_vs_dense"]:
        print(f"| {row['neurons']} | {row['layered_seconds'] * 1e3:.2f} | {row['dense_seconds'] * 1e3:.2f} | {row['layered_vs_dense_ratio']:.2f} |")

    memory = result["memory"]
    print(
        f"\npeak memory (max RSS of a fresh process, population {memory['population']}, {memory['neurons']} neurons, "
        f"{memory['steps']} steps): {memory['max_rss_bytes'] / 2**30:.2f} GiB; XLA temporary buffers {memory['xla_temp_bytes'] / 2**30:.2f} GiB"
    )

    if result.get("scaling"):
        print("\n| varied | sizes | generation (s) | exponent | linear fit R^2 | CPU s | exponent (CPU time) | R^2 (CPU time) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, sweep in result["scaling"].items():
            seconds = ", ".join(f"{value:.3f}" for value in sweep["generation_seconds"])
            cpu_seconds = ", ".join(f"{value:.3f}" for value in sweep["generation_cpu_seconds"])
            print(
                f"| {name} | {sweep['sizes']} | {seconds} | {sweep['exponent']:.2f} | {sweep['linear_fit_r2']:.3f} | "
                f"{cpu_seconds} | {sweep['exponent_cpu_time']:.2f} | {sweep['linear_fit_r2_cpu_time']:.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, only the 128-neuron network, no scaling sweep (a few minutes on 2 cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of markdown tables")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe()
        return

    repeats = 3 if args.quick else 7
    load_before = os.getloadavg()
    ceilings = tanh_ceiling(repeats * 3)
    result: dict[str, Any] = {
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "devices": [str(device) for device in jax.devices()], "jax": jax.__version__},
        "ceilings": ceilings,
        "matmul_flops": matmul_ceiling(repeats * 3),
    }
    # The reference rows decide cum_tanh_ceiling_ratio, a ratio of fastest repeats, so they get
    # more repeats than the families. On a shared machine, more repeats catch an undisturbed one.
    result["generations"] = bench_networks([REFERENCE_NEURONS] if args.quick else [32, 128, 512], REFERENCE_REPEATS)
    result["families"], result["skipped_families"] = bench_families(repeats)
    result["layered_vs_dense"] = [bench_layered_vs_dense(neurons, repeats * 3) for neurons in (128, 512)]
    result["memory"] = measure_peak_memory()
    result["scaling"] = None if args.quick else bench_scaling(repeats)
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}

    reference = next(row for row in result["generations"] if row["neurons"] == REFERENCE_NEURONS)
    result["cum_tanh_ceiling_ratio"] = reference["cum_tanh_ceiling_ratio"]
    result["cum_tanh_ceiling_ratio_cpu_time"] = reference["cum_tanh_ceiling_ratio_cpu_time"]
    result["layered_vs_dense_ratio"] = max(row["layered_vs_dense_ratio"] for row in result["layered_vs_dense"])
    result["peak_memory_bytes"] = result["memory"]["max_rss_bytes"]

    if args.json:
        print(json.dumps(result))
    else:
        print_tables(result)


if __name__ == "__main__":
    main()
