# A record, not a tool (paths are those of the run, 2026-12-05; issue 19).
# FD-exp per sequence = mean term + covariance term, for prediction folders given as paths
import sys, numpy as np
from pathlib import Path
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction
from common.eval.metrics import frechet_distance, gaussian_fit
cache = Cache(sys.argv[1])
dl = cache.dialogs("test")
data = {d["id"]: cache.load(d["id"]) for d in dl}
for pdir in sys.argv[2:]:
    rows = []
    for d in dl:
        a = data[d["id"]]
        for i, pid in enumerate(d["participants"]):
            x = read_prediction(find_prediction(Path(pdir), d["id"], pid, side=i), cache.layout,
                                target_frames=int(a.motion.shape[1]), target_fps=cache.fps)
            g = np.asarray(a.motion[i], np.float64)
            T = min(len(x), len(g)); x, g = x[:T, :50], g[:T, :50]
            mp, sp = gaussian_fit(x); mt, st = gaussian_fit(g)
            fd = frechet_distance(mp, sp, mt, st)
            rows.append((fd, float(((mp - mt) ** 2).sum()), np.trace(sp), np.trace(st)))
    r = np.array(rows).mean(0)
    print(f"{Path(pdir).name:28s} FD {r[0]:.3f} = mean {r[1]:.3f} + cov {r[0]-r[1]:.3f}; tr(Sp) {r[2]:.3f} tr(St) {r[3]:.3f}")
