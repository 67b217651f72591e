"""Write a synthetic dyadic corpus in the users' layout (structure documented in docs/SYNTHETIC.md).

    python scripts/make_synthetic_corpus.py --out DIR --dialogs N --seconds S --seed K [--fps 30] [--sample-rate 48000]
    python scripts/make_synthetic_corpus.py --out DIR --dialogs N --preset hard [--min-seconds 30 --max-seconds 300]
        [--speech auto|tts|harmonic] --seed K

Writes DIR/dataset_jsons/<index> and DIR/synthetic/<dialog>/<participant>/{audio.wav, state.npy,
features/emica_flame.npz}. The same arguments give byte-identical files. The default preset is the demo corpus;
the hard preset has real speech (espeak-ng, `pip install espeakng-loader`), large person offsets, unseen persons
in every dialog and lengths of 30 s to 5 min, and writes DIR/dataset_jsons/<index stem>.about.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from tqdm import tqdm

from common.data.synthetic import PRESETS, SPEECH_MODES, SpeechEngineMissing, about_path, make_corpus


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="data root to write (created if missing)")
    ap.add_argument("--dialogs", type=int, default=10, help="number of dialogs (default 10)")
    ap.add_argument("--preset", choices=PRESETS, default="default",
                    help="default: the demo corpus; hard: real speech, unseen persons, 30 s - 5 min dialogs")
    ap.add_argument("--seconds", type=float, default=None, help="default preset: length of each dialog (default 60)")
    ap.add_argument("--min-seconds", type=float, default=None, help="hard preset: shortest dialog (default 30)")
    ap.add_argument("--max-seconds", type=float, default=None, help="hard preset: longest dialog (default 300)")
    ap.add_argument("--speech", choices=SPEECH_MODES, default="auto",
                    help="hard preset: auto (espeak-ng if installed, else the harmonic voice with a warning), "
                         "tts (espeak-ng or an error), harmonic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--index-name", default="synthetic.json", help="index file name under dataset_jsons/")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        with tqdm(total=args.dialogs, unit="dialog", desc=f"synthetic corpus ({args.preset})") as bar:
            index = make_corpus(args.out, num_dialogs=args.dialogs, seconds=args.seconds, seed=args.seed,
                                fps=args.fps, sample_rate=args.sample_rate, index_name=args.index_name,
                                progress=lambda _did: bar.update(1), preset=args.preset,
                                min_seconds=args.min_seconds, max_seconds=args.max_seconds, speech=args.speech)
    except (ValueError, SpeechEngineMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    took = time.time() - t0
    if args.preset == "hard":
        about = json.loads(about_path(index).read_text())
        print(f"wrote {args.dialogs} dialogs, {about['total_seconds'] / 60:.1f} min of dialog, in {took:.1f} s; "
              f"speech: {about['speech']}; index: {index}")
    else:
        seconds = 60.0 if args.seconds is None else args.seconds
        print(f"wrote {args.dialogs} dialogs x {seconds:g} s in {took:.1f} s; index: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
