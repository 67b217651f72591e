# A record, not a tool: a diagnostic of issue 19 (2026-12-03) with the run's absolute paths (docs/STAGE2.md, 'Quality levers').
import sys, json, numpy as np
from pathlib import Path
sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction, write_prediction
from stage1_vq import load_tokenizer
R = Path("/work/runs/quality_person"); OUT = Path("/work/runs/anchor")
corpus = sys.argv[1]; variants = sys.argv[2].split(",")
B = R / corpus; cache = Cache(B / "cache"); dl = cache.dialogs("test")
def anchor(x, mu, mask, v):
    dev = x[:, mask] - mu[mask]
    y = x.copy()
    if v == "exact":
        y[:, mask] = x[:, mask] - dev.mean(0)
    else:
        n0 = float(v[1:])
        m = np.cumsum(dev, 0) / (np.arange(1, len(x) + 1)[:, None] + n0)
        y[:, mask] = x[:, mask] - m
    return y
methods = {}
for s in (0, 1, 2):
    S = B / f"seed{s}"
    tok = load_tokenizer(S / "stage1/tokenizer.pt")
    mu = tok.motion_mean.numpy().astype(np.float64); mask = tok.reference_mask.numpy()
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
                        write_prediction(out / p.relative_to(S / "predictions" / base), anchor(x, mu, mask, v).astype(np.float32), cache.layout)
                (out / ".done").touch()
            methods[s][f"{base}_{v}"] = out
res = Q.score(B / "cache", methods)
md, data = Q.corpus_report(corpus, res, [json.loads((B / f"seed{s}/recon.json").read_text()) for s in (0, 1, 2)], 1000)
(OUT / f"ANCHOR_{corpus}.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
