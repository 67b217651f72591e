"""The one benchmark: speed of every stage and generation path, and motion quality of given models, as tables.

    python scripts/benchmark.py [--device cpu|cuda] [--only SECTION,...] --out bench.json
    python scripts/benchmark.py --tokenizer T --gpt G --cache C --out bench.json     # existing trained models
    python scripts/benchmark.py --only quality --gpt G --cache C [--speaker-only-gpt G2] [--split test]

Sections (all by default, in this order):

- ``preprocess``: a synthetic corpus (``--dialogs`` x ``--seconds``) -> cache, with 1 and ``--workers``
  processes: dialog-hours per minute.
- ``train_stage1`` / ``train_stage2``: ``--train-steps`` steps of the tokenizer / GPT training loop (stage1_vq
  and stage2_gpt ``train``), each in a fresh process so its peak memory is its own: windows/s and tokens/s
  after the first ``--log-every`` steps, peak RSS (and device memory off CPU).
- ``offline``: ``Generator.generate`` over ``--gen-seconds`` of audio, with and without the KV cache
  (``--no-cache-seconds``), one dyad and ``--batch`` dyads at once: frames/s, x real time, ms/step, KV ratio.
- ``streaming``: one token step pushed at a time (features, and raw audio through the causal log-mel: the
  end-to-end path): per-step latency median / p99, frames/s, and the latency budget (algorithmic + compute).
- ``batch``: offline generation of ``--batch-sizes`` dialogs at once (one KV cache; each dialog exactly as alone)
  and as many samples of one dialog: frames/s and ms/step against the batch size (peak device memory off CPU).
- ``memory``: streaming ``--memory-minutes`` (1, 10 and 60): RSS, device memory and KV cache at each.
- ``offline_memory``: scripts/sample.py from two WAV files of ``--offline-minutes`` (1, 10 and 60) to prediction
  files, each in a fresh process: peak RSS and speed (offline generation in bounded memory).
- ``sizes`` (only with ``--speed-config YAML|default``): other GPT sizes, untrained, through the same paths.
- ``quality`` (only when named in ``--only``): the GPT's motion on ``--split`` in dyad and listener mode (and
  ``--speaker-only-gpt``), the tokenizer's own reconstruction and the mean motion, written as prediction files
  and scored by the one evaluation path (common/eval/scoring.py, what scripts/evaluate.py runs).

At the end, the speed targets of docs/STAGE2.md that apply to the device are checked; a missed one is printed
with the amount by which it is missed.

The generation sections use ``--gpt`` / ``--tokenizer`` when given (``--cache``: audio to drive them, and data for
the training sections; nothing is written into it); ``--model-config default`` (or a stage-2 YAML) measures an
untrained GPT of that size instead (issue 17's targets at the real size, 6 x 256, apply to it). Without them the benchmark builds what it needs in a temp
directory: a synthetic corpus and cache, a tokenizer and a GPT briefly trained by the training sections (tiny
configs: a briefly trained model costs what a trained one does). The generation timings live in
stage2_gpt/speed.py.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {}
TINY = {1: ROOT / "configs" / "stage1_vq_tiny.yaml", 2: ROOT / "configs" / "stage2_gpt_tiny.yaml"}


def section(name):
    def deco(fn):
        SECTIONS[name] = fn
        return fn
    return deco


# ----------------------------------------------------------------------------------------------------------
# what the sections need, built on demand (or given on the command line)
# ----------------------------------------------------------------------------------------------------------
class Workbench:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.cache_path = Path(args.cache) if args.cache else None
        self.tokenizer_path = Path(args.tokenizer) if args.tokenizer else None
        self.gpt_path = Path(args.gpt) if args.gpt else None
        if self.gpt_path and not self.tokenizer_path:
            from stage2_gpt.artifact import load_gpt
            self.tokenizer_path = Path(load_gpt(self.gpt_path).tokenizer["path"])     # the one it was trained with
        self.trained: dict[int, dict] = {}
        self._tokens_cache = None
        self._gen = None

    def cache(self) -> Path:
        if self.cache_path is None:
            built = self.work / "cache-1"                      # the preprocess section's output, when it ran
            if not (built / "manifest.json").is_file():
                from common.data.config import DataConfig
                from common.data.preprocess import preprocess
                from common.data.synthetic import make_corpus
                corpus = self.work / "corpus"
                if not (corpus / "dataset_jsons").is_dir():
                    make_corpus(corpus, num_dialogs=self.args.dialogs, seconds=self.args.seconds, seed=0)
                preprocess(DataConfig(data_root=str(corpus)), built, workers=1, progress=False)
            self.cache_path = built
        return self.cache_path

    def tokenizer(self) -> Path:
        self.tokenizer_path = self.tokenizer_path or Path(self.train(1)["artifact"])
        return self.tokenizer_path

    def tokens_cache(self) -> Path:
        """A cache holding tokens of the tokenizer: the given cache when it has them, else the built cache
        tokenized in place, else a view of the given cache (links to its files) with its own tokens folder."""
        if self._tokens_cache is None:
            from common.data.cache import Cache
            from stage1_vq.tokens import find_tokens, tokenize_cache
            cache, tok = self.cache(), self.tokenizer()
            try:
                find_tokens(Cache(cache), tok)
            except FileNotFoundError:
                if not cache.resolve().is_relative_to(self.work.resolve()):
                    view = self.work / "cache-view"
                    view.mkdir(exist_ok=True)
                    for name in ("manifest.json", "stats.npz", "dialogs"):
                        if not (view / name).exists():
                            (view / name).symlink_to((cache / name).resolve())
                    cache = view
                tokenize_cache(tok, cache, progress=False)
            self._tokens_cache = cache
        return self._tokens_cache

    def gpt(self) -> Path:
        if self.gpt_path is None and self.args.model_config:       # an untrained GPT of that size, as a file
            from common.data.cache import Cache
            from stage2_gpt.speed import export_untrained
            self.gpt_path = Path(export_untrained(self.args.model_config, str(self.tokenizer()), Cache(self.cache()),
                                                  self.work / "untrained-gpt.pt"))
        self.gpt_path = self.gpt_path or Path(self.train(2)["artifact"])
        return self.gpt_path

    def generator(self):
        if self._gen is None:
            from stage2_gpt.generate import Generator
            self._gen = Generator.load(self.gpt(), self.tokenizer(), device=self.args.device, cuda_graph=self.args.graph)
        return self._gen

    def audio(self):
        """Audio features (2, T, F) of one dialog of the cache (a test dialog when there is one)."""
        import numpy as np

        from common.data.cache import Cache
        c = Cache(self.cache())
        d = (c.dialogs("test") or c.dialogs())[0]
        return np.array(c.load(d["id"]).audio, np.float32)

    def train(self, stage: int) -> dict:
        """Train stage ``stage`` for ``--train-steps`` in a child process (its config: the given model's, else the
        tiny one); returns the child's measurements (and the exported artifact)."""
        if stage in self.trained:
            return self.trained[stage]
        a = self.args
        out = self.work / f"train-stage{stage}"
        given = self.tokenizer_path if stage == 1 else self.gpt_path
        config = TINY[stage]
        if given is not None:                                  # measure the given model's own configuration
            config = self.work / f"stage{stage}-config.json"
            config.write_text(json.dumps(given_config(given, stage), default=str))
        common = [f"out_dir={out}", f"train.max_steps={a.train_steps}", f"train.log_every={a.log_every}",
                  "train.val_every=0", f"train.save_every={a.train_steps}", "train.progress=false",
                  "train.tracker=none", "resume=false", "stop_after=0", "train.num_workers=0"]
        if stage == 1:
            overrides = [f"cache={self.cache()}", *common, *a.stage1_set]
        else:
            overrides = [f"cache={self.tokens_cache()}", f"tokenizer={self.tokenizer()}", "tokens=", *common,
                         *a.stage2_set]
        spec = {"stage": stage, "config": str(config), "overrides": overrides, "device": a.device,
                "threads": a.train_threads, "result": str(out / "bench.json")}
        env = dict(os.environ)
        for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(k, None)
        env["ACCELERATE_USE_CPU"] = "true" if a.device == "cpu" else "false"
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--train-child", json.dumps(spec)],
                       check=True, env=env, cwd=ROOT)
        self.trained[stage] = json.loads((out / "bench.json").read_text())
        return self.trained[stage]


def given_config(path, stage: int) -> dict:
    """The run config stored in a given tokenizer / GPT file, keys it predates read as their former behaviour
    (the stage config's ADDED_KEYS): the config its training ran with."""
    from common.config import with_added_keys
    from common.train.artifact import load_artifact
    if stage == 1:
        from stage1_vq import Stage1Config as cls
    else:
        from stage2_gpt.config import Stage2Config as cls
    return with_added_keys(load_artifact(path)["config"], cls.ADDED_KEYS)[0]


def train_child(spec: dict) -> None:
    """Runs in a fresh process: one stage's training loop, measured (see Workbench.train)."""
    import logging
    import resource

    import torch
    logging.basicConfig(level=logging.WARNING)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from stage2_gpt.speed import rss_mb
    if spec["stage"] == 1:
        from stage1_vq import load_stage1_config as load
        from stage1_vq.train import train
    else:
        from stage2_gpt.config import load_stage2_config as load
        from stage2_gpt.train import train
    cfg = load(spec["config"], spec["overrides"])
    device = torch.device(spec["device"])
    if device.type != "cpu":
        torch.accelerator.reset_peak_memory_stats(device)
    base = rss_mb()
    res = train(cfg)
    tc = cfg.train
    # steady-state rate between the first and the last logged step (the trainer logs cumulative windows/s)
    log = [json.loads(x) for x in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    log = [(e["step"], e["train/windows_per_s"]) for e in log if "train/windows_per_s" in e]
    per_step = tc.batch_size * (2 if spec["stage"] == 1 else 1) * res["world_size"]   # stage 1: both people's windows
    if len(log) >= 2 and log[-1][0] > log[0][0]:
        (s0, w0), (s1, w1) = log[0], log[-1]
        steps_per_s = (s1 - s0) / (s1 * per_step / w1 - s0 * per_step / w0)
    else:
        steps_per_s = res["step"] / res["elapsed_s"]
    wps = steps_per_s * per_step
    model = res["model"]
    out = {"steps": res["step"], "batch_size": tc.batch_size, "window": cfg.window, "world_size": res["world_size"],
           "params": sum(p.numel() for p in model.parameters()), "device": str(spec["device"]),
           "torch_threads": torch.get_num_threads(), "steps_per_s": steps_per_s, "windows_per_s": wps,
           "windows_per_s_incl_warmup": res["windows_per_s"], "elapsed_s": res["elapsed_s"],
           "rss_before_training_mb": base,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "peak_device_mb": 0.0 if device.type == "cpu" else torch.accelerator.max_memory_allocated(device) / 2 ** 20,
           "artifact": res["artifact"]}
    if spec["stage"] == 1:
        d = cfg.model.downsample
        out.update({"unit": "window = one person's motion window", "frames_per_s": wps * cfg.window,
                    "tokens_per_s": wps * cfg.window / d, "downsample": d})
    else:
        out.update({"unit": "window = one dyad's token window (both people)",
                    "tokens_per_s": wps * cfg.window * 2, "num_quantizers": model.cfg.num_quantizers})
    Path(spec["result"]).write_text(json.dumps(out, indent=1) + "\n")


def sample_child(spec: dict) -> None:
    """Runs in a fresh process: scripts/sample.py on two WAV files; writes its peak RSS and time (offline_memory)."""
    import importlib.util
    import resource
    t = time.perf_counter()
    mod = importlib.util.spec_from_file_location("sample_script", ROOT / "scripts" / "sample.py")
    sample = importlib.util.module_from_spec(mod)
    mod.loader.exec_module(sample)
    rc = sample.main(spec["argv"])
    out = {"rc": rc, "seconds": time.perf_counter() - t,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(spec["result"]).write_text(json.dumps(out) + "\n")


# ----------------------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------------------
@section("preprocess")
def bench_preprocess(wb: Workbench) -> dict:
    from common.data.config import DataConfig
    from common.data.preprocess import preprocess
    from common.data.synthetic import make_corpus

    args, work = wb.args, wb.work
    data = work / "corpus"
    make_corpus(data, num_dialogs=args.dialogs, seconds=args.seconds, seed=0)
    results = {}
    for workers in sorted({1, args.workers}):
        out = work / f"cache-{workers}"
        t0 = time.perf_counter()
        preprocess(DataConfig(data_root=str(data)), out, workers=workers, progress=False)
        dt = time.perf_counter() - t0
        hours = args.dialogs * args.seconds / 3600.0          # dialog hours (two participants each)
        results[f"workers={workers}"] = {"seconds": round(dt, 2), "dialog_hours": round(hours, 3),
                                         "dialog_hours_per_minute": round(hours / (dt / 60.0), 3)}
    return results


@section("train_stage1")
def bench_train_stage1(wb: Workbench) -> dict:
    return wb.train(1)


@section("train_stage2")
def bench_train_stage2(wb: Workbench) -> dict:
    return wb.train(2)


@section("offline")
def bench_offline(wb: Workbench) -> dict:
    from stage2_gpt import speed as B
    a = wb.args
    return B.offline_section(wb.generator(), wb.audio(), seconds=a.gen_seconds, no_cache_seconds=a.no_cache_seconds,
                             batch=a.batch)


@section("streaming")
def bench_streaming(wb: Workbench) -> dict:
    from stage2_gpt import speed as B
    return B.streaming_section(wb.generator(), wb.audio(), seconds=wb.args.gen_seconds, num_samples=wb.args.samples)


@section("batch")
def bench_batch(wb: Workbench) -> dict:
    from stage2_gpt import speed as B
    return {"rows": B.bench_batches(wb.generator(), wb.audio(), batches=tuple(wb.args.batch_sizes),
                                    seconds=min(20.0, wb.args.gen_seconds))}


@section("memory")
def bench_memory(wb: Workbench) -> dict:
    from stage2_gpt import speed as B
    return B.memory_section(wb.generator(), wb.audio(), minutes=tuple(wb.args.memory_minutes))


@section("offline_memory")
def bench_offline_memory(wb: Workbench) -> dict:
    """scripts/sample.py from WAV files of every length in --offline-minutes, each in a fresh process."""
    from stage2_gpt import speed as B
    a, gen = wb.args, wb.generator()
    rows = []
    for minutes in a.offline_minutes:
        folder = wb.work / f"wavs-{minutes:g}"
        wavs = B.write_noise_wavs(folder, minutes, gen.sample_rate, gen.fps)
        argv = ["--gpt", str(wb.gpt()), "--tokenizer", str(wb.tokenizer()), "--audio-a", str(wavs[0]), "--audio-b",
                str(wavs[1]), "--out", str(folder / "out"), "--quiet", "--no-plot", "--threads", str(a.threads),
                "--device", a.device, "--cuda-graph", a.cuda_graph]
        spec = {"argv": argv, "result": str(folder / "result.json")}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--sample-child", json.dumps(spec)],
                       check=True, env=env, cwd=ROOT)
        res = json.loads((folder / "result.json").read_text())
        if res["rc"] != 0:
            raise SystemExit(f"offline_memory: sample.py failed ({res['rc']}) on {minutes:g} min")
        rows.append(B.offline_memory_row(minutes, res))
        for w in wavs:
            w.unlink()
    return {"rows": rows, "rss_growth_mb": rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]}


@section("sizes")
def bench_sizes(wb: Workbench) -> dict:
    """Only with --speed-config: other model sizes, untrained, through the same paths (stage2_gpt/speed.py)."""
    from common.data.cache import Cache
    from stage2_gpt import speed as B
    a = wb.args
    return {"configs": B.sizes_section(a.speed_config, str(wb.tokenizer()), Cache(wb.cache()), wb.audio(),
                                       seconds=min(20.0, a.gen_seconds), batch=a.batch, device=a.device,
                                       cuda_graph=a.graph)}


@section("quality")
def bench_quality(wb: Workbench) -> dict:
    """Only when asked: motion quality of the GPT (dyad and listener mode), the speaker-only GPT (if given), the
    tokenizer's reconstruction and the mean motion on ``--split``, scored like scripts/evaluate.py scores files."""
    import numpy as np
    import torch

    from common.data.cache import Cache
    from common.eval.baselines import make_baselines
    from common.eval.predictions import write_prediction
    from common.eval.scoring import comparison_table, evaluate_method
    from dataclasses import replace
    from stage2_gpt.generate import Generator, Sampling, generate_dialog, mode_defaults
    a = wb.args
    cache = Cache(wb.cache())
    dialogs = cache.dialogs(a.split)
    if not dialogs:
        raise SystemExit(f"quality: no dialog in split {a.split!r} of {cache.root}")
    sampling = Sampling(top_k=a.top_k, top_p=a.top_p, seed=a.seed)
    out = wb.work / "quality"
    gen = wb.generator()
    models = [("gpt_dyad", gen, "dyad"), ("gpt_listener", gen, "listener")]
    if a.speaker_only_gpt:
        models.append(("gpt_speaker_only", Generator.load(a.speaker_only_gpt, wb.tokenizer(), a.device, a.graph), "dyad"))
    used = {name: replace(sampling, **mode_defaults(mode)) for name, _, mode in models}      # sample.py's per mode
    if a.temperature is not None:
        used = {name: replace(u, temperature=a.temperature) for name, u in used.items()}
    for name, g, mode in models:
        for d in dialogs:
            arr = cache.load(d["id"])
            generate_dialog(g, d["id"], d["participants"], np.asarray(arr.audio), out / name, mode=mode,
                            gt_motion=np.asarray(arr.motion), shape=np.asarray(arr.shape), sampling=used[name],
                            num_samples=a.samples, plot=False)
    tok = gen.tok
    for d in dialogs:                                      # the tokenizer's own reconstruction: the ceiling
        motion = torch.from_numpy(np.array(cache.load(d["id"]).motion, np.float32))
        reference = tok.person_reference(motion)
        rec = tok.decode(tok.encode(motion, reference), reference).cpu().numpy()
        T = motion.shape[1]
        rec = np.concatenate([rec, np.repeat(rec[:, -1:], T - rec.shape[1], 1)], 1)     # a partial last token
        for p, pid in enumerate(d["participants"]):
            write_prediction(out / "tokenizer_reconstruction" / d["id"] / f"{pid}.npz", rec[p], cache.layout)
    make_baselines(cache.root, out, split=a.split, which=("mean",), progress=False)
    names = [m[0] for m in models] + ["tokenizer_reconstruction", "mean"]
    results = [evaluate_method(cache, out / n, a.split, name=n, n_boot=200) for n in names]
    return {"split": a.split, "dialogs": [d["id"] for d in dialogs], "sampling": {n: vars(u) for n, u in used.items()},
            "samples": a.samples, "methods": {r.name: {"metrics": r.metrics, "ci": r.ci} for r in results},
            "table": comparison_table(results)}


def print_section(name: str, res: dict) -> None:
    from stage2_gpt import speed as B
    if name == "preprocess":
        print(B.table([{"workers": k.split("=")[1], **v} for k, v in res.items()],
                      ["workers", "seconds", "dialog_hours", "dialog_hours_per_minute"]))
    elif name.startswith("train_stage"):
        cols = ["params", "batch_size", "window", "steps_per_s", "windows_per_s", "tokens_per_s", "peak_rss_mb",
                "rss_before_training_mb", "peak_device_mb"]
        print(B.table([res], cols, res["unit"]))
    elif name == "offline":
        print(B.offline_table(res))
    elif name == "streaming":
        print(B.streaming_tables(res))
    elif name == "memory":
        print(B.memory_table(res))
    elif name == "batch":
        print(B.batch_table(res["rows"]))
    elif name == "offline_memory":
        print(B.offline_memory_table(res))
    elif name == "sizes" and res["configs"]:
        print(B.table(res["configs"], list(res["configs"][0]), "Other model sizes (untrained weights, same code paths)"))
    elif name == "quality":
        print(f"Quality on {res['split']} ({len(res['dialogs'])} dialogs):\n{res['table']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="torch device of every section (cpu, cuda, cuda:1...)")
    ap.add_argument("--cuda-graph", choices=["auto", "on", "off"], default="auto",
                    help="the fixed-shape generation step (stage2_gpt/graphed_step.py: captured as CUDA graphs on CUDA "
                         "devices, uncaptured on a CPU); auto: on for CUDA devices and the CPU; off: the plain step")
    ap.add_argument("--only", help=f"comma-separated sections (default: all): {','.join(SECTIONS)}")
    ap.add_argument("--out", help="write the figures as JSON")
    ap.add_argument("--cache", help="preprocessed cache to use (read-only) instead of a synthetic one")
    ap.add_argument("--tokenizer", help="trained stage-1 tokenizer to measure (default: train a tiny one briefly)")
    ap.add_argument("--gpt", help="trained stage-2 GPT to measure (default: train a tiny one briefly)")
    ap.add_argument("--dialogs", type=int, default=10, help="synthetic corpus: dialogs")
    ap.add_argument("--seconds", type=float, default=60.0, help="synthetic corpus: seconds per dialog")
    ap.add_argument("--workers", type=int, default=2, help="preprocess: also time this many worker processes")
    ap.add_argument("--train-steps", type=int, default=60, help="training sections: steps")
    ap.add_argument("--log-every", type=int, default=10, help="training: rates are measured after this many steps")
    ap.add_argument("--train-threads", type=int, default=0, help="torch threads of training (0: torch's default)")
    ap.add_argument("--stage1-set", action="append", default=[], metavar="KEY=VALUE", help="stage-1 config override")
    ap.add_argument("--stage2-set", action="append", default=[], metavar="KEY=VALUE", help="stage-2 config override")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of generation (1: fastest for step-by-step generation on CPU)")
    ap.add_argument("--gen-seconds", type=float, default=60.0, help="offline / streaming: seconds of audio")
    ap.add_argument("--no-cache-seconds", type=float, default=20.0, help="offline without KV cache: seconds of audio")
    ap.add_argument("--batch", type=int, default=8, help="offline batched: dyads generated at once")
    floats = lambda s: [float(x) for x in s.split(",")]               # noqa: E731
    ap.add_argument("--memory-minutes", type=floats, default=[1.0, 10.0, 60.0],
                    help="memory: minutes of streaming at which memory is read (comma-separated)")
    ap.add_argument("--offline-minutes", type=floats, default=[1.0, 10.0, 60.0],
                    help="offline_memory: lengths of the WAV files generated from (comma-separated)")
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16],
                    help="batch: dialogs (and samples) generated at once (comma-separated)")
    ap.add_argument("--model-config", metavar="YAML|default",
                    help="generation sections: an untrained GPT of this stage-2 config instead of a trained one")
    ap.add_argument("--speed-config", action="append", default=[], metavar="YAML",
                    help="section sizes: also time an untrained GPT of this stage-2 config, or 'default' (repeatable)")
    ap.add_argument("--split", default="test", help="quality: the split scored")
    ap.add_argument("--speaker-only-gpt", help="quality: also score this GPT (trained with model.speaker_only=true)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="quality: sampling temperature (default: scripts/sample.py's per mode)")
    ap.add_argument("--top-k", type=int, default=0, help="quality: top-k (0: off)")
    ap.add_argument("--top-p", type=float, default=1.0, help="quality: nucleus (1: off)")
    ap.add_argument("--seed", type=int, default=0, help="quality: sampling seed")
    ap.add_argument("--samples", type=int, default=1, help="quality and streaming: samples per sequence, combined as scripts/sample.py combines them")
    ap.add_argument("--train-child", help=argparse.SUPPRESS)
    ap.add_argument("--sample-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.command = " ".join(["python scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    from stage2_gpt.graphed_step import use_cuda_graph
    args.graph = use_cuda_graph(args.cuda_graph, args.device)
    if args.train_child:
        train_child(json.loads(args.train_child))
        return 0
    if args.sample_child:
        sample_child(json.loads(args.sample_child))
        return 0
    names = args.only.split(",") if args.only else [n for n in SECTIONS if n not in ("sizes", "quality")
                                                    or (n == "sizes" and args.speed_config)]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; known: {list(SECTIONS)}")
    import signal

    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    on_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a kill still removes the temp directory
    try:
        report = run(args, names)
    finally:
        torch.set_num_threads(threads)
        signal.signal(signal.SIGTERM, on_term)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


def run(args, names: list[str]) -> dict:
    import torch

    from stage2_gpt import speed as B
    report = {"machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip() + f", {os.cpu_count()} CPUs",
              "date": time.strftime("%Y-%m-%d"), "device": args.device, "cuda_graph": args.graph, "torch": torch.__version__,
              "generation_threads": args.threads, "command": args.command,
              "load_average_at_start": list(os.getloadavg()), "results": {}}
    dev = torch.device(args.device)
    if dev.type != "cpu":
        mod = torch.get_device_module(dev)
        report["accelerator"] = mod.get_device_name(dev) if hasattr(mod, "get_device_name") else str(dev)
    print(f"{report['machine']}; torch {torch.__version__}; device {args.device}; load average "
          f"{report['load_average_at_start'][0]:.2f} (1 min)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        wb = Workbench(args, Path(tmp))
        for n in names:
            print(f"\n== {n}", flush=True)
            t0 = time.perf_counter()
            report["results"][n] = SECTIONS[n](wb)
            print_section(n, report["results"][n])
            print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if wb._gen is not None:
            report["model"] = B.describe(wb._gen)
    report["load_average_at_end"] = list(os.getloadavg())          # other jobs on the machine skew the timings
    report["targets"] = B.check_targets(report["results"], args.device, report.get("model"))
    if report["targets"]:
        print(B.table(report["targets"], ["target", "value", "limit", "verdict"],
                      f"Targets (docs/STAGE2.md) on {args.device}, model size: {B.model_size(report.get('model'))}"))
    return report


if __name__ == "__main__":
    sys.exit(main())
