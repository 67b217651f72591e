"""Self-describing artifacts (tokenizer, GPT): weights + config + metadata in one file, written atomically.

An artifact is a plain dict of tensors and Python primitives, so it loads with ``torch.load(weights_only=True)``:
no pickled code ever runs. Numpy arrays in ``meta`` are stored as tensors and come back as numpy arrays.
"""
from __future__ import annotations

import hashlib
import math
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


def stored_int(d: dict, key: str) -> int:
    """An integer an artifact stores under ``key`` (ValueError otherwise; bools are not integers)."""
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key} {v!r} is not an integer")
    return v


def stored_rate(d: dict, key: str, maximum: float) -> float:
    """A rate an artifact stores under ``key``: a finite number in (0, maximum] (ValueError otherwise)."""
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v <= maximum and math.isfinite(v)):
        raise ValueError(f"{key} {v!r} is not a rate in (0, {maximum:g}]")
    return float(v)


def check_weights(path: str | Path, state_dict: Any) -> dict[str, torch.Tensor]:
    """The artifact's ``state_dict``: a mapping of names to finite tensors, or :class:`CheckpointError`."""
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and torch.is_tensor(v)
                                                   for k, v in state_dict.items()):
        raise CheckpointError(f"{path}: its state_dict is not a mapping of names to tensors")
    for name, value in state_dict.items():
        if (value.is_floating_point() or value.is_complex()) and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: weight {name} holds NaN/Inf (a diverged or damaged model)")
    return state_dict


def check_fits(path: str | Path, build, state_dict: dict[str, torch.Tensor]) -> None:
    """Build the module its stored config describes on the meta device (no memory is allocated) and compare its
    parameter names and shapes with the file's tensors, so the real module built next holds exactly what the
    file holds (a config claiming absurd sizes is refused here, not by an allocation of terabytes)."""
    with torch.device("meta"):
        module = build()
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state_dict.items()}
    if want == have:
        return
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = [f"{k}: config says {want[k]}, file holds {have[k]}" for k in sorted(set(want) & set(have))
              if want[k] != have[k]]
    parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + \
            ([f"unexpected {', '.join(extra[:5])}"] if extra else []) + shapes[:5]
    raise CheckpointError(f"{path}: its stored config and its weights disagree, or it was written by another "
                          f"version of the model code ({'; '.join(parts)}): retrain, or use the code it was "
                          "trained with")


def build_checked(path: str | Path, state_dict: Any, build):
    """The module ``build()`` makes, holding the artifact's weights: the weights checked (:func:`check_weights`),
    the module matched against them on the meta device first (:func:`check_fits`), then built and loaded strictly.
    Every loader of an artifact goes through this, so none allocates what its file does not hold."""
    state = check_weights(path, state_dict)
    check_fits(path, build, state)
    module = build()
    module.load_state_dict(state, strict=True)
    return module


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
