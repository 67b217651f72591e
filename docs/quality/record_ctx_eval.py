# A record, not a tool: a diagnostic of issue 19 (2026-12-03) with the run's absolute paths (docs/STAGE2.md, 'Quality levers').
import sys, json, subprocess
from pathlib import Path
sys.path.insert(0, "/work/main/scripts")
import quality as Q
corpus = sys.argv[1]; seeds = [int(x) for x in sys.argv[2].split(",")]; tag = sys.argv[3]   # tag: run dir name under /work/runs
R = Path("/work/runs/quality3") / corpus; J = Path("/work/runs") / tag / corpus
methods = {}
for s in seeds:
    S = R / f"seed{s}"
    methods[s] = {m: S / "predictions" / m for m in ("model_dyad", "model_listener", "speaker_only", "dualtalk_class", "dualtalk_class_causal")}
    for mode in ("dyad", "listener"):
        out = J / f"seed{s}/new_{mode}"
        if not (out / ".done").exists():
            subprocess.run([sys.executable, "scripts/sample.py", "--gpt", J / f"seed{s}/stage2/gpt.pt", "--tokenizer", S / "stage1/tokenizer.pt",
                            "--cache", R / "cache", "--split", "test", "--mode", mode, "--out", out, "--seed", str(s), "--quiet", "--no-plot"], check=True, cwd="/work/main")
        methods[s][f"new_{mode}"] = out
res = Q.score(R / "cache", methods)
md, _ = Q.corpus_report(corpus, res, [], 500)
(J / f"REPORT_{corpus}.md").write_text("\n".join(md) + "\n"); print("\n".join(md))
