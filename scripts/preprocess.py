"""Preprocess a dyadic corpus into the training cache.

    python scripts/preprocess.py --data-root R --index J --out CACHE [--config configs/data/x.yaml]
        [--workers 4] [--shard i/n] [--skip-bad] [key=value ...]
    python scripts/preprocess.py --out CACHE --merge N [--config ...]     # after N shards have finished
"""
from __future__ import annotations

import argparse
import logging
import sys

from common.config import ConfigError, load_config, split_cli_overrides
from common.data.corpus import CorpusError
from common.data.config import DataConfig
from common.data.preprocess import default_workers, merge, preprocess


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    argv, overrides = split_cli_overrides(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="data config YAML (configs/data/*.yaml)")
    ap.add_argument("--data-root", help="corpus root (overrides the config)")
    ap.add_argument("--index", help="index JSON, relative to the data root or absolute (overrides the config)")
    ap.add_argument("--out", required=True, help="cache directory")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--shard", default="0/1", help="i/n: process every n-th dialog starting at i")
    ap.add_argument("--merge", type=int, metavar="N", help="merge the records of N finished shards and exit")
    ap.add_argument("--skip-bad", action="store_true", help="skip bad dialogs, recording why, instead of stopping")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    if args.data_root:
        overrides.append(f"data_root={args.data_root}")
    if args.index:
        overrides.append(f"index={args.index}")
    try:
        return _run(args, overrides)
    except (CorpusError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args, overrides):
    cfg = load_config(DataConfig, args.config, overrides)
    if args.merge:
        manifest = merge(cfg, args.out, args.merge)
    else:
        i, n = (int(x) for x in args.shard.split("/"))
        preprocess(cfg, args.out, workers=args.workers, shard=(i, n), skip_bad=args.skip_bad, progress=not args.quiet)
        if n > 1:
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
