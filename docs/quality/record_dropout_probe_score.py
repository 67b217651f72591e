"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19): score the dropout probe (record_dropout_probe.sh) paired against the shipped GPTs (the tns0.2p0 chains of record_token_noise_split.sh). Usage: record_dropout_probe_score.py SEEDS"""
import sys
from pathlib import Path
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.eval import compare as C
B, T = Path("/work/runs/quality10"), Path("/work/runs/tn3")
seeds = [int(s) for s in sys.argv[1].split(",")]
methods = {}
for s in seeds:
    m = {}
    for mode in ("dyad", "listener"):
        m[f"{mode}_shipped"] = T / "default" / f"seed{s}" / "tns0.2p0" / f"model_{mode}"
        m[f"{mode}_do0.1"] = T / "default" / f"seed{s}" / "do0.1" / f"model_{mode}"
    methods[s] = m
res = Q.score(B / "default" / "cache", methods)
for mode in ("dyad", "listener"):
    print(C.verdict(f"{mode}_do0.1", f"{mode}_shipped", res, n_boot=1000))
summ = C.summarize(res, ["fid_exp", "p_fid_exp", "mse_exp", "fid_jaw", "mse_jaw"], n_boot=200)
for k, v in summ.items():
    print(k, {m: round(x[0], 5) for m, x in v.items() if x is not None})
