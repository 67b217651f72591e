"""Write baseline predictions for a split, each as a prediction directory that scripts/evaluate.py scores.

    python scripts/baselines.py --cache CACHE --out DIR [--split test] [--only mean,mirror] [--seed 0]

Writes DIR/<baseline>/<dialog>/<participant>.npz (``motion``) for: mean (train mean motion), random_other (ground
truth of another test dialog), mirror (the partner's motion), nn_audio (nearest train motion by audio features).
"""
from __future__ import annotations

import argparse
import sys

from common.eval.baselines import BASELINES, make_baselines
from common.data.cache import CacheError


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(BASELINES)}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        dirs = make_baselines(args.cache, args.out, args.split, args.seed,
                              which=tuple(args.only.split(",")) if args.only else BASELINES)
    except (CacheError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, d in dirs.items():
        print(f"{name:<14} {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
