# A record, not a tool (paths of the run): per-sequence jaw spread (std ratio to the truth), correlation, level offset, MSE.
import sys, numpy as np
from pathlib import Path
from common.data.cache import Cache
from common.eval.predictions import find_prediction, read_prediction
root = Path(sys.argv[1]); corpus = sys.argv[2]; methods = sys.argv[3].split(",")
cache = Cache(root / corpus / "cache"); dl = cache.dialogs("test")
data = {d["id"]: cache.load(d["id"]) for d in dl}
for m in methods:
    R=[]
    for s in "012":
        pd = root / corpus / f"seed{s}" / "predictions" / m
        for d in dl:
            a = data[d["id"]]
            for i, pid in enumerate(d["participants"]):
                x = read_prediction(find_prediction(pd, d["id"], pid, side=i), cache.layout, target_frames=int(a.motion.shape[1]), target_fps=cache.fps)
                g = np.asarray(a.motion[i], np.float64); T=min(len(x),len(g)); xj=x[:T,50]; gj=g[:T,50]
                R.append((xj.std()/gj.std(), np.corrcoef(xj,gj)[0,1], (xj.mean()-gj.mean())/gj.std(), ((xj-gj)**2).mean()*1e4))
    R=np.array(R); print(f"{m:22s} jaw std ratio {R[:,0].mean():.3f} (p10 {np.percentile(R[:,0],10):.2f} p90 {np.percentile(R[:,0],90):.2f})  r {R[:,1].mean():.3f}  mean off/std {R[:,2].mean():+.3f} |{np.abs(R[:,2]).mean():.3f}|  mse {R[:,3].mean():.3f}e-4")
