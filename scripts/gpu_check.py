"""The GPU path in one prepared command: paper-size training of both stages through ``accelerate launch`` with
the FSDP configs (one process) and bf16, each stopped halfway and resumed from its checkpoint, then batched
offline generation (frames/s against the batch size), streaming per-step latency and peak device memory.
Writes one JSON and prints a table. About 6 minutes on one H200 (368 s measured on 2026-12-04).

    scripts/gpu_check.sh                       # = python scripts/gpu_check.py --out runs/gpu_check
    python scripts/gpu_check.py --out runs/gpu_check [--cache CACHE] [--device cuda:1]
    python scripts/gpu_check.py --tiny --out /tmp/gc     # tiny sizes, runs on CPU (tests/test_gpu_check.py)

Steps (each a command a user would run; their logs go to OUT/logs/):

1. data: a synthetic corpus (24 dialogs x 120 s) and its cache, or ``--cache`` (read; tokens are written into it).
2. stage 1 at paper size (``configs/stage1_vq.yaml``: hidden 512, Q 8 x K 512, batch 256 x 2 x 192 frames) through
   ``accelerate launch --config_file configs/accelerate/fsdp_stage1.yaml --num_processes 1`` (FSDP2 wrapping
   ``ResBlock``, bf16): ``--stage1-steps`` steps, stopped at half (``stop_after``) and resumed by rerunning the
   same command; then the cache's tokens (``python -m stage1_vq.tokens``).
3. stage 2 at paper size (``configs/stage2_gpt.yaml``: 12 x 512, window 256, batch 32) likewise
   (``fsdp_stage2.yaml``: FSDP2 wrapping x-transformers' ``Attention`` / ``FeedForward``).
4. generation with the exported GPT on the device: offline, ``--batch-sizes`` dialogs at once (one KV cache) and as
   many samples of one dialog: frames/s, ms/step, peak device memory; streaming one token step per push:
   median / p99 ms; the GPU targets of docs/STAGE2.md (batched >= 100,000 frames/s at paper size, p99 step <= 5 ms).
   Each with the plain step and with the captured one (``--cuda-graph``: stage2_gpt/graphed_step.py), and how far
   their codes agree from the same seed (4 samples, listener mode, nucleus sampling, a batch of dialogs that end).

``--generation-only``: step 4 alone, on a small corpus, with a paper-size GPT of random weights (a generation step
costs what a trained one's does) and a briefly trained paper-size tokenizer: about 2 minutes on an H200.

The device is the machine's accelerator (``torch.accelerator``), else the CPU; ``--tiny`` shrinks every size so
the same path runs on a CPU in about a minute (what the tests run, so the check cannot rot).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the in-process steps import the project without an install, like the subprocesses
    sys.path.insert(0, str(ROOT))
FSDP = {1: ROOT / "configs" / "accelerate" / "fsdp_stage1.yaml", 2: ROOT / "configs" / "accelerate" / "fsdp_stage2.yaml"}
PAPER = {1: ROOT / "configs" / "stage1_vq.yaml", 2: ROOT / "configs" / "stage2_gpt.yaml"}
SCRIPT = {1: ROOT / "stage1_vq" / "train.py", 2: ROOT / "stage2_gpt" / "train.py"}
RUN = ["train.val_every=0", "train.tracker=none", "train.progress=false", "train.log_every=10"]
TINY = {1: ["window=32", "model.hidden=32", "model.code_dim=16", "model.num_quantizers=2", "model.codebook_size=16",
            "train.batch_size=4", "train.num_workers=0", "train.warmup_steps=2", "train.log_every=2"],
        2: ["window=16", "model.dim=32", "model.depth=1", "model.heads=2", "model.dim_head=16",
            "model.attn_window=8", "model.audio_hidden=16", "model.head_hidden=32", "train.batch_size=4",
            "train.num_workers=0", "train.warmup_steps=2", "train.log_every=2"]}


def device_name() -> str:
    """The machine's accelerator ("cuda:0", ...), else "cpu"."""
    import torch
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return "cpu" if acc is None else f"{acc.type}:{torch.accelerator.current_device_index()}"


class Check:
    """Runs the steps, keeps every measurement in ``self.report`` and the logs under ``out/logs``."""

    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.report = {"command": " ".join(["python scripts/gpu_check.py", *args.argv]), "date": time.strftime("%Y-%m-%d %H:%M"),
                       "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs", "tiny": args.tiny,
                       "device": args.device, "steps": {}, "failed": None}

    def run(self, name: str, cmd: list[str], env: dict | None = None) -> str:
        """A step's command, its output in logs/<name>.log; raises with the log's tail when it fails."""
        log = self.out / "logs" / f"{name}.log"
        full_env = dict(os.environ, **(env or {}))
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        full_env.setdefault("WANDB_MODE", "disabled")
        print(f"$ {' '.join(cmd)}", flush=True)
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True)
        log.write_text(r.stdout + r.stderr)
        self.report["steps"].setdefault(name, {})["seconds"] = round(time.perf_counter() - t, 1)
        if r.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {r.returncode}); {log}:\n{(r.stdout + r.stderr)[-3000:]}")
        return r.stdout + r.stderr

    # --- 1. data -------------------------------------------------------------------------------------------------
    def data(self) -> Path:
        if self.args.cache:
            return Path(self.args.cache)
        corpus, cache = self.out / "corpus", self.out / "cache"
        dialogs, seconds = (4, 12) if self.args.tiny else (4, 60) if self.args.generation_only else (24, 120)
        self.run("corpus", [sys.executable, "scripts/make_synthetic_corpus.py", "--out", str(corpus), "--dialogs",
                            str(dialogs), "--seconds", str(seconds), "--seed", "0"])
        self.run("preprocess", [sys.executable, "scripts/preprocess.py", "--config", "configs/data/synthetic.yaml",
                                "--data-root", str(corpus), "--out", str(cache), "--workers",
                                str(1 if self.args.tiny else min(8, os.cpu_count() or 1)), "--quiet"])
        return cache

    # --- 2, 3. training ------------------------------------------------------------------------------------------
    def train(self, stage: int, cache: Path, extra: list[str]) -> Path:
        """Paper-size training of ``stage`` through accelerate + FSDP (1 process), stopped at half and resumed."""
        steps = self.args.stage1_steps if stage == 1 else self.args.stage2_steps
        out = self.out / f"stage{stage}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP[stage]),
               "--num_processes", "1", str(SCRIPT[stage]), "--config", str(PAPER[stage]), f"cache={cache}",
               f"out_dir={out}", f"train.max_steps={steps}", f"train.save_every={steps // 2}",
               f"train.warmup_steps={max(1, steps // 10)}", *RUN, *(TINY[stage] if self.args.tiny else []), *extra]
        env = {"ACCELERATE_USE_CPU": "true"} if self.args.device == "cpu" else {}
        first = self.run(f"stage{stage}_first_half", cmd + [f"stop_after={steps // 2}"], env)
        second = self.run(f"stage{stage}_resumed", cmd, env)
        resumed = re.findall(r"from step (\d+)", second)
        artifact = out / ("tokenizer.pt" if stage == 1 else "gpt.pt")
        log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        train = [e for e in log if "train/windows_per_s" in e]
        peak = max((e.get("train/peak_device_mb", 0.0) for e in train), default=0.0)
        cfg = json.loads((out / "config.json").read_text())
        self.report["steps"][f"stage{stage}"] = {
            "config": str(PAPER[stage].relative_to(ROOT)), "fsdp": str(FSDP[stage].relative_to(ROOT)),
            "model": cfg["model"], "batch_size": cfg["train"]["batch_size"], "window": cfg["window"],
            "mixed_precision": cfg["train"]["mixed_precision"], "steps": steps,
            "first_half_from_step": int((re.findall(r"from step (\d+)", first) or [-1])[0]),
            "resumed_from_step": int(resumed[0]) if resumed else -1, "final_step": train[-1]["step"] if train else -1,
            "windows_per_s": train[-1]["train/windows_per_s"] if train else 0.0, "final_loss": train[-1]["train/loss"] if train else None,
            "peak_device_mb": peak, "exported": artifact.is_file(),
            "distributed_type": (re.findall(r"DistributedType\.(\w+)", first) or ["?"])[0]}
        if not artifact.is_file() or not resumed or int(resumed[0]) != steps // 2:
            raise RuntimeError(f"stage {stage}: the resume did not continue from step {steps // 2} "
                               f"(found {resumed}) or {artifact} was not exported")
        return artifact

    def generation_only_models(self, cache: Path) -> tuple[Path, Path]:
        """``--generation-only``: a paper-size tokenizer trained for a few steps (in-process) and its tokens, and
        a paper-size GPT of random weights."""
        from common.data.cache import Cache
        from stage1_vq import load_stage1_config
        from stage1_vq.train import train
        from stage2_gpt.speed import export_untrained
        out = self.out / "stage1"
        t = time.perf_counter()
        cfg = load_stage1_config(PAPER[1], [f"cache={cache}", f"out_dir={out}", "train.max_steps=4", "train.save_every=4", "train.batch_size=16",
                                            "train.warmup_steps=1", "train.num_workers=0", *RUN,
                                            *((TINY[1] + ["train.mixed_precision=no"]) if self.args.tiny else [])])
        tok = Path(train(cfg)["artifact"])
        self.report["steps"]["stage1_brief"] = {"seconds": round(time.perf_counter() - t, 1)}
        self.tokens(tok, cache)
        gpt = self.out / "stage2_untrained" / "gpt.pt"
        gpt.parent.mkdir(parents=True, exist_ok=True)
        config = PAPER[2]
        if self.args.tiny:                        # the tiny sizes of step 3, written as a config file
            import yaml
            from stage2_gpt.config import load_stage2_config
            from common.config import to_dict
            config = self.out / "stage2_tiny.yaml"
            config.write_text(yaml.safe_dump(to_dict(load_stage2_config(PAPER[2], TINY[2]))))
        export_untrained(str(config), str(tok), Cache(cache), gpt)
        return gpt, tok

    def tokens(self, tok: Path, cache: Path) -> None:
        """The cache's tokens (stage 2 and the jaw statistics read them)."""
        self.run("tokens", [sys.executable, "-m", "stage1_vq.tokens", "--tokenizer", str(tok), "--cache", str(cache)])

    # --- 4. generation -------------------------------------------------------------------------------------------
    def generation(self, gpt: Path, tokenizer: Path, cache: Path) -> None:
        import numpy as np
        import torch

        from common.data.cache import Cache
        from stage2_gpt import speed as B
        from stage2_gpt.generate import Generator, Sampling
        torch.set_num_threads(1 if self.args.device == "cpu" else torch.get_num_threads())
        gen = Generator.load(gpt, tokenizer, self.args.device)
        c = Cache(cache)
        dialog = c.load((c.dialogs("test") or c.dialogs())[0]["id"])
        audio = np.array(dialog.audio, np.float32)
        seconds = 4.0 if self.args.tiny else 20.0
        report = self.report["steps"]["generation"] = {"model": B.describe(gen)}
        for graph in {"off": [False], "on": [True], "both": [False, True]}[self.args.cuda_graph]:
            gen.cuda_graph = graph
            rows = B.bench_batches(gen, audio, batches=tuple(self.args.batch_sizes), seconds=seconds)
            B.reset_peak(gen.device)
            st = B.bench_streaming(gen, B.tile_audio(audio, int(seconds * gen.fps)), skip=5)
            stream = {k: st[k] for k in ("steps", "ms_per_step_median", "ms_per_step_p99", "ms_per_step_max", "frames_per_s")}
            stream["peak_device_mb"] = B.peak_device_mb(gen.device)
            best = max(rows, key=lambda r: r["frames_per_s"])
            one = next(r for r in rows if r["batch"] == 1 and r["sequences"] == "dialogs")
            results = {"offline": {"kv_cache_b1": {"x_realtime": one["x_realtime"]},
                                   "kv_cache_batched": {"frames_per_s": best["frames_per_s"]}},
                       "streaming": {"features": stream, "latency": B.latency(gen, stream["ms_per_step_p99"])}}
            report["cuda_graph" if graph else "plain"] = {
                "batches": rows, "streaming": stream, "latency": results["streaming"]["latency"],
                "targets": B.check_targets(results, gen.device, B.describe(gen))}
        if self.args.cuda_graph != "off":          # the two steps' codes from the same seed
            frames = int(seconds * gen.fps)
            report["agreement"] = self.agreement(gen, B.tile_audio(audio, frames),
                                                 B.tile_audio(np.array(dialog.motion, np.float32), frames))

    @staticmethod
    def agreement(gen, audio, motion) -> dict:
        """Codes of the plain and the captured step from the same seeds: 4 samples (the first case), listener mode,
        nucleus sampling, and a batch of 3 dialogs of different lengths (rows leave the batch: captured again).
        Per case: token steps where every row and level agree, and the first that differs."""
        import numpy as np

        from stage2_gpt.generate import Sampling
        T = audio.shape[1]
        cases = {"4 samples": lambda: [gen.generate(audio, sampling=Sampling(seed=1), num_samples=4)],
                 "listener": lambda: [gen.generate(audio, given=1, given_motion=motion[1], sampling=Sampling(seed=2))],
                 "top-p 0.9": lambda: [gen.generate(audio, sampling=Sampling(seed=3, top_p=0.9), num_samples=2)],
                 "3 dialogs": lambda: gen.generate_many([audio, audio[:, :T // 2], audio[:, :T // 3]],
                                                        sampling=Sampling(seed=4))}
        out = {}
        for name, run in cases.items():
            codes = []
            for graph in (False, True):
                gen.cuda_graph = graph
                codes.append(np.concatenate([r.codes for r in run()], 1))
            same = (codes[0] == codes[1]).all(axis=(0, 2))                       # per token step, every row and level
            out[name] = {"steps": int(same.size), "equal_steps": int(same.sum()),
                         "first_difference": int(np.argmin(same)) if not same.all() else None}
        gen.cuda_graph = False
        return {**out["4 samples"], "cases": out}

    def table(self) -> str:
        from common.eval.tables import markdown_table
        s, rows = self.report["steps"], []
        for stage in (1, 2):
            t = s.get(f"stage{stage}")
            if t:
                m = t["model"]
                size = (f"hidden {m['hidden']}, Q {m['num_quantizers']} x K {m['codebook_size']}" if stage == 1
                        else f"{m['depth']} x {m['dim']}")
                rows.append({"check": f"stage {stage} ({size}), {t['distributed_type']}, {t['mixed_precision']}",
                             "result": f"{t['final_step']} steps, {t['windows_per_s']:.1f} windows/s, resumed from "
                                       f"{t['resumed_from_step']}, peak {t['peak_device_mb']:.0f} MB, loss "
                                       f"{t['final_loss']:.3f}"})
        g = s.get("generation") or {}
        for step in ("plain", "cuda_graph"):
            if step not in g:
                continue
            name = "plain step" if step == "plain" else "CUDA graph"
            for r in g[step]["batches"]:
                rows.append({"check": f"{name}: offline, {r['batch']} {r['sequences']} at once",
                             "result": f"{r['frames_per_s']:.0f} frames/s ({r['ms_per_step']:.2f} ms/step), "
                                       f"peak {r['peak_device_mb']:.0f} MB"})
            st = g[step]["streaming"]
            rows.append({"check": f"{name}: streaming, one token step per push",
                         "result": f"median {st['ms_per_step_median']:.2f} ms, p99 {st['ms_per_step_p99']:.2f} ms, "
                                   f"peak {st['peak_device_mb']:.0f} MB"})
            rows += [{"check": f"{name}: {t['target']}", "result": t["verdict"]} for t in g[step]["targets"]]
        for name, a in g.get("agreement", {}).get("cases", {}).items():
            rows.append({"check": f"CUDA graph vs plain step: codes from the same seed ({name})",
                         "result": f"{a['equal_steps']} of {a['steps']} token steps equal"
                                   + ("" if a["first_difference"] is None else f", first difference at step {a['first_difference']}")})
        if self.report["failed"]:
            rows.append({"check": "FAILED", "result": self.report["failed"].splitlines()[0]})
        return markdown_table(rows, ["check", "result"], f"GPU check on {self.report['device']} "
                                                         f"({self.report.get('accelerator', 'no accelerator')})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gpu_check", help="folder of the JSON, the logs and the runs")
    ap.add_argument("--cache", help="an existing cache (its tokens folder is written) instead of a synthetic one")
    ap.add_argument("--device", help="torch device of the generation steps (default: the accelerator, else cpu)")
    ap.add_argument("--stage1-steps", type=int, default=300)
    ap.add_argument("--stage2-steps", type=int, default=300)
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 128, 512])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and steps: the same path on a CPU in about a minute")
    ap.add_argument("--cuda-graph", choices=["off", "on", "both"], default="both",
                    help="generation with the plain step, the captured one (stage2_gpt/graphed_step.py), or both")
    ap.add_argument("--generation-only", action="store_true",
                    help="step 4 alone: a small corpus, a paper-size GPT of random weights, a briefly trained tokenizer")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.tiny:
        args.stage1_steps, args.stage2_steps = min(args.stage1_steps, 6), min(args.stage2_steps, 6)
        if args.batch_sizes == [1, 8, 32, 128, 512]:
            args.batch_sizes = [1, 2]
    import torch
    args.device = args.device or device_name()
    check = Check(args)
    dev = torch.device(args.device)
    if dev.type != "cpu":
        check.report["accelerator"] = torch.get_device_module(dev).get_device_name(dev)
    check.report.update(torch=torch.__version__, python=platform.python_version())
    t0 = time.perf_counter()
    try:
        cache = check.data()
        if args.generation_only:
            gpt, tok = check.generation_only_models(cache)
        else:
            tok = check.train(1, cache, [])
            check.tokens(tok, cache)
            gpt = check.train(2, cache, [f"tokenizer={tok}"])
        check.generation(gpt, tok, cache)
    except Exception as e:  # every failure is reported in the JSON and the table, then the exit code says so
        check.report["failed"] = f"{type(e).__name__}: {e}"
    check.report["seconds"] = round(time.perf_counter() - t0, 1)
    path = Path(args.out) / "gpu_check.json"
    path.write_text(json.dumps(check.report, indent=2, default=str) + "\n")
    print(check.table())
    print(f"{'FAILED' if check.report['failed'] else 'done'} in {check.report['seconds']:.0f} s; {path}")
    if check.report["failed"]:
        print(check.report["failed"], file=sys.stderr)
    return 1 if check.report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
