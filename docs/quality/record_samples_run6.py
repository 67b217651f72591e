"""A record, not a tool: averaging N samples (`scripts/sample.py --samples N`), post hoc on quality-bench run 6's GPTs
(both corpora, 3 seeds; jaw head on, identity off, mean anchor), scored like the bench into one table per corpus
(docs/quality/2026-12-04_samples.md). Paths are those of the run."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import quality as Q  # noqa: E402

RUN, OUT = Path(sys.argv[1]), Path(sys.argv[2])           # e.g. /work/runs/quality5 /work/runs/samples6
VARIANTS = {"n4": 4, "n2": 2}
JOBS = [(m, gpt, mode, v) for m, gpt, mode in (("model_dyad", "stage2", "dyad"), ("model_listener", "stage2", "listener"),
                                               ("speaker_only", "stage2_speaker_only", "dyad"))
        for v in VARIANTS if v == "n4" or m == "model_dyad"]
md = []
for corpus in ("default", "hard"):
    B = RUN / corpus
    cache, methods, recons = B / "cache", {}, []
    cmds = []
    for s in (0, 1, 2):
        S = B / f"seed{s}"
        P = S / "predictions"
        methods[s] = {m: P / m for m in ("model_dyad", "model_listener", "speaker_only", "dualtalk_class",
                                         "dualtalk_class_causal")}
        for m, gpt, mode, v in JOBS:
            out = P / f"{m}_{v}"
            methods[s][out.name] = out
            if not (out / ".done").exists():
                cmds.append((out, [sys.executable, "scripts/sample.py", "--gpt", str(S / gpt / "gpt.pt"), "--tokenizer",
                                   str(S / "stage1/tokenizer.pt"), "--cache", str(cache), "--split", "test", "--mode",
                                   mode, "--out", str(out), "--seed", str(s), "--quiet", "--no-plot",
                                   "--samples", str(VARIANTS[v])]))
        recons.append(json.loads((S / "recon.json").read_text()))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    for i in range(0, len(cmds), 2):                        # two at a time (2 cores)
        procs = [(out, subprocess.Popen(c, cwd=ROOT, env=env)) for out, c in cmds[i:i + 2]]
        for out, p in procs:
            if p.wait() != 0:
                raise SystemExit(f"sampling {out} failed")
            (out / ".done").touch()
    res = Q.score(cache, methods)
    Q.MODEL_MODES = ("model_dyad_n4", "model_listener_n4")
    lines, _ = Q.corpus_report(corpus, res, recons, 1000)
    md += lines
OUT.mkdir(parents=True, exist_ok=True)
(OUT / "SAMPLES.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
