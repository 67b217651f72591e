"""Train the stage-1 motion tokenizer (causal conv encoder -> ResidualVQ -> causal conv decoder).

    accelerate launch [--config_file configs/accelerate/cpu2.yaml] stage1_vq/train.py \
        --config configs/stage1_vq.yaml [key=value ...]
    python stage1_vq/train.py --config configs/stage1_vq_tiny.yaml cache=CACHE out_dir=runs/s1 train.max_steps=300

Keys: see stage1_vq/config.py (``model.*``, ``loss.*``, ``train.*``, ``cache``, ``out_dir``, ``window``...).
Re-running the same command resumes from the newest good checkpoint in ``out_dir/checkpoints`` (exactly:
same batches, RNG and codebooks). At the end the tokenizer is exported to ``out_dir/tokenizer.pt``
(``stage1_vq.load_tokenizer``); metrics go to ``out_dir/metrics.jsonl`` (and the tracker, if any).
"""
from __future__ import annotations

import os as _os
import sys as _sys

if __name__ == "__main__":
    # Run as a script (``python stage1_vq/train.py``, ``accelerate launch``, ``torchrun``), Python puts this
    # folder first on sys.path, where stage1_vq/tokenize.py would shadow the standard library's ``tokenize``.
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or ".") != _here]

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common.cache import Cache, CacheError
from common.config import ConfigError, to_dict, split_cli_overrides
from common.datasets import MotionWindows
from common.training import (CheckpointManager, DistributedLaunchError, EpochSampler, MetricsLog, NonFiniteGuard, lr_at,
                             make_accelerator)
from stage1_vq import export_tokenizer
from stage1_vq.config import Stage1Config, load_stage1_config
from stage1_vq.evaluate import ReconAccumulator, dead_codes
from stage1_vq.model import MotionTokenizer, default_groups, stage1_loss

log = logging.getLogger("stage1_vq.train")


def motion_groups(cache: Cache) -> dict[str, list[int]]:
    """Dim ranges of exp / jaw (/ neck) from the manifest's ``motion_layout`` (or its data config)."""
    layout = cache.manifest.get("motion_layout")
    if layout:
        return {k: [int(v[0]), int(v[1])] for k, v in layout.items()}
    dc = cache.manifest.get("data_config", {}) or {}
    return default_groups(cache.motion_dim, int(dc.get("expression_dims", cache.motion_dim - 1 - (3 if dc.get("neck_pose") else 0))))


def build_tokenizer(cfg: Stage1Config, cache: Cache) -> MotionTokenizer:
    """The model for ``cache`` (dims, fps, stats). Call after the Accelerator exists (codebook sync)."""
    st = cache.stats
    return MotionTokenizer(cfg.model, motion_dim=cache.motion_dim, fps=cache.fps, motion_mean=st["motion_mean"],
                           motion_std=st["motion_std"], groups=motion_groups(cache))


def _val_subset(ds: MotionWindows, n: int) -> list[int]:
    if n <= 0 or n >= len(ds):
        return list(range(len(ds)))
    return sorted({int(round(i * (len(ds) - 1) / max(n - 1, 1))) for i in range(n)})


@torch.no_grad()
def validate(accelerator, model: MotionTokenizer, val_ds, indices, batch_size: int) -> dict:
    """Every rank evaluates its share of the windows, then the statistics are summed (a collective)."""
    was = model.training
    model.eval()
    acc = ReconAccumulator(model.motion_dim, model.num_quantizers, model.codebook_size)
    mine = indices[accelerator.process_index::accelerator.num_processes]
    # the same number of forwards on every rank (FSDP all-gathers parameters in each one): pad with a dummy
    n_batches = math.ceil(len(indices) / (accelerator.num_processes * batch_size))
    for k in range(n_batches):
        part = mine[k * batch_size:(k + 1) * batch_size]
        x = torch.stack([torch.from_numpy(val_ds[i]["motion"]) for i in (part or indices[:1])])
        x = x.flatten(0, 1).to(accelerator.device)                  # (2b, W, D) normalised
        recon, codes, _ = model(x)
        if part:
            acc.update(x, recon.float(), codes)
    acc.reduce(accelerator)
    model.train(was)
    out = acc.summary(model.groups)
    out["dead_codes"] = dead_codes(model)
    return out


def _flat_metrics(prefix: str, m: dict) -> dict:
    out = {}
    for k, v in m.items():
        if isinstance(v, list):
            if k == "nmse_per_dim":
                out[f"{prefix}/nmse_max_dim"] = max(v)
                continue
            for i, x in enumerate(v):
                out[f"{prefix}/{k}_q{i}"] = x
        elif isinstance(v, (int, float)):
            out[f"{prefix}/{k}"] = v
    return out


def train(cfg: Stage1Config) -> dict:
    """Train (or resume) according to ``cfg``; returns a summary (history of (step, loss), last validation...)."""
    out_dir = Path(cfg.out_dir)
    tc = cfg.train
    accelerator = make_accelerator(tc, out_dir, to_dict(cfg))
    from accelerate.utils import set_seed
    set_seed(tc.seed)
    main = accelerator.is_main_process
    cache = Cache(cfg.cache)
    model = build_tokenizer(cfg, cache)          # after Accelerator(): sync_codebook follows the launch
    groups = model.groups
    stride = cfg.stride or cfg.window // 2
    train_ds = MotionWindows(cache, "train", cfg.window, stride)
    val_split = "val" if cache.dialogs("val") else "train"
    val_ds = MotionWindows(cache, val_split, cfg.window, cfg.window)
    val_idx = _val_subset(val_ds, cfg.val_windows)
    sampler = EpochSampler(len(train_ds), seed=tc.seed)
    if len(train_ds) < tc.batch_size * accelerator.num_processes:
        raise ConfigError(f"{len(train_ds)} training windows are fewer than one batch "
                          f"({tc.batch_size} x {accelerator.num_processes} processes): lower train.batch_size or window")
    loader = DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler, drop_last=True,
                        num_workers=tc.num_workers, generator=torch.Generator().manual_seed(tc.seed),
                        persistent_workers=tc.num_workers > 0)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    raw = accelerator.unwrap_model(model)

    ckpt = CheckpointManager(out_dir, tc.keep_last)
    step = ckpt.resume(accelerator) if cfg.resume else 0
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        log.info("stage 1: %d train windows (%s), %d val windows (%s), %d params, %s, world %d, from step %d",
                 len(train_ds), cfg.cache, len(val_idx), val_split, sum(p.numel() for p in raw.parameters()),
                 accelerator.distributed_type, accelerator.num_processes, step)
    steps_per_epoch = len(loader)
    guard = NonFiniteGuard(tc.max_nonfinite)
    guard.protect(raw)           # the codebooks change inside the forward: a skipped step restores them
    stop_at = min(tc.max_steps, cfg.stop_after) if cfg.stop_after > 0 else tc.max_steps
    history: list[tuple[int, float]] = []
    last_val: dict = {}
    metrics = MetricsLog(out_dir / "metrics.jsonl", start=step, enabled=main, accelerator=accelerator)
    bar = None
    if main and tc.progress:
        from tqdm import tqdm
        bar = tqdm(total=tc.max_steps, initial=step, desc="stage1", unit="step", dynamic_ncols=True)

    t_start, windows_seen = time.perf_counter(), 0
    model.train()
    epoch, skip = divmod(step, steps_per_epoch)
    while step < stop_at:
        loader.set_epoch(epoch)
        it = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in it:
            x = batch["motion"].flatten(0, 1)                       # (2B, W, D): both participants
            for g in opt.param_groups:
                g["lr"] = lr_at(step, tc)
            recon, codes, commit = model(x)
            loss, parts = stage1_loss(recon, x, commit, cfg.loss, groups)
            total = accelerator.reduce(loss.detach().clone(), "sum")   # every rank takes the same decision
            if guard(total, step):
                accelerator.backward(loss)
                if tc.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            windows_seen += x.shape[0] * accelerator.num_processes
            lval = float(total) / accelerator.num_processes
            history.append((step, lval))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{lval:.4f}", rec=f"{float(parts['recon']):.4f}")
            if step % tc.log_every == 0 or step == stop_at:
                el = time.perf_counter() - t_start
                metrics.write(step, {
                    "train/loss": lval, "train/recon": float(parts["recon"]),
                    "train/velocity": float(parts["velocity"]), "train/commit": float(parts["commit"]),
                    "train/lr": opt.param_groups[0]["lr"], "train/windows_per_s": windows_seen / max(el, 1e-9)})
            if tc.val_every > 0 and (step % tc.val_every == 0 or step == stop_at):
                last_val = validate(accelerator, raw, val_ds, val_idx, tc.batch_size)
                metrics.write(step, _flat_metrics("val", last_val))
                if bar is not None:
                    bar.write(f"step {step}: val nMSE exp {last_val['nmse_exp']:.4f} jaw {last_val['nmse_jaw']:.4f} "
                              f"r_jaw {last_val['corr_jaw']:.4f} usage {min(last_val['usage']):.0%} "
                              f"dead {last_val['dead_codes']}")
            if (tc.save_every > 0 and step % tc.save_every == 0) or step == stop_at:
                ckpt.save(accelerator, step, extra={"config": to_dict(cfg)})
            if step >= stop_at:
                break
        epoch += 1
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t_start
    tok_path = None
    if step >= tc.max_steps:
        tok_path = out_dir / cfg.export_name
        state = accelerator.get_state_dict(model)     # full weights on the main process (a collective under FSDP)
        if main:
            export_tokenizer(tok_path, raw, to_dict(cfg), state_dict=state, extra_meta=
                             {"step": step, "cache": str(cfg.cache), "data_config": cache.manifest.get("data_config"),
                              "val": {k: v for k, v in last_val.items() if k != "nmse_per_dim"}})
            log.info("tokenizer written to %s", tok_path)
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": step, "history": history, "val": last_val, "tokenizer": str(tok_path) if tok_path else None,
            "elapsed_s": elapsed, "windows_per_s": windows_seen / max(elapsed, 1e-9),
            "world_size": accelerator.num_processes, "model": raw, "accelerator": accelerator}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    argv, overrides = split_cli_overrides(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="stage-1 YAML (configs/stage1_vq.yaml, configs/stage1_vq_tiny.yaml)")
    ap.add_argument("--cache", help="preprocessed cache (overrides the config's cache)")
    ap.add_argument("--out", help="output folder (overrides out_dir)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cache:
        overrides.append(f"cache={args.cache}")
    if args.out:
        overrides.append(f"out_dir={args.out}")
    try:
        cfg = load_stage1_config(args.config, overrides)
        result = train(cfg)
    except DistributedLaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ConfigError, CacheError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = result["val"]
    if result["accelerator"].is_main_process:
        msg = f"stage 1: {result['step']} steps in {result['elapsed_s']:.0f} s ({result['windows_per_s']:.0f} windows/s)"
        if v:
            msg += (f"; val nMSE exp {v['nmse_exp']:.4f} jaw {v['nmse_jaw']:.4f}, jaw r {v['corr_jaw']:.4f}, "
                    f"usage min {min(v['usage']):.0%}")
        if result["tokenizer"]:
            msg += f"; tokenizer {result['tokenizer']}"
        print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
