"""Sweep stage-1 tokenizer settings: train each combination, evaluate on the test split, print one table.

    python scripts/sweep_stage1.py --cache CACHE --out runs/sweep_s1 --config configs/stage1_vq_tiny.yaml \
        --axis model.downsample=1,2,4 --axis model.num_quantizers=4,8 --axis model.codebook_size=128,512 \
        [--set train.max_steps=1000 ...] [--reuse] [--json sweep.json] [--markdown]
    python scripts/sweep_stage1.py --merge a.json b.json [--markdown]      # one table from earlier --json files

Each combination trains into OUT/<slug>/ (``--reuse`` skips a combination whose tokenizer.pt exists) and is
evaluated with ``stage1_vq.evaluate`` on ``--split`` (test). Columns: normalised MSE of exp / jaw, jaw Pearson r,
minimum codebook usage over quantizers, tokens/s of motion (fps / downsample), bits per second
(tokens/s x Q x log2 K), training windows/s, offline tokenizer speed (frames/s, encode + decode), and the cost of
one streaming decode step (median ms for one new token with its ``decoder_context``; CPU, 1 thread).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch


def _parse_axis(s: str) -> tuple[str, list[str]]:
    if "=" not in s:
        raise SystemExit(f"--axis {s!r} must be key=v1,v2,...")
    k, v = s.split("=", 1)
    return k.strip(), [x.strip() for x in v.split(",") if x.strip()]


def _slug(combo: dict) -> str:
    return "_".join(f"{k.split('.')[-1]}{v}" for k, v in combo.items()).replace("/", "-") or "base"


@torch.no_grad()
def stream_step_ms(tok, reps: int = 30) -> float:
    if tok.decoder_lookahead:
        return float("nan")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # one step is too small to split; with busy cores extra threads only wait
    try:
        sd = tok.stream_decoder()
        codes = torch.randint(0, tok.codebook_size, (1, tok.decoder_context + reps, tok.num_quantizers))
        sd.push(codes[:, :tok.decoder_context])
        times = []
        for i in range(reps):
            t0 = time.perf_counter()
            sd.push(codes[:, tok.decoder_context + i:tok.decoder_context + i + 1])
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1000 * sorted(times)[len(times) // 2]      # median


def run(args) -> list[dict]:
    from common.data.cache import Cache
    from stage1_vq import load_stage1_config, load_tokenizer
    from stage1_vq.evaluate import evaluate_cache
    from stage1_vq.train import train

    axes = [_parse_axis(a) for a in args.axis]
    keys = [k for k, _ in axes]
    cache = Cache(args.cache)
    rows = []
    combos = list(itertools.product(*[v for _, v in axes])) or [()]
    for n, values in enumerate(combos, 1):
        combo = dict(zip(keys, values))
        out = Path(args.out) / _slug(combo)
        overrides = [f"cache={args.cache}", f"out_dir={out}", "resume=false", "train.progress=false",
                     *args.set, *[f"{k}={v}" for k, v in combo.items()]]
        cfg = load_stage1_config(args.config, overrides)
        tok_path = out / cfg.export_name
        info_path = out / "sweep_row.json"
        print(f"[{n}/{len(combos)}] {_slug(combo)}", flush=True)
        if args.reuse and tok_path.is_file() and info_path.is_file():
            train_info = json.loads(info_path.read_text())
        else:
            res = train(cfg)
            train_info = {"windows_per_s": res["windows_per_s"], "train_s": res["elapsed_s"], "steps": res["step"]}
            info_path.write_text(json.dumps(train_info) + "\n")
        tok = load_tokenizer(tok_path)
        m = evaluate_cache(tok, cache, args.split)
        row = {**combo, "downsample": tok.downsample, "Q": tok.num_quantizers, "K": tok.codebook_size,
               "hidden": tok.cfg.hidden, "code_dim": tok.cfg.code_dim, "causal": tok.causal,
               "lookahead_frames": tok.lookahead_frames,
               "nmse_exp": m["nmse_exp"], "nmse_jaw": m["nmse_jaw"], "corr_jaw": m["corr_jaw"],
               "usage_min": min(m["usage"]), "usage": m["usage"], "perplexity": m["perplexity"],
               "tokens_per_s": tok.fps / tok.downsample,
               "bits_per_s": tok.fps / tok.downsample * tok.num_quantizers * math.log2(tok.codebook_size),
               "token_ms": 1000 * tok.downsample / tok.fps, "decoder_context": tok.decoder_context,
               "train_windows_per_s": train_info["windows_per_s"], "train_s": train_info["train_s"],
               "steps": train_info["steps"], "offline_frames_per_s": m["frames_per_s"],
               "stream_step_ms": stream_step_ms(tok), "dir": str(out)}
        rows.append(row)
        print(format_rows([row], markdown=False).splitlines()[-1], flush=True)
    return rows


COLS = [("downsample", "d", "{}"), ("Q", "Q", "{}"), ("K", "K", "{}"), ("hidden", "hidden", "{}"),
        ("code_dim", "code dim", "{}"), ("causal", "causal", "{}"), ("lookahead_frames", "look-ahead", "{}"),
        ("steps", "steps", "{}"),
        ("nmse_exp", "nMSE exp", "{:.4f}"), ("nmse_jaw", "nMSE jaw", "{:.4f}"), ("corr_jaw", "r jaw", "{:.4f}"),
        ("usage_min", "usage min", "{:.0%}"), ("tokens_per_s", "tok/s", "{:g}"), ("token_ms", "ms/token", "{:.0f}"),
        ("bits_per_s", "bits/s", "{:.0f}"), ("train_s", "train s", "{:.0f}"),
        ("train_windows_per_s", "train win/s", "{:.0f}"),
        ("offline_frames_per_s", "frames/s", "{:.0f}"), ("stream_step_ms", "stream ms", "{:.1f}")]


def format_rows(rows: list[dict], markdown: bool = True) -> str:
    head = [c[1] for c in COLS]
    body = [[fmt.format(r[k]) if k in r else "-" for k, _, fmt in COLS] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    w = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    return "\n".join(["  ".join(x.rjust(w[i]) for i, x in enumerate(line)) for line in [head, *body]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help="preprocessed cache (required unless --merge)")
    ap.add_argument("--out", default="runs/sweep_stage1")
    ap.add_argument("--config", default="configs/stage1_vq_tiny.yaml")
    ap.add_argument("--axis", action="append", default=[], help="key=v1,v2,... (repeatable: Cartesian product)")
    ap.add_argument("--set", action="append", default=[], help="key=value applied to every run (repeatable)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--reuse", action="store_true", help="skip training where OUT/<slug>/tokenizer.pt exists")
    ap.add_argument("--json", help="write all rows here")
    ap.add_argument("--markdown", action="store_true", help="print the final table as markdown")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="print one table of earlier --json files; train nothing")
    args = ap.parse_args(argv)
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())["rows"]]
        print(format_rows(rows, markdown=args.markdown))
        return 0
    if not args.cache:
        ap.error("--cache is required (unless --merge)")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    rows = run(args)
    print()
    print(f"# {len(rows)} runs on {args.cache} ({args.split} split), {torch.get_num_threads()} torch threads")
    print(format_rows(rows, markdown=args.markdown))
    if args.json:
        from common.io import write_json
        write_json(args.json, {"argv": sys.argv, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
