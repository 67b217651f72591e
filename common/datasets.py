"""Datasets over the cache for both stages: training windows (both participants, aligned) and whole dialogs.

Arrays are memory-mapped from the cache (no WAV decoding per step) and opened lazily in each loader worker.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from .cache import Cache


class _CacheBacked(Dataset):
    def __init__(self, cache: Cache | str, split: str | None):
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        self.split = split
        self.entries = self.cache.dialogs(split)
        if not self.entries:
            raise ValueError(f"cache {self.cache.root} has no dialogs in split {split!r}")
        self._open = {}

    def arrays(self, i: int):
        if i not in self._open:
            self._open[i] = self.cache.load(self.entries[i]["id"], mmap=True)
        return self._open[i]

    def __getstate__(self):               # memory maps are reopened in each worker
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


class MotionWindows(_CacheBacked):
    """Fixed-length windows over every dialog of a split, both participants, normalised.

    Windows start every ``stride`` frames (default: half a window); shuffle with the DataLoader.
    Item: ``motion`` (2, W, D), ``audio`` (2, W, F) float32, ``states`` (2, W) int64, ``dialog`` int, ``start`` int.
    """

    def __init__(self, cache, split: str = "train", window: int = 64, stride: int | None = None, normalize: bool = True):
        super().__init__(cache, split)
        self.window, self.stride, self.normalize = int(window), int(stride or max(1, window // 2)), normalize
        self.index = [(i, s) for i, d in enumerate(self.entries)
                      for s in range(0, d["num_frames"] - self.window + 1, self.stride)]
        if not self.index:
            raise ValueError(f"no dialog of split {split!r} is as long as the window ({window} frames)")

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        i, s = self.index[k]
        a = self.arrays(i)
        sl = slice(s, s + self.window)
        motion = np.asarray(a.motion[:, sl], np.float32)
        audio = np.asarray(a.audio[:, sl], np.float32)
        if self.normalize:
            motion = self.cache.normalize_motion(motion).astype(np.float32)
            audio = self.cache.normalize_audio(audio).astype(np.float32)
        return {"motion": motion, "audio": audio, "states": np.asarray(a.states[:, sl], np.int64), "dialog": i, "start": s}


class DialogSequences(_CacheBacked):
    """Whole dialogs of a split (for evaluation), raw or normalised."""

    def __init__(self, cache, split: str = "test", normalize: bool = False):
        super().__init__(cache, split)
        self.normalize = normalize

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i):
        a = self.arrays(i)
        motion = np.asarray(a.motion, np.float32)
        audio = np.asarray(a.audio, np.float32)
        if self.normalize:
            motion = self.cache.normalize_motion(motion).astype(np.float32)
            audio = self.cache.normalize_audio(audio).astype(np.float32)
        e = self.entries[i]
        return {"id": e["id"], "participants": list(e["participants"]), "motion": motion, "audio": audio,
                "states": np.asarray(a.states, np.int64), "shape": np.asarray(a.shape, np.float32)}
