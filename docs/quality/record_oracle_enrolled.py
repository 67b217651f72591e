"""A record, not a tool (paths are those of the run, 2026-12-05, sixth session; issue 19). The perfect-sampler rows of
record_oracle_sampler.py (oracle_* / anon_*: fresh draws of the generator's own process, recentred on the train mean)
moved into the enrollment protocol exactly as the bench moves every method (quality.write_enrolled, the bench's
30-s clips), scored with run 19's enrolled dyad row: what a perfect sampler reaches when given the same clip."""
import sys, numpy as np
from pathlib import Path
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
import quality as Q
B = Path("/work/runs/quality19")
for corpus, O in (("default", Path("/work/runs/oracle_default/default")), ("hard", Path("/work/runs/oracle_hard/hard"))):
    cdir = B / corpus / "cache"
    means = Q.enrollment_means(corpus, cdir, B / corpus / "enrollment_30s", 30.0)
    methods = {}
    for s in (0, 1, 2):
        m = {"model_dyad": B / corpus / f"seed{s}" / "enrolled" / "model_dyad"}
        for n in (f"anon_sample_seed{s}", f"oracle_sample_seed{s}"):
            m[n.rsplit("_", 1)[0]] = Q.write_enrolled(cdir, O / n, Path("/work/runs/anon_enrolled") / corpus / n, means)
        m["anon_mean"] = Q.write_enrolled(cdir, O / "anon_mean", Path("/work/runs/anon_enrolled") / corpus / "anon_mean", means)
        methods[s] = m
    res = Q.score(cdir, methods)
    from common.eval import compare as C
    summ = C.summarize(res, ["fid_exp", "mse_exp", "sid_exp", "sid_gt_exp"], n_boot=100)
    for k, v in summ.items():
        print(corpus, k, "FD", round(v["fid_exp"][0], 4), "MSE", round(v["mse_exp"][0], 5), "SID/GT", round(v["sid_exp"][0] / v["sid_gt_exp"][0], 3))
