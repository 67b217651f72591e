"""Baselines users always want beside a model, written as prediction directories (any method's layout).

- ``mean``: the train split's mean motion, every frame;
- ``random_other``: the ground truth of another (random, seeded) test dialog, same participant slot — a
  realistic but unrelated motion (a reference for FD);
- ``mirror``: the partner's own motion copied;
- ``nn_audio``: nearest-neighbour retrieval — for each block of frames, the train motion whose audio features
  (own and partner's, pooled) are closest.

The learned baselines (``baselines/``, trained) are named here too: :data:`REGRESSOR_VARIANTS`, the four
DualTalk-class regressors the quality bench and the demo train, and their folder names (:func:`regressor_name`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.data.cache import Cache
from common.eval.predictions import prediction_path, write_prediction

BASELINES = ("mean", "random_other", "mirror", "nn_audio")


def regressor_name(causal: bool, partner_motion: bool) -> str:
    """A DualTalk-class regressor's default folder name: ``dualtalk_class``, ``_causal`` when causal, ``_dyad`` in the
    dyad protocol (``partner_motion`` false: both audio tracks only, no partner motion)."""
    return "dualtalk_class" + ("_causal" if causal else "") + ("" if partner_motion else "_dyad")


# name -> the regressor's model keys (baselines/config.py): DualTalk's protocol (the partner's true motion given:
# listener mode's counterpart) and the dyad protocol (audio only: dyad mode's counterpart), non-causal and causal
REGRESSOR_VARIANTS = {regressor_name(causal, partner): {"causal": causal, "partner_motion": partner}
                      for partner in (True, False) for causal in (False, True)}


def regressor_overrides(name: str) -> list[str]:
    """The ``key=value`` overrides of ``baselines/train.py`` that train the regressor variant ``name``."""
    return [f"model.{key}={str(value).lower()}" for key, value in REGRESSOR_VARIANTS[name].items()]


def _fit_length(x: np.ndarray, T: int) -> np.ndarray:
    reps = int(np.ceil(T / len(x)))
    return np.concatenate([x] * reps)[:T]


def _audio_keys(cache: Cache, audio: np.ndarray, block: int, pool: int) -> np.ndarray:
    """(n_blocks, features): normalised audio of both sides, mean-pooled in ``pool``-frame bins, per block."""
    a = cache.normalize_audio(np.asarray(audio, np.float32))          # (2, T, F)
    n = a.shape[1] // block
    a = a[:, :n * block].reshape(2, n, block // pool, pool, -1).mean(3)  # (2, n, bins, F)
    return np.concatenate([a[0].reshape(n, -1), a[1].reshape(n, -1)], 1)


def copy_sources(cache: Cache, split: str = "test", seed: int = 0) -> dict[str, dict[tuple[str, str], tuple[str, int]]]:
    """Whose motion the copying baselines write for each ``(dialog, participant)`` of ``split``: ``{"mirror": ...,
    "random_other": ...}`` -> ``(source dialog, source slot)``. The one place random_other's seeded draw is made
    (:func:`make_baselines` writes what it says; the quality bench's enrollment protocol moves a copy by its
    source person's clip)."""
    dialogs = cache.dialogs(split)
    if not dialogs:
        raise ValueError(f"no dialog in split {split!r}")
    rng = np.random.default_rng(seed)
    others = [d for d in cache.dialogs(split)] if len(dialogs) > 1 else cache.dialogs()
    out: dict[str, dict] = {"mirror": {}, "random_other": {}}
    for d in dialogs:
        for i, pid in enumerate(d["participants"]):
            out["mirror"][(d["id"], pid)] = (d["id"], 1 - i)
            cands = [o for o in others if o["id"] != d["id"]]
            out["random_other"][(d["id"], pid)] = (cands[int(rng.integers(len(cands)))]["id"], i)
    return out


def make_baselines(cache_root: str | Path, out: str | Path, split: str = "test", seed: int = 0,
                   which=BASELINES, block: int = 30, pool: int = 5, progress: bool = True) -> dict[str, Path]:
    cache = Cache(cache_root)
    out = Path(out)
    dialogs = cache.dialogs(split)
    sources = copy_sources(cache, split, seed)
    dirs = {}
    if "nn_audio" in which:
        keys, values = [], []
        for d in cache.dialogs("train"):
            a = cache.load(d["id"])
            for i in range(2):                      # both orderings: participant i as "own"
                aa = np.asarray(a.audio)[[i, 1 - i]]
                k = _audio_keys(cache, aa, block, pool)
                keys.append(k)
                values.append(np.asarray(a.motion[i])[:len(k) * block].reshape(len(k), block, -1))
        keys, values = np.concatenate(keys), np.concatenate(values)
    for name in which:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
        dirs[name] = out / name
    def write(folder: Path, dialog: str, pid: str, motion: np.ndarray):
        write_prediction(prediction_path(folder, dialog, pid), motion, cache.layout)

    for d in tqdm(dialogs, desc="baselines", unit="dialog", disable=not progress):
        a = cache.load(d["id"])
        motion = np.asarray(a.motion)
        T = motion.shape[1]
        for i, pid in enumerate(d["participants"]):
            if "mean" in which:
                write(dirs["mean"], d["id"], pid, np.tile(cache.stats["motion_mean"], (T, 1)))
            for name in ("mirror", "random_other"):         # copies of another person's motion: copy_sources
                if name in which:
                    src, slot = sources[name][(d["id"], pid)]
                    copied = motion if src == d["id"] else np.asarray(cache.load(src).motion)
                    write(dirs[name], d["id"], pid, _fit_length(copied[slot], T))
            if "nn_audio" in which:
                aa = np.asarray(a.audio)[[i, 1 - i]]
                q = _audio_keys(cache, np.pad(aa, ((0, 0), (0, -T % block), (0, 0)), mode="edge"), block, pool)
                d2 = (q * q).sum(1)[:, None] - 2 * q @ keys.T + (keys * keys).sum(1)[None]
                pred = values[np.argmin(d2, 1)].reshape(-1, values.shape[-1])[:T]
                write(dirs["nn_audio"], d["id"], pid, pred)
    return dirs
