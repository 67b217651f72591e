"""Read access to the preprocessing cache (layout: docs/ARCHITECTURE.md)."""
from __future__ import annotations

import threading
import tokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.io import load_npy, read_json
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


class Cache:
    """A preprocessed corpus: manifest, statistics and memory-mapped per-dialog arrays."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        mpath = self.root / MANIFEST
        if not mpath.is_file():
            raise CacheError(f"{mpath} not found: run scripts/preprocess.py (and its merge step when sharded) first")
        self.manifest = read_json(mpath)
        self.fps = float(self.manifest["fps"])
        self.motion_dim = int(self.manifest["motion_dim"])
        self.audio_dim = int(self.manifest["audio_features"]["dim"])
        self.layout: Layout = layout_from_json(self.manifest.get("motion_layout"), self.motion_dim)
        self._by_id = {d["id"]: d for d in self.manifest["dialogs"]}
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
            with np.load(self.root / STATS, allow_pickle=False) as z:
                self._stats = {k: z[k].astype(np.float32) for k in z.files}
        return self._stats

    def normalize_motion(self, x):
        return (x - self.stats["motion_mean"]) / self.stats["motion_std"]

    def denormalize_motion(self, x):
        return x * self.stats["motion_std"] + self.stats["motion_mean"]

    def normalize_audio(self, x):
        return (x - self.stats["audio_mean"]) / self.stats["audio_std"]
