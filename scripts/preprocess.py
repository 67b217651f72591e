"""Preprocess a dyadic corpus into the training cache.

    python scripts/preprocess.py --data-root R --index J --out CACHE [--config configs/data/x.yaml]
        [--workers 4] [--shard i/n] [--skip-bad] [--overwrite] [key=value ...]
    python scripts/preprocess.py --out CACHE --merge N [--config ...]     # after N shards have finished

Rerunning the same command resumes (finished dialogs are kept). A cache made with another data config (a key
that changes what is cached, such as audio.*, fps or expression_dims) is refused with the differing keys:
--overwrite rebuilds it, or choose another --out.
"""
from __future__ import annotations

import argparse
import logging
import sys

from common.config import ConfigError, int_arg, load_config, parse_args_and_overrides
from common.data.corpus import CorpusError
from common.data.config import DataConfig
from common.data.preprocess import default_workers, merge, preprocess


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="data config YAML (configs/data/*.yaml)")
    ap.add_argument("--data-root", help="corpus root (overrides the config)")
    ap.add_argument("--index", help="index JSON, relative to the data root or absolute (overrides the config)")
    ap.add_argument("--out", required=True, help="cache directory")
    ap.add_argument("--workers", type=int_arg(1, 1024), default=default_workers())
    ap.add_argument("--shard", type=shard_arg, default=(0, 1), help="i/n: process every n-th dialog starting at i")
    ap.add_argument("--merge", type=int_arg(1), metavar="N", help="merge the records of N finished shards and exit")
    ap.add_argument("--skip-bad", action="store_true", help="skip bad dialogs, recording why, instead of stopping")
    ap.add_argument("--overwrite", action="store_true",
                    help="rebuild the cache from scratch (its dialogs, shard records, tokens, manifest, statistics)")
    ap.add_argument("--quiet", action="store_true")
    args, overrides = parse_args_and_overrides(ap, argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    if args.data_root:
        overrides.append(f"data_root={args.data_root}")
    if args.index:
        overrides.append(f"index={args.index}")
    try:
        return _run(args, overrides)
    except (CorpusError, ConfigError, FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def shard_arg(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"needs 0 <= i < n, got {text}")
    return i, n


def _run(args, overrides):
    cfg = load_config(DataConfig, args.config, overrides)
    if args.merge:
        manifest = merge(cfg, args.out, args.merge)
    else:
        preprocess(cfg, args.out, workers=args.workers, shard=args.shard, skip_bad=args.skip_bad,
                   progress=not args.quiet, overwrite=args.overwrite)
        if args.shard[1] > 1:
            return 0
        from common.data.cache import Cache
        manifest = Cache(args.out).manifest
    print(f"cache {args.out}: {len(manifest['dialogs'])} dialogs, {len(manifest['skipped'])} skipped, "
          f"motion {manifest['motion_dim']}-dim at {manifest['fps']} fps, audio {manifest['audio_features']['dim']}-dim "
          f"{manifest['audio_features']['kind']}")
    for s in manifest["skipped"]:
        print(f"  skipped {s['id']}: {s['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
