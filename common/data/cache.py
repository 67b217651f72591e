"""Read access to the preprocessing cache (layout: docs/ARCHITECTURE.md)."""
from __future__ import annotations

import threading
import tokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.io import READ_ERRORS, check_name, load_npy, read_json, read_npz_checked
from common.layout import Layout, layout_from_json

MANIFEST = "manifest.json"
STATS = "stats.npz"


class CacheError(ValueError):
    pass


@dataclass
class DialogArrays:
    motion: np.ndarray   # (2, T, D) raw
    states: np.ndarray   # (2, T)
    audio: np.ndarray    # (2, T, F)
    shape: np.ndarray    # (2, shape_dims)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = read_json(path)
    except (OSError, ValueError, RecursionError) as e:
        raise CacheError(f"{path} is unreadable ({type(e).__name__}: {str(e)[:200]}); rerun scripts/preprocess.py "
                         "(its merge step when sharded)") from e
    if not isinstance(manifest, dict):
        raise CacheError(f"{path} is not a cache manifest (a JSON object); rerun scripts/preprocess.py")
    return manifest


def _checked_dialogs(manifest: dict, path: Path) -> list[dict]:
    """The manifest's dialog entries, their ids checked (they become paths: dialogs/<id>, P/<id>/<participant>.npz,
    tokens/<name>/<id>.npy) as the corpus reader checks them."""
    dialogs = manifest.get("dialogs")
    if not isinstance(dialogs, list):
        raise CacheError(f"{path}: 'dialogs' must be a list; rerun scripts/preprocess.py")
    seen = set()
    for d in dialogs:
        try:
            if not isinstance(d, dict):
                raise ValueError(f"dialog entry {d!r} is not an object")
            check_name(d.get("id"), "dialog id")
            parts = d.get("participants")
            if not isinstance(parts, list) or len(parts) != 2 or parts[0] == parts[1]:
                raise ValueError(f"dialog {d['id']}: participants must be two distinct ids, got {parts!r}")
            for pid in parts:
                check_name(pid, f"dialog {d['id']}: participant id")
            n = d.get("num_frames")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"dialog {d['id']}: num_frames must be a positive integer, got {n!r}")
            if d["id"] in seen:
                raise ValueError(f"dialog {d['id']} is listed twice")
            seen.add(d["id"])
        except ValueError as e:
            raise CacheError(f"{path}: {e}; rerun scripts/preprocess.py") from None
    return dialogs


def _read_stats(path: Path, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """stats.npz: ``<kind>_mean`` / ``<kind>_std`` of the manifest's widths, finite, std > 0 (float32)."""
    try:
        arrays = read_npz_checked(path)
    except READ_ERRORS as e:
        raise CacheError(f"{path} is unreadable ({type(e).__name__}: {str(e)[:200]}); rerun scripts/preprocess.py "
                         "(its merge step when sharded)") from e
    stats = {}
    for kind, dim in dims.items():
        for part in ("mean", "std"):
            key = f"{kind}_{part}"
            a = arrays.get(key)
            if a is None or a.shape != (dim,) or not np.issubdtype(a.dtype, np.floating):
                raise CacheError(f"{path}: {key} must be ({dim},) floats, got "
                                 f"{'nothing' if a is None else f'{a.dtype} {a.shape}'}; rerun scripts/preprocess.py")
            stats[key] = a.astype(np.float32)
            if not np.isfinite(stats[key]).all() or (part == "std" and not (stats[key] > 0).all()):
                raise CacheError(f"{path}: {key} holds NaN/Inf{' or values <= 0' if part == 'std' else ''}; "
                                 "rerun scripts/preprocess.py --overwrite")
    return stats


class Cache:
    """A preprocessed corpus: manifest, statistics and memory-mapped per-dialog arrays."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        mpath = self.root / MANIFEST
        if not mpath.is_file():
            raise CacheError(f"{mpath} not found: run scripts/preprocess.py (and its merge step when sharded) first")
        self.manifest = _read_manifest(mpath)
        try:
            self.fps = float(self.manifest["fps"])
            self.motion_dim = int(self.manifest["motion_dim"])
            self.audio_dim = int(self.manifest["audio_features"]["dim"])
            self.layout: Layout = layout_from_json(self.manifest.get("motion_layout"), self.motion_dim)
        except (KeyError, TypeError, ValueError) as e:
            raise CacheError(f"{mpath} is not a cache manifest ({type(e).__name__}: {e}); rerun "
                             "scripts/preprocess.py") from e
        self._by_id = {d["id"]: d for d in _checked_dialogs(self.manifest, mpath)}
        self._stats = None
        self._lock = threading.Lock()

    # --- dialogs -------------------------------------------------------------------------------------
    def dialogs(self, split: str | None = None) -> list[dict]:
        splits = None if split is None else set(split.split(","))
        return [d for d in self.manifest["dialogs"] if splits is None or d["split"] in splits]

    def dialog(self, dialog_id: str) -> dict:
        if dialog_id not in self._by_id:
            raise CacheError(f"dialog {dialog_id!r} is not in {self.root / MANIFEST}")
        return self._by_id[dialog_id]

    def dialog_dir(self, dialog_id: str) -> Path:
        return self.root / "dialogs" / dialog_id

    def load(self, dialog_id: str, mmap: bool = True) -> DialogArrays:
        self.dialog(dialog_id)
        d = self.dialog_dir(dialog_id)
        try:
            arrays = DialogArrays(*(load_npy(d / f"{k}.npy", mmap=mmap) for k in ("motion", "states", "audio", "shape")))
        except (OSError, ValueError, EOFError, MemoryError, SyntaxError, tokenize.TokenError) as e:
            raise CacheError(f"cached dialog {dialog_id} in {d} is unreadable ({e}); delete the folder and rerun "
                             "scripts/preprocess.py") from e
        T = self._by_id[dialog_id]["num_frames"]
        want = {"motion": (2, T, self.motion_dim), "states": (2, T), "audio": (2, T, self.audio_dim)}
        for k, shape in want.items():
            got = getattr(arrays, k).shape
            if got != shape:
                raise CacheError(f"cached dialog {dialog_id}: {d / (k + '.npy')} has shape {got}, the manifest says "
                                 f"{shape}; delete the folder and rerun scripts/preprocess.py")
        return arrays

    # --- normalisation -------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            self._stats = _read_stats(self.root / STATS, {"motion": self.motion_dim, "audio": self.audio_dim})
        return self._stats

    def normalize_motion(self, x):
        return (x - self.stats["motion_mean"]) / self.stats["motion_std"]

    def denormalize_motion(self, x):
        return x * self.stats["motion_std"] + self.stats["motion_mean"]

    def normalize_audio(self, x):
        return (x - self.stats["audio_mean"]) / self.stats["audio_std"]
