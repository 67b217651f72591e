"""A record, not a tool (paths of the run): a causal one-pole low-pass on the expression dims of the shipped output
(8 samples combined), post hoc on run 7's test predictions (or the held-out ones), scored like the bench.
Usage: filt.py OUT.md test|heldout A1,A2,..."""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction, prediction_path, write_prediction

out_md, where = Path(sys.argv[1]), sys.argv[2]
alphas = [a if a == "lib" else float(a) for a in sys.argv[3].split(",")]
from stage2_gpt.generate import SMOOTH_S, LowPass
RUN, H, OUT = Path("/work/runs/quality5"), Path("/work/runs/heldout"), Path("/work/runs/expfilt")

def onepole(x, a):
    y = np.empty_like(x); y[0] = x[0]
    for t in range(1, len(x)):
        y[t] = y[t - 1] + a * (x[t] - y[t - 1])
    return y

md = []
for corpus in ("default", "hard"):
    cdir = RUN / corpus / "cache" if where == "test" else H / corpus / "cache"
    cache = Cache(cdir); lay = cache.layout; es = slice(*lay.exp)
    methods, recons = {}, []
    for s in (0, 1, 2):
        if where == "test":
            P = RUN / corpus / f"seed{s}" / "predictions"
            base = {"model_dyad": P / "model_dyad", "model_listener": P / "model_listener"}
            methods[s] = {m: P / m for m in ("model_dyad", "model_listener", "speaker_only", "dualtalk_class", "dualtalk_class_causal")}
        else:
            P = H / "pred" / corpus / f"seed{s}"
            base = {"model_dyad": P / "dyad_n8_s0.2", "model_listener": P / "listener_n8_mean"}
            methods[s] = dict(base)
        recons.append(json.loads((RUN / corpus / f"seed{s}" / "recon.json").read_text()))
        for m, src in base.items():
            for a in alphas:
                folder = OUT / where / corpus / f"seed{s}" / f"{m}_a{a}"
                if not (folder / ".done").exists():
                    for d in cache.dialogs("test"):
                        sh = np.asarray(cache.load(d["id"]).shape)
                        for i, pid in enumerate(d["participants"]):
                            f = find_prediction(src, d["id"], pid, side=i)
                            if f is None:
                                continue
                            x = read_prediction(f, lay).copy()
                            x = LowPass(SMOOTH_S, cache.fps, lay.exp)(x) if a == "lib" else x
                            if a != "lib":
                                x[:, es] = onepole(x[:, es], a)
                            write_prediction(prediction_path(folder, d["id"], pid), x, lay, sh[i])
                    (folder / ".done").touch()
                methods[s][f"{m}_a{a}"] = folder
    res = Q.score(cdir, methods)
    Q.MODEL_MODES = tuple(f"{m}_a{a}" for m in ("model_dyad", "model_listener") for a in alphas)
    lines, _ = Q.corpus_report(corpus, res, recons, 1000)
    md += lines
out_md.write_text("\n".join(md) + "\n"); print("\n".join(md))
