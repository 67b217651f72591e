"""Score prediction directories of any method against the cache's ground truth (DualTalk metrics + more).

    python scripts/evaluate.py --cache CACHE --pred-dir P [--split test] --out report.json
    python scripts/evaluate.py --cache CACHE --compare NAME=P1 P2 ... [--markdown table.md] [--plots DIR]

Predictions: P/<dialog>/<participant>.npz (``motion`` (T, 51) or FLAME keys) or .npy (T, 51); missing or malformed
files are reported by name. ``--compare`` scores several methods into one markdown table with bootstrap 95%
CIs over dialogs; ``--plots`` writes metric bar charts and a timeline of the first dialog.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help="preprocessed cache (ground truth)")
    ap.add_argument("--data-root", help="or: a corpus (preprocessed into --work-cache first)")
    ap.add_argument("--index", help="index JSON under --data-root")
    ap.add_argument("--work-cache", default="cache/eval", help="where --data-root is preprocessed")
    ap.add_argument("--pred-dir", help="one method's predictions")
    ap.add_argument("--compare", nargs="+", metavar="[NAME=]DIR", help="several methods")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", help="JSON report")
    ap.add_argument("--markdown", help="write the comparison table here")
    ap.add_argument("--plots", help="folder for bar charts and a timeline plot")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--allow-missing", action="store_true", help="score what exists, listing what is missing")
    args = ap.parse_args(argv)
    if bool(args.pred_dir) == bool(args.compare):
        ap.error("give --pred-dir or --compare")
    if bool(args.cache) == bool(args.data_root):
        ap.error("give --cache or --data-root (with --index)")

    from common.cache import Cache, CacheError
    from common.evaluation import TABLE_KEYS, PredictionError, evaluate_method, markdown_table

    try:
        if args.data_root:
            from common.data_config import DataConfig
            from common.preprocess import preprocess
            cfg = DataConfig(data_root=args.data_root, **({"index": args.index} if args.index else {}))
            preprocess(cfg, args.work_cache)
            args.cache = args.work_cache
        cache = Cache(args.cache)
        specs = [args.pred_dir] if args.pred_dir else args.compare
        methods = []
        for spec in specs:
            name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
            methods.append((name or Path(path).name, Path(path)))
        results = [evaluate_method(cache, p, args.split, name, n_boot=args.boot, allow_missing=args.allow_missing)
                   for name, p in methods]
    except (CacheError, PredictionError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = markdown_table(results)
    print(table)
    for r in results:
        if r.missing:
            print(f"{r.name}: {len(r.missing)} missing predictions: {', '.join(r.missing[:10])}")
    report = {"cache": str(args.cache), "split": args.split,
              "dialogs": [d["id"] for d in cache.dialogs(args.split)],
              "methods": {r.name: asdict(r) for r in results}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.plots:
        from common.evaluation import find_prediction, read_prediction
        from common.plots import metric_bars, timeline
        plots = Path(args.plots)
        metric_bars(results, TABLE_KEYS, plots / "metrics.png")
        d = cache.dialogs(args.split)[0]
        a = cache.load(d["id"])
        preds = {}
        for name, p in methods[:4]:
            files = [find_prediction(p, d["id"], pid) for pid in d["participants"]]
            if all(files):
                x = [read_prediction(f, cache.motion_dim) for f in files]
                T = min(len(x[0]), len(x[1]), a.motion.shape[1])
                preds[name] = np.stack([x[0][:T], x[1][:T]])
        timeline(plots / f"timeline_{d['id']}.png", f"{d['id']} ({args.split})", cache.fps, d["participants"],
                 np.asarray(a.states), np.asarray(a.audio).mean(-1), np.asarray(a.motion), preds)
        print(f"plots in {plots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
