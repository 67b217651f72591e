"""A record, not a tool (paths are those of the run, 2026-12-05, fifth session; issue 19). Run 17's regressors paired
by protocol: each DualTalk-class regressor of the dyad protocol (both audio tracks only) against the same regressor
of DualTalk's protocol (the partner's true motion read), same seeds and test dialogs, scored like the bench.
Usage: record_protocol_pairs.py BENCH_DIR"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
import quality as Q                                  # noqa: E402
from common.eval import compare as C                 # noqa: E402

bench = Path(sys.argv[1])
for corpus in ("default", "hard"):
    names = ("dualtalk_class", "dualtalk_class_dyad", "dualtalk_class_causal", "dualtalk_class_causal_dyad")
    methods = {s: {n: bench / corpus / f"seed{s}" / "predictions" / n for n in names} for s in (0, 1, 2)}
    results = Q.score(bench / corpus / "cache", methods)
    print(f"## `{corpus}`")
    for a, b in (("dualtalk_class_dyad", "dualtalk_class"), ("dualtalk_class_causal_dyad", "dualtalk_class_causal")):
        print(C.verdict(a, b, results, n_boot=1000))
