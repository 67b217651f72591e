"""A record, not a tool (paths are those of the run). Score post-hoc sample mixes of the 8 kept samples (draw.py) like quality-bench run 6, one table per corpus.
Usage: score.py OUT.md VARIANT... (variant: n<N>_s<slow_s> | n<N>_mean | n<N>_s<slow>_b<gain>)"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.data.cache import Cache
from common.eval.predictions import prediction_path, write_prediction
from stage2_gpt.generate import Sampling, SampleMix

RUN, SMP, PRED = Path("/work/runs/quality5"), Path("/work/runs/mixsweep/samples"), Path("/work/runs/mixsweep/pred")
out_md, variants = Path(sys.argv[1]), sys.argv[2:]

def mix(x, v, fps):
    """x (N, 2, T, D) -> (2, T, D) by variant name."""
    parts = v.split("_")
    n = int(parts[0][1:])
    x = x[:n]
    if parts[1] == "mean":
        return x.mean(0)
    y = SampleMix(Sampling(slow_s=float(parts[1][1:]), drift_s=None), fps)(x)    # as run then (no drift removal)
    if len(parts) > 2:                                   # b<gain>: mean + gain * (the mix's slow deviation)
        m = x.mean(0)
        y = m + float(parts[2][1:]) * (y - m)
    return y

md = []
for corpus in ("default", "hard"):
    B = RUN / corpus
    cache = Cache(B / "cache")
    layout, fps = cache.layout, cache.fps
    methods, recons = {}, []
    for s in (0, 1, 2):
        P = B / f"seed{s}" / "predictions"
        methods[s] = {m: P / m for m in ("model_dyad", "model_listener", "speaker_only", "dualtalk_class",
                                         "dualtalk_class_causal")}
        recons.append(json.loads((B / f"seed{s}" / "recon.json").read_text()))
        files = sorted((SMP / corpus / f"seed{s}").glob("*.npz"))
        dialogs = {d["id"]: (d["participants"], np.asarray(cache.load(d["id"]).shape)) for d in cache.dialogs("test")}
        for mode in ("dyad", "listener"):
            for v in variants:
                folder = PRED / corpus / f"seed{s}" / f"{mode}_{v}"
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
                        pids, shape = dialogs[did]
                        y = mix(z[did], v, fps)
                        for p in ([0, 1] if g is None else [1 - g]):
                            write_prediction(prediction_path(folder, did, pids[p]), y[p], layout, shape[p])
                (folder / ".done").touch()
    res = Q.score(B / "cache", methods)
    Q.MODEL_MODES = tuple(f"{m}_{v}" for m in ("dyad", "listener") for v in variants)
    lines, _ = Q.corpus_report(corpus, res, recons, 1000)
    md += lines
out_md.write_text("\n".join(md) + "\n")
print("\n".join(md))
