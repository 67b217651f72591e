"""The one training loop of every model (``fit``) and the command line around it (``train_command``).

A stage's ``train.py`` builds its accelerator (:func:`common.train.accelerator.make_accelerator`, which seeds),
its model, datasets and optimizer, then hands them to :func:`fit` with three functions of its own: the loss of
a batch, the validation, and the export of the trained model. ``fit`` owns everything else, the same for every
stage: the seeded epoch order, the learning-rate schedule, the NaN guard, logging (``metrics.jsonl`` and the
tracker), progress, checkpoints, exact resume and the export at the end.

Resume is exact: rerunning the same command continues from the newest good checkpoint in
``out_dir/checkpoints`` with the same batches (:class:`EpochSampler` + ``skip_first_batches``), RNG state and
buffers, so a killed and resumed run matches an uninterrupted one step for step (tests/test_kill_resume.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Sampler

from common.config import ConfigError, config_differences, parse_args_and_overrides, to_dict, with_added_keys
from common.io import atomic_path
from common.train.accelerator import DistributedLaunchError
from common.train.checkpoints import CheckpointManager
from common.train.config import RunConfig, TrainConfig
from common.train.guard import NonFiniteGuard

log = logging.getLogger(__name__)

# Config keys that may change between the runs of one training in one out_dir (a resume): where it writes,
# whether and when it stops, how it reports and checkpoints, how many loader workers feed it. No step's result
# depends on them. Every other key (the model, the data, the optimizer, the schedule: train.max_steps shapes the
# cosine decay, so a new max_steps is a new run) must match the checkpoint's.
RESUMABLE_KEYS = ("out_dir", "resume", "stop_after", "train.log_every", "train.progress", "train.num_workers",
                  "train.tracker", "train.project", "train.save_every", "train.keep_last", "train.max_nonfinite")
PATH_KEYS = ("cache", "tokenizer")      # equal when they name the same file or folder


class ResumeMismatchError(ConfigError):
    """The newest checkpoint in out_dir was made by a run with another config."""


def _same_path(key: str, a, b) -> bool:
    return (key in PATH_KEYS and isinstance(a, str) and isinstance(b, str)
            and Path(a).expanduser().resolve() == Path(b).expanduser().resolve())


def check_same_run(cfg: RunConfig, checkpoint: Path, manifest: dict, data: dict | None = None) -> None:
    """Refuse to resume from ``checkpoint`` when the config it records differs from ``cfg`` beyond
    :data:`RESUMABLE_KEYS` (a size mismatch would be a traceback; equal sizes a silently mixed run), or when the
    data it records (``fit``'s ``data``: the cache's data config, the tokenizer's checksum) differs from ``data``."""
    stored = manifest.get("config")
    if not isinstance(stored, dict):
        log.warning("%s records no config (an older version): resuming without checking it", checkpoint)
        return
    stored, added = with_added_keys(stored, type(cfg).ADDED_KEYS)
    if added:
        log.info("%s was written before %s existed: compared as %s", checkpoint, ", ".join(added),
                 ", ".join(f"{k}={type(cfg).ADDED_KEYS[k]!r}" for k in added))
    diff = config_differences(to_dict(cfg), stored, ignore=RESUMABLE_KEYS, same=_same_path)
    if data is not None and isinstance(manifest.get("data"), dict):
        diff += [f"data.{d}" for d in config_differences(data, manifest["data"])]
    if diff:
        raise ResumeMismatchError(
            f"out_dir {cfg.out_dir} holds checkpoints of a run with another config ({checkpoint} differs in "
            f"{'; '.join(diff)}): resuming would mix two runs. Use another out_dir, or resume=false to start over "
            "in this one (its checkpoints are deleted)")


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


def spread_indices(n_all: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_all)`` (all of them when ``n`` is 0 or at least ``n_all``)."""
    if n <= 0 or n >= n_all:
        return list(range(n_all))
    return sorted({int(round(i * (n_all - 1) / max(n - 1, 1))) for i in range(n)})


class MetricsLog:
    """What a training loop logs: ``out_dir/metrics.jsonl`` (main process only, one JSON line per logged step)
    and the accelerator's trackers (``accelerator.log``: nothing when the run started none).

    On resume from step ``start`` the lines of steps after ``start`` (logged by the killed run, about to be
    redone) are dropped first, atomically, so the file holds each step once."""

    def __init__(self, path: str | Path, start: int, enabled: bool = True, accelerator=None):
        self.path, self.enabled, self.accelerator = Path(path), enabled, accelerator
        if enabled and self.path.is_file():
            lines = self.path.read_bytes().decode("utf-8", "replace").splitlines()   # bytes a crash left: dropped
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
    except (ValueError, KeyError, TypeError, RecursionError):
        return math.inf          # a line torn by a kill (or garbage): dropped


def flat_metrics(prefix: str, metrics: dict) -> dict:
    """Scalars as ``prefix/key``; a list per quantizer as ``prefix/key_q<i>``; a ``*_per_dim`` list as its max."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, list):
            if k.endswith("_per_dim"):
                out[f"{prefix}/{k[:-len('_per_dim')]}_max_dim"] = max(v)
                continue
            for i, x in enumerate(v):
                out[f"{prefix}/{k}_q{i}"] = x
        elif isinstance(v, (int, float)):
            out[f"{prefix}/{k}"] = v
    return out


def _batch_items(batch: dict) -> int:
    return next(v for v in batch.values() if torch.is_tensor(v)).shape[0]


def fit(cfg: RunConfig, accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_set, *,
        loss_fn: Callable, validate: Callable | None = None, describe_val: Callable[[dict], str] | None = None,
        export: Callable | None = None, name: str = "train", about: str = "", windows_per_item: int = 1,
        protect_buffers: bool = False, data: dict | None = None) -> dict:
    """Train ``model`` on ``train_set`` (or resume) according to ``cfg``; returns a summary.

    - ``loss_fn(model, batch) -> (loss, parts)``: the batch's loss and named parts to log (``train/<part>``).
    - ``validate(model) -> dict``: run on every rank (it may use collectives), every ``train.val_every`` steps
      and at the end; logged as ``val/...`` (:func:`flat_metrics`); ``describe_val(val)``: its progress line.
    - ``export(path, model, state_dict, step, val)``: writes ``out_dir/export_name`` once ``train.max_steps`` is
      reached, on the main process, with the full state dict (gathered from every rank under FSDP).
    - ``protect_buffers``: a skipped (non-finite) step restores the buffers its forward changed (the EMA
      codebooks of a vector quantizer).
    - ``windows_per_item``: training windows per dataset item, for the windows/s figure.
    - ``data``: what the run trains on beyond ``cfg`` (the cache's data config, the tokenizer's checksum), stored
      in every checkpoint; resuming on other data is refused like resuming with another config
      (:func:`check_same_run`).

    Summary: ``step``, ``history`` [(step, loss)], ``val`` (the last validation), ``artifact`` (exported path or
    None), ``elapsed_s``, ``windows_per_s``, ``world_size``, ``model`` (unwrapped), ``accelerator``.
    """
    out_dir, tc, main = Path(cfg.out_dir), cfg.train, accelerator.is_main_process
    if len(train_set) < tc.batch_size * accelerator.num_processes:
        raise ConfigError(f"{len(train_set)} training windows are fewer than one batch "
                          f"({tc.batch_size} x {accelerator.num_processes} processes): lower train.batch_size or window")
    loader = DataLoader(train_set, batch_size=tc.batch_size, sampler=EpochSampler(len(train_set), seed=tc.seed),
                        drop_last=True, num_workers=tc.num_workers, generator=torch.Generator().manual_seed(tc.seed),
                        persistent_workers=tc.num_workers > 0)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    raw = accelerator.unwrap_model(model)

    ckpt = CheckpointManager(out_dir, tc.keep_last)
    if cfg.resume:
        step = ckpt.resume(accelerator, check=lambda path, manifest: check_same_run(cfg, path, manifest, data))
    else:
        _start_over(ckpt, accelerator)
        step = 0
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        log.info("%s: %s, %d params, %s, world %d, from step %d", name, about, sum(p.numel() for p in raw.parameters()),
                 accelerator.distributed_type, accelerator.num_processes, step)
    guard = NonFiniteGuard(tc.max_nonfinite)
    if protect_buffers:
        guard.protect(raw)
    stop_at = min(tc.max_steps, cfg.stop_after) if cfg.stop_after > 0 else tc.max_steps
    history: list[tuple[int, float]] = []
    last_val: dict = {}
    metrics = MetricsLog(out_dir / "metrics.jsonl", start=step, enabled=main, accelerator=accelerator)
    bar = None
    if main and tc.progress:
        from tqdm import tqdm
        bar = tqdm(total=tc.max_steps, initial=step, desc=name, unit="step", dynamic_ncols=True)

    t_start, windows_seen = time.perf_counter(), 0
    model.train()
    epoch, skip = divmod(step, len(loader))
    while step < stop_at:
        loader.set_epoch(epoch)
        for batch in (accelerator.skip_first_batches(loader, skip) if skip else loader):
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, tc)
            loss, parts = loss_fn(model, batch)
            total = accelerator.reduce(loss.detach().clone(), "sum")   # every rank takes the same decision
            if guard(total, step):
                accelerator.backward(loss)
                if tc.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            windows_seen += _batch_items(batch) * windows_per_item * accelerator.num_processes
            lval = float(total) / accelerator.num_processes
            history.append((step, lval))
            parts = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in parts.items()}
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{lval:.4f}", **{k[:3]: f"{v:.4f}" for k, v in list(parts.items())[:1]})
            if step % tc.log_every == 0 or step == stop_at:
                rate = windows_seen / max(time.perf_counter() - t_start, 1e-9)
                entry = {"train/loss": lval, **{f"train/{k}": v for k, v in parts.items()},
                         "train/lr": optimizer.param_groups[0]["lr"], "train/windows_per_s": rate}
                if accelerator.device.type != "cpu":            # peak memory on the accelerator (this process)
                    entry["train/peak_device_mb"] = torch.accelerator.max_memory_allocated(accelerator.device) / 2 ** 20
                metrics.write(step, entry)
            if validate is not None and tc.val_every > 0 and (step % tc.val_every == 0 or step == stop_at):
                last_val = validate(model)
                metrics.write(step, flat_metrics("val", last_val))
                if bar is not None and describe_val is not None:
                    bar.write(f"step {step}: {describe_val(last_val)}")
            if (tc.save_every > 0 and step % tc.save_every == 0) or step == stop_at:
                ckpt.save(accelerator, step, extra={"config": to_dict(cfg), "data": data})
            if step >= stop_at:
                break
        skip = 0
        epoch += 1
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t_start
    artifact = None
    if step >= tc.max_steps and export is not None:
        artifact = out_dir / cfg.export_name
        state = accelerator.get_state_dict(model)     # full weights on the main process (a collective under FSDP)
        if main:
            export(artifact, raw, state, step, last_val)
            log.info("%s: exported %s", name, artifact)
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": step, "history": history, "val": last_val, "artifact": str(artifact) if artifact else None,
            "elapsed_s": elapsed, "windows_per_s": windows_seen / max(elapsed, 1e-9),
            "world_size": accelerator.num_processes, "model": raw, "accelerator": accelerator}


def _start_over(ckpt: CheckpointManager, accelerator) -> None:
    """resume=false: the checkpoints of an earlier run in this out_dir go (rotation would otherwise keep them, as
    newer, and delete this run's)."""
    if accelerator.is_main_process and ckpt.root.is_dir() and any(ckpt.root.iterdir()):
        log.warning("resume=false: deleting the checkpoints of an earlier run in %s", ckpt.root)
        ckpt.remove_all()
    accelerator.wait_for_everyone()


def train_command(argv, *, doc: str, load_config: Callable, train: Callable, name: str, artifact: str,
                  describe_val: Callable[[dict], str], extra_flags: dict[str, tuple[str, str]] | None = None) -> int:
    """The command line of a training script: ``--config YAML``, ``--cache``, ``--out`` and ``extra_flags``
    (``{"tokenizer": ("tokenizer", "help")}``: flag -> config key), and ``key=value`` overrides; prints one
    summary line on the main process. Exit codes: 2 bad input, 3 bad launch."""
    argv = sys.argv[1:] if argv is None else argv
    flags = {"cache": ("cache", "preprocessed cache (overrides the config's cache)"),
             "out": ("out_dir", "output folder (overrides out_dir)"), **(extra_flags or {})}
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (see configs/)")
    for flag, (_, help_text) in flags.items():
        ap.add_argument(f"--{flag}", help=help_text)
    args, overrides = parse_args_and_overrides(ap, argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for flag, (key, _) in flags.items():
        value = getattr(args, flag.replace("-", "_"))
        if value:
            overrides.append(f"{key}={value}")
    from common.data.cache import CacheError
    from common.train.artifact import CheckpointError
    try:
        result = train(load_config(args.config, overrides))
    except DistributedLaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ConfigError, CacheError, CheckpointError, OSError, FloatingPointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result["accelerator"].is_main_process:
        msg = f"{name}: {result['step']} steps in {result['elapsed_s']:.0f} s ({result['windows_per_s']:.1f} windows/s)"
        if result["val"]:
            msg += "; " + describe_val(result["val"])
        if result["artifact"]:
            msg += f"; {artifact} {result['artifact']}"
        print(msg)
    return 0
