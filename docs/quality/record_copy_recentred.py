"""A record, not a tool (paths are those of the run, 2026-12-05, sixth session; issue 19): a second reader's variant of
the copying baselines in the enrollment protocol, not the bench's (docs/quality/2026-12-05_enrollment.md)."""
# the second reader's alternative for the copying baselines in the enrollment protocol: the copy recentred on its own
# sequence mean, then placed at the person's clip mean (3 seeds)
import sys, numpy as np
from pathlib import Path
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.data.cache import Cache
from common.eval import compare as C
from common.eval.predictions import find_prediction, prediction_path, read_prediction, write_prediction
B = Path("/work/runs/quality19"); W = Path("/work/runs/copy_recentred")
for corpus in ("default", "hard"):
    cdir = B / corpus / "cache"; c = Cache(cdir); a, b = c.layout.exp
    means = Q.enrollment_means(corpus, cdir, B / corpus / "enrollment_30s", 30.0)
    methods = {}
    for s in (0, 1, 2):
        m = {"model_dyad": B / corpus / f"seed{s}" / "enrolled" / "model_dyad",
             "model_listener": B / corpus / f"seed{s}" / "enrolled" / "model_listener"}
        for name in ("mirror", "random_other"):
            out = W / corpus / f"seed{s}" / name
            for d in c.dialogs("test"):
                for i, pid in enumerate(d["participants"]):
                    x = read_prediction(find_prediction(B / corpus / f"seed{s}" / "predictions" / name, d["id"], pid, side=i), c.layout)
                    x[:, a:b] += means[pid][a:b] - x[:, a:b].mean(0)
                    write_prediction(prediction_path(out, d["id"], pid), x.astype(np.float32), c.layout)
            m[name + "_recentred"] = out
        methods[s] = m
    res = Q.score(cdir, methods)
    summ = C.summarize(res, ["fid_exp", "p_fid_exp", "mse_exp"], n_boot=200)
    for k, v in summ.items():
        print(corpus, k, {kk: round(vv[0], 4) for kk, vv in v.items()})
    for mm in ("model_dyad", "model_listener"):
        for o in ("mirror_recentred", "random_other_recentred"):
            print(C.verdict(mm, o, res, n_boot=1000)[:200])
