"""A record, not a tool (paths are those of the run). The sample mix with its deviation's drift removed
(`Sampling.drift_s`), post hoc on the 8 kept samples per dialog of run 6's GPTs (record_sample_count_draw.py: the
bench's test split; the held-out dialogs of new persons drawn the same way), scored like the bench, one table per
corpus. What `scripts/sample.py` outputs with those samples: `SampleMix` of the library (the mix, the drift removal,
the expression low-pass), so variant `base` is run 8's output exactly.
Usage: record_mix_drift.py OUT.md test|heldout VARIANT...
variant: base (drift None) | d<drift_s> | d<drift_s>g<gain> (the mix's deviation scaled by gain before the low-pass)
         listener-mode rows: the plain mean (`mean`) and the same variants"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.data.cache import Cache
from common.eval.predictions import prediction_path, write_prediction
from stage2_gpt.generate import SLOW_S, SMOOTH_S, LowPass, Sampling, SampleMix

RUN, HO = Path("/work/runs/quality5"), Path("/work/runs/heldout")
out_md, where, variants = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
SMP = Path("/work/runs/mixsweep/samples") if where == "test" else HO / "samples"
OUT = Path("/work/runs/mixdrift") / where


def combine(x, v, fps, exp, given):
    """x (N, 2, T, D) the kept samples -> (2, T, D) the output of variant v."""
    if v == "mean":
        return SampleMix(Sampling(slow_s=None), fps, exp, given)(x)
    if v == "base":
        return SampleMix(Sampling(slow_s=SLOW_S, drift_s=None), fps, exp, given)(x)
    drift, _, gain = v[1:].partition("g")
    if not gain:
        return SampleMix(Sampling(slow_s=SLOW_S, drift_s=float(drift)), fps, exp, given)(x)
    y = SampleMix(Sampling(slow_s=SLOW_S, drift_s=float(drift), smooth_s=None), fps, exp, given)(x)
    m = x.mean(0)
    y = m + float(gain) * (y - m)
    rows = [p for p in (0, 1) if p != given]
    y[rows] = LowPass(SMOOTH_S, fps, exp)(y[rows])
    return y


md = []
for corpus in ("default", "hard"):
    cdir = RUN / corpus / "cache" if where == "test" else HO / corpus / "cache"
    cache = Cache(cdir)
    layout, fps = cache.layout, cache.fps
    methods, recons = {}, []
    for s in (0, 1, 2):
        P = (RUN if where == "test" else HO) / corpus / f"seed{s}" / "predictions"
        methods[s] = {m: P / m for m in ("dualtalk_class", "dualtalk_class_causal")}
        if where == "test":
            methods[s].update({m: P / m for m in ("model_dyad", "model_listener", "speaker_only")})
        recons.append(json.loads((RUN / corpus / f"seed{s}" / "recon.json").read_text()))
        files = sorted((SMP / corpus / f"seed{s}").glob("*.npz"))
        for mode in ("dyad", "listener"):
            for v in variants:
                folder = OUT / corpus / f"seed{s}" / f"{mode}_{v}"
                methods[s][f"{mode}_{v}"] = folder
                if (folder / ".done").exists():
                    continue
                for f in files:
                    if not f.name.startswith(mode + "_"):
                        continue
                    g = f.name.split("_")[1][1:]
                    g = None if g == "None" else int(g)
                    z = np.load(f, allow_pickle=False)
                    for did in z.files:
                        entry, a = cache.dialog(did), cache.load(did)
                        y = combine(z[did].astype(np.float64), v, fps, layout.exp, g).astype(np.float32)
                        for p in ([0, 1] if g is None else [1 - g]):
                            write_prediction(prediction_path(folder, did, entry["participants"][p]), y[p], layout,
                                             np.asarray(a.shape)[p])
                (folder / ".done").touch()
    res = Q.score(cdir, methods)
    Q.MODEL_MODES = tuple(f"{m}_{v}" for m in ("dyad", "listener") for v in variants)
    lines, _ = Q.corpus_report(corpus, res, recons, 1000)
    md += lines
out_md.write_text("\n".join(md) + "\n")
print("\n".join(md))
