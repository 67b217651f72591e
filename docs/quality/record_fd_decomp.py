# A record, not a tool: a diagnostic of issue 19 (2026-12-03) with the run's absolute paths (docs/STAGE2.md, 'Quality levers').
import sys, numpy as np
from pathlib import Path
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction
from common.eval.metrics import frechet_distance, gaussian_fit
root = Path(sys.argv[1]); corpus = sys.argv[2]; seeds = sys.argv[3].split(",")
methods = sys.argv[4].split(",")
cache = Cache(root / corpus / "cache")
dl = cache.dialogs("test")
data = {d["id"]: cache.load(d["id"]) for d in dl}
for m in methods:
    rows = []
    for s in seeds:
        pd = root / corpus / f"seed{s}" / "predictions" / m
        for d in dl:
            a = data[d["id"]]
            for i, pid in enumerate(d["participants"]):
                p = find_prediction(pd, d["id"], pid, side=i)
                x = read_prediction(p, cache.layout, target_frames=int(a.motion.shape[1]), target_fps=cache.fps)
                g = np.asarray(a.motion[i], np.float64)
                T = min(len(x), len(g)); x, g = x[:T], g[:T]
                for sl in (slice(0, 50), slice(50, 51)):
                    mp, sp = gaussian_fit(x[:, sl]); mt, st = gaussian_fit(g[:, sl])
                    fd = frechet_distance(mp, sp, mt, st)
                    mterm = float(((mp - mt) ** 2).sum())
                    rows.append((sl.start, fd, mterm, fd - mterm))
    r = np.array(rows)
    e = r[r[:, 0] == 0]; j = r[r[:, 0] == 50]
    print(f"{m:24s} exp FD {e[:,1].mean():.3f} = mean {e[:,2].mean():.3f} + cov {e[:,3].mean():.3f} | jaw FD {j[:,1].mean()*1e4:.3f}e-4 = mean {j[:,2].mean()*1e4:.3f} + cov {j[:,3].mean()*1e4:.3f}")
