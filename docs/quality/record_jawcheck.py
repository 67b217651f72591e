# A record, not a tool: a diagnostic of issue 19 (2026-12-03) with the run's absolute paths (docs/STAGE2.md, 'Quality levers').
import sys, json, subprocess
from pathlib import Path
sys.path.insert(0, "/work/main/scripts")
import quality as Q
corpus = sys.argv[1]; seeds = [int(x) for x in sys.argv[2].split(",")]
R = Path("/work/runs/quality_person") / corpus; J = Path(sys.argv[3] if len(sys.argv) > 3 else "/work/runs/jaw") / corpus; A = Path("/work/runs/anchor") / corpus
methods = {}
for s in seeds:
    S = R / f"seed{s}"
    suf = "a5" if (A / f"seed{s}/model_dyad_a5").exists() else "n150"
    methods[s] = {"model_dyad_a5": A / f"seed{s}/model_dyad_{suf}", "model_listener_a5": A / f"seed{s}/model_listener_{suf}",
                  "dualtalk_class": S / "predictions/dualtalk_class", "dualtalk_class_causal": S / "predictions/dualtalk_class_causal"}
    for mode in ("dyad", "listener"):
        out = J / f"seed{s}/model_{mode}"
        if not (out / ".done").exists():
            subprocess.run([sys.executable, "scripts/sample.py", "--gpt", J / f"seed{s}/stage2/gpt.pt", "--tokenizer", S / "stage1/tokenizer.pt",
                            "--cache", R / "cache", "--split", "test", "--mode", mode, "--out", out, "--seed", str(s), "--quiet", "--no-plot"], check=True, cwd="/work/main")
            (out / ".done").touch()
        methods[s][f"model_{mode}"] = out
res = Q.score(R / "cache", methods)
md, _ = Q.corpus_report(corpus, res, [], 500)
(J / f"JAW_{corpus}.md").write_text("\n".join(md) + "\n"); print("\n".join(md))
