"""Write a synthetic dyadic corpus in the users' layout (structure documented in docs/SYNTHETIC.md).

    python scripts/make_synthetic_corpus.py --out DIR --dialogs N --seconds S --seed K [--fps 30] [--sample-rate 48000]

Writes DIR/dataset_jsons/<index> and DIR/synthetic/<dialog>/<participant>/{audio.wav, state.npy,
features/emica_flame.npz}. The same arguments give byte-identical files.
"""
from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from common.data.synthetic import make_corpus


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="data root to write (created if missing)")
    ap.add_argument("--dialogs", type=int, default=10, help="number of dialogs (default 10)")
    ap.add_argument("--seconds", type=float, default=60.0, help="nominal length of each dialog (default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--index-name", default="synthetic.json", help="index file name under dataset_jsons/")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        with tqdm(total=args.dialogs, unit="dialog", desc="synthetic corpus") as bar:
            index = make_corpus(args.out, num_dialogs=args.dialogs, seconds=args.seconds, seed=args.seed,
                                fps=args.fps, sample_rate=args.sample_rate, index_name=args.index_name,
                                progress=lambda _did: bar.update(1))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dialogs} dialogs x {args.seconds:g} s in {time.time() - t0:.1f} s; index: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
