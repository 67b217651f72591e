# A record, not a tool (paths are those of the run, 2026-12-05; issue 19).
# within-sequence variance of expression by band (moving-average splits) and by dim group, pred vs truth
import sys, numpy as np
from pathlib import Path
from scipy.ndimage import uniform_filter1d
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction
cache = Cache(sys.argv[1]); fps = cache.fps
dl = cache.dialogs("test"); data = {d["id"]: cache.load(d["id"]) for d in dl}
groups = {"speech0-3": slice(0, 4), "brow4": slice(4, 5), "listen5-9": slice(5, 10), "sec10-29": slice(10, 30),
          "lsec30-39": slice(30, 40), "drift40-49": slice(40, 50)}
def bands(x):
    s8 = uniform_filter1d(x, int(8 * fps), axis=0, mode="nearest")
    s2 = uniform_filter1d(x, int(2 * fps), axis=0, mode="nearest")
    s05 = uniform_filter1d(x, int(0.5 * fps), axis=0, mode="nearest")
    return {">8s": s8, "2-8s": s2 - s8, "0.5-2s": s05 - s2, "<0.5s": x - s05}
for name in ["truth"] + sys.argv[2:]:
    acc = {}
    for d in dl:
        a = data[d["id"]]
        for i, pid in enumerate(d["participants"]):
            g = np.asarray(a.motion[i], np.float64)[:, :50]
            if name == "truth": x = g
            else:
                x = read_prediction(find_prediction(Path(name), d["id"], pid, side=i), cache.layout,
                                    target_frames=len(g), target_fps=fps)[:, :50]
            x = x - x.mean(0)
            for b, xb in bands(x).items():
                for gname, sl in groups.items():
                    acc.setdefault((b, gname), []).append(xb[:, sl].var(0).sum())
    tot = {b: np.mean([np.sum([np.mean(acc[(b, g)]) for g in groups])]) for b in ["<0.5s", "0.5-2s", "2-8s", ">8s"]}
    print(f"{Path(name).name:22s} bands " + " ".join(f"{b} {v:.3f}" for b, v in tot.items()))
    print(" " * 23 + "groups " + " ".join(f"{g} {np.sum([np.mean(acc[(b, g)]) for b in tot]):.3f}" for g in groups))
