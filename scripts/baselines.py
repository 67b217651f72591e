"""Write baseline predictions for a split, each as a prediction directory that scripts/evaluate.py scores.

    python scripts/baselines.py --cache CACHE --out DIR [--split test] [--only mean,mirror] [--seed 0]
    python scripts/baselines.py --cache CACHE --out DIR --regressor RUN/regressor.pt [--name dualtalk_class] ...

Writes DIR/<baseline>/<dialog>/<participant>.npz (``motion``) for: mean (train mean motion), random_other (ground
truth of another test dialog), mirror (the partner's motion), nn_audio (nearest train motion by audio features).

``--regressor FILE`` (repeatable) adds a learned baseline trained by ``baselines/train.py``: DIR/<name>/... with
each participant predicted from both audio tracks and the partner's ground-truth motion (the listener
protocol, as DualTalk is evaluated), or from the audio tracks alone for a regressor trained with
``model.partner_motion=false`` (the dyad protocol). ``--name`` (one per ``--regressor``, in order) names its
folder; default ``dualtalk_class``, with ``_causal`` for a causal model and ``_dyad`` for the dyad protocol.
``--only none`` writes the learned baselines alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):         # `python scripts/baselines.py`: import the repository (its `baselines`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)      # package), not this file as `baselines`

from common.config import device_arg, int_arg
from common.data.cache import CacheError
from common.io import check_name
from common.eval.baselines import BASELINES, make_baselines, regressor_name
from common.train.artifact import CheckpointError


def regressor_names(paths: list[str], names: list[str]) -> list[str]:
    """The folder name of each ``--regressor``: its ``--name``, else by causality and protocol; duplicates are an
    error."""
    from baselines.artifact import regressor_model_config
    if len(names) > len(paths):
        raise ValueError(f"{len(names)} --name for {len(paths)} --regressor")
    out = []
    for i, path in enumerate(paths):
        if i < len(names):
            out.append(names[i])
            continue
        model = regressor_model_config(path)
        out.append(regressor_name(model.causal, model.partner_motion))
    for n in out:
        check_name(n, "--name")                          # it becomes DIR/<name>/
    clash = sorted({n for n in out if out.count(n) > 1} | (set(out) & set(BASELINES)))
    if clash:
        raise ValueError(f"baseline folder name(s) used twice: {', '.join(clash)} (give --name per --regressor)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(BASELINES)}, or 'none'")
    ap.add_argument("--seed", type=int_arg(0, 2 ** 32 - 1), default=0)
    ap.add_argument("--regressor", action="append", default=[], metavar="FILE",
                    help="an exported regressor (baselines/train.py's regressor.pt); repeatable")
    ap.add_argument("--name", action="append", default=[], help="folder name of the matching --regressor")
    ap.add_argument("--device", type=device_arg, default="cpu", help="device the regressors run on")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    which = BASELINES if not args.only else () if args.only == "none" else tuple(args.only.split(","))
    try:
        dirs = make_baselines(args.cache, args.out, args.split, args.seed, which=which,
                              progress=not args.quiet) if which else {}
        if args.regressor:
            from baselines.predict import predict_split
            for path, name in zip(args.regressor, regressor_names(args.regressor, args.name)):
                dirs[name] = predict_split(path, args.cache, Path(args.out) / name, args.split, device=args.device,
                                           progress=not args.quiet)
    except (CacheError, CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, d in dirs.items():
        print(f"{name:<22} {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
