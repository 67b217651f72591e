"""A record, not a tool (paths of the run): fit a least-squares jaw gain around the GPT's jaw_mean on val predictions (shipped sampling),
apply it to the test predictions of run 7, score like the bench. Usage: fit_apply.py OUT.md [per_mode|dyad_only]"""
import json, sys
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction, prediction_path, write_prediction

RUN, CAL = Path("/work/runs/quality5"), Path("/work/runs/jawcal")
out_md, policy = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "per_mode")
GPT = {"model_dyad": "stage2", "model_listener": "stage2", "speaker_only": "stage2_speaker_only"}

def jaw_center(gpt):
    sd = torch.load(gpt, map_location="cpu", weights_only=True)["state_dict"]
    return sd["jaw_mean"].numpy().astype(np.float64)

def pairs(cache, folder, split, js):
    P, G = [], []
    for d in cache.dialogs(split):
        a = cache.load(d["id"])
        for i, pid in enumerate(d["participants"]):
            f = find_prediction(folder, d["id"], pid, side=i)
            x = read_prediction(f, cache.layout, target_frames=int(a.motion.shape[1]), target_fps=cache.fps)
            g = np.asarray(a.motion[i], np.float64); T = min(len(x), len(g))
            P.append(x[:T, js]); G.append(g[:T, js])
    return np.concatenate(P), np.concatenate(G)

md, gains = [], {}
for corpus in ("default", "hard"):
    B = RUN / corpus; cache = Cache(B / "cache"); lay = cache.layout
    js = slice(*lay.jaw)
    methods, recons = {}, []
    for s in (0, 1, 2):
        P = B / f"seed{s}" / "predictions"
        methods[s] = {m: P / m for m in ("model_dyad", "model_listener", "speaker_only", "dualtalk_class",
                                         "dualtalk_class_causal", "nn_audio", "mean")}
        recons.append(json.loads((B / f"seed{s}" / "recon.json").read_text()))
        for m in ("model_dyad", "model_listener", "speaker_only"):
            c = jaw_center(B / f"seed{s}" / GPT[m] / "gpt.pt")
            fit_m = m if policy == "per_mode" else ("model_dyad" if m == "model_listener" else m)
            p, t = pairs(cache, CAL / corpus / f"seed{s}" / fit_m, "val", js)
            g = ((p - c) * (t - c)).sum(0) / ((p - c) ** 2).sum(0)
            mse0, mse1 = ((p - t) ** 2).mean(), ((c + g * (p - c) - t) ** 2).mean()
            gains[f"{corpus}/seed{s}/{m}"] = (float(g[0]), float(mse0), float(mse1), len(p))
            folder = P.parent / "predictions" / f"{m}_jawgain_{policy}"
            if not (folder / ".done").exists():
                for d in cache.dialogs("test"):
                    a = cache.load(d["id"])
                    for i, pid in enumerate(d["participants"]):
                        f = find_prediction(P / m, d["id"], pid, side=i)
                        x = read_prediction(f, lay, target_frames=int(a.motion.shape[1]), target_fps=cache.fps).copy()
                        x[:, js] = c + g * (x[:, js] - c)
                        write_prediction(prediction_path(folder, d["id"], pid), x, lay, np.asarray(a.shape)[i])
                (folder / ".done").touch()
            methods[s][f"{m}_jawgain"] = folder
    res = Q.score(B / "cache", methods)
    Q.MODEL_MODES = ("model_dyad_jawgain", "model_listener_jawgain", "model_dyad", "model_listener")
    lines, _ = Q.corpus_report(corpus, res, recons, 1000)
    md += lines
md = ["gains (g, val MSE before, after, frames):"] + [f"- {k}: {v[0]:.3f} ({v[1]*1e4:.3f}e-4 -> {v[2]*1e4:.3f}e-4, {v[3]})" for k, v in gains.items()] + [""] + md
out_md.write_text("\n".join(md) + "\n"); print("\n".join(md))
