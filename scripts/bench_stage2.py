"""Stage-2 benchmark: quality on a split and speed of generation, printed as tables (logic: stage2_gpt/benchmark.py).

    python scripts/bench_stage2.py --ckpt runs/stage2/gpt.pt --tokenizer runs/stage1/tokenizer.pt --cache CACHE \
        [--speaker-only-ckpt runs/stage2_so/gpt.pt] [--split test] [--only quality|speed] [--json out.json]

Quality (whole sequences of every participant of the split, and listening frames only): the mean-motion
baseline, the tokenizer's own reconstruction (the ceiling), the GPT in dyad mode and in listener mode (partner
given), the speaker-only ablation. Speed (one dyad, --threads CPU threads): offline generation, the same without
KV cache, streaming one token step at a time (per-step times, frames/s), end-to-end latency (algorithmic +
compute), and memory while streaming 1 and 10 minutes.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _table(rows: list[dict], cols: list[str], title: str) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) and abs(v) < 100 else (f"{v:.1f}" if isinstance(v, float) else str(v))
    lines = [f"\n{title}", "| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--speaker-only-ckpt", help="GPT trained with model.speaker_only=true (the ablation)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-dialogs", type=int, default=0)
    ap.add_argument("--only", choices=["quality", "speed"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--samples", type=int, default=1, help="average this many samples per sequence (1: one sample)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long-minutes", type=float, default=10.0, help="length of the long streaming run")
    ap.add_argument("--speed-config", action="append", default=[],
                    help="also time an untrained model of this stage-2 YAML, or 'default' (speed only; repeatable)")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from common.cache import Cache
    from stage2_gpt import benchmark as B
    from stage2_gpt.generate import Generator, Sampling, motion_layout

    cache = Cache(args.cache)
    gen = Generator.load(args.ckpt, args.tokenizer)
    layout = motion_layout(gen.bundle, gen.tok.motion_dim)
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
    report = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or ''}",
              "date": time.strftime("%Y-%m-%d"), "ckpt": args.ckpt, "tokenizer": args.tokenizer,
              "params": gen.model.num_params(), "model": gen.bundle.meta["gpt_config"], "sampling": vars(sampling),
              "samples": args.samples}
    print(f"GPT {args.ckpt}: {report['params'] / 1e6:.2f} M params, {gen.cfg.depth} layers x {gen.cfg.dim}, "
          f"rvq_head={gen.cfg.rvq_head}, attn_window={gen.cfg.attn_window} steps; tokenizer d={gen.d}, Q={gen.Q}; "
          f"{args.threads} thread(s)")

    if args.only in (None, "quality"):
        data = B.load_split(cache, args.split, args.max_dialogs)
        rows = []

        def add(name, preds):
            m = B.compute_metrics(preds, data, layout)
            rows.append({"method": name, **m})
            print(f"  {name}: done", flush=True)

        add("mean motion (train)", B.mean_split(cache, data))
        add("tokenizer reconstruction", B.reconstruct_split(gen.tok, data))
        for mode in ("dyad", "listener"):
            add(f"GPT {mode}", B.predict_split(gen, data, mode, sampling, args.samples))
        if args.speaker_only_ckpt:
            so = Generator.load(args.speaker_only_ckpt, args.tokenizer)
            add("GPT speaker-only", B.predict_split(so, data, "dyad", sampling, args.samples))
        hours = sum(m.shape[1] for m in data.motion) / gen.fps / 60
        cols = ["method"] + B.KEYS[:-1]
        print(_table(rows, cols, f"Quality on {args.split} ({len(data.ids)} dialogs, {hours:.1f} min each side; "
                                  f"ground-truth jaw/speech r = {rows[0]['jaw_speech_r_gt']:.3f})"))
        report["quality"] = rows

    if args.only in (None, "speed"):
        d0 = cache.dialogs(args.split)[0]
        audio = np.array(cache.load(d0["id"]).audio, np.float32)
        one_min = B.tile_audio(audio, int(60 * gen.fps))
        off = B.bench_offline(gen, one_min, sampling)
        nc = B.bench_no_cache(gen, one_min[:, :int(20 * gen.fps)], sampling)
        st = B.bench_streaming(gen, one_min, sampling)
        lat = B.latency(gen, st["ms_per_step_p95"])
        rows = [{"path": "offline (KV cache)", "ms/step": off["ms_per_step"], "frames/s": off["frames_per_s"],
                 "x real time": off["x_realtime"]},
                {"path": "offline, no KV cache", "ms/step": nc["ms_per_step"],
                 "frames/s": gen.d * 1e3 / nc["ms_per_step"], "x real time": nc["x_realtime"]},
                {"path": "streaming (push per token step)", "ms/step": st["ms_per_step_mean"],
                 "frames/s": st["frames_per_s"], "x real time": st["frames_per_s"] / gen.fps}]
        print(_table(rows, ["path", "ms/step", "frames/s", "x real time"],
                     f"Speed, one dyad (both participants), 1 min of audio; KV cache speed-up "
                     f"{nc['ms_per_step'] / off['ms_per_step']:.1f}x"))
        print(_table([lat], list(lat), "Streaming latency (ms): algorithmic + compute (p95 of one step)"))
        long_frames = int(args.long_minutes * 60 * gen.fps)
        lg = B.bench_streaming(gen, B.tile_audio(audio, long_frames), sampling,
                               sample_every=max(1, int(gen.fps / gen.d * 30)))
        rss = lg["rss"]
        at = lambda s: min(rss, key=lambda r: abs(r[0] - s))[1]  # noqa: E731
        mem = {"rss_mb_at_1min": at(60), "rss_mb_at_end": rss[-1][1], "minutes": args.long_minutes,
               "kv_cache_kb": lg["kv_cache_bytes"] / 1024, "ms_per_step_mean": lg["ms_per_step_mean"],
               "ms_per_step_p95": lg["ms_per_step_p95"]}
        print(_table([mem], list(mem), f"Memory while streaming {args.long_minutes:g} minutes"))
        extra = []
        for path in args.speed_config:
            g2 = B.untrained_generator(path, args.tokenizer, cache)
            o2 = B.bench_offline(g2, one_min[:, :int(20 * gen.fps)], sampling)
            n2 = B.bench_no_cache(g2, one_min[:, :int(10 * gen.fps)], sampling)
            s2 = B.bench_streaming(g2, one_min[:, :int(20 * gen.fps)], sampling)
            extra.append({"config": path, "params (M)": g2.model.num_params() / 1e6,
                          "layers x dim": f"{g2.cfg.depth} x {g2.cfg.dim}", "offline ms/step": o2["ms_per_step"],
                          "offline x real time": o2["x_realtime"], "no-cache ms/step": n2["ms_per_step"],
                          "stream ms/step p95": s2["ms_per_step_p95"], "stream frames/s": s2["frames_per_s"]})
        if extra:
            print(_table(extra, list(extra[0]), "Other model sizes (untrained weights, same code path)"))
        report["speed"] = {"offline": off, "other_sizes": extra, "no_cache": nc, "streaming": {k: v for k, v in st.items() if k != "rss"},
                           "latency": lat, "memory": mem, "rss_trace": rss}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
