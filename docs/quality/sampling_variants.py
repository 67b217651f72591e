"""A record, not a tool: the post-hoc sampling variants of quality-bench run 2 (hard corpus, 3 seeds), scored like
the bench into one table (docs/quality/2026-12-03_sampling-variants_hard.md). Paths are those of the run."""
import subprocess, sys, json
from pathlib import Path
sys.path.insert(0, "/work/wt-bench2"); sys.path.insert(0, "/work/wt-bench2/scripts")
import quality as Q
B = Path("/work/runs/quality_person/hard"); cache = B / "cache"
variants = {"t08": ["--temperature", "0.8"], "p09": ["--top-p", "0.9"], "n4": ["--samples", "4"]}
methods = {}
for s in (0, 1, 2):
    S = B / f"seed{s}"
    methods[s] = {"model_dyad": S / "predictions/model_dyad", "dualtalk_class_causal": S / "predictions/dualtalk_class_causal"}
    for v, flags in variants.items():
        out = S / "predictions" / f"model_dyad_{v}"
        if not (out / ".done").exists():
            subprocess.run([sys.executable, "scripts/sample.py", "--gpt", S / "stage2/gpt.pt", "--tokenizer", S / "stage1/tokenizer.pt",
                            "--cache", cache, "--split", "test", "--mode", "dyad", "--out", out, "--seed", str(s), "--quiet", "--no-plot", *flags],
                           check=True, cwd="/work/wt-bench2", env={"PYTHONPATH": "/work/wt-bench2", "PATH": "/usr/bin:/bin"})
            (out / ".done").touch()
        methods[s][f"model_dyad_{v}"] = out
res = Q.score(cache, methods)
Q.MODEL_MODES = ("model_dyad",)
md, data = Q.corpus_report("hard", res, [json.loads((B / f"seed{s}/recon.json").read_text()) for s in (0, 1, 2)], 1000)
Path("/work/runs/sampling/SAMPLING.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
