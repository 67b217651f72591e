# A record, not a tool (the run's absolute paths): the level shift of run 11's GPTs (model.level_head) on and off,
# paired (the same GPTs, the same codes), on the bench's test split and on the held-out dialogs of new persons
# (2026-12-04_sample-count.md's), 3 seeds; scored by the bench's scoring, verdict lines as the bench's. Runs with
# 2026-12-04_level-head.patch applied (scripts/sample.py --level-s). Stopped after `default` (report: why).
# Usage: record_level_heldout.py [--workers N] (default 2)
import os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
sys.path.insert(0, "/work/main")
from common.data.cache import Cache
from common.eval import compare as C
from common.eval.scoring import evaluate_method

RUN, HO, PY = Path("/work/runs/quality11"), Path("/work/runs/heldout"), "/work/main/.venv/bin/python"
OUT = HO / "level"
MODES = ("dyad",)     # listener mode was run on the test split of `default` only (time): its rows where they exist
KEYS = ["fid_exp", "p_fid_exp", "mse_exp", "fid_jaw", "mse_jaw", "sid_exp", "jaw_speech_r", "listen_effect_exp"]


def folders(split, corpus, seed):
    if split == "test":
        return RUN / corpus / "cache", RUN / corpus / f"seed{seed}" / "predictions", OUT / "test" / corpus / f"seed{seed}"
    return HO / corpus / "cache", OUT / "heldout" / corpus / f"seed{seed}", OUT / "heldout" / corpus / f"seed{seed}"


def jobs():
    for corpus in ("default", "hard"):
        for split in ("test", "heldout"):
            for seed in (0, 1, 2):
                cache, on_dir, off_dir = folders(split, corpus, seed)
                S = RUN / corpus / f"seed{seed}"
                for mode in MODES:
                    for name, root, extra in ((f"model_{mode}", on_dir, []), (f"model_{mode}_off", off_dir, ["--level-s", "0"])):
                        out = root / name
                        if (out / ".done").exists():
                            continue
                        yield [PY, "scripts/sample.py", "--gpt", S / "stage2/gpt.pt", "--tokenizer", S / "stage1/tokenizer.pt",
                               "--cache", cache, "--split", "test", "--mode", mode, "--out", out, "--seed", seed, "--quiet",
                               "--no-plot", *extra], out


def run(job):
    cmd, out = job
    subprocess.run([str(c) for c in cmd], cwd="/work/main", check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    (out / ".done").touch()
    print("done", out, flush=True)


with ThreadPoolExecutor(int(sys.argv[2]) if len(sys.argv) > 2 else 2) as ex:   # --workers N
    list(ex.map(run, list(jobs())))

for split in ("test", "heldout"):
    for corpus in ("default", "hard"):
        res = {}
        for seed in (0, 1, 2):
            cache, on_dir, off_dir = folders(split, corpus, seed)
            c = Cache(cache)
            base = (RUN / corpus / f"seed{seed}" / "predictions") if split == "test" else (HO / corpus / f"seed{seed}" / "predictions")
            for name, folder in (("model_dyad", on_dir / "model_dyad"), ("model_dyad_off", off_dir / "model_dyad_off"),
                                 ("model_listener", on_dir / "model_listener"),
                                 ("model_listener_off", off_dir / "model_listener_off"),
                                 ("dualtalk_class_causal", base / "dualtalk_class_causal")):
                if name == "dualtalk_class_causal" or (folder / ".done").exists() or (folder.parent / ".done").exists() \
                        or split == "test" and name in ("model_dyad", "model_listener"):
                    res.setdefault(name, []).append(evaluate_method(c, folder, "test", name=name, n_boot=10))
        res = {k: v for k, v in res.items() if len(v) == 3}
        print(f"\n## {split}, {corpus} (3 seeds x {len(res['model_dyad'][0].per_dialog)} dialogs)\n")
        print("| method | " + " | ".join(KEYS) + " |")
        print("| --- |" + " --- |" * len(KEYS))
        for name, rs in res.items():
            print(f"| {name} | " + " | ".join(f"{sum(r.metrics[k] for r in rs) / len(rs):.4g}" for k in KEYS) + " |")
        print()
        for a, b in (("model_dyad", "model_dyad_off"), ("model_listener", "model_listener_off"),
                     ("model_dyad", "dualtalk_class_causal"), ("model_dyad_off", "dualtalk_class_causal"),
                     ("model_listener", "dualtalk_class_causal")):
            if a in res and b in res:
                print(C.verdict(a, b, res, keys=["fid_exp", "p_fid_exp", "mse_exp", "fid_jaw", "p_fid_jaw", "mse_jaw"]))
