"""A record, not a tool (paths are arguments; the bench folder is one `scripts/quality.py` made). Bound rows for
dyad mode (issue 19): what a *perfect sampler* and a *perfect conditional mean* score on the bench's test split.

The synthetic generator is regenerated exactly as the bench built its corpus (same calls, same seeds: the same
speech, turns and person styles; every written file is checked against the bench's cache), but each dialog's
motion is drawn again from the generator's own process with fresh random numbers (`_participants`: the idle drift
of both persons with their mimicry, each dim's own drift, the nods and backchannels that fire at random, the jaw's
noise). Such a draw is a sample of the true conditional distribution of both faces given both voices, turns and
each person's style: more than a model of an unseen person can know. Its expression is then recentred like the bench's bound
`truth_recentered` (each sequence's mean expression replaced by the train mean: no method knows an unseen person's
offset). Rows:
  oracle_sample  one such draw per seed (draws 0, 1, 2)
  oracle_mean    the mean of DRAWS draws (the conditional mean, up to 1/DRAWS of the draws' variance), recentred
  anon_sample    as oracle_sample, but each person's motion style (the gains of speech, brow, smile, backchannel,
                 jaw and nods, the nod probability) is a random *training* person's: a perfect sampler of the
                 process for a person whose style it does not know (voice, timing and turns stay the real ones)
  anon_mean      the mean of DRAWS such draws (a fresh training person's style per draw)
Scored by the bench's scoring together with the bench's dyad model and causal regressor (every seed; paired).

Usage: record_oracle_sampler.py BENCH_DIR WORK_DIR OUT.md [--draws 8] [--corpora default,hard]"""
import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import quality as Q                                               # noqa: E402
from common.data import synthetic as syn                          # noqa: E402
from common.data.cache import Cache                               # noqa: E402
from common.eval.predictions import prediction_path, write_prediction   # noqa: E402

SEEDS = (0, 1, 2)
# what _motion reads of a person's style besides the offsets (recentred anyway) and what shapes the audio
MOTION_STYLE = ("nod_prob", "nod_amp", "nod_freq", "jaw_gain", "speech_gain", "brow_gain", "smile_gain", "bc_gain",
                "head_gain")
BENCH_ROWS = ("model_dyad", "dualtalk_class_causal")   # the rest are in the bench's own report: not scored again


def regenerate(kind: str, spec: dict, tmp: Path, draws: int, train_styles: list) -> dict[str, tuple]:
    """{dialog id: (real participants, [fresh draws], [fresh draws with training persons' motion styles])} of
    the bench corpus' test dialogs, regenerated."""
    orig, stash, ids = syn._participants, [], []

    def anon(styles, rng):
        other = [train_styles[int(i)] for i in rng.integers(len(train_styles), size=len(styles))]
        return tuple(replace(st, **{f: getattr(o, f) for f in MOTION_STYLE}) for st, o in zip(styles, other))

    def light(ps):      # what write_rows reads (the audio stays out: on `hard` 17 copies of 64 dialogs' audio exhaust memory)
        return [SimpleNamespace(style=p.style, expression=p.expression, jaw=p.jaw) for p in ps]

    def patched(rng, styles, tracks, fps, sample_rate):
        real = orig(rng, styles, tracks, fps, sample_rate)       # consumes the dialog's generator as before
        k = len(stash)
        fresh = [light(orig(np.random.default_rng([0x0AC1E, k, r]), styles, tracks, fps, sample_rate))
                 for r in range(draws)]
        anons = []
        for r in range(draws):
            g = np.random.default_rng([0x0AC1E, k, r, 1])
            anons.append(light(orig(g, anon(styles, g), tracks, fps, sample_rate)))
        stash.append((light(real), fresh, anons))
        return real

    syn._participants = patched
    try:
        if kind == "default":    # quality.build_corpus: the test dialogs are their own corpus (seed 1, persons 2000+)
            syn.make_corpus(tmp, num_dialogs=spec["test_dialogs"], seconds=spec["seconds"], seed=1,
                            index_name="test.json", person_base=2000, progress=ids.append)
            keep = ids
        else:
            syn.make_corpus(tmp, num_dialogs=spec["train_dialogs"] + spec["test_dialogs"], seed=0,
                            index_name="all.json", preset="hard", min_seconds=spec["min_seconds"],
                            max_seconds=spec["max_seconds"], speech="tts", progress=ids.append)
            keep = sorted(ids)[spec["train_dialogs"]:]
    finally:
        syn._participants = orig
    by_id = dict(zip(ids, stash))
    return {d: by_id[d] for d in keep}


def motion_of(p, T: int) -> np.ndarray:
    """The cache's motion layout (exp[:50] ++ jaw[:1]) of a generated participant's first T frames."""
    return np.concatenate([p.expression[:T, :50], p.jaw[:T, :1]], axis=1)


def write_rows(cache: Cache, gen: dict, work: Path) -> dict[str, Path]:
    a, b = cache.layout.exp
    mean = np.asarray(cache.stats["motion_mean"], np.float64)

    def recentre(m):
        m = m.copy()
        m[:, a:b] += mean[a:b] - m[:, a:b].mean(0)
        return m.astype(np.float32)

    folders = {f"{n}/seed{s}": work / f"{n}_seed{s}" for s in SEEDS for n in ("oracle_sample", "anon_sample")}
    folders |= {n: work / n for n in ("oracle_mean", "anon_mean")}
    worst = 0.0
    for d in cache.dialogs("test"):
        real, fresh, anons = gen[d["id"]]
        truth = np.asarray(cache.load(d["id"]).motion, np.float64)
        T = truth.shape[1]
        by_pid = {p.style.pid: i for i, p in enumerate(real)}
        for i, pid in enumerate(d["participants"]):
            j = by_pid[pid]
            worst = max(worst, float(np.abs(motion_of(real[j], T).astype(np.float32) - truth[i]).max()))
            for name, draws_ in (("oracle", fresh), ("anon", anons)):
                for s in SEEDS:
                    write_prediction(prediction_path(folders[f"{name}_sample/seed{s}"], d["id"], pid),
                                     recentre(motion_of(draws_[s][j], T)), cache.layout)
                write_prediction(prediction_path(folders[f"{name}_mean"], d["id"], pid),
                                 recentre(np.mean([motion_of(f[j], T) for f in draws_], axis=0)), cache.layout)
    if worst > 1e-6:
        raise SystemExit(f"the regenerated corpus is not the bench's (max |difference| {worst:.3g} to the cache)")
    print(f"regenerated truth == the bench cache's (max |difference| {worst:.2g})", flush=True)
    return folders


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("out_md", type=Path)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--corpora", default="default,hard")
    args = ap.parse_args()
    md = [f"# Oracle sampler bounds (dyad mode), `{' '.join(sys.argv[1:])}`", ""]
    for corpus in args.corpora.split(","):
        spec = Q.PRESETS["cpu"]["corpora"][corpus]
        cdir = args.bench / corpus / "cache"
        cache = Cache(cdir)
        work = args.work / corpus
        style = syn.person_style if corpus == "default" else syn.hard_person_style
        train = sorted({p for d in cache.dialogs("train") + cache.dialogs("val") for p in d["participants"]})
        gen = regenerate(corpus, spec, work / "data", args.draws, [style(int(re.sub(r"\D", "", p))) for p in train])
        folders = write_rows(cache, gen, work)
        methods = {}
        for s in SEEDS:
            P = args.bench / corpus / f"seed{s}" / "predictions"
            methods[s] = {m: P / m for m in BENCH_ROWS if (P / m).is_dir()}
            methods[s][Q.BOUND] = args.bench / corpus / Q.BOUND
            for n in ("oracle_sample", "anon_sample"):
                methods[s][n] = folders[f"{n}/seed{s}"]
            for n in ("oracle_mean", "anon_mean"):
                methods[s][n] = folders[n]
        res = Q.score(cdir, methods)
        Q.MODEL_MODES = ("oracle_sample", "oracle_mean", "anon_sample", "anon_mean", "model_dyad")
        recons = []
        lines, _ = Q.corpus_report(corpus, res, recons, 1000)
        md += lines
    args.out_md.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
