# A record, not a tool: run 5 (partial) of issue 19's bench (2026-12-04) with the run's absolute paths.
import sys, json
from pathlib import Path
sys.path.insert(0, "/work/main/scripts")
import quality as Q
corpus = sys.argv[1]
R4 = Path("/work/runs/quality4") / corpus; J = Path("/work/runs/noidjaw") / corpus
methods = {}
for s in (0, 1, 2):
    P = R4 / f"seed{s}" / "predictions"
    methods[s] = {"model_dyad": J / f"seed{s}/new_dyad", "model_listener": J / f"seed{s}/new_listener",
                  "run4_dyad": P / "model_dyad", "run4_listener": P / "model_listener",
                  **{m: P / m for m in ("dualtalk_class", "dualtalk_class_causal", "nn_audio", "mean")}}
res = Q.score(R4 / "cache", methods)
md, _ = Q.corpus_report(corpus, res, [], 2000)
out = Path("/work/runs/noidjaw") / f"VERDICT_{corpus}.md"; out.write_text("\n".join(md) + "\n"); print("\n".join(md))
