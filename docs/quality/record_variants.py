# A record, not a tool: a diagnostic of issue 19 (2026-12-03) with the run's absolute paths (docs/STAGE2.md, 'Quality levers').
"""usage: variants.py CORPUS name=flag,flag name2=... ; samples dyad+listener for 3 seeds, scores vs model & DT."""
import sys, json, subprocess
from pathlib import Path
sys.path.insert(0, "/work/main/scripts")
import quality as Q
R = Path("/work/runs/quality_person"); OUT = Path("/work/runs/anchor")
corpus = sys.argv[1]; specs = [a.split("=", 1) for a in sys.argv[2:]]
B = R / corpus
methods = {}
for s in (0, 1, 2):
    S = B / f"seed{s}"
    methods[s] = {m: S / "predictions" / m for m in ("model_dyad", "model_listener", "dualtalk_class", "dualtalk_class_causal")}
    for name, flags in specs:
        flags = [f for f in flags.split(",") if f]
        for mode in ("dyad", "listener"):
            out = OUT / corpus / f"seed{s}" / f"model_{mode}_{name}"
            if not (out / ".done").exists():
                subprocess.run([sys.executable, "scripts/sample.py", "--gpt", S / "stage2/gpt.pt", "--tokenizer", S / "stage1/tokenizer.pt",
                                "--cache", B / "cache", "--split", "test", "--mode", mode, "--out", out, "--seed", str(s), "--quiet", "--no-plot", *flags],
                               check=True, cwd="/work/main")
                (out / ".done").touch()
            methods[s][f"model_{mode}_{name}"] = out
res = Q.score(B / "cache", methods)
md, data = Q.corpus_report(corpus, res, [json.loads((B / f"seed{s}/recon.json").read_text()) for s in (0, 1, 2)], 1000)
tag = "_".join(n for n, _ in specs)
(OUT / f"VAR_{corpus}_{tag}.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
