"""Datasets over the cache for both stages: training windows (both participants, aligned) and whole dialogs.

Arrays are memory-mapped from the cache (no WAV decoding per step) and opened lazily in each loader worker.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from common.data.cache import Cache, CacheError


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
    Item: ``motion`` (2, W, D), ``audio`` (2, W, F) float32, ``states`` (2, W) int64, ``reference`` (2, D) float32
    (each participant's mean motion over the whole dialog, normalised like ``motion``), ``dialog`` int,
    ``start`` int.
    """

    def __init__(self, cache, split: str = "train", window: int = 64, stride: int | None = None, normalize: bool = True):
        super().__init__(cache, split)
        self.window, self.stride, self.normalize = int(window), int(stride or max(1, window // 2)), normalize
        self.index = [(i, s) for i, d in enumerate(self.entries)
                      for s in range(0, d["num_frames"] - self.window + 1, self.stride)]
        if not self.index:
            raise ValueError(f"no dialog of split {split!r} is as long as the window ({window} frames)")
        self._references = {}

    def __len__(self):
        return len(self.index)

    def reference(self, i: int) -> np.ndarray:
        """(2, D) each participant's mean motion over dialog ``i`` (raw)."""
        if i not in self._references:
            self._references[i] = np.asarray(self.arrays(i).motion, np.float64).mean(1).astype(np.float32)
        return self._references[i]

    def __getitem__(self, k):
        i, s = self.index[k]
        a = self.arrays(i)
        sl = slice(s, s + self.window)
        motion = np.asarray(a.motion[:, sl], np.float32)
        audio = np.asarray(a.audio[:, sl], np.float32)
        reference = self.reference(i)
        if self.normalize:
            motion = self.cache.normalize_motion(motion).astype(np.float32)
            audio = self.cache.normalize_audio(audio).astype(np.float32)
            reference = self.cache.normalize_motion(reference).astype(np.float32)
        return {"motion": motion, "audio": audio, "states": np.asarray(a.states[:, sl], np.int64),
                "reference": reference, "dialog": i, "start": s}


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


class TokenWindows(_CacheBacked):
    """Windows of token steps over every dialog of a split, both participants (stage 2 training data).

    Codes come from ``CACHE/tokens/<tokens>/<id>.npy`` ((2, T // downsample, Q), written by stage1_vq.tokens);
    token step ``k`` covers motion frames ``[k * downsample, (k + 1) * downsample)``.
    Windows of ``window`` steps start every ``stride`` steps (default: half a window); dialogs shorter than a
    window are skipped. (Participant order needs no augmentation: the GPT runs both perspectives of a window.)

    Item: ``codes`` (2, W, Q) int64; ``prev`` (2, Q) int64, the codes of the step before the window (-1 when
    the window starts the dialog); ``audio`` (2, W * downsample, F) float32 normalised features at the motion
    rate; ``states`` (2, W * downsample) int64; ``shape`` (2, S) float32 identities; ``jaw`` (2, W * downsample, J)
    float32 the jaw dims of the motion, normalised; ``audio_prev`` (2, audio_before, F) float32 the normalised audio
    frames just before the window (zeros where the dialog has none: what generation starts from); ``dialog`` int;
    ``start`` (token step).
    """

    def __init__(self, cache, tokens: str, downsample: int, split: str = "train", window: int = 64,
                 stride: int | None = None, audio_before: int = 0):
        super().__init__(cache, split)
        self.audio_before = int(audio_before)
        self.tokens_dir = self.cache.root / "tokens" / tokens
        if not self.tokens_dir.is_dir():
            raise FileNotFoundError(f"{self.tokens_dir} does not exist: run "
                                    f"`python -m stage1_vq.tokens --tokenizer TOKENIZER --cache {self.cache.root}` first")
        self.d, self.window = int(downsample), int(window)
        self.stride = int(stride or max(1, window // 2))
        self._codes = {}
        self.index = []
        for i, e in enumerate(self.entries):
            path = self.tokens_dir / f"{e['id']}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: tokens of {tokens} do not cover dialog {e['id']}")
            steps = e["num_frames"] // self.d
            self.index += [(i, s) for s in range(0, steps - self.window + 1, self.stride)]
        if not self.index:
            raise ValueError(f"no dialog of split {split!r} is as long as the window ({window} token steps)")

    def codes(self, i: int) -> np.ndarray:
        if i not in self._codes:
            path = self.tokens_dir / f"{self.entries[i]['id']}.npy"
            try:
                self._codes[i] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise CacheError(f"dialog {self.entries[i]['id']}: token file {path} is missing or damaged ({e}); "
                                 f"rerun `python -m stage1_vq.tokens` for this cache") from e
            c, steps = self._codes[i], self.entries[i]["num_frames"] // self.d
            if c.ndim != 3 or c.shape[0] != 2 or c.shape[1] < steps or not np.issubdtype(c.dtype, np.integer):
                del self._codes[i]
                raise CacheError(f"dialog {self.entries[i]['id']}: token file {path} holds {c.dtype} {c.shape}, "
                                 f"expected integer codes of shape (2, {steps}, Q); rerun `python -m stage1_vq.tokens` "
                                 "for this cache")
        return self._codes[i]

    def __getstate__(self):
        state = super().__getstate__()
        state["_codes"] = {}
        return state

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        i, s = self.index[k]
        a, c, d = self.arrays(i), self.codes(i), self.d
        codes = np.asarray(c[:, s:s + self.window], np.int64)
        prev = np.asarray(c[:, s - 1], np.int64) if s > 0 else np.full((2, codes.shape[-1]), -1, np.int64)
        fr = slice(s * d, (s + self.window) * d)
        C, f0 = self.audio_before, max(0, s * d - self.audio_before)   # one read: the frames before and the window
        both = self.cache.normalize_audio(np.asarray(a.audio[:, f0:fr.stop], np.float32)).astype(np.float32)
        audio, have = both[:, s * d - f0:], both[:, :s * d - f0]
        before = np.zeros((2, C, both.shape[-1]), np.float32)
        before[:, C - have.shape[1]:] = have
        j0, j1 = self.cache.layout.jaw
        st = self.cache.stats
        jaw = ((np.asarray(a.motion[:, fr, j0:j1], np.float32) - st["motion_mean"][j0:j1])
               / st["motion_std"][j0:j1]).astype(np.float32)
        return {"codes": codes, "prev": prev, "audio": audio, "states": np.asarray(a.states[:, fr], np.int64),
                "shape": np.asarray(a.shape, np.float32), "jaw": jaw, "audio_prev": before, "dialog": i, "start": s}
