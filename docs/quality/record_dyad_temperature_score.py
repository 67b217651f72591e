"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). Score sample combinations of kept draws (draw8.py) like the bench. Usage: mix_score.py BENCH OUT.md CORPORA SEEDS VARIANT...
VARIANT: TAG:base (shipped mix) | TAG:n1 (sample 0, low-passed) | TAG:mean (plain mean) | TAG:d<drift_s> | TAG:nodrift"""
import sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import quality as Q
from common.data.cache import Cache
from common.eval.predictions import prediction_path, write_prediction
from stage2_gpt.generate import SLOW_S, Sampling, SampleMix

bench_arg, out_md, corpora, seeds, variants = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), [int(s) for s in sys.argv[4].split(",")], sys.argv[5:]
import os
OUT = Path(os.environ.get("MIX_OUT", "/work/runs/mixT"))
DRAWS = Path(os.environ.get("DRAWS", "/work/runs/draws"))
EXTRA = os.environ.get("EXTRA_ROWS", "model_dyad,model_listener,speaker_only,dualtalk_class,dualtalk_class_causal").split(",")

def combine(x, v, fps, exp):
    if v == "base":
        s = Sampling()
    elif v == "n1":
        x, s = x[:1], Sampling()
    elif v == "mean":
        s = Sampling(slow_s=None)
    elif v == "nodrift":
        s = Sampling(drift_s=None)
    elif v.startswith("sm"):
        s = Sampling(smooth_s=float(v[2:]))
    elif v.startswith("d"):
        s = Sampling(drift_s=float(v[1:]))
    else:
        raise ValueError(v)
    return SampleMix(s, fps, exp, None)(x)

md = []
bench = bench_arg
for corpus in corpora:
    cdir = bench / corpus / "cache"
    cache = Cache(cdir)
    methods = {}
    for s in seeds:
        P = bench / corpus / f"seed{s}" / "predictions"
        methods[s] = {m: P / m for m in EXTRA if (P / m).is_dir()}
        for tv in variants:
            tag, v = tv.split(":")
            folder = OUT / corpus / f"seed{s}" / f"{tag}_{v}"
            methods[s][f"{tag}_{v}"] = folder
            if (folder / ".done").exists():
                continue
            z = np.load(DRAWS / corpus / f"seed{s}" / f"{tag}.npz", allow_pickle=False)
            for key in z.files:
                did, _, g = key.partition("@")
                g = int(g) if g else None
                entry, a = cache.dialog(did), cache.load(did)
                x = z[key].astype(np.float64)
                if g is None:
                    y = combine(x, v, cache.fps, cache.layout.exp).astype(np.float32)
                else:                        # listener mode: the plain mean (sample.py's default there) or n1
                    s_ = Sampling(slow_s=None) if v == "mean" else Sampling()
                    y = SampleMix(s_, cache.fps, cache.layout.exp, g)(x[:1] if v == "n1" else x).astype(np.float32)
                for p in ((0, 1) if g is None else (1 - g,)):
                    write_prediction(prediction_path(folder, did, entry["participants"][p]), y[p], cache.layout,
                                     np.asarray(a.shape)[p])
            (folder / ".done").touch()
    res = Q.score(cdir, methods)
    Q.MODEL_MODES = tuple(os.environ["MODES"].split(",")) if os.environ.get("MODES") else tuple(f"{tv.replace(':', '_')}" for tv in variants)
    lines, _ = Q.corpus_report(corpus, res, [], 1000)
    md += lines
out_md.write_text("\n".join(md) + "\n")
print("\n".join(md))
