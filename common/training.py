"""Building blocks shared by both stages' training loops (each stage keeps its own readable loop).

- :class:`TrainConfig`: the training knobs every stage config embeds as ``train``.
- :func:`make_accelerator`: the Accelerator, trackers (wandb offline by default, lazily imported), and the
  guard against ``accelerate launch`` starting several processes that each train alone.
- :class:`EpochSampler`: a seeded permutation per epoch, so a resumed run sees the same batches.
- :class:`CheckpointManager`: ``accelerator.save_state`` into ``step-XXXXXXXX/`` folders, completed by a
  manifest of checksums written last; verification, fallback to the previous good one, rotation.
- :class:`NonFiniteGuard`: skips NaN/Inf losses (restoring buffers a skipped forward changed) and stops
  after K in a row.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Sampler

from .checkpoint import file_sha256
from .io import atomic_path, write_json

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    max_steps: int = 2000
    grad_clip: float = 1.0
    seed: int = 0
    num_workers: int = 0
    mixed_precision: str = "no"       # "no" | "bf16" | "fp16" (accelerate)
    log_every: int = 20
    val_every: int = 500
    save_every: int = 500
    keep_last: int = 3
    max_nonfinite: int = 5            # NaN/Inf losses in a row before training stops
    tracker: str = "none"             # "none" | "wandb" | "tensorboard"
    project: str = "dyadic-face"
    progress: bool = True


class DistributedLaunchError(RuntimeError):
    pass


def make_accelerator(train: TrainConfig, out_dir: str | Path, run_config: dict | None = None):
    """An Accelerator for this run; refuses several processes that would each train alone."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    log_with = None
    if train.tracker == "wandb":
        try:
            import wandb  # noqa: F401
            os.environ.setdefault("WANDB_MODE", "offline")
            log_with = "wandb"
        except ImportError:
            log.warning("tracker=wandb but wandb is not installed: logging locally only")
    elif train.tracker == "tensorboard":
        log_with = "tensorboard"
    elif train.tracker not in ("none", "", None):
        raise ValueError(f"train.tracker must be none, wandb or tensorboard, got {train.tracker!r}")
    acc = Accelerator(mixed_precision=train.mixed_precision, log_with=log_with,
                      project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and acc.num_processes == 1:
        raise DistributedLaunchError(
            f"WORLD_SIZE={world} but accelerate runs this process alone ({acc.distributed_type}): every process "
            "would train its own copy. On CPU, FSDP is never chosen by accelerate: use "
            "`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 SCRIPT ...` (accelerate launch with configs/accelerate/cpu2.yaml "
            "starts a single process: accelerate 1.15 hands use_cpu configs to its simple launcher); "
            "on GPUs use configs/accelerate/fsdp.yaml.")
    if log_with is not None:
        try:
            acc.init_trackers(train.project, config=_flat(run_config or {}))
        except Exception as e:  # not logged in, offline problems...: train on, log locally
            log.warning("tracker %s could not start (%s): logging locally only", log_with, e)
            acc.log_with = []
    return acc


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def lr_at(step: int, train: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    t = min(1.0, (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps))
    return train.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


class EpochSampler(Sampler):
    """A fixed, seeded permutation per epoch (``set_epoch``), so batches are reproducible after a resume."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class MetricsLog:
    """What a training loop logs: ``out_dir/metrics.jsonl`` (main process only, one JSON line per logged step)
    and the accelerator's trackers (``accelerator.log``: nothing when the run started none).

    On resume from step ``start`` the lines of steps after ``start`` (logged by the killed run, about to be
    redone) are dropped first, atomically, so the file holds each step once."""

    def __init__(self, path: str | Path, start: int, enabled: bool = True, accelerator=None):
        self.path, self.enabled, self.accelerator = Path(path), enabled, accelerator
        if enabled and self.path.is_file():
            lines = self.path.read_text().splitlines()
            steps = [_logged_step(ln) for ln in lines]
            keep = [ln for ln, s in zip(lines, steps) if s <= start]
            if len(keep) != len(lines):
                dropped = [int(s) for s in steps if start < s < math.inf]
                with atomic_path(self.path) as tmp:
                    tmp.write_text("".join(ln + "\n" for ln in keep))
                log.info("%s: dropped %d entries logged after checkpoint step %d (steps %s..%s), which are redone",
                         self.path, len(lines) - len(keep), start, min(dropped, default="-"), max(dropped, default="-"))

    def write(self, step: int, entry: dict) -> None:
        if self.accelerator is not None:
            self.accelerator.log(entry, step=step)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **entry}) + "\n")


def _logged_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf          # a line torn by a kill: dropped


class NonFiniteGuard:
    """Call with each loss: returns False (skip the step) for NaN/Inf; raises after ``limit`` in a row.

    Skipping the optimizer step is not enough for a module whose *forward* updates state in place (the EMA
    codebooks, cluster sizes and k-means ``initted`` flags of a vector quantizer, batch-norm running statistics):
    a NaN batch has already written NaN into those buffers. ``guard.protect(module)`` snapshots the module's
    buffers before each training forward (a forward pre-hook; eval / no-grad forwards are left alone) and puts
    them back when the step is skipped, so a skipped step leaves the model exactly as it was.
    """

    def __init__(self, limit: int = 5):
        self.limit, self.in_a_row, self.total = limit, 0, 0
        self._protected: list[dict] = []

    def protect(self, module: torch.nn.Module) -> torch.nn.Module:
        """Restore ``module``'s buffers whenever a step is skipped (call once, on the unwrapped module)."""
        entry = {"module": module, "snapshot": None}

        def snapshot(mod, args):
            if mod.training and torch.is_grad_enabled():
                entry["snapshot"] = {n: b.detach().clone() for n, b in mod.named_buffers()}

        entry["handle"] = module.register_forward_pre_hook(snapshot)
        self._protected.append(entry)
        return module

    @torch.no_grad()
    def _restore(self) -> int:
        n = 0
        for entry in self._protected:
            snap, entry["snapshot"] = entry["snapshot"], None
            if snap is None:
                continue
            for name, buf in entry["module"].named_buffers():
                old = snap.get(name)
                if old is None:
                    continue
                if buf.shape == old.shape and buf.dtype == old.dtype:
                    buf.copy_(old)
                else:                                   # the forward replaced the buffer: put the old one back
                    owner, _, attr = name.rpartition(".")
                    entry["module"].get_submodule(owner).register_buffer(attr, old)
                n += 1
        return n

    def __call__(self, loss: torch.Tensor, step: int) -> bool:
        if torch.isfinite(loss.detach()).all():
            self.in_a_row = 0
            for entry in self._protected:
                entry["snapshot"] = None
            return True
        self.in_a_row += 1
        self.total += 1
        restored = self._restore()
        value = loss.detach().float().item() if loss.numel() == 1 else f"tensor of {loss.numel()}"
        log.warning("step %d: non-finite loss (%s): step skipped (%d in a row)%s", step, value, self.in_a_row,
                    f", {restored} buffers restored" if restored else "")
        if self.in_a_row >= self.limit:
            raise FloatingPointError(f"{self.in_a_row} non-finite losses in a row up to step {step}: stopping; "
                                     "lower the learning rate or check the data (train.max_nonfinite)")
        return False


MANIFEST_NAME = "checkpoint.json"
_STEP_DIR = re.compile(r"step-(\d+)")


class CheckpointManager:
    """``out/checkpoints/step-XXXXXXXX/``: accelerate state + ``checkpoint.json`` (step, checksums) written last.

    A folder without a valid manifest (killed mid-save, truncated, corrupted) is never resumed from.
    A save is written into ``.tmp-step-XXXXXXXX/`` and renamed when complete, so an interrupted save (kill, disk
    full) never touches an existing checkpoint. Rotation keeps the newest ``keep_last`` checkpoints that *verify*,
    so a corrupt newest one never causes the deletion of the good ones before it.
    """

    def __init__(self, out_dir: str | Path, keep_last: int = 3):
        self.root = Path(out_dir) / "checkpoints"
        self.keep_last = max(1, keep_last)

    def _dirs(self):
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)),
                      key=lambda p: int(p.name.split("-")[1]))

    def verify(self, path: Path) -> tuple[bool, str]:
        m = path / MANIFEST_NAME
        if not m.is_file():
            return False, "no checkpoint.json (the save did not complete)"
        try:
            manifest = json.loads(m.read_text())
            if not isinstance(manifest["step"], int):
                return False, f"checkpoint.json has a non-integer step {manifest['step']!r}"
            for name, info in manifest["files"].items():
                f = path / name
                if not f.is_file():
                    return False, f"{name} is missing"
                if f.stat().st_size != info["size"]:
                    return False, f"{name} has {f.stat().st_size} bytes, expected {info['size']} (truncated?)"
                if file_sha256(f) != info["sha256"]:
                    return False, f"{name} checksum mismatch (corrupted)"
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            return False, f"unreadable checkpoint.json ({type(e).__name__}: {e})"
        return True, "ok"

    def latest_good(self) -> tuple[Path, int] | None:
        for p in reversed(self._dirs()):
            ok, why = self.verify(p)
            if ok:
                return p, int(json.loads((p / MANIFEST_NAME).read_text())["step"])
            log.warning("checkpoint %s is not usable: %s; trying the previous one", p, why)
        return None

    def save(self, accelerator, step: int, extra: dict | None = None) -> Path:
        path = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}"
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                files = {}
                for f in sorted(tmp.rglob("*")):
                    if f.is_file() and f.name != MANIFEST_NAME:
                        files[str(f.relative_to(tmp))] = {"size": f.stat().st_size, "sha256": file_sha256(f)}
                write_json(tmp / MANIFEST_NAME, {"step": step, "files": files, **(extra or {})})
                if path.exists():                   # saving the same step again: replace it only now
                    shutil.rmtree(path)
                os.replace(tmp, path)
        except BaseException as e:
            if accelerator.is_main_process:         # a partial save (disk full, interrupted): free its space
                shutil.rmtree(tmp, ignore_errors=True)
                done = [p for p in self._dirs() if (p / MANIFEST_NAME).is_file()]
                log.error("saving checkpoint step %d failed (%s: %s); the partial save was removed and %s",
                          step, type(e).__name__, str(e).splitlines()[0] if str(e) else "",
                          f"the newest checkpoint is still {done[-1]}" if done else "there is no earlier checkpoint")
            raise
        if accelerator.is_main_process:
            self._rotate(path)
        accelerator.wait_for_everyone()
        return path

    def _rotate(self, just_saved: Path | None = None):
        """Keep the newest ``keep_last`` checkpoints that verify; delete older ones and debris."""
        dirs = self._dirs()
        kept = []
        for p in reversed(dirs):
            if len(kept) >= self.keep_last:
                break
            ok, why = (True, "ok") if p == just_saved else self.verify(p)
            if ok:
                kept.append(p)
            else:
                log.warning("checkpoint %s is not usable (%s)", p, why)
        if not kept:
            return
        newest = int(kept[0].name.split("-")[1])
        # older than the newest good one and not kept: beyond keep_last, or unusable (killed, corrupt)
        for p in dirs:
            if p not in kept and int(p.name.split("-")[1]) < newest:
                shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".tmp-step-*"):     # saves killed before their rename
            shutil.rmtree(p, ignore_errors=True)

    def resume(self, accelerator) -> int:
        """Load the newest good checkpoint into ``accelerator``; returns its step (0 when none)."""
        found = self.latest_good()
        if found is None:
            return 0
        path, step = found
        accelerator.load_state(str(path))
        log.info("resumed from %s (step %d)", path, step)
        return step
