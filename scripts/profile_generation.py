"""Show where the time of one evolution generation goes, kernel by kernel.

Compiles the benchmark's generation (the reference MLP rule on the digits network of
``scripts/bench.py``) and traces a few calls with ``jax.profiler``. For each compiled kernel
it prints the output shape, the calls per generation and the milliseconds per generation.
A kernel that evaluates the rule on a block of edges is marked with its block: a fusion
with a ``tanh`` whose output has the block's batched weight shape. A summary splits the
time into those loops, the other kernels of a lifetime step and the rest of the generation.

    python scripts/profile_generation.py                 # 128 neurons, top 25 kernels
    python scripts/profile_generation.py --neurons 512 --top 40

Times are wall-clock per kernel, so on a busy machine they include waits for a core.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import math
import pathlib
import re
import tempfile

import jax

from bench import NETWORKS, build_evolution, reference_rule
from neuroevo.evolve import Evolution

# An instruction of compiled HLO text, such as
# `%name = f32[1,64,58,64]{3,2,1,0} fusion(...), ..., calls=%fused_computation.7`.
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\]\S* (\w[\w-]*)\((.*)$")
CALLS = re.compile(r"calls=%([\w.-]+)")
COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.-]+) ")


def kernel_table(hlo_text: str) -> dict[str, dict]:
    """Map each instruction outside fused computations of compiled HLO to its output shape and opcode.

    The entry's ``tanh`` is True when the instruction, or the computation it fuses, has a tanh.
    """
    bodies: dict[str, list[str]] = {}
    current = None
    for line in hlo_text.splitlines():
        header = COMPUTATION.match(line)
        if header:
            current = header.group(1)
            bodies[current] = []
        elif current is not None:
            bodies[current].append(line)
    fused = {called for lines in bodies.values() for line in lines for called in CALLS.findall(line)}

    table = {}
    for computation, lines in bodies.items():
        if computation in fused:
            continue
        for line in lines:
            match = INSTRUCTION.match(line)
            if not match:
                continue
            name, _, dims, opcode, rest = match.groups()
            called = CALLS.search(rest)
            body = "\n".join(bodies.get(called.group(1), [])) if called else ""
            shape = tuple(int(d) for d in dims.split(",") if d)
            table[name] = {"shape": shape, "opcode": opcode, "tanh": " tanh(" in body or opcode == "tanh"}
    return table


def trace_kernels(compiled, state, pools, calls: int) -> dict[str, dict[str, float]]:
    """Run ``calls`` traced generations; returns the microseconds and calls of each kernel name, per generation."""
    with tempfile.TemporaryDirectory() as directory:
        jax.profiler.start_trace(directory, create_perfetto_trace=True)
        for _ in range(calls):
            state, metrics = compiled(state, pools)
            jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
        trace = next(pathlib.Path(directory).rglob("*.trace.json.gz"))
        with gzip.open(trace) as file:
            events = json.load(file)["traceEvents"]

    totals = collections.defaultdict(lambda: {"microseconds": 0.0, "calls": 0})
    for event in events:
        if event.get("ph") == "X" and event.get("args", {}).get("hlo_module") == "jit_generation":
            totals[event["name"]]["microseconds"] += event["dur"] / calls
            totals[event["name"]]["calls"] += 1 / calls
    return dict(totals)


def block_shapes(evolution: Evolution) -> dict[tuple[int, tuple[int, ...]], str]:
    """Label each block "src->dst", keyed by the element count of its batched weights and its edge shape.

    The batched weights hold members x lifetimes at once x edges, with the edge shape
    (n_dst, n_src), or (E,) for an edge list, last.
    """
    topology = evolution.learner.topology
    at_once = evolution.lifetime_batch or evolution.lifetimes_per_member
    labels = {}
    for block, (src, dst) in enumerate(topology.blocks):
        edge_shape = tuple(topology.edge_shape(block))
        labels[(evolution.population_size * at_once * math.prod(edge_shape), edge_shape)] = f"{topology.group_names[src]}->{topology.group_names[dst]}"
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=128, choices=sorted(NETWORKS), help="network size of the benchmark (default 128)")
    parser.add_argument("--calls", type=int, default=3, help="traced generations (default 3)")
    parser.add_argument("--top", type=int, default=25, help="kernels to list (default 25)")
    parser.add_argument("--lifetime-batch", type=int, help="lifetimes per member at once (default: evolution.lifetime_batch's rule)")
    args = parser.parse_args()
    if args.calls < 1 or args.top < 1 or (args.lifetime_batch is not None and not 1 <= args.lifetime_batch <= 8):
        parser.error(f"--calls={args.calls} and --top={args.top} must be at least 1, and --lifetime-batch={args.lifetime_batch} between 1 and 8")

    task_config, hidden = NETWORKS[args.neurons]
    evolution, state, pools = build_evolution(task_config, hidden, reference_rule(), population=64, lifetimes=8)
    if args.lifetime_batch is not None:
        evolution.lifetime_batch = args.lifetime_batch
    compiled = Evolution.generation.lower(evolution, state, pools).compile()
    for _ in range(2):
        state, metrics = compiled(state, pools)
        jax.block_until_ready(metrics)

    table = kernel_table(compiled.as_text())
    totals = {name: value for name, value in trace_kernels(compiled, state, pools, args.calls).items() if name in table}
    blocks = block_shapes(evolution)
    at_once = evolution.lifetime_batch or evolution.lifetimes_per_member
    steps = -(-evolution.lifetimes_per_member // at_once) * evolution.task.lifetime_length  # lifetime steps run in sequence

    def role(name: str) -> str:
        entry = table[name]
        for (count, edge_shape), label in blocks.items():
            if entry["tanh"] and math.prod(entry["shape"]) == count and entry["shape"][-len(edge_shape) :] == edge_shape:
                return f"rule loop {label}"
        return "per step" if round(totals[name]["calls"]) == steps else ""

    print("| kernel | output shape | calls | ms per generation | share | role |")
    print("|---|---|---|---|---|---|")
    total = sum(value["microseconds"] for value in totals.values())
    for name, value in sorted(totals.items(), key=lambda item: -item[1]["microseconds"])[: args.top]:
        share = value["microseconds"] / total
        print(f"| {name} | {list(table[name]['shape'])} | {value['calls']:.0f} | {value['microseconds'] / 1e3:.2f} | {share:.1%} | {role(name)} |")

    rule = sum(value["microseconds"] for name, value in totals.items() if role(name).startswith("rule"))
    per_step = [name for name in totals if role(name) == "per step"]
    other = sum(totals[name]["microseconds"] for name in per_step)
    print(
        f"\n{len(totals)} kernels, {total / 1e3:.1f} ms per generation: rule loops {rule / 1e3:.1f} ms ({rule / total:.0%}), "
        f"{len(per_step)} other kernels of each lifetime step {other / 1e3:.1f} ms ({other / total:.0%}), "
        f"the rest {(total - rule - other) / 1e3:.1f} ms ({(total - rule - other) / total:.0%})"
    )


if __name__ == "__main__":
    main()
