"""Export this system's train/val/test splits in the layout a baseline reads (docs/BASELINES.md).

    python scripts/export_baseline_data.py --cache CACHE --format dualtalk --out exports/dualtalk
    python scripts/export_baseline_data.py --cache CACHE --format dim --split train,val,test --out exports/dim
    python scripts/export_baseline_data.py --cache CACHE --format manifest --out exports/manifest

dualtalk: OUT/<split>/<dialog>_speaker{1,2}.npz (exp (T, 50), pose (T, 6) = neck ++ jaw, 25 fps) + .wav (16 kHz).
dim:      OUT/<split>/<dialog>/<participant>.npz (motion (T, 54), 30 fps) + .wav; directed pairs in export.json.
manifest: OUT/<split>/<dialog>/<participant>.npz + .wav, listed in export.json and manifest.csv.
Jaw (3), neck (3) and audio come from the corpus the cache was built from; when it is unreachable, missing dims
are zeros, no WAV is written and export.json says so (--strict: an error instead).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.config import float_arg, int_arg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True, help="preprocessed cache (its splits are exported)")
    ap.add_argument("--format", required=True, choices=["dualtalk", "dim", "manifest"])
    ap.add_argument("--split", default="train,val,test", help="comma-separated splits")
    ap.add_argument("--out", required=True, help="output folder (one format per folder)")
    ap.add_argument("--sample-rate", type=int_arg(1000, 768000), default=16000, help="WAV sample rate (Hz)")
    ap.add_argument("--dualtalk-fps", type=float_arg(maximum=1000, above=0), default=25.0,
                    help="frame rate of the dualtalk export")
    ap.add_argument("--strict", action="store_true", help="fail when the corpus (jaw, neck, audio) is unreachable")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")

    from common.eval.bridges import ExportError, export
    from common.data.cache import CacheError
    from common.data.corpus import CorpusError
    try:
        m = export(args.cache, args.format, args.out, args.split, sample_rate=args.sample_rate,
                   dualtalk_fps=args.dualtalk_fps, strict=args.strict, progress=not args.quiet)
    except (ExportError, CacheError, CorpusError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{s} {n}" for s, n in m["counts"].items())
    print(f"{args.format} export in {args.out}: dialogs {counts}; motion at {m['fps']:g} fps, audio "
          f"{m['sample_rate']} Hz; manifest {Path(args.out) / 'export.json'}")
    if not m["corpus"]["reachable"] or m["corpus"]["notes"]:
        print("note: " + "; ".join(m["corpus"]["notes"] or [m["corpus"]["reason"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
