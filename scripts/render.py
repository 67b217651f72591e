"""Render a generated dialog to an MP4: both participants side by side, a state strip, both audio tracks mixed.

    # shaded FLAME heads, generated above ground truth, true states and the corpus audio from the cache
    python scripts/render.py --pred OUT/<dialog> --gt CACHE --flame-model FLAME2020/generic_model.pkl --out video.mp4
    # no FLAME model: coefficient view (jaw + expression traces scrolling), same strip and audio
    python scripts/render.py --pred OUT/<dialog> --gt CACHE --out video.mp4
    # predictions from WAVs (no cache): give the WAVs; states come from the files' pred_states
    python scripts/render.py --pred OUT/<dialog> --audio-a A.wav --audio-b B.wav --flame-model M.pkl --out video.mp4

--cache CACHE takes states, identities and audio from the cache without the ground-truth row. --seconds and
--start render a part. The FLAME model is licensed and not shipped: https://flame.is.tue.mpg.de (accepted:
FLAME 2020/2023 .pkl, chumpy or not, read by a loader that refuses any code; or an .npz of the same keys).
All logic lives in common/viz/render.py and common/viz/flame.py; see docs/RENDERING.md.
"""
from __future__ import annotations

import argparse
import logging
import sys

from common.config import float_arg, int_arg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred", help="prediction folder of one dialog: DIR/<dialog>/<participant>.npz")
    ap.add_argument("--out", help="output video (.mp4)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--gt", metavar="CACHE", help="cache: ground-truth row, identities, true states, corpus audio")
    src.add_argument("--cache", metavar="CACHE", help="cache for identities, states and audio, no ground-truth row")
    ap.add_argument("--flame-model", help="FLAME model file (.pkl or .npz); without it: coefficient view")
    ap.add_argument("--audio-a", help="WAV of the first participant (instead of the corpus audio)")
    ap.add_argument("--audio-b", help="WAV of the second participant")
    ap.add_argument("--participants", nargs=2, metavar=("A", "B"),
                    help="participant order (default: the cache's, else the prediction files sorted by name)")
    ap.add_argument("--seconds", type=float_arg(maximum=86400, above=0), help="render only this many seconds")
    ap.add_argument("--start", type=float_arg(0, 86400), default=0.0, help="start at this time (s)")
    ap.add_argument("--size", type=int_arg(64, 4096), default=320, help="face panel size in pixels (mesh view)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    ap.add_argument("--benchmark", action="store_true",
                    help="measure frames/s on a FLAME-sized stand-in model and synthetic motion (--seconds, default 10)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet or args.benchmark else logging.INFO,
                        format="%(levelname)s %(message)s")
    if args.benchmark:
        from common.viz.render import benchmark
        for name, fps in benchmark(args.seconds or 10.0, args.size).items():
            print(f"{name}: {fps:.1f} frames/s")
        return 0
    if not (args.pred and args.out):
        ap.error("--pred and --out are required")
    if bool(args.audio_a) != bool(args.audio_b):
        ap.error("give both --audio-a and --audio-b (each participant's own microphone)")
    if args.size < 64 or args.size % 16:
        ap.error("--size must be a multiple of 16, at least 64")

    from common.data.cache import CacheError
    from common.data.corpus import CorpusError
    from common.viz.flame import FlameModelError
    from common.viz.render import RenderError, render_dialog
    from common.data.audio import AudioError
    try:
        res = render_dialog(args.pred, args.out, cache=args.gt or args.cache, flame_model=args.flame_model,
                            seconds=args.seconds, start=args.start, show_gt=bool(args.gt),
                            audio=[args.audio_a, args.audio_b] if args.audio_a else None,
                            participants=args.participants, size=args.size, progress=not args.quiet)
    except (RenderError, FlameModelError, CacheError, CorpusError, AudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {res.path}: {res.frames} frames, {res.seconds:.1f} s, {res.mode} view, "
          f"{'with' if res.has_audio else 'without'} audio, rendered at {res.render_fps:.1f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
