"""Command-line interface: ``neuroevo evolve [CONFIG] [--set key=value ...] [--out DIR]``.

User mistakes (invalid config, impossible sizes, unwritable paths) print one line,
``neuroevo: error: ...``, and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from importlib import resources
from pathlib import Path

from neuroevo.errors import NeuroevoError

DEFAULT_CONFIG = "digits"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a program stopped by Ctrl-C
_OUT_OF_MEMORY = (
    "out of memory; lower evolution.population, evolution.lifetimes_per_member, evolution.eval_lifetimes, "
    "evaluation.lifetimes, evaluation.sweep_lifetimes, network.hidden or rule.hidden"
)


def bundled_configs() -> dict[str, Path]:
    """Configs shipped in the package (the repository's configs/ folder), by name."""
    folder = resources.files("neuroevo.configs")
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def resolve_config_path(argument: str | None) -> Path:
    """Return the YAML file named by ``argument``: a path to an existing file, or a bundled config name."""
    if argument is None:
        argument = DEFAULT_CONFIG
    path = Path(argument)
    if path.is_file():
        return path
    bundled = bundled_configs()
    if argument in bundled:
        return bundled[argument]
    raise NeuroevoError(f"config {argument!r} not found: it is neither a file nor a bundled config ({', '.join(sorted(bundled))})")


def load_config(argument: str | None, overrides: list[str]):
    from neuroevo.config import apply_overrides, config_from_dict, read_yaml

    path = resolve_config_path(argument)
    return path, config_from_dict(apply_overrides(read_yaml(path), overrides))


def command_evolve(args: argparse.Namespace) -> int:
    distributed_options = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and any(option is not None for option in distributed_options):
        raise NeuroevoError("--coordinator, --num-processes and --process-id only apply with --distributed")
    if args.distributed:
        from neuroevo.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)

    from neuroevo.run import evolve, resume

    if args.resume:
        if args.config or args.out:
            raise NeuroevoError("--resume continues a run with its own config.yaml; drop CONFIG and --out")
        resume(Path(args.resume), overrides=args.overrides)
        return 0
    path, config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else claim_default_dir(Path("runs") / f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    evolve(config, out)
    return 0


def claim_default_dir(base: Path) -> Path:
    """Create and return ``base``, or ``base-2``, ``base-3``, ... if runs started in the same second took it.

    ``mkdir`` without ``exist_ok`` is atomic, so two processes never claim the same directory.
    """
    base.parent.mkdir(parents=True, exist_ok=True)
    for index in range(1, 1000):
        candidate = base if index == 1 else base.with_name(f"{base.name}-{index}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise NeuroevoError(f"cannot create run directory {str(candidate)!r} ({error.strerror}); pass a writable --out") from None
        return candidate
    raise NeuroevoError(f"run directories {str(base)!r}-2 to -999 all exist; pass --out")


def command_evaluate(args: argparse.Namespace) -> int:
    from neuroevo.evaluate import evaluate_rule

    evaluate_rule(args.rule_or_run, task=args.task, overrides=args.overrides, lifetimes=args.lifetimes, out=args.out)
    return 0


def command_export(args: argparse.Namespace) -> int:
    from neuroevo.export import export_run

    path = export_run(args.run, args.out)
    print(f"wrote {path}")
    return 0


def command_inspect(args: argparse.Namespace) -> int:
    from neuroevo.inspect_rule import inspect

    inspect(args.rule, args.x, args.y, args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuroevo", description="Evolve local learning rules for graph networks.")
    commands = parser.add_subparsers(dest="command", required=True)

    evolve = commands.add_parser("evolve", help="evolve a rule and compare it with baselines on held-out lifetimes")
    evolve.add_argument("config", nargs="?", help=f"YAML config file or bundled config name (default: {DEFAULT_CONFIG})")
    evolve.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. --set evolution.population=32 (repeatable)")
    evolve.add_argument("--out", help="run directory (default: runs/<config>-<time>)")
    evolve.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint; with --set evolution.generations=N, extend a run to N generations",
    )
    evolve.add_argument(
        "--distributed",
        action="store_true",
        default=os.environ.get("NEUROEVO_DISTRIBUTED") == "1",
        help="join a multi-process run with jax.distributed (also set by NEUROEVO_DISTRIBUTED=1); process 0 writes the run files",
    )
    evolve.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator service (with --distributed)")
    evolve.add_argument("--num-processes", type=int, help="number of processes in the run (with --distributed)")
    evolve.add_argument("--process-id", type=int, help="this process's index, 0 to num-processes - 1 (with --distributed)")
    evolve.set_defaults(handler=command_evolve)

    evaluate = commands.add_parser("evaluate", help="compare a saved rule with baselines on fresh lifetimes of any task")
    evaluate.add_argument("rule_or_run", metavar="RULE_OR_RUN", help="rule file or run directory")
    evaluate.add_argument("--task", help="registered task name, or a bundled config whose task section to use (default: the task the rule was evolved on)")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. --set task.k_shot=5 (repeatable)")
    evaluate.add_argument("--lifetimes", type=int, help="meta-test lifetimes per method (default: evaluation.lifetimes of the rule's config)")
    evaluate.add_argument("--out", help="output directory (default: evaluations/<rule>-<task>-<time>)")
    evaluate.set_defaults(handler=command_evaluate)

    export = commands.add_parser("export", help="write a run's best rule to one portable file")
    export.add_argument("run", metavar="RUN", help="run directory")
    export.add_argument("--out", help="rule file to write (default: <run name>.rule.safetensors)")
    export.set_defaults(handler=command_export)

    inspect = commands.add_parser("inspect", help="print what a rule reads and plot its response to two features")
    inspect.add_argument("rule", metavar="RULE", help="rule file or run directory")
    inspect.add_argument("--x", help="feature on the horizontal axis (default: the rule's first feature)")
    inspect.add_argument("--y", help="feature on the vertical axis (default: the rule's second feature)")
    inspect.add_argument("--out", help="image file to write, .png, .pdf, .svg or .jpg (default: <rule>.<x>-<y>.png next to the rule file)")
    inspect.set_defaults(handler=command_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except NeuroevoError as error:
        print(f"neuroevo: error: {error}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"neuroevo: error: {_OUT_OF_MEMORY}", file=sys.stderr)
        return 2
    except PermissionError as error:
        print(f"neuroevo: error: cannot write {error.filename!r} ({error.strerror}); use a writable directory, e.g. --out runs/NAME", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"neuroevo: error: cannot write {error.filename!r} ({error.strerror}); free space or use a writable directory", file=sys.stderr)
        return 2
    except Exception as error:
        # XLA reports an allocation it cannot make as a JaxRuntimeError, whose class is private.
        if "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error):
            print(f"neuroevo: error: {_OUT_OF_MEMORY} ({str(error).splitlines()[0][:200]})", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt as interrupt:
        hint = f"; {interrupt}" if str(interrupt) else ""
        print(f"neuroevo: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


def console_main() -> None:
    """Run :func:`main` as the ``neuroevo`` program and exit with its status.

    After Ctrl-C, XLA's threads may still be running a computation, and the normal
    interpreter shutdown that tears them down can then crash with SIGSEGV or SIGABRT.
    ``os._exit`` skips that shutdown; the run files are already closed or written atomically.
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
