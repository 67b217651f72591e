# A record, not a tool: a diagnostic of issue 19 (2026-12-03) with the run's absolute paths (docs/STAGE2.md, 'Quality levers').
import sys, json, numpy as np
from pathlib import Path
sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction, write_prediction
R = Path("/work/runs/quality3"); OUT = Path("/work/runs/smooth")
corpus = sys.argv[1]; variants = sys.argv[2].split(",")
B = R / corpus; cache = Cache(B / "cache"); dl = cache.dialogs("test")
def smooth(x, a):
    y = x.copy(); e = x[0, :50].astype(np.float64)
    for t in range(len(x)):
        e = e + a * (x[t, :50] - e); y[t, :50] = e
    return y
methods = {}
for s in (0, 1, 2):
    S = B / f"seed{s}"
    methods[s] = {"model_dyad": S / "predictions/model_dyad", "model_listener": S / "predictions/model_listener",
                  "dualtalk_class": S / "predictions/dualtalk_class", "dualtalk_class_causal": S / "predictions/dualtalk_class_causal"}
    for base in ("model_dyad", "model_listener"):
        for v in variants:
            out = OUT / corpus / f"seed{s}" / f"{base}_{v}"
            if not (out / ".done").exists():
                for d in dl:
                    n = cache.load(d["id"]).motion.shape[1]
                    for i, pid in enumerate(d["participants"]):
                        p = find_prediction(S / "predictions" / base, d["id"], pid, side=i)
                        x = read_prediction(p, cache.layout, target_frames=n, target_fps=cache.fps)
                        y = smooth(x, float(v[1:])) if base == "model_dyad" or i == 0 or True else x
                        write_prediction(out / p.relative_to(S / "predictions" / base), y.astype(np.float32), cache.layout)
                (out / ".done").touch()
            methods[s][f"{base}_{v}"] = out
res = Q.score(B / "cache", methods)
md, data = Q.corpus_report(corpus, res, [json.loads((B / f"seed{s}/recon.json").read_text()) for s in (0, 1, 2)], 1000)
(OUT / f"SMOOTH_{corpus}.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
