"""Stage-2 benchmark: quality on a split and speed of generation, printed as tables (logic: stage2_gpt/benchmark.py).

    python scripts/bench_stage2.py --ckpt runs/stage2/gpt.pt --tokenizer runs/stage1/tokenizer.pt --cache CACHE \
        [--speaker-only-ckpt runs/stage2_so/gpt.pt] [--split test] [--only quality|speed] [--json out.json]

Quality (whole sequences of every participant of the split, and listening frames only): the mean-motion
baseline, the tokenizer's own reconstruction (the ceiling), the GPT in dyad mode and in listener mode (partner
given), the speaker-only ablation. Speed (--threads CPU threads, --device): the sections of scripts/benchmark.py
(stage2_gpt/benchmark.py): offline generation with and without KV cache, one dyad and --batch dyads; streaming
one token step at a time (cold start apart; features and raw audio; median / p99), end-to-end latency
(algorithmic + compute), memory while streaming 1 and --long-minutes minutes, and the targets of docs/STAGE2.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


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
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda...)")
    ap.add_argument("--long-minutes", type=float, default=10.0, help="length of the long streaming run")
    ap.add_argument("--batch", type=int, default=8, help="dyads generated at once in the batched offline run")
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
    gen = Generator.load(args.ckpt, args.tokenizer, device=args.device)
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
            so = Generator.load(args.speaker_only_ckpt, args.tokenizer, device=args.device)
            add("GPT speaker-only", B.predict_split(so, data, "dyad", sampling, args.samples))
        hours = sum(m.shape[1] for m in data.motion) / gen.fps / 60
        cols = ["method"] + B.KEYS[:-1]
        print(B.table(rows, cols, f"Quality on {args.split} ({len(data.ids)} dialogs, {hours:.1f} min each side; "
                                  f"ground-truth jaw/speech r = {rows[0]['jaw_speech_r_gt']:.3f})"))
        report["quality"] = rows

    if args.only in (None, "speed"):
        d0 = cache.dialogs(args.split)[0]
        audio = np.array(cache.load(d0["id"]).audio, np.float32)
        speed = {"offline": B.offline_section(gen, audio, sampling, 60.0, 20.0, args.batch),
                 "streaming": B.streaming_section(gen, audio, sampling, 60.0),
                 "memory": B.memory_section(gen, audio, sampling, tuple(sorted({1.0, args.long_minutes})))}
        print(B.offline_table(speed["offline"]))
        print(B.streaming_tables(speed["streaming"]))
        print(B.memory_table(speed["memory"]))
        speed["targets"] = B.check_targets(speed, gen.device)
        print(B.table(speed["targets"], ["target", "value", "limit", "verdict"], "Targets (docs/STAGE2.md)"))
        extra = B.sizes_section(args.speed_config, args.tokenizer, cache, audio, sampling, 20.0, args.batch, args.device)
        if extra:
            print(B.table(extra, list(extra[0]), "Other model sizes (untrained weights, same code paths)"))
        speed["other_sizes"] = extra
        report["speed"] = speed
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
