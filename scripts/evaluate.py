"""Score prediction directories of any method against the cache's ground truth (DualTalk metrics + more).

    python scripts/evaluate.py --cache CACHE --pred-dir P [--split test] --out report.json
    python scripts/evaluate.py --cache CACHE --compare NAME=P1 P2 ... [--markdown table.md] [--plots DIR]

Predictions: P/<dialog>/<participant>.npz (``motion`` (T, D), FLAME keys, or DualTalk's ``exp`` + ``pose``) or .npy
(T, D), or DualTalk's flat P/<dialog>_speaker{1,2}.npy; missing or malformed files are reported by name.
Layouts (``--layout``, default auto by width): ours (T, 51) [54 in neck mode], dualtalk (T, 56) = exp 50 ++ jaw 3
++ neck 3, dim (T, 54) = exp 50 ++ jaw 1 ++ neck 3, dim56 (T, 56) = neck 3 ++ jaw 3 ++ exp 50 (declared only).
Frame rate (``--pred-fps``, default auto: the ground truth's 30 fps or DualTalk's 25, whichever the frame count
fits within --frame-tolerance-s): predictions at another rate are mapped onto the ground truth's frames by linear
interpolation (common/eval/external.py, docs/BASELINES.md). The layout and rate read are printed and reported per
method (``layout``, ``pred_fps``, ``read_as``). ``--compare`` scores several methods into one markdown table with bootstrap 95%
CIs over dialogs; ``--plots`` writes metric bar charts and a timeline of the first dialog.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.config import float_arg, int_arg


def method_spec(spec: str) -> tuple[str, Path]:
    """``NAME=DIR`` or ``DIR`` -> (name, folder). A name holds no path separator, so ``runs/a=b`` is a folder."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name and "\\" not in name and not (Path(spec).exists() and not Path(path).exists()):
        return name, Path(path)
    return Path(spec).name, Path(spec)


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
    ap.add_argument("--boot", type=int_arg(1, 10 ** 6), default=1000, help="bootstrap resamples")
    ap.add_argument("--allow-missing", action="store_true", help="score what exists, listing what is missing")
    ap.add_argument("--layout", default="auto", choices=["auto", "ours", "dualtalk", "dim", "dim56"],
                    help="layout of the prediction arrays (auto: by width)")
    ap.add_argument("--pred-fps", default="auto",
                    help="frame rate of the predictions: auto (30 or 25 by frame count), a number, or 'native' "
                         "(the ground truth's rate, lengths unchecked)")
    ap.add_argument("--frame-tolerance-s", type=float_arg(0, 3600), default=None,
                    help="how far a prediction's duration may be from the ground truth's (default 0.25 s)")
    args = ap.parse_args(argv)
    if args.pred_fps == "native":
        args.pred_fps = None
    elif args.pred_fps != "auto":
        try:
            args.pred_fps = float_arg(maximum=1000, above=0)(args.pred_fps)
        except argparse.ArgumentTypeError as e:
            ap.error(f"--pred-fps must be auto, native or a positive number: {e}")
    if bool(args.pred_dir) == bool(args.compare):
        ap.error("give --pred-dir or --compare")
    if bool(args.cache) == bool(args.data_root):
        ap.error("give --cache or --data-root (with --index)")

    from common.data.cache import Cache, CacheError
    from common.eval.predictions import FRAME_TOLERANCE_S, PredictionError
    from common.eval.scoring import TABLE_KEYS, comparison_table, evaluate_method
    tol = FRAME_TOLERANCE_S if args.frame_tolerance_s is None else args.frame_tolerance_s
    reading = dict(layout=args.layout, pred_fps=args.pred_fps, frame_tolerance_s=tol)

    try:
        if args.data_root:
            from common.data.config import DataConfig
            from common.data.preprocess import preprocess
            cfg = DataConfig(data_root=args.data_root, **({"index": args.index} if args.index else {}))
            preprocess(cfg, args.work_cache)
            args.cache = args.work_cache
        cache = Cache(args.cache)
        methods = [method_spec(spec) for spec in ([args.pred_dir] if args.pred_dir else args.compare)]
        names = [name for name, _ in methods]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            ap.error(f"method name(s) {', '.join(twice)} given twice: each method needs its own name (NAME=DIR)")
        results = [evaluate_method(cache, p, args.split, name, n_boot=args.boot, allow_missing=args.allow_missing,
                                   **reading)
                   for name, p in methods]
    except (CacheError, PredictionError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = comparison_table(results)
    print(table)
    for r in results:
        resampled = "" if r.pred_fps == cache.fps else f", mapped onto the ground truth's {cache.fps:g} fps"
        print(f"{r.name}: read {r.describe_reading()}{resampled}")
    for r in results:
        if r.missing:
            print(f"{r.name}: {len(r.missing)} missing predictions: {', '.join(r.missing[:10])}")
    report = {"cache": str(args.cache), "split": args.split,
              "dialogs": [d["id"] for d in cache.dialogs(args.split)],
              "reading": {"layout": args.layout, "pred_fps": args.pred_fps, "frame_tolerance_s": tol},
              "methods": {r.name: asdict(r) for r in results}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.plots:
        from common.eval.predictions import find_prediction, read_prediction
        from common.viz.plots import metric_bars, timeline
        plots = Path(args.plots)
        metric_bars(results, TABLE_KEYS, plots / "metrics.png")
        d = cache.dialogs(args.split)[0]
        a = cache.load(d["id"])
        preds = {}
        for name, p in methods[:4]:
            files = [find_prediction(p, d["id"], pid, side=i) for i, pid in enumerate(d["participants"])]
            if all(files):
                x = [read_prediction(f, cache.layout, target_frames=a.motion.shape[1], target_fps=cache.fps,
                                     **reading) for f in files]
                T = min(len(x[0]), len(x[1]), a.motion.shape[1])
                preds[name] = np.stack([x[0][:T], x[1][:T]])
        timeline(plots / f"timeline_{d['id']}.png", f"{d['id']} ({args.split})", cache.fps, d["participants"],
                 np.asarray(a.states), np.asarray(a.audio).mean(-1), np.asarray(a.motion), preds,
                 jaw_dim=cache.layout.jaw[0])
        print(f"plots in {plots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
