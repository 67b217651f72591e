"""Stage-2 measurements: motion quality on a split (vs the tokenizer's reconstruction, the mean-motion baseline
and a speaker-only model), and speed (offline, streaming, KV cache vs none, latency, memory over length).

Used by ``scripts/bench_stage2.py`` (a thin CLI printing tables). Quality metrics come from
``common.metrics.evaluate_sequences`` when it exists; otherwise from :func:`fallback_metrics` (documented there).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from common.cache import Cache
from common.states import LISTEN, SPEAK

from .generate import Generator, Sampling

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# predictions on a split
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SplitData:
    ids: list[str]
    motion: list[np.ndarray]      # (2, T, D) raw ground truth per dialog
    audio: list[np.ndarray]       # (2, T, F) raw features
    states: list[np.ndarray]      # (2, T)
    shape: list[np.ndarray]       # (2, S) identities


def load_split(cache: Cache, split: str = "test", max_dialogs: int = 0) -> SplitData:
    entries = cache.dialogs(split)[:max_dialogs or None]
    arrs = [cache.load(e["id"]) for e in entries]
    return SplitData([e["id"] for e in entries], [np.array(a.motion, np.float32) for a in arrs],
                     [np.array(a.audio, np.float32) for a in arrs], [np.array(a.states) for a in arrs],
                     [np.array(a.shape, np.float32) for a in arrs])


def predict_split(gen: Generator, data: SplitData, mode: str, sampling: Sampling, num_samples: int = 1,
                  identity: bool = True) -> list[np.ndarray]:
    """(2, T, D) per dialog. ``dyad``: both generated together; ``listener``: each participant generated with
    the other's ground truth given (two runs per dialog, the DualTalk protocol)."""
    out = []
    for i, (audio, motion) in enumerate(zip(data.audio, data.motion)):
        s = Sampling(sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed + 1000 * i)
        ident = data.shape[i] if identity else None
        if mode == "dyad":
            out.append(gen.generate(audio, sampling=s, num_samples=num_samples, identity=ident).motion)
        elif mode == "listener":
            pred = np.empty_like(motion)
            for g in (0, 1):
                pred[1 - g] = gen.generate(audio, given=g, given_motion=motion[g], sampling=s,
                                           num_samples=num_samples, identity=ident).motion[1 - g]
            out.append(pred)
        else:
            raise ValueError(mode)
    return out


def reconstruct_split(tok, data: SplitData) -> list[np.ndarray]:
    out = []
    for m in data.motion:
        T = m.shape[1]
        x = torch.from_numpy(m)
        rec = tok.decode(tok.encode(x)).numpy()
        if rec.shape[1] < T:                                           # trailing partial token: repeat the last frame
            rec = np.concatenate([rec, np.repeat(rec[:, -1:], T - rec.shape[1], 1)], 1)
        out.append(rec.astype(np.float32))
    return out


def mean_split(cache: Cache, data: SplitData) -> list[np.ndarray]:
    mu = cache.stats["motion_mean"].astype(np.float32)
    return [np.broadcast_to(mu, m.shape).copy() for m in data.motion]


# ----------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------
def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a and b."""
    from scipy import linalg
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def speech_energy(audio_feats: np.ndarray) -> np.ndarray:
    """Per-frame loudness of one's own microphone: the mean log-mel over bands (T,)."""
    return np.asarray(audio_feats, np.float64).mean(-1)


def _corr(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.std() < 1e-12 or y.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def fallback_metrics(preds: list[np.ndarray], data: SplitData, layout: dict) -> dict:
    """Pooled over every participant of every dialog (whole sequences), and on listening frames only:

    - ``mse_exp`` / ``mse_jaw``: mean squared error of the expression dims / the jaw (raw FLAME units);
    - ``fd``: Fréchet distance between the per-frame motion distributions (generated vs true);
    - ``pfd``: the same on [own motion, partner's true motion] pairs (paired FD: is the motion right *for this
      partner*);
    - ``jaw_speech_r``: mean Pearson correlation of the jaw with one's own speech energy; ``gt_jaw_speech_r``
      the same for the ground truth.
    """
    e0, e1 = layout["exp"]
    j0 = layout["jaw"][0]
    P, G, PP, GP, listen = [], [], [], [], []
    r_pred, r_gt = [], []
    for pred, gt, audio, st in zip(preds, data.motion, data.audio, data.states):
        for p in (0, 1):
            P.append(pred[p]); G.append(gt[p])
            PP.append(np.concatenate([pred[p], gt[1 - p]], 1)); GP.append(np.concatenate([gt[p], gt[1 - p]], 1))
            listen.append(st[p] == LISTEN)
            energy = speech_energy(audio[p])
            r_pred.append(_corr(pred[p][:, j0], energy)); r_gt.append(_corr(gt[p][:, j0], energy))
    P, G, PP, GP, L = (np.concatenate(x, 0) for x in (P, G, PP, GP, listen))
    out = {}
    for tag, m in (("", slice(None)), ("listen_", L)):
        err = (P[m] - G[m]) ** 2
        out[f"{tag}mse_exp"] = float(err[:, e0:e1].mean())
        out[f"{tag}mse_exp_driftonly"] = float(err[:, 40:e1].mean()) if e1 > 40 else float("nan")
        out[f"{tag}mse_jaw"] = float(err[:, j0].mean())
        out[f"{tag}fd"] = frechet(P[m], G[m])
        out[f"{tag}pfd"] = frechet(PP[m], GP[m])
    out["jaw_speech_r"] = float(np.mean(r_pred))
    out["gt_jaw_speech_r"] = float(np.mean(r_gt))
    return out


def compute_metrics(preds, data: SplitData, layout: dict) -> dict:
    try:
        from common.metrics import evaluate_sequences  # noqa: F401  (written by the metrics owner)
    except ImportError:
        return fallback_metrics(preds, data, layout)
    return fallback_metrics(preds, data, layout)


# ----------------------------------------------------------------------------------------------------------
# speed
# ----------------------------------------------------------------------------------------------------------
def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tile_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    reps = -(-frames // audio.shape[1])
    return np.concatenate([audio] * reps, 1)[:, :frames]


def bench_offline(gen: Generator, audio: np.ndarray, sampling=Sampling()) -> dict:
    gen.generate(audio[:, :60], sampling=sampling)                              # warm-up
    t = time.perf_counter()
    res = gen.generate(audio, sampling=sampling)
    el = time.perf_counter() - t
    T = audio.shape[1]
    return {"frames": T, "seconds": el, "frames_per_s": T / el, "x_realtime": T / gen.fps / el,
            "ms_per_step": 1e3 * el / res.codes.shape[1]}


@torch.no_grad()
def bench_no_cache(gen: Generator, audio: np.ndarray, sampling=Sampling()) -> dict:
    """The same generation without a KV cache: each step reruns the decoder over the whole attention window."""
    m, d = gen.model, gen.d
    a = gen.normalize_audio(audio)
    K = a.shape[1] // d
    st = gen.new_state(sampling.seed)
    hist = []
    t = time.perf_counter()
    for k in range(K):
        S = m.cfg.slots
        B = 2 // S
        prev = st.prev.reshape(B, S, -1)
        x = m.embed(prev.unsqueeze(1), a[:, k * d:(k + 1) * d].reshape(B, S, d, -1).unsqueeze(1))
        hist = (hist + [x])[-m.cfg.attn_window:]
        h = m.decoder(torch.cat(hist, 1))[:, -1]
        st.prev = gen._sample_heads(h, None, sampling, st.generator).reshape(1, 2, -1)
    el = time.perf_counter() - t
    return {"seconds": el, "ms_per_step": 1e3 * el / K, "x_realtime": K * d / gen.fps / el}


def bench_streaming(gen: Generator, audio: np.ndarray, sampling=Sampling(), given_motion=None,
                    sample_every: int = 0) -> dict:
    """Push one token step (``downsample`` frames) at a time, as a live system would; per-step wall times."""
    d = gen.d
    sess = gen.stream(sampling, given=None if given_motion is None else 1)
    times, rss = [], []
    T = audio.shape[1] - audio.shape[1] % d
    for i in range(0, T, d):
        t = time.perf_counter()
        sess.push(audio[:, i:i + d], None if given_motion is None else given_motion[i:i + d])
        times.append(time.perf_counter() - t)
        if sample_every and (i // d) % sample_every == 0:
            rss.append((i / gen.fps, rss_mb()))
    times = np.asarray(times[5:] if len(times) > 10 else times)
    kv = sum(x.cached_kv[0].numel() + x.cached_kv[1].numel() for x in sess.state.cache.attn_intermediates
             if getattr(x, "cached_kv", None) is not None) * 4
    return {"frames": T, "seconds": float(times.sum()), "frames_per_s": d * len(times) / times.sum(),
            "ms_per_step_mean": 1e3 * times.mean(), "ms_per_step_p95": 1e3 * np.percentile(times, 95),
            "ms_per_step_max": 1e3 * times.max(), "kv_cache_bytes": kv, "rss": rss}


def latency(gen: Generator, step_ms_p95: float) -> dict:
    """Algorithmic latency of the streaming path (ms) + measured compute."""
    tok = gen.tok
    token_ms = 1e3 * gen.d / gen.fps             # the first frame of a token waits for the whole token's audio
    feats = gen.bundle.audio.get("features", {})
    feat_ahead_ms = 0.0 if feats.get("causal", False) else float("nan")
    tok_ms = 1e3 * getattr(tok, "lookahead_frames", 0) / gen.fps
    algo = token_ms + feat_ahead_ms + tok_ms
    return {"token_ms": token_ms, "feature_lookahead_ms": feat_ahead_ms, "tokenizer_lookahead_ms": tok_ms,
            "algorithmic_ms": algo, "compute_ms_p95": step_ms_p95, "total_ms": algo + step_ms_p95}
