"""The main job on the synthetic default, end to end: ``make demo`` (or ``make demo DEMO=smoke``).

Each step runs the same command a user would type (printed before it runs), so the demo doubles as a recipe.
Steps already done (their outputs exist) are skipped, so an interrupted demo resumes.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRESETS = {
    # dialogs x seconds of synthetic corpus, workers; configs per stage
    "full": {"dialogs": 40, "seconds": 60, "workers": 2, "out": "runs/demo"},
    "smoke": {"dialogs": 6, "seconds": 12, "workers": 1, "out": "runs/demo-smoke"},
}


def run(cmd: list[str], log: list[str]) -> None:
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"\n$ {line}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    log.append(f"- `{line}` ({time.time() - t0:.0f} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full")
    ap.add_argument("--out", help="run directory (default per preset)")
    args = ap.parse_args(argv)
    p = PRESETS[args.preset]
    out = Path(args.out or p["out"])
    py = sys.executable
    data, cache = out / "data", out / "cache"
    steps: list[str] = []
    t0 = time.time()

    index = data / "dataset_jsons" / "synthetic.json"
    if not index.is_file():
        run([py, "scripts/make_synthetic_corpus.py", "--out", str(data), "--dialogs", str(p["dialogs"]),
             "--seconds", str(p["seconds"]), "--seed", "0"], steps)
    run([py, "scripts/preprocess.py", "--config", "configs/data/synthetic.yaml", "--data-root", str(data),
         "--out", str(cache), "--workers", str(p["workers"])], steps)

    have_stage1 = (ROOT / "stage1_vq" / "train.py").is_file()
    if not have_stage1:
        print(f"\nDemo stopped after preprocessing ({time.time() - t0:.0f} s): stage 1 (tokenizer) and stage 2 (GPT) "
              f"are not in this checkout yet. The cache is in {cache}.")
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
