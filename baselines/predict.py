"""Sample an exported regressor (``regressor.pt``) over whole dialogs into the prediction layout.

Each participant is predicted from both audio tracks and, in the listener protocol (DualTalk's ``test.py``, the
default), the partner's ground-truth motion; a regressor trained with ``model.partner_motion=false`` (the dyad
protocol) reads the audio only. Written as ``OUT/<dialog>/<participant>.npz`` (common/eval/predictions.py).

Whole dialogs run in **overlapping windows** of the training window ``W`` (the length the model learned; a
dialog shorter than ``W`` runs as one window of its length), every ``W // 2`` frames, the last one aligned to
the dialog's end, so the output has exactly the dialog's length:

- non-causal: the windows' outputs are cross-faded (triangular weights, normalised), so every frame is the
  weighted mean of the (one or two) windows that cover it, and no seam jumps;
- causal: each frame is taken from the earliest window that covers it, i.e. the one with the most context,
  so output frame ``t`` depends only on inputs in ``[t - W + 1, t]`` (a bounded causal context of at least
  ``W // 2 + 1`` frames once ``t >= W // 2``): still causal, as the tests check on whole dialogs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from baselines.artifact import RegressorBundle, load_regressor
from common.data.cache import Cache
from common.eval.predictions import prediction_path, write_prediction


def window_starts(num_frames: int, window: int, hop: int) -> list[int]:
    """Starts of the windows covering ``num_frames``: every ``hop`` frames, the last one ending at the end."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, hop))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def crossfade_weights(window: int) -> np.ndarray:
    """Triangular weights of a window's frames (1 at both ends, largest in the middle)."""
    i = np.arange(window)
    return np.minimum(i + 1, window - i).astype(np.float64)


@torch.no_grad()
def predict_dialog(bundle: RegressorBundle, motion: np.ndarray, audio: np.ndarray, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Both participants of one dialog: raw motion (2, T, D) and audio features (2, T, F) -> raw predicted motion
    (2, T, D) float32; participant ``p`` sees both audio tracks and, in the listener protocol, motion[1 - p] (never
    its own; in the dyad protocol no motion at all: ``motion`` then gives only the shape)."""
    motion, audio = np.asarray(motion, np.float32), np.asarray(audio, np.float32)
    T = motion.shape[1]
    W = min(bundle.window, T)
    starts = window_starts(T, W, max(1, W // 2))
    m = torch.from_numpy(bundle.normalize_motion(motion).astype(np.float32))
    a = torch.from_numpy(bundle.normalize_audio(audio).astype(np.float32))
    roles = [(p, s) for p in (0, 1) for s in starts]                 # (participant, window start)
    outputs = []
    model = bundle.model.to(device)
    for k in range(0, len(roles), batch_size):
        chunk = roles[k:k + batch_size]
        own_audio = torch.stack([a[p, s:s + W] for p, s in chunk]).to(device)
        partner_audio = torch.stack([a[1 - p, s:s + W] for p, s in chunk]).to(device)
        partner_motion = (torch.stack([m[1 - p, s:s + W] for p, s in chunk]).to(device)
                          if bundle.model.cfg.partner_motion else None)
        outputs.append(model.regress(own_audio, partner_audio, partner_motion).float().cpu().numpy())
    y = np.concatenate(outputs).reshape(2, len(starts), W, -1).astype(np.float64)
    out = np.zeros((2, T, y.shape[-1]))
    if bundle.causal:
        covered = 0
        for k, s in enumerate(starts):                               # each frame from its earliest window
            out[:, covered:s + W] = y[:, k, covered - s:]
            covered = s + W
    else:
        w, total = crossfade_weights(W)[:, None], np.zeros((T, 1))
        for k, s in enumerate(starts):
            out[:, s:s + W] += w * y[:, k]
            total[s:s + W] += w
        out /= total
    return bundle.denormalize_motion(out).astype(np.float32)


def predict_split(regressor: str | Path | RegressorBundle, cache_root: str | Path, out_dir: str | Path,
                  split: str = "test", batch_size: int = 64, device: str | torch.device = "cpu",
                  progress: bool = True) -> Path:
    """Every dialog of ``split``, both participants (the regressor's protocol), as ``out_dir/<dialog>/<participant>.npz``
    with the cache's identity as ``shape_params``; returns ``out_dir``."""
    bundle = regressor if isinstance(regressor, RegressorBundle) else load_regressor(regressor, device)
    cache = Cache(cache_root)
    bundle.check_cache(cache)
    dialogs = cache.dialogs(split)
    if not dialogs:
        raise ValueError(f"no dialog in split {split!r} of {cache.root}")
    out_dir = Path(out_dir)
    for d in tqdm(dialogs, desc=Path(out_dir).name, unit="dialog", disable=not progress):
        a = cache.load(d["id"])
        pred = predict_dialog(bundle, a.motion, a.audio, batch_size=batch_size, device=device)
        for p, pid in enumerate(d["participants"]):
            write_prediction(prediction_path(out_dir, d["id"], pid), pred[p], cache.layout, np.asarray(a.shape[p]))
    return out_dir
