"""Self-describing artifacts (tokenizer, GPT): weights + config + metadata in one file, written atomically.

An artifact is a plain dict of tensors and Python primitives, so it loads with ``torch.load(weights_only=True)``:
no pickled code ever runs. Numpy arrays in ``meta`` are stored as tensors and come back as numpy arrays.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.io import atomic_path, remove_stale_temps

FORMAT = "dyadic-face"
VERSION = 1


class CheckpointError(ValueError):
    pass


def _to_storable(x):
    if isinstance(x, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(x))}
    if isinstance(x, dict):
        return {k: _to_storable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_storable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def _from_storable(x):
    if isinstance(x, dict):
        if set(x) == {"__ndarray__"}:
            return x["__ndarray__"].numpy()
        return {k: _from_storable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_storable(v) for v in x]
    return x


def save_artifact(path: str | Path, *, kind: str, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                  meta: dict[str, Any] | None = None) -> Path:
    """Write ``{format, version, kind, config, meta, state_dict}`` atomically; returns the path."""
    payload = {
        "format": FORMAT, "version": VERSION, "kind": kind,
        "config": _to_storable(config), "meta": _to_storable(meta or {}),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
    }
    path = Path(path)
    remove_stale_temps(path)                # left by a writer killed before its rename (one writer per artifact)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return path


def load_artifact(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load an artifact with ``weights_only=True``; checks its format and kind with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, code in the pickle...
        raise CheckpointError(f"{path} cannot be loaded safely (truncated, corrupted, or not a dyadic-face "
                              f"artifact): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dyadic-face artifact")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {payload.get('kind')!r}, expected a {kind!r}")
    payload["config"] = _from_storable(payload["config"])
    payload["meta"] = _from_storable(payload["meta"])
    return payload


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
