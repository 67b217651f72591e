"""The quality bench: every method, several training seeds, both corpus presets, one table that can show the
model losing.

    python scripts/quality.py                       # CPU preset: both corpora, 3 seeds (about an hour on 2 cores)
    python scripts/quality.py --preset full         # GPU-sized configs and corpora
    python scripts/quality.py --corpora hard --seeds 0,1,2 --out runs/quality

For each corpus preset (``default``: the demo's generator with a test set of persons never seen in training;
``hard``: real speech, large per-person offsets, every person in one dialog only, varying lengths; see
docs/SYNTHETIC.md) it builds the corpus and its cache (a fixed split file: the test dialogs are the unseen
persons'), then for each seed trains every method with the commands a user would type — the tokenizer, the GPT
(sampled in dyad mode and in listener mode, the DualTalk protocol), its speaker-only ablation, the DualTalk-class
regressors (non-causal and causal, each in DualTalk's protocol and in the dyad protocol) when ``baselines/`` is
installed — and writes the simple baselines (mean,
random_other, mirror, nn_audio). Every prediction folder is scored like ``scripts/evaluate.py`` scores it
(common/eval/scoring.py); the figures are means over seeds and test dialogs with a two-level bootstrap CI
(common/eval/compare.py), the model is compared with every method by a paired CI of the difference, and every
line says **not better** where it is not. Each corpus is reported twice: as the issue's protocol (no method knows an
unseen person's own mean expression) and as the enrollment protocol (``--enroll-s``, default 30 s: every method is
given a clip of each test person from another conversation; ``write_enrolled``). Output: ``OUT/QUALITY.md`` and
``OUT/quality.json``.

Jobs run as subprocesses, ``--workers`` at a time (one torch thread each), in dependency order; a finished job
is skipped when the bench is rerun (its output exists), so an interrupted bench resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.config import float_arg, int_arg, is_override  # noqa: E402  (after the path set-up above)

PY = sys.executable
REGRESSOR_TRAIN = ROOT / "baselines" / "train.py"

PRESETS = {
    "cpu": {
        "corpora": {"default": {"train_dialogs": 48, "test_dialogs": 16, "seconds": 60.0},
                    "hard": {"train_dialogs": 48, "test_dialogs": 16, "min_seconds": 30.0, "max_seconds": 120.0}},
        "stage1": ["--config", "configs/stage1_vq_tiny.yaml"], "stage2": ["--config", "configs/stage2_gpt_tiny.yaml"],
        "regressor": ["--config", "configs/baseline_regressor_tiny.yaml"], "seeds": "0,1,2", "workers": 2,
        "threads": 1, "out": "runs/quality"},
    "full": {
        "corpora": {"default": {"train_dialogs": 800, "test_dialogs": 64, "seconds": 60.0},
                    "hard": {"train_dialogs": 800, "test_dialogs": 64, "min_seconds": 30.0, "max_seconds": 300.0}},
        "stage1": ["--config", "configs/stage1_vq.yaml"], "stage2": ["--config", "configs/stage2_gpt.yaml"],
        "regressor": ["--config", "configs/baseline_regressor.yaml"], "seeds": "0,1,2", "workers": 1,
        "threads": 0, "out": "runs/quality-full"},
}
MODEL_MODES = ("model_dyad", "model_listener")
BOUND = "truth_recentered"   # the truth with each sequence's mean expression replaced by the train mean: a bound
ENROLLED_BOUND = "truth_enrolled"   # the same with the person's enrollment-clip mean in place of the train mean
BOUNDS = (BOUND, ENROLLED_BOUND)
ENROLL_S = 30.0                     # seconds of each test person's enrollment clip (the enrollment protocol)
SIMPLE = ("mean", "random_other", "mirror", "nn_audio")
TABLE_KEYS = ["fid_exp", "p_fid_exp", "mse_exp", "sid_exp", "rpcc_exp", "fid_jaw", "p_fid_jaw", "mse_jaw", "sid_jaw",
              "rpcc_jaw", "p_fid_exp@listen", "mse_exp@listen", "mse_jaw@speak", "jaw_speech_r"]
REFERENCE_KEYS = ["jaw_speech_r", "listen_effect_exp", "sid_exp", "sid_jaw", "vel_pred_exp", "acc_pred_exp",
                  "vel_pred_jaw", "acc_pred_jaw"]


# ----------------------------------------------------------------------------------------------------------
# jobs: commands with dependencies, run a few at a time
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    name: str
    cmd: list[str]
    done_when: Path                      # the job's output; its existence skips the job
    needs: list[str] = field(default_factory=list)
    mark: bool = False                   # the command writes a folder: touch ``done_when`` after it succeeded


class Runner:
    """Runs jobs ``workers`` at a time in dependency order; each job's output goes to ``logs/<name>.log``."""

    def __init__(self, out: Path, workers: int, threads: int):
        self.out, self.workers = out, max(1, workers)
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                        WANDB_MODE=os.environ.get("WANDB_MODE", "disabled"))
        if threads:
            self.env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.jobs: dict[str, Job] = {}
        self.times: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, name, cmd, done_when, needs=(), mark=False):
        self.jobs[name] = Job(name, [str(c) for c in cmd], Path(done_when), [n for n in needs if n], mark)
        return name

    def _run(self, job: Job) -> float:
        log = self.out / "logs" / f"{job.name.replace('/', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(log, "w") as f:
            f.write("$ " + " ".join(shlex.quote(c) for c in job.cmd) + "\n")
            f.flush()
            r = subprocess.run(job.cmd, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            tail = log.read_text().splitlines()[-15:]
            raise RuntimeError(f"job {job.name} failed (exit {r.returncode}); log {log}:\n  " + "\n  ".join(tail))
        if job.mark:
            job.done_when.parent.mkdir(parents=True, exist_ok=True)
            job.done_when.touch()
        return time.time() - t0

    def run_all(self) -> None:
        pending = dict(self.jobs)
        finished = {n for n, j in pending.items() if j.done_when.exists()}
        for n in finished:
            pending.pop(n)
        total, t0 = len(self.jobs), time.time()
        print(f"{total} jobs, {len(finished)} already done, {self.workers} at a time", flush=True)
        running = {}
        with ThreadPoolExecutor(self.workers) as pool:
            while pending or running:
                ready = [j for j in pending.values() if all(d in finished for d in j.needs)]
                for job in ready[:self.workers - len(running)]:
                    pending.pop(job.name)
                    running[pool.submit(self._run, job)] = job
                if not running:
                    missing = {n: [d for d in j.needs if d not in self.jobs] for n, j in pending.items()}
                    raise RuntimeError(f"jobs that can never start: {missing}")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = running.pop(fut)
                    self.times[job.name] = fut.result()
                    finished.add(job.name)
                    print(f"[{len(finished)}/{total}] {job.name} ({self.times[job.name]:.0f} s; "
                          f"{(time.time() - t0) / 60:.1f} min elapsed)", flush=True)


# ----------------------------------------------------------------------------------------------------------
# the corpora: test persons never seen in training
# ----------------------------------------------------------------------------------------------------------
def build_corpus(kind: str, spec: dict, root: Path) -> Path:
    """Write the corpus of preset ``kind`` under ``root`` with ``dataset_jsons/quality.json`` and a split file
    ``splits.json`` (test = dialogs of persons never seen in training); returns the index path."""
    from common.data.synthetic import make_corpus
    index = root / "dataset_jsons" / "quality.json"
    if index.is_file():
        return index
    n_train, n_test = spec["train_dialogs"], spec["test_dialogs"]
    if kind == "default":      # persons recur across dialogs: the test dialogs get persons of their own
        a = make_corpus(root, num_dialogs=n_train, seconds=spec["seconds"], seed=0, index_name="train.json")
        b = make_corpus(root, num_dialogs=n_test, seconds=spec["seconds"], seed=1, index_name="test.json",
                        person_base=2000)
        train_ids, test_ids = list(json.loads(a.read_text())), list(json.loads(b.read_text()))
        merged = {**json.loads(a.read_text()), **json.loads(b.read_text())}
    else:                      # every person in one dialog only: any split keeps persons apart
        a = make_corpus(root, num_dialogs=n_train + n_test, seed=0, index_name="all.json", preset="hard",
                        min_seconds=spec["min_seconds"], max_seconds=spec["max_seconds"], speech="tts")
        merged = json.loads(a.read_text())
        ids = sorted(merged)
        train_ids, test_ids = ids[:n_train], ids[n_train:]
    n_val = max(1, len(train_ids) // 8)
    splits = {d: "train" for d in train_ids[n_val:]} | {d: "val" for d in train_ids[:n_val]} | {d: "test" for d in test_ids}
    (root / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    tmp = index.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged) + "\n")
    os.replace(tmp, index)
    return index


# ----------------------------------------------------------------------------------------------------------
# the plan: one chain of jobs per corpus and seed
# ----------------------------------------------------------------------------------------------------------
def plan(runner: Runner, p: dict, corpus: str, cache: Path, seed: int, work: Path, with_regressors: bool) -> dict:
    """Jobs of one corpus and seed; returns ``{method: prediction folder}``."""
    s, tag = work / f"seed{seed}", f"{corpus}/seed{seed}"
    preds = s / "predictions"
    tok = s / "stage1" / "tokenizer.pt"
    common = [f"cache={cache}", f"train.seed={seed}", "train.progress=false"]
    runner.add(f"{tag}/stage1", [PY, "stage1_vq/train.py", *p["stage1"], *common, f"out_dir={s / 'stage1'}"], tok)
    runner.add(f"{tag}/recon", [PY, "-m", "stage1_vq.evaluate", "--tokenizer", tok, "--cache", cache, "--split", "test",
                                "--json", s / "recon.json"], s / "recon.json", [f"{tag}/stage1"])
    tokens_done = cache / "tokens" / f"seed{seed}" / "tokens.json"
    runner.add(f"{tag}/tokens", [PY, "-m", "stage1_vq.tokens", "--tokenizer", tok, "--cache", cache, "--name",
                                 f"seed{seed}", "--quiet"], tokens_done, [f"{tag}/stage1"])
    for name, extra in (("stage2", []), ("stage2_speaker_only", ["model.speaker_only=true"])):
        runner.add(f"{tag}/{name}", [PY, "stage2_gpt/train.py", *p["stage2"], *common, f"tokenizer={tok}",
                                     f"tokens=seed{seed}", f"out_dir={s / name}", *extra],
                   s / name / "gpt.pt", [f"{tag}/tokens"])
    methods = {}
    for method, gpt, mode in (("model_dyad", "stage2", "dyad"), ("model_listener", "stage2", "listener"),
                              ("speaker_only", "stage2_speaker_only", "dyad")):
        methods[method] = preds / method
        runner.add(f"{tag}/sample_{method}", [PY, "scripts/sample.py", "--gpt", s / gpt / "gpt.pt", "--tokenizer", tok,
                                              "--cache", cache, "--split", "test", "--mode", mode, "--out",
                                              preds / method, "--seed", seed, "--quiet", "--no-plot"],
                   preds / method / ".done", [f"{tag}/{gpt}"], mark=True)
    runner.add(f"{tag}/simple", [PY, "scripts/baselines.py", "--cache", cache, "--out", preds, "--seed", seed],
               preds / ".simple-done", mark=True)
    methods.update({m: preds / m for m in SIMPLE})
    if with_regressors:     # the DualTalk-class regressors, both protocols (common/eval/baselines.py)
        from common.eval.baselines import REGRESSOR_VARIANTS, regressor_overrides
        for name in REGRESSOR_VARIANTS:
            run = s / name
            runner.add(f"{tag}/{name}", [PY, "baselines/train.py", *p["regressor"], *common, f"out_dir={run}",
                                         *regressor_overrides(name)], run / "regressor.pt")
            runner.add(f"{tag}/sample_{name}", [PY, "scripts/baselines.py", "--cache", cache, "--out", preds,
                                                "--only", "none", "--regressor", run / "regressor.pt", "--name", name],
                       preds / name / ".done", [f"{tag}/{name}"], mark=True)
            methods[name] = preds / name
    return methods


def enrollment_means(kind: str, cache: Path, clip_dir: Path, seconds: float) -> dict:
    """The enrollment protocol's input: each test person's enrollment clip (another conversation of that person,
    ``common.data.synthetic.write_enrollment_clips``; written once), read back by the corpus reader, and its mean
    motion ``{pid: (D,)}``: what ``scripts/sample.py --enroll-dir`` gives the model."""
    import numpy as np

    from common.config import from_dict
    from common.data.cache import Cache
    from common.data.config import DataConfig
    from common.data.corpus import read_flame
    from common.data.synthetic import write_enrollment_clips
    c = Cache(cache)
    pids = [pid for d in c.dialogs("test") for pid in d["participants"]]
    cfg = from_dict(DataConfig, c.manifest["data_config"])
    clips = write_enrollment_clips(clip_dir, pids, kind, seconds, fps=int(round(c.fps)))
    return {pid: read_flame(path, cfg, "enrollment", pid)[0].astype(np.float64).mean(0) for pid, path in clips.items()}


def write_enrolled(cache: Path, src: Path, out: Path, means: dict, sources: dict | None = None, center=None) -> Path:
    """A method's test predictions under the enrollment protocol: each person's expression moved by (their
    enrollment clip's mean - what the method's output is centred on), the jaw untouched. What it is centred on:
    ``center`` (default: the cache's train mean, which the bench's methods trained on), or for a method that copies
    another person's motion (``sources``: ``{(dialog, participant): source participant}``, e.g. mirror's partner,
    from ``common.eval.baselines.copy_sources``) that person's clip mean. For this system's GPT (a person-reference
    tokenizer) the move is exactly what the clip as ``reference`` gives, in both modes and with sample.py's
    defaults (tests/test_stage2.py::test_enrollment_moves_sample_py_output_by_the_reference,
    ::test_sample_cli_enroll_dir); for a point estimate around the average face (and a model run with
    ``--set stage1:model.reference=global``, which cannot take a clip) it is the clip's natural use. Written again
    on every call (atomically): a rerun never shows another clip length's or an older prediction's figures."""
    import numpy as np

    from common.data.cache import Cache
    from common.eval.predictions import find_prediction, prediction_path, read_prediction, write_prediction
    from common.io import atomic_dir
    c = Cache(cache)
    a, b = c.layout.exp
    mean = np.asarray(c.stats["motion_mean"] if center is None else center, np.float64)
    with atomic_dir(out) as tmp:
        for d in c.dialogs("test"):
            for i, pid in enumerate(d["participants"]):
                path = find_prediction(src, d["id"], pid, side=i)
                if path is None:
                    raise FileNotFoundError(f"{src}: no prediction of {d['id']}/{pid} to enroll")
                m = read_prediction(path, c.layout, target_fps=c.fps)
                centre = mean if sources is None else means[sources[(d["id"], pid)]]
                m[:, a:b] += means[pid][a:b] - centre[a:b]
                write_prediction(prediction_path(tmp, d["id"], pid), m.astype(np.float32), c.layout)
    return out


def enrolled_copy_sources(cache: Path, seeds) -> dict:
    """``{seed: {method: {(dialog, participant): source participant}}}`` for the baselines that copy another
    person's motion (mirror, random_other; scripts/baselines.py draws random_other with the bench's seed)."""
    from common.data.cache import Cache
    from common.eval.baselines import copy_sources
    c = Cache(cache)
    out = {}
    for seed in seeds:
        srcs = copy_sources(c, "test", seed)
        out[seed] = {m: {k: c.dialog(sd)["participants"][slot] for k, (sd, slot) in by.items()} for m, by in srcs.items()}
    return out


def write_truth_around(cache: Path, out: Path, centre) -> Path:
    """Each test sequence's true motion with its mean expression replaced by ``centre(participant)`` (D,): the
    bound rows (``write_recentered_truth``; ``truth_enrolled``, centred on each person's enrollment clip). Not a
    method: no verdict is drawn against them. Written atomically."""
    import numpy as np

    from common.data.cache import Cache
    from common.eval.predictions import prediction_path, write_prediction
    from common.io import atomic_dir
    c = Cache(cache)
    a, b = c.layout.exp
    with atomic_dir(out) as tmp:
        for d in c.dialogs("test"):
            motion = np.asarray(c.load(d["id"]).motion, np.float64)
            for i, pid in enumerate(d["participants"]):
                m = motion[i].copy()
                m[:, a:b] += np.asarray(centre(pid), np.float64)[a:b] - m[:, a:b].mean(0)
                write_prediction(prediction_path(tmp, d["id"], pid), m.astype(np.float32), c.layout)
    return out


def write_recentered_truth(cache: Path, out: Path) -> Path:
    """The bound row ``truth_recentered``: each test sequence's true motion with its mean expression replaced by
    the train mean. It is what a method scores that gets everything right except the one thing no method can know
    without an enrollment clip, an unseen person's own mean expression (their offset): the lowest FD / MSE and the
    highest SID reachable from audio (and the partner) alone."""
    from common.data.cache import Cache
    if (out / ".done").exists():
        return out
    mean = Cache(cache).stats["motion_mean"]
    write_truth_around(cache, out, lambda pid: mean)
    (out / ".done").touch()
    return out


# ----------------------------------------------------------------------------------------------------------
# scoring and the report
# ----------------------------------------------------------------------------------------------------------
def score(cache: Path, methods_by_seed: dict[int, dict[str, Path]]) -> dict[str, list]:
    """``{method: [MethodResult per seed]}``, every folder scored by the evaluation path of scripts/evaluate.py."""
    from common.data.cache import Cache
    from common.eval.scoring import evaluate_method
    c = Cache(cache)
    out: dict[str, list] = {}
    for seed, methods in sorted(methods_by_seed.items()):
        for name, folder in methods.items():
            out.setdefault(name, []).append(evaluate_method(c, folder, "test", name=name, n_boot=10))
    return out


def fmt_ci(v) -> str:
    return "—" if v is None else f"{v[0]:.4g} [{v[1]:.3g}, {v[2]:.3g}]"


def audio_only_regressors(methods) -> set[str]:
    """The rows that are regressors of the dyad protocol (both audio tracks only): dyad mode's counterparts, which
    listener mode (it reads the partner's true motion) is not judged against."""
    from common.eval.baselines import REGRESSOR_VARIANTS
    return {m for m in methods if m in REGRESSOR_VARIANTS and not REGRESSOR_VARIANTS[m]["partner_motion"]}


def corpus_report(corpus: str, results: dict[str, list], recon: list[dict], n_boot: int,
                  enroll_s: float = 0.0) -> tuple[list[str], dict]:
    """One corpus' tables and verdict lines; ``enroll_s`` > 0: those of the enrollment protocol."""
    from common.eval import compare as C
    from common.eval.tables import markdown_table
    summary = C.summarize(results, sorted({k for rs in results.values() for r in rs for k in r.metrics}
                                          | {k for rs in results.values() for r in rs for d in r.per_dialog.values()
                                             for k in d}), n_boot=n_boot)
    methods = list(results)
    seeds, dialogs = len(next(iter(results.values()))), len(next(iter(results.values()))[0].per_dialog)
    md = [f"## Corpus `{corpus}` ({dialogs} test dialogs of unseen persons, {seeds} seeds)", "",
          "Mean over seeds and test dialogs [95% CI over seeds and dialogs]; lower is better but for sid and "
          "jaw_speech_r.", ""]
    if enroll_s:
        md[0] = f"## Corpus `{corpus}`, enrollment protocol ({dialogs} test dialogs of unseen persons, {seeds} seeds)"
        md[2:2] = [f"Every method is given each test person's {enroll_s:g}-second enrollment clip (another "
                   "conversation of that person): its expression is moved by the clip's mean less what it is centred "
                   "on, the train mean (for the model exactly what `scripts/sample.py --enroll-dir` gives) or, for "
                   "mirror and random_other, which copy another person's motion, that person's clip mean. The "
                   "corpus' section before this one is the protocol without enrollment.", ""]
    rows = [{"method": m, **{k: fmt_ci(summary[m].get(k)) for k in TABLE_KEYS}} for m in methods]
    md += [markdown_table(rows, ["method"] + TABLE_KEYS, fmt=str), ""]
    md += ["References a realistic method matches (value / ground truth's):", ""]
    ref_rows = []
    for m in methods:
        row = {"method": m}
        for k in REFERENCE_KEYS:
            v, gt = summary[m].get(k), summary[m].get(C.GT_REFERENCES[k])
            row[k] = "—" if v is None or gt is None else f"{v[0]:.3g} / {gt[0]:.3g} = {v[0] / gt[0]:.2f}"
        ref_rows.append(row)
    md += [markdown_table(ref_rows, ["method"] + REFERENCE_KEYS, fmt=str), ""]
    md += ["Verdicts (paired difference over seeds and dialogs; relative difference, CI of the absolute one):", ""]
    lines = []
    audio_only = audio_only_regressors(methods)
    for model in MODEL_MODES:
        for other in methods:
            if other not in MODEL_MODES and other not in BOUNDS and not (model == "model_listener" and other in audio_only):
                lines.append(C.verdict(model, other, results, n_boot=n_boot))
    md += lines + [""]
    if audio_only:
        md += ["The DualTalk-class regressors `dualtalk_class` and `dualtalk_class_causal` read the partner's true motion "
               "(DualTalk's protocol: listener mode's counterpart; dyad mode, which generates both people, reads less "
               "than they do); the `*_dyad` ones read both audio tracks only (dyad mode's counterpart; listener mode, "
               "which reads the partner's true motion, is not judged against them).",
               ""]
    if BOUND in methods:
        md += [f"`{BOUND}` is a bound, not a method: the truth with each sequence's mean expression replaced by the "
               "train mean (what a method scores that gets everything right but an unseen person's own mean "
               "expression, which no method knows without an enrollment clip).", ""]
    if ENROLLED_BOUND in methods:
        md += [f"`{ENROLLED_BOUND}` is a bound, not a method: the truth with each sequence's mean expression replaced "
               "by the person's enrollment-clip mean (everything right but what the clip does not tell of the "
               "person's mean in this dialog).", ""]
    if recon:
        keys = ["nmse_exp", "nmse_jaw", "corr_jaw"]
        mean = {k: sum(r[k] for r in recon) / len(recon) for k in keys}
        usage = min(min(r["usage"]) for r in recon)
        md += [f"Tokenizer reconstruction of the test persons (mean of {len(recon)} seeds): nMSE exp "
               f"{mean['nmse_exp']:.4f}, jaw {mean['nmse_jaw']:.4f}, jaw r {mean['corr_jaw']:.4f}, lowest quantizer "
               f"usage {usage:.0%}.", ""]
    return md, {"summary": summary, "verdicts": lines, "recon": recon}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--corpora", default="default,hard", help="comma-separated corpus presets (default, hard)")
    ap.add_argument("--seeds", help="comma-separated training seeds (default per preset: 0,1,2)")
    ap.add_argument("--out", help="run directory (default per preset)")
    ap.add_argument("--workers", type=int_arg(1, 256), help="jobs at a time (default per preset)")
    ap.add_argument("--train-dialogs", type=int_arg(1), help="override the preset's training dialogs per corpus")
    ap.add_argument("--test-dialogs", type=int_arg(1), help="override the preset's test dialogs per corpus")
    ap.add_argument("--seconds", type=float_arg(1), help="override the default corpus' dialog length")
    ap.add_argument("--min-seconds", type=float_arg(1), help="override the hard corpus' shortest dialog")
    ap.add_argument("--max-seconds", type=float_arg(1), help="override the hard corpus' longest dialog")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE:KEY=VALUE",
                    help="config override for one trained method: stage1:, stage2: or regressor: (repeatable)")
    ap.add_argument("--enroll-s", type=float_arg(0), default=ENROLL_S,
                    help=f"seconds of each test person's enrollment clip for the enrollment protocol's tables "
                         f"(default {ENROLL_S:g}; 0: no enrollment protocol)")
    ap.add_argument("--n-boot", type=int_arg(1, 10 ** 6), default=2000)
    args = ap.parse_args(argv)
    p = json.loads(json.dumps(PRESETS[args.preset]))
    for item in args.set:
        stage, _, kv = item.partition(":")
        if stage not in ("stage1", "stage2", "regressor") or not is_override(kv):
            ap.error(f"--set {item!r}: expected stage1:key=value, stage2:key=value or regressor:key=value")
        p[stage].append(kv)
    try:
        seeds = [int_arg(0, 2 ** 32 - 1)(x) for x in (args.seeds or p["seeds"]).split(",")]
    except argparse.ArgumentTypeError as e:
        ap.error(f"--seeds: {e}")
    corpora = args.corpora.split(",")
    unknown = [c for c in corpora if c not in p["corpora"]]
    if unknown:
        ap.error(f"unknown corpora {unknown}; known: {list(p['corpora'])}")
    out = Path(args.out or p["out"]).resolve()
    with_regressors = REGRESSOR_TRAIN.is_file()
    runner = Runner(out, args.workers or p["workers"], p["threads"])
    t0 = time.time()
    caches, methods = {}, {}
    for corpus in corpora:
        spec = dict(p["corpora"][corpus])
        given = {"train_dialogs": args.train_dialogs, "test_dialogs": args.test_dialogs, "seconds": args.seconds,
                 "min_seconds": args.min_seconds, "max_seconds": args.max_seconds}
        spec.update({k: v for k, v in given.items() if v is not None and k in spec})
        root = out / corpus
        print(f"corpus {corpus}: {spec}", flush=True)
        build_corpus(corpus, spec, root / "data")
        cache = root / "cache"
        runner.add(f"{corpus}/preprocess", [PY, "scripts/preprocess.py", "--config", "configs/data/synthetic.yaml",
                                            "--data-root", root / "data", "--index", "dataset_jsons/quality.json",
                                            "split_file=splits.json", "--out", cache, "--quiet"], cache / "manifest.json")
        caches[corpus] = cache
        methods[corpus] = {}
        for seed in seeds:
            methods[corpus][seed] = plan(runner, p, corpus, cache, seed, root, with_regressors)
        for name, job in runner.jobs.items():           # everything of this corpus waits for its cache
            if name.startswith(f"{corpus}/seed"):
                job.needs.append(f"{corpus}/preprocess")
    runner.run_all()

    md = []
    report = {"preset": args.preset, "seeds": seeds, "corpora": {}, "job_seconds": runner.times}
    for corpus in corpora:
        bound = write_recentered_truth(caches[corpus], out / corpus / BOUND)
        for seed in seeds:
            methods[corpus][seed][BOUND] = bound
        results = score(caches[corpus], methods[corpus])
        recon = [json.loads((out / corpus / f"seed{s}" / "recon.json").read_text()) for s in seeds]
        lines, data = corpus_report(corpus, results, recon, args.n_boot)
        md += lines
        report["corpora"][corpus] = data
        if args.enroll_s:
            means = enrollment_means(corpus, caches[corpus], out / corpus / f"enrollment_{args.enroll_s:g}s",
                                     args.enroll_s)
            enrolled, copies = {}, enrolled_copy_sources(caches[corpus], seeds)
            bound = write_truth_around(caches[corpus], out / corpus / ENROLLED_BOUND, means.__getitem__)
            for seed in seeds:
                enrolled[seed] = {m: write_enrolled(caches[corpus], f, out / corpus / f"seed{seed}" / "enrolled" / m,
                                                    means, copies[seed].get(m))
                                  for m, f in methods[corpus][seed].items() if m != BOUND}
                enrolled[seed][ENROLLED_BOUND] = bound
            lines, data = corpus_report(corpus, score(caches[corpus], enrolled), [], args.n_boot, args.enroll_s)
            md += lines
            report["corpora"][corpus]["enrolled"] = data
    md = ["# Quality bench", "", f"`python scripts/quality.py {' '.join(sys.argv[1:] if argv is None else argv)}`; "
          f"{time.strftime('%Y-%m-%d')}; {(time.time() - t0) / 60:.1f} minutes with the scoring (jobs already done "
          f"are skipped); seeds {seeds}; configs {p['stage1'][1]}, {p['stage2'][1]}"
          + (f", {p['regressor'][1]}" if with_regressors else " (no baselines/ package: regressors not run)"), "", *md]
    (out / "QUALITY.md").write_text("\n".join(md) + "\n")
    (out / "quality.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print("\n".join(md))
    print(f"\nQuality bench finished in {(time.time() - t0) / 60:.1f} min: {out / 'QUALITY.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
