"""Train the stage-2 dyadic GPT on pre-tokenized dialogs (both participants' codes + both audio tracks).

    accelerate launch [--config_file configs/accelerate/cpu2.yaml] stage2_gpt/train.py \
        --config configs/stage2_gpt.yaml [key=value ...]
    python stage2_gpt/train.py --config configs/stage2_gpt_tiny.yaml cache=CACHE tokenizer=RUN1/tokenizer.pt \
        out_dir=runs/s2

Needs ``CACHE/tokens/<name>`` from ``python -m stage1_vq.tokenize --ckpt TOKENIZER --cache CACHE``: the frozen
tokenizer never enters ``accelerator.prepare`` (it is only read for its description). Keys: see
stage2_gpt/config.py (``model.*``, ``train.*``, ``cache``, ``tokenizer``, ``window``, ``model.speaker_only``...).
Re-running the same command resumes from the newest good checkpoint in ``out_dir/checkpoints`` (exactly: same
batches and RNG). At the end the GPT is exported to ``out_dir/gpt.pt`` (config, weights, tokenizer and audio
feature description: ``stage2_gpt.generate.load_gpt``); metrics go to ``out_dir/metrics.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):         # `python stage2_gpt/train.py`: make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch
from torch.utils.data import DataLoader

from common.cache import Cache, CacheError
from common.checkpoint import CheckpointError, file_sha256, save_artifact
from common.config import ConfigError, split_cli_overrides, to_dict
from common.datasets import TokenWindows
from common.io import read_json
from common.training import (CheckpointManager, DistributedLaunchError, EpochSampler, MetricsLog, NonFiniteGuard, lr_at,
                             make_accelerator)
from stage2_gpt.config import Stage2Config, load_stage2_config
from stage2_gpt.model import DyadGPT, GPTConfig

log = logging.getLogger("stage2_gpt.train")
ARTIFACT_KIND = "stage2_gpt"


def find_tokens(cache: Cache, tokenizer_path: str | Path, name: str = "") -> tuple[str, dict]:
    """The tokens folder of ``tokenizer_path`` in ``cache`` (by name, or the one whose checksum matches)."""
    root = cache.root / "tokens"
    sha = file_sha256(tokenizer_path)
    candidates = [root / name] if name else sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    for folder in candidates:
        info_path = folder / "tokens.json"
        if not info_path.is_file():
            continue
        info = read_json(info_path)
        if info.get("tokenizer_sha256") == sha:
            return folder.name, info
        if name:
            raise ValueError(f"{folder} holds tokens of another tokenizer ({info.get('tokenizer')}), not of "
                             f"{tokenizer_path}: re-tokenize or set tokens=")
    raise FileNotFoundError(f"no complete tokens folder of {tokenizer_path} in {root}: run "
                            f"`python -m stage1_vq.tokenize --ckpt {tokenizer_path} --cache {cache.root}` first")


def tokenizer_description(tokenizer_path: str | Path) -> dict:
    """What the GPT must agree on with its tokenizer (read through stage1_vq.load_tokenizer)."""
    from stage1_vq import load_tokenizer
    tok = load_tokenizer(tokenizer_path)
    return {"path": str(Path(tokenizer_path).resolve()), "sha256": file_sha256(tokenizer_path), "fps": tok.fps,
            "motion_dim": tok.motion_dim, "downsample": tok.downsample, "num_quantizers": tok.num_quantizers,
            "codebook_size": tok.codebook_size, "lookahead_frames": tok.lookahead_frames}


def audio_description(cache: Cache) -> dict:
    """Everything needed to compute the model's audio input from a raw WAV (common/audio.py's path), and the
    motion layout / data config to write and read FLAME files."""
    dc = cache.manifest.get("data_config", {}) or {}
    return {"features": cache.manifest["audio_features"], "audio_config": dc.get("audio", {}),
            "sample_rate": int(cache.manifest.get("sample_rate", dc.get("sample_rate", 48000))),
            "fps": cache.fps, "audio_mean": cache.stats["audio_mean"], "audio_std": cache.stats["audio_std"],
            "motion_layout": cache.manifest.get("motion_layout", {}), "data_config": dc}


def build_model(cfg: Stage2Config, tok: dict, audio_dim: int, identity_dim: int) -> DyadGPT:
    m = cfg.model
    fill = [("num_quantizers", tok["num_quantizers"]), ("codebook_size", tok["codebook_size"]),
            ("downsample", tok["downsample"]), ("audio_dim", audio_dim)]
    if m.use_identity:
        fill.append(("identity_dim", identity_dim))
    for key, value in fill:
        have = getattr(m, key)
        if have and have != value:
            raise ConfigError(f"model.{key}={have} disagrees with the tokenizer/cache ({value}): leave it 0")
        setattr(m, key, int(value))
    return DyadGPT(m)


def _subset(n_all: int, n: int) -> list[int]:
    if n <= 0 or n >= n_all:
        return list(range(n_all))
    return sorted({int(round(i * (n_all - 1) / max(n - 1, 1))) for i in range(n)})


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def validate(accelerator, model, val_ds, indices, batch_size: int) -> dict:
    """Token cross-entropy and accuracy per RVQ level (and state accuracy), summed over every rank."""
    was = model.training
    model.eval()
    Q = val_ds.codes(0).shape[-1]
    # per level: CE sum, correct, count; then state correct, state count
    acc = torch.zeros(3 * Q + 2, dtype=torch.float64, device=accelerator.device)
    world = accelerator.num_processes
    usable = indices[:max(world, len(indices) - len(indices) % world)]   # same number of batches on every rank
    mine = usable[accelerator.process_index::world]
    for k in range(0, len(mine), batch_size):
        items = [val_ds[i] for i in mine[k:k + batch_size]]
        b = {key: torch.stack([torch.as_tensor(it[key]) for it in items]).to(accelerator.device)
             for key in ("codes", "prev", "audio", "states", "shape")}
        out, losses = model(b["codes"], b["audio"], b["states"], b["prev"], b["shape"], reduction="none")
        ce = losses["token"].double()                                   # (B, 2, K, Q)
        hit = (out["logits"].argmax(-1) == b["codes"]).double()
        acc[0:Q] += ce.sum((0, 1, 2))
        acc[Q:2 * Q] += hit.sum((0, 1, 2))
        acc[2 * Q:3 * Q] += ce[..., 0].numel()
        if out["state_logits"] is not None:
            acc[3 * Q] += (out["state_logits"].argmax(-1) == b["states"]).double().sum()
            acc[3 * Q + 1] += b["states"].numel()
    if accelerator.num_processes > 1:
        acc = accelerator.reduce(acc, "sum")
    acc = acc.cpu()
    n = acc[2 * Q:3 * Q].clamp_min(1)
    ce, ac = (acc[:Q] / n).tolist(), (acc[Q:2 * Q] / n).tolist()
    model.train(was)
    out = {"loss": sum(ce) / Q, "acc": sum(ac) / Q, **{f"loss_q{i}": v for i, v in enumerate(ce)},
           **{f"acc_q{i}": v for i, v in enumerate(ac)}}
    if acc[3 * Q + 1] > 0:
        out["state_acc"] = float(acc[3 * Q] / acc[3 * Q + 1])
    return out


def export_gpt(path, state_dict: dict, cfg: Stage2Config, tok: dict, audio: dict, extra: dict | None = None):
    meta = {"gpt_config": to_dict(cfg.model), "tokenizer": tok, "audio": audio, **(extra or {})}
    return save_artifact(path, kind=ARTIFACT_KIND, state_dict=state_dict, config=to_dict(cfg), meta=meta)


def train(cfg: Stage2Config) -> dict:
    """Train (or resume) according to ``cfg``; returns a summary (history of (step, loss), last validation...)."""
    out_dir = Path(cfg.out_dir)
    tc = cfg.train
    accelerator = make_accelerator(tc, out_dir, to_dict(cfg))
    from accelerate.utils import set_seed
    set_seed(tc.seed)
    main = accelerator.is_main_process
    cache = Cache(cfg.cache)
    tok = tokenizer_description(cfg.tokenizer)        # the frozen tokenizer stays out of accelerator.prepare
    tokens_name, tokens_info = find_tokens(cache, cfg.tokenizer, cfg.tokens)
    if int(tokens_info["downsample"]) != tok["downsample"]:
        raise ConfigError(f"tokens {tokens_name} were made with downsample {tokens_info['downsample']}, "
                          f"the tokenizer has {tok['downsample']}")
    identity_dim = int(cache.load(cache.dialogs()[0]["id"]).shape.shape[-1])
    model = build_model(cfg, tok, cache.audio_dim, identity_dim)
    d = tok["downsample"]
    train_ds = TokenWindows(cache, tokens_name, d, "train", cfg.window, cfg.stride or cfg.window // 2,
                            both_orderings=cfg.both_orderings)
    val_split = "val" if cache.dialogs("val") else "train"
    val_ds = TokenWindows(cache, tokens_name, d, val_split, cfg.window, cfg.window)
    val_idx = _subset(len(val_ds), cfg.val_windows)
    if len(train_ds) < tc.batch_size * accelerator.num_processes:
        raise ConfigError(f"{len(train_ds)} training windows are fewer than one batch "
                          f"({tc.batch_size} x {accelerator.num_processes} processes): lower train.batch_size or window")
    sampler = EpochSampler(len(train_ds), seed=tc.seed)
    loader = DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler, drop_last=True,
                        num_workers=tc.num_workers, generator=torch.Generator().manual_seed(tc.seed),
                        persistent_workers=tc.num_workers > 0)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=tuple(tc.betas))
    model, opt, loader = accelerator.prepare(model, opt, loader)
    raw = accelerator.unwrap_model(model)

    ckpt = CheckpointManager(out_dir, tc.keep_last)
    step = ckpt.resume(accelerator) if cfg.resume else 0
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        log.info("stage 2: %d train windows of %d steps (%s, tokens %s), %d val windows (%s), %d params, "
                 "rvq_head=%s, speaker_only=%s, %s, world %d, from step %d", len(train_ds), cfg.window, cfg.cache,
                 tokens_name, len(val_idx), val_split, raw.num_params(), cfg.model.rvq_head, cfg.model.speaker_only,
                 accelerator.distributed_type, accelerator.num_processes, step)
    steps_per_epoch = len(loader)
    guard = NonFiniteGuard(tc.max_nonfinite)
    stop_at = min(tc.max_steps, cfg.stop_after) if cfg.stop_after > 0 else tc.max_steps
    history: list[tuple[int, float]] = []
    last_val: dict = {}
    metrics = MetricsLog(out_dir / "metrics.jsonl", start=step, enabled=main, accelerator=accelerator)
    bar = None
    if main and tc.progress:
        from tqdm import tqdm
        bar = tqdm(total=tc.max_steps, initial=step, desc="stage2", unit="step", dynamic_ncols=True)

    t_start, windows_seen = time.perf_counter(), 0
    model.train()
    epoch, skip = divmod(step, steps_per_epoch)
    while step < stop_at:
        loader.set_epoch(epoch)
        it = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in it:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, tc)
            _, parts = model(batch["codes"], batch["audio"], batch["states"], batch["prev"], batch["shape"])
            loss = parts["loss"]
            total = accelerator.reduce(loss.detach().clone(), "sum")   # every rank takes the same decision
            if guard(total, step):
                accelerator.backward(loss)
                if tc.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            windows_seen += batch["codes"].shape[0] * accelerator.num_processes
            lval = float(total) / accelerator.num_processes
            history.append((step, lval))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{lval:.4f}", tok=f"{float(parts['token'].detach()):.4f}")
            if step % tc.log_every == 0 or step == stop_at:
                el = time.perf_counter() - t_start
                entry = {"train/loss": lval, "train/token": float(parts["token"].detach()), "train/lr": opt.param_groups[0]["lr"],
                         "train/windows_per_s": windows_seen / max(el, 1e-9)}
                if "state" in parts:
                    entry["train/state"] = float(parts["state"].detach())
                metrics.write(step, entry)
            if tc.val_every > 0 and (step % tc.val_every == 0 or step == stop_at):
                last_val = validate(accelerator, model, val_ds, val_idx, tc.batch_size)
                metrics.write(step, {f"val/{k}": v for k, v in last_val.items()})
                if bar is not None:
                    Q = raw.cfg.num_quantizers
                    bar.write(f"step {step}: val loss {last_val['loss']:.4f} acc "
                              + " ".join(f"q{i} {last_val[f'acc_q{i}']:.3f}" for i in range(Q))
                              + (f" state {last_val['state_acc']:.3f}" if "state_acc" in last_val else ""))
            if (tc.save_every > 0 and step % tc.save_every == 0) or step == stop_at:
                ckpt.save(accelerator, step, extra={"config": to_dict(cfg)})
            if step >= stop_at:
                break
        epoch += 1
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t_start
    gpt_path = None
    if step >= tc.max_steps:
        gpt_path = out_dir / cfg.export_name
        state = accelerator.get_state_dict(model)          # full state dict on rank 0 (FSDP too)
        if main:
            export_gpt(gpt_path, state, cfg, tok, audio_description(cache),
                       {"step": step, "cache": str(cfg.cache), "tokens": tokens_name, "val": last_val,
                        "num_params": raw.num_params()})
            log.info("GPT written to %s", gpt_path)
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": step, "history": history, "val": last_val, "gpt": str(gpt_path) if gpt_path else None,
            "elapsed_s": elapsed, "windows_per_s": windows_seen / max(elapsed, 1e-9),
            "world_size": accelerator.num_processes, "model": raw, "accelerator": accelerator}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    argv, overrides = split_cli_overrides(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="stage-2 YAML (configs/stage2_gpt.yaml, configs/stage2_gpt_tiny.yaml)")
    ap.add_argument("--cache", help="preprocessed, tokenized cache (overrides the config's cache)")
    ap.add_argument("--tokenizer", help="stage-1 tokenizer file (overrides the config's tokenizer)")
    ap.add_argument("--out", help="output folder (overrides out_dir)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for flag, key in ((args.cache, "cache"), (args.tokenizer, "tokenizer"), (args.out, "out_dir")):
        if flag:
            overrides.append(f"{key}={flag}")
    try:
        cfg = load_stage2_config(args.config, overrides)
        result = train(cfg)
    except DistributedLaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ConfigError, CacheError, CheckpointError, FileNotFoundError, FloatingPointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = result["val"]
    if result["accelerator"].is_main_process:
        msg = f"stage 2: {result['step']} steps in {result['elapsed_s']:.0f} s ({result['windows_per_s']:.1f} windows/s)"
        if v:
            msg += f"; val loss {v['loss']:.4f}, acc " + "/".join(f"{v[k]:.3f}" for k in sorted(v) if k.startswith("acc_q"))
        if result["gpt"]:
            msg += f"; GPT {result['gpt']}"
        print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
