"""Atomic checkpoints of an evolution run, in ``.npz`` format read with ``allow_pickle=False``.

A checkpoint stores the leaves of the evolution state (strategy state, PRNG key, generation
counter) and of the best rule so far as numbered arrays, plus a JSON document with the
generation and the best rule's scores. Restoring needs a template state of the same
structure, which the run rebuilds from its ``config.yaml``. A leaf count, shape or dtype
that differs from the template means the checkpoint belongs to another config and raises
:class:`NeuroevoError`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from neuroevo.errors import NeuroevoError
from neuroevo.io import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_VERSION = 1


class Checkpoint(NamedTuple):
    state: Any  # EvolutionState
    best_params: Any  # rule params of the best center so far
    info: dict  # {"generation": int, "best": {"train_eval", "test_eval", "generation"}, ...}


def _to_numpy(leaf: Any) -> np.ndarray:
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf))
    return np.asarray(leaf)


def save_checkpoint(run_dir: Path, state: Any, best_params: Any, info: dict) -> None:
    """Write ``run_dir/checkpoint.npz`` atomically (the previous checkpoint survives a crash mid-write)."""
    arrays = {}
    for prefix, tree in (("state", state), ("best", best_params)):
        for index, leaf in enumerate(jax.tree_util.tree_leaves(jax.device_get(tree))):
            arrays[f"{prefix}_{index:04d}"] = _to_numpy(leaf)
    header = {"checkpoint_version": CHECKPOINT_VERSION, **info}
    arrays["info"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT_NAME, buffer.getvalue())


def corrupt_checkpoint_error(path: Path, reason: str) -> NeuroevoError:
    """Return the error for an unreadable checkpoint, naming ``path``, ``reason`` and the ways to go on."""
    return NeuroevoError(
        f"checkpoint {str(path)!r} is corrupt ({reason}), so the run cannot resume from it; delete it to "
        "restart the run from generation 0, or start a new run directory"
    )


def _restore_tree(template: Any, arrays: dict[str, np.ndarray], prefix: str, path: Path) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(template)
    stored = sorted(name for name in arrays if name.startswith(prefix + "_"))
    if len(stored) != len(leaves):
        raise NeuroevoError(
            f"checkpoint {str(path)!r} has {len(stored)} {prefix} arrays but this run's config needs {len(leaves)}; "
            "the checkpoint belongs to a different config"
        )
    restored = []
    for name, leaf in zip(stored, leaves):
        value = arrays[name]
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            restored.append(jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(leaf)))
            continue
        expected = np.asarray(leaf)
        if value.shape != expected.shape or value.dtype != expected.dtype:
            raise NeuroevoError(
                f"checkpoint {str(path)!r}: array {name} has shape {value.shape} and dtype {value.dtype}, "
                f"but this run's config needs {expected.shape} {expected.dtype}; the checkpoint belongs to a different config"
            )
        restored.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, restored)


def load_checkpoint(run_dir: Path, state_template: Any, params_template: Any) -> Checkpoint | None:
    """Read ``run_dir/checkpoint.npz``; ``None`` if the run never checkpointed."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        info = json.loads(arrays.pop("info").tobytes().decode("utf-8"))
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        # numpy's own messages suggest allow_pickle, which a checkpoint never needs.
        raise corrupt_checkpoint_error(path, "truncated, or not an .npz archive of plain arrays with an info record") from None
    if not isinstance(info, dict) or not isinstance(info.get("generation"), int):
        raise corrupt_checkpoint_error(path, "its info record has no integer generation")
    if info.get("checkpoint_version", 0) > CHECKPOINT_VERSION:
        raise NeuroevoError(f"checkpoint {str(path)!r} was written by a newer neuroevo (version {info['checkpoint_version']}); upgrade neuroevo")
    state = _restore_tree(state_template, arrays, "state", path)
    best_params = _restore_tree(params_template, arrays, "best", path)
    return Checkpoint(state, best_params, info)
