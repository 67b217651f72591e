"""Generate facial motion with a trained stage-2 GPT (+ its stage-1 tokenizer).

    # cached dialogs (one, several, or a whole split; --batch N: N dialogs at a time in one batch of the GPT)
    python scripts/sample.py --gpt runs/stage2/gpt.pt --tokenizer runs/stage1/tokenizer.pt \
        --cache CACHE --dialog ID [--dialog ID2 ...] --out OUT
    python scripts/sample.py --gpt G --tokenizer T --cache CACHE --split test --batch 16 --out OUT
    # enrollment (a person-reference tokenizer decodes a participant around the mean of a clip of them):
    python scripts/sample.py ... --cache CACHE --split test --enroll-dir CLIPS     # CLIPS/<participant id>.npz
    # raw WAVs (any rate / channel count: common/data/audio.py's path)
    python scripts/sample.py --gpt G --tokenizer T --audio-a A.wav --audio-b B.wav --out OUT [--name dialog]
    # listener (partner given) mode: the partner's motion is given, teacher-forced as the dialog unfolds
    python scripts/sample.py ... --mode listener [--given PARTICIPANT]     # cached: no --given = both roles in turn
    python scripts/sample.py ... --audio-a A.wav --audio-b B.wav --mode listener --given B --given-motion B.npz

--name and --participants become file names: they are checked (no path separators, no leading '.', distinct).
A GPT whose audio configuration names a pretrained encoder by hub name uses only a local copy unless
--allow-download is given.

Writes OUT/<dialog>/<participant>.npz (``motion`` (T, D) at the motion rate, ``expression_params``,
``jaw_params``, ``pose_params``, ``shape_params`` when the identity is known, plus ``pred_states`` and ``codes``)
and OUT/<dialog>/trajectories.png. Sampling: --temperature, --top-k, --top-p, --seed (deterministic per seed;
every dialog's files are the same whatever --batch). Any length runs in bounded memory (WAVs are read in blocks,
frames written as they are decoded). All logic lives in stage2_gpt/generate.py.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from common.config import device_arg, float_arg, int_arg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpt", required=True, help="exported GPT (OUT/gpt.pt of stage2_gpt/train.py)")
    ap.add_argument("--tokenizer", required=True, help="the stage-1 tokenizer file the GPT was trained with")
    ap.add_argument("--cache", help="preprocessed cache (with --dialog or --split)")
    ap.add_argument("--dialog", action="append", help="dialog id in the cache (repeatable)")
    ap.add_argument("--split", help="every dialog of this split (e.g. test)")
    ap.add_argument("--audio-a", help="WAV of participant A's microphone")
    ap.add_argument("--audio-b", help="WAV of participant B's microphone")
    ap.add_argument("--name", default="dialog", help="dialog name for WAV input")
    ap.add_argument("--participants", nargs=2, default=["A", "B"], metavar=("A", "B"),
                    help="participant names for WAV input")
    ap.add_argument("--mode", choices=["dyad", "listener"], default="dyad")
    ap.add_argument("--given", help="listener mode: the participant whose motion is given (id, 0/1 or A/B)")
    ap.add_argument("--given-motion", help="listener mode with WAVs: FLAME npz of the given participant")
    ap.add_argument("--shape-a", help="WAV input: FLAME npz holding participant A's shape_params (identity)")
    ap.add_argument("--shape-b", help="WAV input: FLAME npz holding participant B's shape_params (identity)")
    ap.add_argument("--enroll-a", help="WAV input: FLAME npz of a clip of participant A (their mean motion is the "
                                       "reference a person-referenced tokenizer decodes A around)")
    ap.add_argument("--enroll-b", help="WAV input: the same for participant B")
    ap.add_argument("--enroll-dir", help="cached input: a folder of enrollment clips, DIR/<participant id>.npz (FLAME "
                                         "npz, used whole: trim it to well-tracked frames; participants without one "
                                         "are decoded around the train mean, with a warning)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--temperature", type=float_arg(0, 100), default=None,
                    help="0: greedy (default 1.35 in dyad mode, 1 in listener mode and with guidance on; docs/STAGE2.md, "
                         "'Quality levers')")
    ap.add_argument("--top-k", type=int_arg(0), default=0, help="0: off")
    ap.add_argument("--top-p", type=float_arg(maximum=1, above=0), default=1.0, help="1: off")
    ap.add_argument("--seed", type=int_arg(0, 2 ** 63 - 1), default=0)
    ap.add_argument("--fine-temperature", type=float_arg(0, 100), default=None,
                    help="temperature of the RVQ levels after the first (default: --temperature)")
    ap.add_argument("--mean-anchor-s", type=float_arg(0, 1e6), default=None,
                    help="hold each generated person's long-term mean expression at their reference, with a prior of "
                         "this many seconds (default 5; docs/STAGE2.md, 'Mean anchor'; person-reference tokenizers)")
    ap.add_argument("--no-mean-anchor", action="store_true", help="turn the mean anchor off")
    ap.add_argument("--samples", type=int_arg(1, 4096), default=8,
                    help="samples drawn at once (batched) and combined (default 8; 1: one raw sample). Dyad mode: their "
                         "mean plus sample 0's slow deviation from it (--slow-s) less its drift (--drift-s); listener "
                         "mode: their plain mean (measured there: FD as the mix's, P-FD and MSE lower; docs/STAGE2.md, "
                         "'Quality levers')")
    ap.add_argument("--smooth-s", type=float_arg(0, 1e6), default=None,
                    help="time constant (s) of the causal one-pole low-pass on the output's expression, after the samples "
                         "are combined (default 0.02 in dyad mode, 0.0145 in listener mode, 0.025 with guidance on; 0: off; "
                         "docs/STAGE2.md, 'Quality levers')")
    ap.add_argument("--slow-s", type=float_arg(1e-6, 1e6), default=None,
                    help="time constant of sample 0's deviation kept in the output (default 0.2 s in dyad mode; "
                         "given in listener mode, it replaces the plain mean there)")
    ap.add_argument("--drift-s", type=float_arg(0, 1e6), default=None,
                    help="time constant (s) of sample 0's drift removed from the mix's deviation, so the output keeps "
                         "that sample's motion but not a level of its own (default 5; 0: kept; docs/STAGE2.md, "
                         "'Quality levers')")
    ap.add_argument("--guidance", type=float_arg(0, 100), default=1.0,
                    help="classifier-free guidance on audio: each step's logits uncond + g * (cond - uncond), the "
                         "unconditional pass without audio (twice the GPT's work; GPTs trained with "
                         "model.audio_dropout > 0); 1: off (default; measured: docs/STAGE2.md, 'Quality levers')")
    ap.add_argument("--fine-guidance", type=float_arg(0, 100), default=None,
                    help="the guidance of the RVQ levels after the first (default: --guidance); any guidance other "
                         "than 1 makes the output low-pass default 0.025 s")
    ap.add_argument("--plain-mean", action="store_true",
                    help="output the plain mean of the samples in either mode (the conditional-mean estimate: lowest "
                         "MSE, calmest; listener mode's default)")
    ap.add_argument("--batch", type=int_arg(1, 4096), default=1,
                    help="cached dialogs generated at once in one batch (one KV cache); results do not depend on it")
    ap.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda, cuda:1, mps...")
    ap.add_argument("--cuda-graph", choices=["auto", "on", "off"], default="auto",
                    help="the fixed-shape generation step (stage2_gpt/graphed_step.py; the plain step's codes up to float "
                         "rounding): on CUDA devices every step one replay of a captured CUDA graph (on an H200 1.4-4.8x "
                         "faster offline, streaming p99 10x lower), on a CPU uncaptured (1.3x faster with 8 samples, 2.6x "
                         "with --batch 8; docs/BENCHMARKS.md); auto: on for CUDA devices and the CPU; off: the plain step "
                         "(exactly x-transformers' numbers)")
    ap.add_argument("--threads", type=int_arg(1, 1024), default=1,
                    help="CPU threads (1 is fastest for step-by-step generation on small CPUs)")
    ap.add_argument("--allow-download", action="store_true",
                    help="WAV input: let a pretrained audio encoder named by hub name in the GPT file be downloaded")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")

    import torch
    torch.set_num_threads(max(1, args.threads))
    from common.data.audio import downloads_allowed
    from common.data.cache import Cache, CacheError
    from common.eval.predictions import check_participants
    from common.train.artifact import CheckpointError
    from stage2_gpt.generate import (DRIFT_S, MEAN_ANCHOR_S, DialogInput, Generator, Sampling, generate_dialog,
                                     generate_dialogs, mode_defaults, read_given_motion, read_shape, resolve_given)
    from stage2_gpt.graphed_step import use_cuda_graph

    wav_mode = bool(args.audio_a or args.audio_b)
    if wav_mode == bool(args.cache):
        ap.error("give either --cache (with --dialog/--split) or --audio-a and --audio-b")
    if wav_mode and not (args.audio_a and args.audio_b):
        ap.error("WAV input needs both --audio-a and --audio-b (each participant's own microphone)")
    if args.cache and not (args.dialog or args.split):
        ap.error("--cache needs --dialog ID or --split NAME")
    if args.cache and (args.enroll_a or args.enroll_b or args.shape_a or args.shape_b or args.given_motion):
        ap.error("--enroll-a/-b, --shape-a/-b and --given-motion are for WAV input: a cache holds each participant's "
                 "identity and motion (enrollment clips for cached dialogs: --enroll-dir)")
    if wav_mode and args.enroll_dir:
        ap.error("--enroll-dir is for --cache input; with WAVs give --enroll-a/--enroll-b")
    if args.mode != "listener" and (args.given or args.given_motion):
        ap.error("--given and --given-motion are for --mode listener")
    anchor = None if args.no_mean_anchor else (MEAN_ANCHOR_S if args.mean_anchor_s is None else args.mean_anchor_s)
    if args.plain_mean and args.slow_s is not None:
        ap.error("--plain-mean and --slow-s exclude each other")
    guided = Sampling(guidance=args.guidance, fine_guidance=args.fine_guidance).guided
    defaults = mode_defaults(args.mode, guided)
    slow = None if args.plain_mean else (defaults["slow_s"] if args.slow_s is None else args.slow_s)
    if args.drift_s is not None and slow is None:
        ap.error("--drift-s applies to the sample mix (dyad mode, or --slow-s in listener mode); the plain mean has no "
                 "deviation to remove a drift from")
    drift = DRIFT_S if args.drift_s is None else (args.drift_s or None)
    smooth = defaults["smooth_s"] if args.smooth_s is None else (args.smooth_s or None)
    temperature = defaults["temperature"] if args.temperature is None else args.temperature
    sampling = Sampling(temperature, args.top_k, args.top_p, args.seed, args.fine_temperature, anchor, slow, smooth,
                        drift, args.guidance, args.fine_guidance)
    out = Path(args.out)
    try:
        if wav_mode:
            check_participants(args.name, args.participants)     # before any work: they become file names
        gen = Generator.load(args.gpt, args.tokenizer, args.device, cuda_graph=use_cuda_graph(args.cuda_graph, args.device))
        gen.guided_passes(sampling)                                     # --guidance needs an audio-dropout GPT
        if (args.enroll_a or args.enroll_b or args.enroll_dir) and not gen.person_reference:
            raise ValueError(f"{args.tokenizer} codes motion around the train mean (model.reference=global): an "
                             "enrollment clip would change nothing; use a tokenizer trained with model.reference=person")
        t0, frames, written = time.perf_counter(), 0, []
        if wav_mode:
            with downloads_allowed(args.allow_download):
                feats = gen.wav_features([args.audio_a, args.audio_b])      # computed in blocks as generation reads
            gt = None
            if args.mode == "listener":
                if not (args.given and args.given_motion):
                    ap.error("listener mode with WAVs needs --given and --given-motion")
                g = ["A", "B"].index(args.given.upper()) if args.given.upper() in ("A", "B") else \
                    resolve_given(args.given, args.participants)
                gm = read_given_motion(gen.bundle, args.given_motion)
                T = min(len(gm), feats.shape[1])
                feats = feats[:, :T]
                gt = np.zeros((2, T, gm.shape[1]), np.float32)
                gt[g] = gm[:T]
                given = g
            else:
                given = None
            shapes = [read_shape(p) if p else None for p in (args.shape_a, args.shape_b)]
            enrolled = [read_given_motion(gen.bundle, p).mean(0) if p else None for p in (args.enroll_a, args.enroll_b)]
            res = generate_dialog(gen, args.name, args.participants, feats, out, mode=args.mode, given=given,
                                  gt_motion=gt, shape=shapes, reference=enrolled, sampling=sampling,
                                  num_samples=args.samples, plot=not args.no_plot, progress=not args.quiet)
            frames += feats.shape[1]
            written.append(res)
        else:
            cache = Cache(args.cache)
            ids = list(args.dialog or []) + ([d["id"] for d in cache.dialogs(args.split)] if args.split else [])
            ids = list(dict.fromkeys(ids))                          # each dialog once
            if not ids:
                raise CacheError(f"no dialog in split {args.split!r} of {args.cache}")
            clips = enrollment_clips(args.enroll_dir, [p for did in ids for p in cache.dialog(did)["participants"]])
            enrolled = None if clips is None else {p: read_given_motion(gen.bundle, f).mean(0) for p, f in clips.items()}
            items = []
            for did in ids:
                entry, a = cache.dialog(did), cache.load(did)             # memory-mapped
                ref = None if enrolled is None else [enrolled.get(p) for p in entry["participants"]]
                items.append(DialogInput(did, entry["participants"], a.audio, a.motion, a.states, np.asarray(a.shape),
                                         ref))
                frames += a.motion.shape[1] * (2 if args.mode == "listener" and args.given is None else 1)
            written += generate_dialogs(gen, items, out, mode=args.mode, given=args.given, sampling=sampling,
                                        num_samples=args.samples, batch=args.batch, plot=not args.no_plot,
                                        progress=not args.quiet)
    except (CacheError, CheckpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    el = time.perf_counter() - t0
    n_files = sum(len(r.files) for r in written)
    print(f"wrote {n_files} prediction files for {len(written)} dialog(s) to {out} in {el:.1f} s "
          f"({frames / gen.fps / max(el, 1e-9):.1f}x real time)")
    return 0


def enrollment_clips(folder, participants) -> dict | None:
    """``{participant: DIR/<participant>.npz}`` of those with a clip in ``folder`` (None: no folder given); an error
    when the folder is missing or holds a clip of none of them."""
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        raise OSError(f"--enroll-dir {folder}: not a folder")
    clips = {p: folder / f"{p}.npz" for p in dict.fromkeys(participants) if (folder / f"{p}.npz").is_file()}
    if not clips:
        raise OSError(f"--enroll-dir {folder}: no clip of any participant of these dialogs (expected "
                      f"{folder}/<participant id>.npz, e.g. {participants[0]}.npz)")
    missing = [p for p in dict.fromkeys(participants) if p not in clips]
    if missing:     # decoded around the train mean: say so, a misnamed clip must not pass unnoticed
        logging.warning("--enroll-dir %s: no clip of %d participant(s), decoded around the train mean: %s",
                        folder, len(missing), ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    logging.info("enrollment clips for %d of %d participants from %s", len(clips), len(clips) + len(missing), folder)
    return clips


if __name__ == "__main__":
    sys.exit(main())
