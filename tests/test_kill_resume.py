"""Kill anywhere, lose nothing, for training (docs/RELIABILITY.md, "Kills and interrupted writes").

Each stage's training command runs as a subprocess and is SIGKILLed again and again on one ``out_dir``: at a
time chosen from outside (as soon as a checkpoint folder appears, or a few steps after one), and at exact points
inside a checkpoint save (half-way through ``accelerator.save_state``, inside the manifest write, between the
manifest and the rename, between the rename and the rotation) or inside the export. One rerun is starved of disk
(``ulimit -f``: the kernel refuses the checkpoint write mid-file), and a loader worker meets a broken cached dialog.
After every kill the same command is run again; it must resume from the newest *complete* checkpoint (read from
its log and checked against the checkpoint folder), redo exactly the same steps, and the last rerun must end with
the same per-step losses, the same final loss and the same exported weights as one uninterrupted run.

Exact kill points inside a save use a launcher that installs a fault (``os.kill(os.getpid(), SIGKILL)`` at one
call site of common/train/loop.py, accelerate or common/io.py) and then runs the unchanged ``train.py`` as
``__main__`` with the same arguments; every other run is the plain command line.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.train.artifact import load_artifact
from common.train.checkpoints import CheckpointManager
from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STAGE1 = ["stage1_vq/train.py", "--config", "configs/stage1_vq_tiny.yaml"]
STAGE2 = ["stage2_gpt/train.py", "--config", "configs/stage2_gpt_tiny.yaml"]
# 60 training windows in the test cache: 3 steps per epoch (stage 1, batch 16) and 7 (stage 2, batch 8), so
# checkpoints at 10 / 20 / 30 are all mid-epoch. Validation every 10 steps and RNG in the forward pass (quantizer
# dropout and dead-code replacement in stage 1, dropout and token noise in stage 2) are part of what must resume.
COMMON = ["train.max_steps=30", "train.save_every=10", "train.val_every=10", "train.log_every=1",
          "train.warmup_steps=5", "train.progress=false"]
STAGE1_OVERRIDES = [*COMMON, "model.quantize_dropout=true"]
STAGE2_OVERRIDES = [*COMMON, "window=32", "model.attn_window=12", "train.batch_size=8"]
TIMEOUT = 240

# Runs ``argv[1:]`` (a train.py and its arguments) as __main__ after installing the fault named by KILL_AT,
# "<where>:<step>". The fault is a real SIGKILL of this process: no finally block, no handler runs.
LAUNCHER = r"""
import json, os, runpy, signal, sys
from pathlib import Path

where, step = os.environ["KILL_AT"].split(":")
tmp_name, final_name = f".tmp-step-{int(step):08d}", f"step-{int(step):08d}"

def die():
    sys.stderr.write(f"LAUNCHER: SIGKILL at {where}:{step}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if where == "mid_state":          # save_state wrote the model, then half of the optimizer state
    import accelerate.checkpointing as ac
    real_save = ac.save
    def save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if Path(f).parent.name == tmp_name and Path(f).name == "optimizer.bin":
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])
            die()
    ac.save = save
elif where == "manifest":         # every state file written; killed half-way through the manifest's atomic write
    import common.train.checkpoints as training
    from common.io import atomic_path
    real_write_json = training.write_json
    def write_json(path, obj):
        if Path(path).parent.name == tmp_name:
            with atomic_path(path) as tmp:
                text = json.dumps(obj)
                tmp.write_text(text[: len(text) // 2])
                die()
        return real_write_json(path, obj)
    training.write_json = write_json
elif where in ("rename", "export"):   # complete temp folder / artifact, killed just before its rename
    real_replace = os.replace
    def replace(src, dst, *a, **k):
        if (where == "rename" and Path(src).name == tmp_name) or \
           (where == "export" and Path(dst).name in ("tokenizer.pt", "gpt.pt")):
            die()
        return real_replace(src, dst, *a, **k)
    os.replace = replace
elif where == "rotate":           # renamed into place, killed before the rotation deletes anything
    from common.train.checkpoints import CheckpointManager
    real_rotate = CheckpointManager._rotate
    def _rotate(self, just_saved=None):
        if just_saved is not None and just_saved.name == final_name:
            die()
        return real_rotate(self, just_saved)
    CheckpointManager._rotate = _rotate
else:
    raise SystemExit(f"unknown fault {where}")

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class Chain:
    """Successive runs of one training command on one ``out_dir``, each with its own log file."""

    def __init__(self, tmp: Path, cmd: list[str], out: Path):
        self.tmp, self.cmd, self.out, self.n = tmp, cmd, out, 0
        self.mgr = CheckpointManager(out)

    def _log(self) -> Path:
        self.n += 1
        return self.tmp / f"{self.out.name}-run{self.n}.log"

    def _start(self, argv: list[str], log: Path, env: dict) -> subprocess.Popen:
        with open(log, "w") as f:      # a file, not a pipe: a full pipe would stall the child before its kill
            return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                    start_new_session=True)

    def run(self, fault: str | None = None, shell_prefix: str = "") -> tuple[int, str]:
        """Run to its end: normally, with a fault (``where:step``), or under a shell prefix (``ulimit ...;``)."""
        log = self._log()
        if fault:
            argv, env = [PY, "-c", LAUNCHER, *self.cmd], subprocess_env(KILL_AT=fault)
        elif shell_prefix:
            argv = ["bash", "-c", shell_prefix + " exec " + " ".join(_quote(a) for a in [PY, *self.cmd])]
            env = subprocess_env()
        else:
            argv, env = [PY, *self.cmd], subprocess_env()
        p = self._start(argv, log, env)
        try:
            rc = p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            pytest.fail(f"{argv[-1]} did not finish in {TIMEOUT} s:\n{_tail(log)}")
        return rc, log.read_text()

    def run_and_kill_when(self, condition, what: str) -> str:
        """Start the plain command; SIGKILL its process group as soon as ``condition()`` holds."""
        log = self._log()
        p = self._start([PY, *self.cmd], log, subprocess_env())
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if p.poll() is not None:
                pytest.fail(f"the run ended (rc {p.returncode}) before the kill point ({what}):\n{_tail(log)}")
            if time.monotonic() > deadline:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                pytest.fail(f"kill point ({what}) not reached in {TIMEOUT} s:\n{_tail(log)}")
            time.sleep(0.005)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL, (p.returncode, _tail(log))
        return log.read_text()

    def newest_good(self) -> int:
        found = self.mgr.latest_good()
        return 0 if found is None else found[1]

    def ckpt(self, step: int) -> Path:
        return self.out / "checkpoints" / f"step-{step:08d}"

    def tmp_ckpt(self, step: int) -> Path:
        return self.out / "checkpoints" / f".tmp-step-{step:08d}"

    def checkpoint_names(self) -> list[str]:
        return sorted(p.name for p in (self.out / "checkpoints").iterdir())

    def max_logged_step(self) -> int:
        try:
            text = (self.out / "metrics.jsonl").read_text()
        except FileNotFoundError:
            return 0
        steps = [json.loads(line)["step"] for line in text.split("\n")[:-1] if line]   # complete lines only
        return max(steps, default=0)


def _quote(a: str) -> str:
    return "'" + a.replace("'", "'\\''") + "'"


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text()[-n:] if log.exists() else "(no log)"


def _killed(rc: int, log: str, fault: str):
    assert rc == -signal.SIGKILL, (rc, log[-4000:])
    assert f"LAUNCHER: SIGKILL at {fault}" in log                     # the fault really fired


def _resumed_from(log: str) -> int:
    """The step the run started from, from its own log; checks the resume message names that checkpoint."""
    m = re.findall(r"world 1, from step (\d+)", log)
    assert len(m) == 1, log[-4000:]
    step = int(m[0])
    if step:
        assert re.search(rf"resumed from \S+/checkpoints/step-{step:08d} \(step {step}\)", log), log[-4000:]
    else:
        assert "resumed from" not in log
    return step


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _comparable(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not k.endswith("windows_per_s")}     # wall-clock speed differs


def _redone_steps(logs_dir: Path, name: str) -> list[int]:
    """Steps the chain's runs logged, lost to a kill, and redone after resuming (from the runs' own logs)."""
    steps = set()
    for log in logs_dir.glob(f"{name}-run*.log"):
        for a, b in re.findall(r"metrics\.jsonl: dropped \d+ entries logged after checkpoint step \d+ "
                               r"\(steps (\d+)\.\.(\d+)\)", log.read_text()):
            steps |= set(range(int(a), int(b) + 1))
    return sorted(steps)


def _assert_same_history(straight_out: Path, chain_out: Path, max_steps: int):
    """Every logged entry of the interrupted runs equals the uninterrupted run's entry for that step (losses,
    learning rates and validation metrics), and each step is logged once: a resumed run drops what it redoes."""
    ref: dict[tuple[int, str], dict] = {}
    for e in _metrics(straight_out):
        ref[(e["step"], "val" if any(k.startswith("val/") for k in e) else "train")] = _comparable(e)
    assert {s for s, kind in ref if kind == "train"} == set(range(1, max_steps + 1))
    seen: dict[tuple[int, str], int] = {}
    for e in _metrics(chain_out):
        key = (e["step"], "val" if any(k.startswith("val/") for k in e) else "train")
        assert key in ref, key
        assert _comparable(e) == pytest.approx(ref[key], rel=1e-6, abs=1e-9), key
        seen[key] = seen.get(key, 0) + 1
    assert set(seen) == set(ref)                                         # no step is missing
    assert set(seen.values()) == {1}, {k: n for k, n in seen.items() if n > 1}     # none twice
    redone = _redone_steps(chain_out.parent, chain_out.name)
    assert redone, "no step was lost and redone: the kills did not interrupt training"
    final_ref = ref[(max_steps, "train")]["train/loss"]
    final = [e["train/loss"] for e in _metrics(chain_out) if e["step"] == max_steps and "train/loss" in e][-1]
    assert final == pytest.approx(final_ref, rel=1e-6)
    return redone


def _assert_same_weights(a: Path, b: Path, kind: str):
    sa, sb = load_artifact(a, kind)["state_dict"], load_artifact(b, kind)["state_dict"]
    assert sa.keys() == sb.keys() and len(sa) > 10
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _start_straight(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen([PY, *cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=subprocess_env())


def _finish_straight(p: subprocess.Popen, log: Path):
    assert p.wait(timeout=TIMEOUT) == 0, _tail(log)


# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_stage1_training_killed_anywhere_resumes_exactly(cache_dir, tmp_path):
    """Stage 1: killed after a checkpoint appears, half-way through save_state, out of disk during a save,
    killed between checkpoints and killed inside the export; the last rerun equals an uninterrupted run."""
    args = [f"cache={cache_dir}", *STAGE1_OVERRIDES]
    straight_out = tmp_path / "straight"
    straight = _start_straight([*STAGE1, f"out_dir={straight_out}", *args], tmp_path / "straight.log")
    c = Chain(tmp_path, [*STAGE1, f"out_dir={tmp_path / 'chain'}", *args], tmp_path / "chain")

    # 1. SIGKILL from outside as soon as the first checkpoint has been renamed into place
    c.run_and_kill_when(lambda: c.ckpt(10).is_dir(), "checkpoint 10 appears")
    assert not (c.out / "tokenizer.pt").exists()
    good = c.newest_good()
    assert good == 10, c.checkpoint_names()

    # 2. killed half-way through accelerator.save_state at step 20 (model written, optimizer file half written)
    rc, log = c.run(fault="mid_state:20")
    _killed(rc, log, "mid_state:20")
    assert _resumed_from(log) == good
    assert (c.tmp_ckpt(20) / "model.safetensors").is_file() and (c.tmp_ckpt(20) / "optimizer.bin").is_file()
    assert not c.ckpt(20).exists() and c.newest_good() == 10

    # 3. the disk fills up during the next save at step 20: the kernel refuses the write mid-file (a file size
    #    limit of 64 KiB; the model file is ~1 MB). The run fails, the partial save is removed, step 10 untouched.
    before = {p.name: p.read_bytes() for p in c.ckpt(10).iterdir()}
    rc, log = c.run(shell_prefix="ulimit -f 64; trap '' XFSZ;")
    assert rc not in (0, -signal.SIGKILL), log[-4000:]
    assert _resumed_from(log) == 10
    assert "saving checkpoint step 20 failed" in log and "step-00000010" in log, log[-4000:]
    assert {p.name: p.read_bytes() for p in c.ckpt(10).iterdir()} == before
    assert c.checkpoint_names() == ["step-00000010"]                    # partial save and old debris removed
    assert c.newest_good() == 10

    # 4. SIGKILL from outside a few steps after checkpoint 20 (between checkpoints: those steps are lost)
    c.run_and_kill_when(lambda: c.max_logged_step() >= 24, "step 24 logged")
    assert c.newest_good() == 20 and c.checkpoint_names() == ["step-00000010", "step-00000020"]

    # 5. killed inside the export, after the last checkpoint (30): the tokenizer file is written but not renamed
    rc, log = c.run(fault="export:0")
    _killed(rc, log, "export:0")
    assert _resumed_from(log) == 20
    assert c.newest_good() == 30 and not (c.out / "tokenizer.pt").exists()
    assert len(list(c.out.glob(".tokenizer.pt.*.tmp.pt"))) == 1          # the complete but unrenamed export

    # 6. the same command once more: resumes from 30 and exports
    rc, log = c.run()
    assert rc == 0, log[-4000:]
    assert _resumed_from(log) == 30
    assert c.checkpoint_names() == ["step-00000020", "step-00000030"]    # keep_last=2, no debris
    assert not list(c.out.glob(".tokenizer.pt.*"))                       # the export's stale temp removed

    _finish_straight(straight, tmp_path / "straight.log")
    redone = _assert_same_history(straight_out, c.out, 30)
    assert set(redone) >= {11, 21, 22, 23, 24}, redone
    _assert_same_weights(straight_out / "tokenizer.pt", c.out / "tokenizer.pt", "stage1_tokenizer")


# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenized(cache_dir, tmp_path_factory):
    """A briefly trained tokenizer and a private copy of the test cache tokenized with it."""
    from conftest import tokenized_copy
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                # small ops; and immune to a busy 2-core machine
    try:
        return tokenized_copy(cache_dir, tmp_path_factory.mktemp("kill_resume_tok"), steps=10)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_stage2_training_killed_anywhere_resumes_exactly(tokenized, tmp_path):
    """Stage 2: killed inside the first save's manifest write (nothing to resume from), after a rename but
    before the rotation, between checkpoints, and between the manifest and the rename; the last rerun equals an
    uninterrupted run."""
    args = [f"cache={tokenized['cache']}", f"tokenizer={tokenized['tokenizer']}", *STAGE2_OVERRIDES]
    straight_out = tmp_path / "straight"
    straight = _start_straight([*STAGE2, f"out_dir={straight_out}", *args], tmp_path / "straight.log")
    c = Chain(tmp_path, [*STAGE2, f"out_dir={tmp_path / 'chain'}", *args], tmp_path / "chain")

    # 1. killed half-way through the manifest of the first checkpoint: nothing complete exists yet
    rc, log = c.run(fault="manifest:10")
    _killed(rc, log, "manifest:10")
    tmp10 = c.tmp_ckpt(10)
    assert (tmp10 / "model.safetensors").is_file() and not (tmp10 / "checkpoint.json").exists()
    assert list(tmp10.glob(".checkpoint.json.*.tmp"))                  # the half-written manifest
    assert c.newest_good() == 0

    # 2. the rerun starts from scratch (the debris is ignored, then removed); killed after checkpoint 20 is
    #    renamed into place but before the rotation
    rc, log = c.run(fault="rotate:20")
    _killed(rc, log, "rotate:20")
    assert _resumed_from(log) == 0
    assert c.newest_good() == 20 and c.checkpoint_names() == ["step-00000010", "step-00000020"]

    # 3. SIGKILL from outside a few steps after checkpoint 20
    c.run_and_kill_when(lambda: c.max_logged_step() >= 24, "step 24 logged")
    assert c.newest_good() == 20

    # 4. resumed from 20; killed between the manifest of checkpoint 30 and its rename
    rc, log = c.run(fault="rename:30")
    _killed(rc, log, "rename:30")
    assert _resumed_from(log) == 20
    assert c.tmp_ckpt(30).is_dir() and not c.ckpt(30).exists()
    assert c.mgr.verify(c.tmp_ckpt(30))[0]                             # complete, but never renamed: not used
    assert c.newest_good() == 20

    # 5. the same command once more: resumes from 20 (not from the unrenamed 30) and finishes
    rc, log = c.run()
    assert rc == 0, log[-4000:]
    assert _resumed_from(log) == 20
    assert c.checkpoint_names() == ["step-00000020", "step-00000030"]

    _finish_straight(straight, tmp_path / "straight.log")
    redone = _assert_same_history(straight_out, c.out, 30)
    assert set(redone) >= set(range(1, 10)) | {21, 22, 23, 24}, redone
    _assert_same_weights(straight_out / "gpt.pt", c.out / "gpt.pt", "stage2_gpt")


# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_loader_worker_error_names_the_dialog(cache_dir, tmp_path):
    """Stage-1 training with a loader worker (train.num_workers=1) on a cache whose train dialog was truncated
    after preprocessing: the command stops with exit code 2 and ``error: ...`` naming the dialog and the fix."""
    from common.data.cache import Cache
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    victim = Cache(cache).dialogs("train")[0]["id"]
    f = cache / "dialogs" / victim / "motion.npy"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    r = subprocess.run([PY, *STAGE1, f"cache={cache}", f"out_dir={tmp_path / 'run'}", "train.num_workers=1",
                        "train.max_steps=30", "train.val_every=0", "train.progress=false"],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2, r.stderr[-4000:]
    # torch re-raises the worker's CacheError in the main process; train.py prints it as `error: ...`
    assert "error: Caught CacheError in DataLoader worker process 0" in r.stderr, r.stderr[-4000:]
    last = r.stderr.strip().splitlines()[-1]
    assert f"cached dialog {victim}" in last and "delete the folder and rerun scripts/preprocess.py" in last
    assert not (tmp_path / "run" / "tokenizer.pt").exists()


# ---------------------------------------------------------------------------------------------------------
def _poison(cache: Path, array: str, frame: int) -> str:
    """One NaN in one train dialog's cached ``array`` (as a bad disk or a buggy external tool would leave it;
    preprocessing itself refuses NaN input). Returns the dialog id."""
    import numpy as np

    from common.data.cache import Cache
    victim = Cache(cache).dialogs("train")[0]["id"]
    f = cache / "dialogs" / victim / f"{array}.npy"
    x = np.load(f)
    x[0, frame, 3] = np.nan
    np.save(f, x)
    return victim


def _nan_run(argv: list[str], out: Path) -> tuple[subprocess.CompletedProcess, list[float]]:
    r = subprocess.run([PY, *argv, f"out_dir={out}", "train.log_every=1", "train.val_every=0", "train.progress=false",
                        "train.warmup_steps=5"], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    losses = [e["train/loss"] for e in _metrics(out)] if (out / "metrics.jsonl").exists() else []
    return r, losses


def _assert_skipped_and_went_on(r, losses: list[float], steps: int, artifact: Path, kind: str):
    import math
    assert r.returncode == 0, r.stderr[-4000:]
    skipped = [i + 1 for i, l in enumerate(losses) if math.isnan(l)]
    assert len(losses) == steps and skipped, losses
    assert r.stderr.count("non-finite loss (nan): step skipped") == len(skipped)
    after = [l for l in losses[skipped[0]:] if not math.isnan(l)]
    assert after and all(math.isfinite(l) for l in after), losses     # finite steps after a skipped one
    state = load_artifact(artifact, kind)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
def test_stage2_nan_in_training_data_skips_steps_then_stops(tokenized, tmp_path):
    """NaN audio features in one cached train dialog: the batches holding it give a NaN loss; each such step is
    skipped with a warning and training goes on to a finite model; with train.max_nonfinite=1 the command stops
    at the first one with exit code 2 and a message naming the setting."""
    cache = tmp_path / "cache"
    shutil.copytree(tokenized["cache"], cache)
    _poison(cache, "audio", 100)
    argv = [*STAGE2, f"cache={cache}", f"tokenizer={tokenized['tokenizer']}", "window=32", "model.attn_window=12",
            "train.batch_size=8", "train.max_steps=14", "train.save_every=7"]
    r, losses = _nan_run(argv + ["train.max_nonfinite=3"], tmp_path / "goes_on")
    _assert_skipped_and_went_on(r, losses, 14, tmp_path / "goes_on" / "gpt.pt", "stage2_gpt")

    r, losses = _nan_run(argv + ["train.max_nonfinite=1"], tmp_path / "stops")
    assert r.returncode == 2, r.stderr[-4000:]
    assert re.search(r"error: 1 non-finite losses in a row up to step \d+: stopping.*train\.max_nonfinite", r.stderr)
    assert not (tmp_path / "stops" / "gpt.pt").exists()


@pytest.mark.slow
def test_stage1_nan_in_training_data_skips_steps_then_goes_on(cache_dir, tmp_path):
    """NaN motion in one cached train dialog: skipped steps must not poison the codebooks (updated inside the
    forward), so training goes on with finite losses and exports a finite tokenizer."""
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    _poison(cache, "motion", 100)
    argv = [*STAGE1, f"cache={cache}", "train.max_steps=15", "train.save_every=15", "train.max_nonfinite=15"]
    r, losses = _nan_run(argv, tmp_path / "run")
    _assert_skipped_and_went_on(r, losses, 15, tmp_path / "run" / "tokenizer.pt", "stage1_tokenizer")
