"""Atomic file writes and the portable rule file.

A rule file is a safetensors file: the rule parameters as named float32 arrays, and in its
header metadata one JSON document under the key ``"neuroevo"`` (format version, rule family
and options, feature names, learning signal, source config, scores). Reading it parses
JSON and raw arrays only; nothing in the file is ever executed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from neuroevo.errors import NeuroevoError

RULE_FORMAT = "neuroevo-rule"
RULE_FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file readable by its owner only; give it the permissions open() would.
        os.chmod(temporary, 0o666 & ~_current_umask())
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def flatten_params(params: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested mapping of arrays -> {"a/b/c": float32 array}."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) or hasattr(value, "items"):
            flat.update(flatten_params(value, name))
        else:
            flat[name] = np.asarray(value, dtype=np.float32)
    return flat


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    """Inverse of :func:`flatten_params`."""
    params: dict = {}
    for name, value in flat.items():
        node = params
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"tensor name {name!r} passes through {part!r}, which is a tensor")
        if leaf in node:
            raise ValueError(f"tensor name {name!r} is also a group of tensors")
        node[leaf] = value
    return params


def save_rule(path: Path, params: Any, metadata: dict) -> None:
    """Write a rule file atomically; ``metadata`` must be JSON-serialisable."""
    header = {"format": RULE_FORMAT, "format_version": RULE_FORMAT_VERSION, **metadata}
    data = save_safetensors(flatten_params(params), metadata={"neuroevo": json.dumps(header)})
    atomic_write_bytes(Path(path), data)


def read_rule_file(path: Path) -> tuple[dict, dict]:
    """Read a rule file; returns (params as nested dict of numpy arrays, metadata).

    Raises NeuroevoError for a missing, corrupt, truncated or newer-format file.
    """
    path = Path(path)
    if not path.is_file():
        raise NeuroevoError(f"rule file {str(path)!r} not found; pass a file written by 'neuroevo export' or a run's best_rule.safetensors")
    raw = path.read_bytes()
    try:
        arrays = load_safetensors(raw)
        header_length = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_length])
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise NeuroevoError(f"{str(path)!r} is not a valid neuroevo rule file (corrupt or truncated: {error}); export the rule again") from None
    entries = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(entries, dict) or "neuroevo" not in entries:
        raise NeuroevoError(
            f"{str(path)!r} is a safetensors file but not a neuroevo rule file: its header has no 'neuroevo' metadata entry "
            "(rule family, features, source config); pass a file written by 'neuroevo export' or a run's best_rule.safetensors"
        )
    try:
        metadata = json.loads(entries["neuroevo"])
    except (ValueError, TypeError):
        raise NeuroevoError(f"{str(path)!r} is not a valid neuroevo rule file (its 'neuroevo' metadata entry is not JSON); export the rule again") from None
    if not isinstance(metadata, dict):
        raise NeuroevoError(f"{str(path)!r} is not a valid neuroevo rule file (its metadata is not a JSON object); export the rule again")
    if metadata.get("format") != RULE_FORMAT:
        raise NeuroevoError(f"{str(path)!r} is a safetensors file but not a neuroevo rule file (format {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > RULE_FORMAT_VERSION:
        raise NeuroevoError(
            f"{str(path)!r} has rule format version {version!r}, newer than this neuroevo reads ({RULE_FORMAT_VERSION}); upgrade neuroevo"
        )
    try:
        params = unflatten_params(arrays)
    except ValueError:
        raise NeuroevoError(f"{str(path)!r} is not a valid neuroevo rule file (a tensor name is both a leaf and a group); export the rule again") from None
    return params, metadata


def strict_json(value: Any, **options: Any) -> str:
    """Serialise ``value`` as strict JSON: NaN and infinite floats become ``null``.

    Python's ``json`` writes them as ``NaN`` and ``Infinity``, which the JSON standard does
    not allow, so strict parsers reject them. A diverged lifetime produces such values.
    """

    def clean(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: clean(child) for key, child in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(child) for child in item]
        return item

    return json.dumps(clean(value), allow_nan=False, **options)
