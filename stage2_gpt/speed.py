"""Speed of stage-2 generation, measured the way users meet it: offline (one dyad and a batch), batched offline
generation of many dialogs (frames/s against the batch size), streaming one token step at a time (features, and
raw audio through the causal features: the end-to-end path), the latency budget, memory over long sessions
(streaming, and offline from WAV files to prediction files), other model sizes; and the speed targets
(docs/STAGE2.md).

``scripts/benchmark.py`` runs these as its sections and prints their tables (common/eval/tables.py).
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from common.data.cache import Cache
from common.eval.tables import markdown_table as table

from .generate import Generator, Sampling


def sync(device) -> None:
    """Wait for the work queued on ``device`` (honest timings on an accelerator); nothing to wait for on CPU."""
    device = torch.device(device)
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def rss_mb() -> float:
    """Resident memory of this process (MB)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_mb(device) -> float:
    """Memory allocated by torch on an accelerator ``device`` (MB); 0 on CPU (see :func:`rss_mb`)."""
    device = torch.device(device)
    return 0.0 if device.type == "cpu" else torch.accelerator.memory_allocated(device) / 2 ** 20


def kv_cache_bytes(st) -> int:
    """Bytes held by a generation state's KV cache."""
    return 0 if st.cache is None else st.cache.nbytes()


def peak_device_mb(device) -> float:
    """Peak memory allocated by torch on an accelerator since the last reset (MB); 0 on CPU."""
    device = torch.device(device)
    return 0.0 if device.type == "cpu" else torch.accelerator.max_memory_allocated(device) / 2 ** 20


def reset_peak(device) -> None:
    device = torch.device(device)
    if device.type != "cpu":
        torch.accelerator.reset_peak_memory_stats(device)


def tile_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """(2, T, F) features repeated along time to ``frames`` frames (any length from one dialog)."""
    reps = -(-frames // audio.shape[1])
    return np.concatenate([audio] * reps, 1)[:, :frames]


def noise_wav(gen: Generator, frames: int, seed: int = 0) -> np.ndarray:
    """(2, frames * hop) raw audio at the GPT's sample rate: amplitude-modulated noise (the cost of feature
    extraction does not depend on what is said)."""
    from common.data.audio import hop_length
    n = frames * hop_length(gen.sample_rate, gen.fps)
    rng = np.random.default_rng(seed)
    env = 0.5 + 0.5 * np.sin(np.arange(n) / gen.sample_rate * 2 * np.pi * np.array([[0.7], [1.3]]))
    return (0.1 * env * rng.standard_normal((2, n))).astype(np.float32)


def bench_offline(gen: Generator, audio: np.ndarray, sampling=Sampling(), batch: int = 1) -> dict:
    """:meth:`Generator.generate` of ``batch`` sequences at once (``num_samples``: each an independent dyad,
    the same cost as ``batch`` dialogs); ``frames_per_s`` counts every dyad's motion frames (both people)."""
    T = audio.shape[1]
    gen.generate(audio[:, :min(T, 8 * gen.d)], sampling=sampling, num_samples=batch)  # warm-up
    sync(gen.device)
    t = time.perf_counter()
    res = gen.generate(audio, sampling=sampling, num_samples=batch)
    sync(gen.device)
    el = time.perf_counter() - t
    return {"batch": batch, "kv_cache": True, "frames": T, "seconds": el, "frames_per_s": batch * T / el,
            "x_realtime": batch * T / gen.fps / el, "ms_per_step": 1e3 * el / res.codes.shape[1]}


@torch.no_grad()
def bench_no_cache(gen: Generator, audio: np.ndarray, sampling=Sampling(), batch: int = 1, repeats: int = 0) -> dict:
    """What a step costs without a KV cache: the decoder reruns over the whole attention window (``attn_window``
    positions of both perspectives of ``batch`` dyads) and the heads sample, per token step. ``audio`` sets the
    number of steps timed (``repeats`` overrides it)."""
    n = repeats or max(3, audio.shape[1] // gen.d)
    x = torch.randn(2 * batch, gen.cfg.attn_window, gen.cfg.dim, device=gen.device)
    g = torch.Generator(device=gen.device).manual_seed(sampling.seed)
    gen._sample_heads(gen.model.decoder(x)[:, -1], sampling, g)              # warm-up
    sync(gen.device)
    t = time.perf_counter()
    for _ in range(n):
        gen._sample_heads(gen.model.decoder(x)[:, -1], sampling, g)
    sync(gen.device)
    el = time.perf_counter() - t
    T = n * gen.d
    return {"batch": batch, "kv_cache": False, "frames": T, "seconds": el, "frames_per_s": batch * T / el,
            "x_realtime": batch * T / gen.fps / el, "ms_per_step": 1e3 * el / n}


def bench_streaming(gen: Generator, audio: np.ndarray | None, sampling=Sampling(), given_motion=None,
                    wav: np.ndarray | None = None, probe_every: int = 0, skip: int = 5, num_samples: int = 1) -> dict:
    """Push one token step (``downsample`` frames) at a time, as a live system would, and time every push
    (``num_samples``: the session combines that many samples, :meth:`Generator.stream`).

    ``audio`` (2, T, F) features, or ``wav`` (2, S) raw samples at the GPT's sample rate (then every push also
    computes the causal log-mel frames: the whole path from microphone samples to motion frames).
    ``probe_every`` > 0: record memory (RSS, device, KV cache) every that many steps. The first ``skip`` steps
    are left out of the statistics (when more than twice as many were timed)."""
    from common.data.audio import hop_length
    d = gen.d
    sess = gen.stream(sampling, given=None if given_motion is None else 1, num_samples=num_samples)
    hop = hop_length(gen.sample_rate, gen.fps)
    T = (wav.shape[1] // hop) if wav is not None else audio.shape[1]
    T -= T % d
    times, probes = [], []
    for k, i in enumerate(range(0, T, d)):
        gm = None if given_motion is None else given_motion[i:i + d]
        t = time.perf_counter()
        if wav is not None:
            sess.push_wav(wav[0, i * hop:(i + d) * hop], wav[1, i * hop:(i + d) * hop], gm)
        else:
            sess.push(audio[:, i:i + d], gm)
        sync(gen.device)
        times.append(time.perf_counter() - t)
        if probe_every and (k + 1) % probe_every == 0:
            probes.append({"minutes": (i + d) / gen.fps / 60, "rss_mb": rss_mb(), "device_mb": device_mb(gen.device),
                           "kv_cache_bytes": kv_cache_bytes(sess.state)})
    times = np.asarray(times[skip:] if len(times) > 2 * skip else times)    # the first steps warm up
    ms = 1e3 * times
    return {"input": "raw audio" if wav is not None else "features", "samples": num_samples, "frames": T, "steps": len(ms),
            "seconds": float(times.sum()), "frames_per_s": d * len(times) / times.sum(),
            "x_realtime": d * len(times) / times.sum() / gen.fps, "ms_per_step_mean": float(ms.mean()),
            "ms_per_step_median": float(np.median(ms)), "ms_per_step_p95": float(np.percentile(ms, 95)),
            "ms_per_step_p99": float(np.percentile(ms, 99)), "ms_per_step_max": float(ms.max()),
            "kv_cache_bytes": kv_cache_bytes(sess.state), "probes": probes}


def bench_batches(gen: Generator, audio: np.ndarray, sampling=Sampling(), batches=(1, 2, 4, 8, 16),
                  seconds: float = 20.0) -> list[dict]:
    """Offline generation with ``b`` sequences in one batch (one KV cache), for every ``b`` of ``batches``: ``b``
    dialogs (:meth:`Generator.generate_many`: each exactly as alone, so each dialog's rows are multiplied on their
    own, decode_step.py's row groups) and ``b`` samples of one dialog (``num_samples``: one matrix product for
    all rows). frames/s counts every dyad's motion frames (both people); peak device memory off CPU."""
    n = int(seconds * gen.fps)
    rows = []
    for b in batches:
        dialogs = [tile_audio(np.roll(audio, 37 * i, axis=1), n) for i in range(b)]   # b different dialogs
        for mode in ("dialogs", "samples"):
            def run(frames):
                if mode == "dialogs":
                    return gen.generate_many([a[:, :frames] for a in dialogs], sampling=sampling)
                return gen.generate(dialogs[0][:, :frames], sampling=sampling, num_samples=b)
            run(8 * gen.d)                                                          # warm-up
            sync(gen.device)
            reset_peak(gen.device)
            t = time.perf_counter()
            run(n)
            sync(gen.device)
            el = time.perf_counter() - t
            rows.append({"batch": b, "sequences": mode, "frames_per_s": b * n / el, "x_realtime": b * n / gen.fps / el,
                         "ms_per_step": 1e3 * el / -(-n // gen.d), "peak_device_mb": peak_device_mb(gen.device)})
    return rows


def latency(gen: Generator, compute_ms: float) -> dict:
    """End-to-end streaming latency (ms), from an audio sample arriving to the motion frame it drives being out:
    algorithmic (audio buffered until its token step is complete + feature and tokenizer look-ahead) + compute
    (one push: features, GPT step, causal decode)."""
    token_ms = 1e3 * gen.d / gen.fps            # a sample at the start of a token step waits for the step's last frame
    feats = gen.bundle.audio.get("features", {})
    feat_ms = 0.0 if feats.get("causal", False) else float("nan")     # causal log-mel: no look-ahead
    tok_ms = 1e3 * getattr(gen.tok, "lookahead_frames", 0) / gen.fps
    algo = token_ms + feat_ms + tok_ms
    return {"token_buffer_ms": token_ms, "feature_lookahead_ms": feat_ms, "tokenizer_lookahead_ms": tok_ms,
            "algorithmic_ms": algo, "compute_ms": compute_ms, "total_ms": algo + compute_ms}


def offline_section(gen: Generator, audio: np.ndarray, sampling=Sampling(), seconds: float = 60.0,
                    no_cache_seconds: float = 20.0, batch: int = 8) -> dict:
    """Offline generation, with and without the KV cache, one dyad and ``batch`` dyads at once."""
    a = tile_audio(audio, int(seconds * gen.fps))
    nc = a[:, :max(gen.d, int(no_cache_seconds * gen.fps))]
    out = {"batch": batch, "seconds_of_audio": seconds, "no_cache_seconds_of_audio": no_cache_seconds}
    for tag, b in (("b1", 1), ("batched", batch)):
        kv = bench_offline(gen, a, sampling, b)
        no = bench_no_cache(gen, nc, sampling, b)
        out[f"kv_cache_{tag}"], out[f"no_cache_{tag}"] = kv, no
        out[f"kv_speedup_{tag}"] = no["ms_per_step"] / kv["ms_per_step"]
    return out


def streaming_section(gen: Generator, audio: np.ndarray, sampling=Sampling(), seconds: float = 60.0,
                      num_samples: int = 1) -> dict:
    """Per-step latency pushing features, and pushing raw audio (the end-to-end path, when the features are
    causal), after a cold-start session; the latency budget uses the p99 of the end-to-end path."""
    n = int(seconds * gen.fps)
    # the first session of a process meets every KV-cache length 1..attn_window-1 for the first time (one-off
    # kernel set-up per shape): measured apart, as the cold start, so the steady-state figures are not mixed with it
    cold = bench_streaming(gen, tile_audio(audio, (gen.cfg.attn_window + 16) * gen.d), sampling, skip=0,
                           num_samples=num_samples)
    out = {"seconds_of_audio": seconds,
           "cold_start": {k: cold[k] for k in ("steps", "ms_per_step_median", "ms_per_step_p99", "ms_per_step_max")},
           "features": {k: v for k, v in bench_streaming(gen, tile_audio(audio, n), sampling,
                                                                   num_samples=num_samples).items() if k != "probes"}}
    e2e = out["features"]
    if gen.bundle.audio.get("features", {}).get("causal", False):
        raw = bench_streaming(gen, None, sampling, wav=noise_wav(gen, n), num_samples=num_samples)
        out["raw_audio"] = e2e = {k: v for k, v in raw.items() if k != "probes"}
    out["latency"] = latency(gen, e2e["ms_per_step_p99"])
    out["latency"]["compute_of"] = f"{e2e['input']} push, p99"
    return out


def memory_section(gen: Generator, audio: np.ndarray, sampling=Sampling(), minutes=(1.0, 10.0, 60.0)) -> dict:
    """Memory while streaming ``max(minutes)`` minutes (probes every 10 s): RSS, device memory, KV cache."""
    steps_10s = max(1, int(round(10 * gen.fps / gen.d)))
    st = bench_streaming(gen, tile_audio(audio, int(max(minutes) * 60 * gen.fps)), sampling, probe_every=steps_10s)
    probes = st["probes"] or [{"minutes": st["frames"] / gen.fps / 60, "rss_mb": rss_mb(),
                               "device_mb": device_mb(gen.device), "kv_cache_bytes": st["kv_cache_bytes"]}]
    at = [min(probes, key=lambda p: abs(p["minutes"] - m)) for m in minutes]
    return {"minutes": list(minutes), "rss_mb": [p["rss_mb"] for p in at], "device_mb": [p["device_mb"] for p in at],
            "kv_cache_bytes": [p["kv_cache_bytes"] for p in at], "rss_growth_mb": at[-1]["rss_mb"] - at[0]["rss_mb"],
            "device_growth_mb": at[-1]["device_mb"] - at[0]["device_mb"],
            "kv_cache_growth_bytes": at[-1]["kv_cache_bytes"] - at[0]["kv_cache_bytes"],
            "ms_per_step_median": st["ms_per_step_median"], "ms_per_step_p99": st["ms_per_step_p99"],
            "trace": probes}


def write_noise_wavs(folder, minutes: float, sample_rate: int, fps: float, seed: int = 0) -> list:
    """Two WAV files (PCM 16) of ``minutes`` of amplitude-modulated noise, written block by block (bounded memory);
    the cost of feature extraction and generation does not depend on what is said."""
    import soundfile as sf
    from pathlib import Path
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, block = int(minutes * 60 * sample_rate), 60 * sample_rate
    rng = np.random.default_rng(seed)
    paths = [folder / f"{minutes:g}min_{p}.wav" for p in ("a", "b")]
    for p, path in enumerate(paths):
        with sf.SoundFile(str(path), "w", sample_rate, 1, "PCM_16") as f:
            for s0 in range(0, n, block):
                t = np.arange(s0, min(n, s0 + block)) / sample_rate
                env = 0.5 + 0.5 * np.sin(2 * np.pi * (0.7 + 0.6 * p) * t)
                f.write((0.1 * env * rng.standard_normal(len(t))).astype(np.float32))
    return paths


def offline_memory_row(minutes: float, result: dict) -> dict:
    """One row of the offline memory table from a sample.py child's measurements."""
    return {"minutes": minutes, "peak_rss_mb": result["peak_rss_mb"], "seconds": result["seconds"],
            "x_realtime": minutes * 60 / result["seconds"], "frames": result.get("frames")}


# the targets of the stage-2 issues (docs/STAGE2.md): (name, section path, at least / at most, limit, unit, where,
# model sizes): "where" cpu / accel / any; sizes "any" (every model measured) or "default" (the GPTConfig defaults,
# 6 layers x 256: issue 17's CPU targets at the real model size)
TARGETS = [
    ("streaming, frames/s per dyad", ("streaming", "e2e", "frames_per_s"), ">=", 30.0, "frames/s", "cpu", "any"),
    ("offline, x real time (batch 1)", ("offline", "kv_cache_b1", "x_realtime"), ">=", 10.0, "x", "cpu", "any"),
    ("streaming, ms per step (p99), default size", ("streaming", "e2e", "ms_per_step_p99"), "<=", 20.0, "ms", "cpu",
     "default"),
    ("offline batched, frames/s", ("offline", "kv_cache_batched", "frames_per_s"), ">=", 100_000.0, "frames/s", "accel",
     "any"),
    ("streaming, ms per step (p99)", ("streaming", "e2e", "ms_per_step_p99"), "<=", 5.0, "ms", "accel", "any"),
    ("end-to-end streaming latency", ("streaming", "latency", "total_ms"), "<=", 100.0, "ms", "any", "any"),
    ("memory growth, streaming", ("memory", "rss_growth_mb"), "<=", 10.0, "MB", "any", "any"),
    ("memory growth, offline WAV -> files", ("offline_memory", "rss_growth_mb"), "<=", 10.0, "MB", "any", "any"),
]


def model_size(model: dict | None) -> str:
    """"default" when the measured GPT has the GPTConfig defaults' size (layers x dim), else "other"."""
    from .model import GPTConfig
    c = GPTConfig()
    return "default" if model and (model.get("layers"), model.get("dim")) == (c.depth, c.dim) else "other"


def check_targets(results: dict, device, model: dict | None = None) -> list[dict]:
    """Every target that applies to ``device`` and to the measured ``model`` (:func:`describe`) and whose section
    was measured: value, limit, met, and by how much (``margin``: value / limit for at-least targets, limit /
    value for at-most ones; < 1 means missed). Memory targets also need a KV cache that does not grow."""
    accel = torch.device(device).type != "cpu"
    size = model_size(model)
    rows = []
    for name, keys, op, limit, unit, where, sizes in TARGETS:
        if (where == "cpu" and accel) or (where == "accel" and not accel) or (sizes == "default" and size != "default"):
            continue
        node = results
        for k in keys:
            if k == "e2e" and isinstance(node, dict):
                k = "raw_audio" if "raw_audio" in node else "features"
            node = node.get(k) if isinstance(node, dict) else None
        if node is None:
            continue
        v = float(node)
        memory = name.startswith("memory")
        if memory:
            sec = results[keys[0]]
            v = max(v, sec.get("device_growth_mb", 0.0)) if accel else v
            met = v <= limit and sec.get("kv_cache_growth_bytes", 0) == 0
            margin = limit / max(v, 1e-9)
        elif op == ">=":
            met, margin = v >= limit, v / limit
        else:
            met, margin = v <= limit, limit / max(v, 1e-9)
        if met:
            verdict = f"met ({margin:.2f}x margin)" if not memory else "met (flat)"
        elif op == ">=":
            verdict = f"MISSED by {100 * (1 - v / limit):.0f}% ({v:.4g} < {limit:g} {unit})"
        else:
            verdict = f"MISSED by {100 * (v / limit - 1):.0f}% ({v:.4g} > {limit:g} {unit})"
        rows.append({"target": name, "value": v, "limit": f"{op} {limit:g} {unit}", "met": bool(met),
                     "margin": margin, "verdict": verdict, "model": size})
    return rows


def sizes_section(configs: list[str], tokenizer_path: str, cache: Cache, audio: np.ndarray, sampling=Sampling(),
                  seconds: float = 20.0, batch: int = 8, device="cpu", cuda_graph: bool = False) -> list[dict]:
    """Speed of other model sizes (stage-2 YAMLs, or "default": the dataclass defaults) with untrained weights,
    through the same code paths: offline with and without KV cache, streaming per-step latency."""
    rows = []
    for path in configs:
        g = untrained_generator(path, tokenizer_path, cache, device, cuda_graph)
        o = offline_section(g, audio, sampling, seconds, seconds / 2, batch)
        s = bench_streaming(g, None, sampling, wav=noise_wav(g, int(seconds * g.fps)))
        rows.append({"config": path, "params_M": g.model.num_params() / 1e6, "layers_x_dim": f"{g.cfg.depth} x {g.cfg.dim}",
                     "attn_window": g.cfg.attn_window, "offline_ms_per_step": o["kv_cache_b1"]["ms_per_step"],
                     "offline_x_realtime": o["kv_cache_b1"]["x_realtime"],
                     "offline_batched_frames_per_s": o["kv_cache_batched"]["frames_per_s"],
                     "no_cache_ms_per_step": o["no_cache_b1"]["ms_per_step"], "kv_speedup": o["kv_speedup_b1"],
                     "stream_ms_per_step_median": s["ms_per_step_median"], "stream_ms_per_step_p99": s["ms_per_step_p99"],
                     "stream_frames_per_s": s["frames_per_s"]})
    return rows


def offline_table(off: dict) -> str:
    rows = []
    for tag, label in (("b1", "1 dyad"), ("batched", f"{off['batch']} dyads")):
        for kind, what, secs in (("kv_cache", "KV cache", "seconds_of_audio"),
                                 ("no_cache", "no KV cache", "no_cache_seconds_of_audio")):
            r = off[f"{kind}_{tag}"]
            rows.append({"path": f"{label}, {what}", "s of audio": off[secs], "ms/step": r["ms_per_step"],
                         "frames/s": r["frames_per_s"], "x real time": r["x_realtime"]})
    return table(rows, ["path", "s of audio", "ms/step", "frames/s", "x real time"],
                 f"Offline generation (frames/s: motion frames of every dyad, both people); KV cache speed-up "
                 f"{off['kv_speedup_b1']:.1f}x (1 dyad), {off['kv_speedup_batched']:.1f}x ({off['batch']} dyads)")


def streaming_tables(st: dict) -> str:
    cols = ["ms_per_step_median", "ms_per_step_p99", "ms_per_step_max", "frames_per_s"]
    rows = [{"push": k, **{c: st[k][c] for c in cols}} for k in ("features", "raw_audio") if k in st]
    if "cold_start" in st:
        rows.insert(0, {"push": f"cold start (first {st['cold_start']['steps']} steps of a process)",
                        **{c: st["cold_start"][c] for c in cols[:3]}})
    lat = dict(st["latency"])
    return (table(rows, ["push"] + cols, f"Streaming, one token step per push ({st['seconds_of_audio']:g} s of audio)")
            + "\n" + table([lat], list(lat), "End-to-end streaming latency (ms) = algorithmic + compute"))


def memory_table(mem: dict) -> str:
    rows = [{"minutes": m, "RSS MB": r, "device MB": dv, "KV cache KB": kv / 1024}
            for m, r, dv, kv in zip(mem["minutes"], mem["rss_mb"], mem["device_mb"], mem["kv_cache_bytes"])]
    return table(rows, ["minutes", "RSS MB", "device MB", "KV cache KB"],
                 f"Memory while streaming (growth {mem['rss_growth_mb']:+.1f} MB RSS, "
                 f"{mem['kv_cache_growth_bytes']:+d} B KV cache)")


def batch_table(rows: list[dict]) -> str:
    return table(rows, ["batch", "sequences", "frames_per_s", "x_realtime", "ms_per_step", "peak_device_mb"],
                 "Batched offline generation (one KV cache; frames/s of every dyad, both people)")


def offline_memory_table(mem: dict) -> str:
    return table(mem["rows"], ["minutes", "peak_rss_mb", "seconds", "x_realtime"],
                 f"Offline generation, two WAV files -> prediction files (scripts/sample.py, a fresh process per "
                 f"length): peak RSS growth {mem['rss_growth_mb']:+.1f} MB from {mem['rows'][0]['minutes']:g} to "
                 f"{mem['rows'][-1]['minutes']:g} min")


def describe(gen: Generator) -> dict:
    c = gen.cfg
    return {"gpt": gen.bundle.path, "tokenizer": getattr(gen.tok, "artifact_path", ""), "params": gen.model.num_params(),
            "layers": c.depth, "dim": c.dim, "attn_window_steps": c.attn_window, "rvq_head": c.rvq_head,
            "downsample": gen.d, "num_quantizers": gen.Q, "speaker_only": bool(c.speaker_only)}


def untrained_generator(config_path: str, tokenizer_path: str, cache: Cache, device="cpu",
                        cuda_graph: bool = False) -> Generator:
    """A Generator with random weights for ``config_path``'s model ("default": the dataclass defaults), for speed
    only: it costs what a trained one does."""
    from stage1_vq import load_tokenizer

    from .artifact import GPTBundle
    cfg, model, tok, audio = untrained_model(config_path, tokenizer_path, cache)
    from common.config import to_dict
    bundle = GPTBundle(model, to_dict(cfg), tok, audio, {"gpt_config": to_dict(cfg.model)}, f"untrained:{config_path}")
    return Generator(bundle, load_tokenizer(tokenizer_path, device=device), device, cuda_graph)


def untrained_model(config_path: str, tokenizer_path: str, cache: Cache):
    """(Stage2Config, DyadGPT with seeded random weights, tokenizer description, audio description) of
    ``config_path`` ("default": the dataclass defaults) for ``cache`` and the tokenizer."""
    from .artifact import audio_description, tokenizer_description
    from .config import load_stage2_config
    from .train import build_model
    cfg = load_stage2_config(None if config_path == "default" else config_path,
                             [f"cache={cache.root}", f"tokenizer={tokenizer_path}"])
    tok = tokenizer_description(tokenizer_path)
    ident = int(cache.load(cache.dialogs()[0]["id"]).shape.shape[-1])
    torch.manual_seed(0)
    return cfg, build_model(cfg, tok, cache.audio_dim, ident, cache).eval(), tok, audio_description(cache)


def export_untrained(config_path: str, tokenizer_path: str, cache: Cache, path) -> str:
    """Write an untrained GPT of ``config_path`` as a gpt.pt file (what sample.py and the GPU check load)."""
    from .artifact import export_gpt
    cfg, model, tok, audio = untrained_model(config_path, tokenizer_path, cache)
    export_gpt(path, model.state_dict(), cfg, tok, audio, {"untrained": config_path, "num_params": model.num_params()})
    return str(path)
