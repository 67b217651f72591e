"""A record, not a tool: the shipped sampling (4 samples combined by SampleMix, slow_s 0.1 s) against one raw sample
(`--samples 1`, the sampling of runs 1-5), on quality-bench run 6's GPTs (both corpora, 3 seeds), scored like the
bench into one table per corpus (docs/quality/2026-12-04_sample-mix.md). The `*_n1` folders of the default corpus
are the bench's own first sampling (renamed); the others are sampled here. Paths are those of the run."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import quality as Q  # noqa: E402

RUN, OUT = Path(sys.argv[1]), Path(sys.argv[2])           # e.g. /work/runs/quality5 /work/runs/samples6
MODELS = (("model_dyad", "stage2", "dyad"), ("model_listener", "stage2", "listener"),
          ("speaker_only", "stage2_speaker_only", "dyad"))
env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
md = []
for corpus in ("default", "hard"):
    B = RUN / corpus
    cache, methods, recons, cmds = B / "cache", {}, [], []
    for s in (0, 1, 2):
        S, P = B / f"seed{s}", B / f"seed{s}" / "predictions"
        methods[s] = {m: P / m for m in ("model_dyad", "model_listener", "speaker_only", "dualtalk_class",
                                         "dualtalk_class_causal")}
        for m, gpt, mode in MODELS:
            out = methods[s][f"{m}_n1"] = P / f"{m}_n1"
            if not (out / ".done").exists():
                cmds.append((out, [sys.executable, "scripts/sample.py", "--gpt", str(S / gpt / "gpt.pt"), "--tokenizer",
                                   str(S / "stage1/tokenizer.pt"), "--cache", str(cache), "--split", "test", "--mode",
                                   mode, "--out", str(out), "--seed", str(s), "--quiet", "--no-plot", "--samples", "1"]))
        recons.append(json.loads((S / "recon.json").read_text()))
    for i in range(0, len(cmds), 2):                        # two at a time (2 cores)
        procs = [(out, subprocess.Popen(c, cwd=ROOT, env=env)) for out, c in cmds[i:i + 2]]
        for out, p in procs:
            if p.wait() != 0:
                raise SystemExit(f"sampling {out} failed")
            (out / ".done").touch()
    lines, _ = Q.corpus_report(corpus, Q.score(cache, methods), recons, 1000)
    md += lines
OUT.mkdir(parents=True, exist_ok=True)
(OUT / "SAMPLE_MIX.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
