"""A record, not a tool (paths of the run): the jaw's spread and least-squares gain on the held-out dialogs (new persons), and the val-fitted gains applied there."""
import re, sys, numpy as np, torch
from pathlib import Path
sys.path.insert(0, "/work/main")
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction
from common.eval.metrics import frechet_distance, gaussian_fit
H = Path("/work/runs/heldout"); Q = Path("/work/runs/quality5")
gains = {m.group(1): float(m.group(2)) for m in re.finditer(r"- (\S+): ([\d.]+) \(", open("/work/runs/jawcal/REPORT_per_mode.md").read())}
for corpus in ("default", "hard"):
    cache = Cache(H / corpus / "cache"); js = slice(*cache.layout.jaw)
    for mode, folder, key in (("dyad", "dyad_n8_s0.2", "model_dyad"), ("listener", "listener_n8_mean", "model_listener")):
        R = []
        for s in "012":
            c = torch.load(Q / corpus / f"seed{s}" / "stage2" / "gpt.pt", map_location="cpu", weights_only=True)["state_dict"]["jaw_mean"].numpy().astype(float)
            gv = gains[f"{corpus}/seed{s}/{key}"]
            P, G, fds = [], [], []
            for d in cache.dialogs("test"):
                a = cache.load(d["id"])
                for i, pid in enumerate(d["participants"]):
                    f = find_prediction(H / "pred" / corpus / f"seed{s}" / folder, d["id"], pid, side=i)
                    if f is None: continue
                    x = read_prediction(f, cache.layout, target_frames=int(a.motion.shape[1]), target_fps=cache.fps)
                    g = np.asarray(a.motion[i], float); T = min(len(x), len(g)); p, t = x[:T, js], g[:T, js]
                    P.append(p); G.append(t)
                    row = []
                    for gg in (1.0, gv):
                        y = c + gg * (p - c); mp, sp = gaussian_fit(y); mt, st = gaussian_fit(t)
                        row += [frechet_distance(mp, sp, mt, st) * 1e4, ((y - t) ** 2).mean() * 1e4]
                    fds.append(row + [p.std() / t.std()])
            p, t = np.concatenate(P), np.concatenate(G)
            gopt = float(((p - c) * (t - c)).sum() / ((p - c) ** 2).sum())
            R.append([gv, gopt] + list(np.mean(fds, 0)))
        R = np.array(R)
        print(f"{corpus} {mode}: val gains {np.round(R[:,0],3)}, held-out LS gains {np.round(R[:,1],3)}, spread ratio {R[:,6].mean():.3f}; "
              f"FD-jaw {R[:,2].mean():.3f} -> {R[:,4].mean():.3f} e-4, MSE-jaw {R[:,3].mean():.3f} -> {R[:,5].mean():.3f} e-4")
