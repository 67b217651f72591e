"""Stage-2 measurements: motion quality on a split (vs the tokenizer's reconstruction, the mean-motion baseline
and a speaker-only model), and speed (offline, streaming, KV cache vs none, latency, memory over length).

Used by ``scripts/bench_stage2.py`` (a thin CLI printing tables). Quality metrics are those of
``common.metrics`` (docs/METRICS.md), computed in memory as ``scripts/evaluate.py`` does from files.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from common.cache import Cache

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
# metrics (common/metrics.py: the one scorer of every method)
# ----------------------------------------------------------------------------------------------------------
KEYS = ["fid_exp", "p_fid_exp", "mse_exp", "fid_jaw", "p_fid_jaw", "mse_jaw", "fid_exp@listen", "p_fid_exp@listen",
        "mse_exp@listen", "mse_jaw@listen", "mse_jaw@speak", "jaw_speech_r", "jaw_speech_r_gt"]


def compute_metrics(preds: list[np.ndarray], data: SplitData, layout: dict, with_sid: bool = False) -> dict:
    """``common.metrics.evaluate_sequences`` over every participant of every dialog (the partner's ground truth
    as partner, own states for the ``@state`` keys) plus the jaw / own-speech correlation, as scripts/evaluate.py."""
    from common import metrics as M
    P, G, Pa, S, E = [], [], [], [], []
    for pred, gt, audio, st in zip(preds, data.motion, data.audio, data.states):
        for p in (0, 1):
            P.append(pred[p]); G.append(gt[p]); Pa.append(gt[1 - p]); S.append(st[p])
            E.append(np.asarray(audio[p], np.float64).mean(1))
    out = M.evaluate_sequences(P, G, Pa, states=S, dataset_level=False, with_sid=with_sid)
    j = layout["jaw"][0]
    out["jaw_speech_r"] = float(np.mean([M.jaw_speech_correlation(p[:, j], e) for p, e in zip(P, E)]))
    out["jaw_speech_r_gt"] = float(np.mean([M.jaw_speech_correlation(g[:, j], e) for g, e in zip(G, E)]))
    return out


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
    a = gen.normalize_audio(audio)
    K = a.shape[1] // gen.d
    st = gen.new_state(sampling.seed, use_cache=False)
    t = time.perf_counter()
    for k in range(K):
        gen.step(st, a[:, k * gen.d:(k + 1) * gen.d], None, sampling)
    el = time.perf_counter() - t
    return {"seconds": el, "ms_per_step": 1e3 * el / K, "x_realtime": K * gen.d / gen.fps / el}


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


def untrained_generator(config_path: str, tokenizer_path: str, cache: Cache) -> Generator:
    """A Generator with random weights for ``config_path``'s model ("default": the dataclass defaults), for speed
    only: it costs what a trained one does."""
    from stage1_vq import load_tokenizer

    from .config import load_stage2_config
    from .generate import GPTBundle
    from .train import audio_description, build_model, tokenizer_description
    cfg = load_stage2_config(None if config_path == "default" else config_path,
                             [f"cache={cache.root}", f"tokenizer={tokenizer_path}"])
    tok = tokenizer_description(tokenizer_path)
    ident = int(cache.load(cache.dialogs()[0]["id"]).shape.shape[-1])
    torch.manual_seed(0)
    model = build_model(cfg, tok, cache.audio_dim, ident).eval()
    from common.config import to_dict
    bundle = GPTBundle(model, to_dict(cfg), tok, audio_description(cache), {"gpt_config": to_dict(cfg.model)},
                       f"untrained:{config_path}")
    return Generator(bundle, load_tokenizer(tokenizer_path))
