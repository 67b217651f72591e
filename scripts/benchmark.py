"""Measure, in one run, the speeds users care about, and print a table (``--out bench.json`` keeps the figures).

    python scripts/benchmark.py [--device cpu|cuda] [--only preprocess,...] --out bench.json

Sections: ``preprocess`` (hours of dialog per minute); further sections are registered by the stages.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = {}


def section(name):
    def deco(fn):
        SECTIONS[name] = fn
        return fn
    return deco


@section("preprocess")
def bench_preprocess(args, work: Path) -> dict:
    from common.data_config import DataConfig
    from common.preprocess import preprocess
    from common.synthetic import make_corpus

    data = work / "corpus"
    make_corpus(data, num_dialogs=args.dialogs, seconds=args.seconds, seed=0)
    results = {}
    for workers in sorted({1, args.workers}):
        out = work / f"cache-{workers}"
        t0 = time.perf_counter()
        preprocess(DataConfig(data_root=str(data)), out, workers=workers, progress=False)
        dt = time.perf_counter() - t0
        hours = args.dialogs * args.seconds / 3600.0          # dialog hours (two participants each)
        results[f"workers={workers}"] = {"seconds": round(dt, 2), "dialog_hours": round(hours, 3),
                                         "dialog_hours_per_minute": round(hours / (dt / 60.0), 3)}
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", help="comma-separated sections (default: all)")
    ap.add_argument("--dialogs", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    report = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "date": time.strftime("%Y-%m-%d"), "device": args.device, "command": " ".join(sys.argv), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            print(f"== {n}", flush=True)
            report["results"][n] = SECTIONS[n](args, Path(tmp))
            for k, v in report["results"][n].items():
                print(f"  {k:<24} {json.dumps(v)}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
