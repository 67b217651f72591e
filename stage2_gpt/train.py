"""Train the stage-2 dyadic GPT on pre-tokenized dialogs (both participants' codes + both audio tracks).

    python stage2_gpt/train.py --config configs/stage2_gpt_tiny.yaml cache=CACHE tokenizer=RUN1/tokenizer.pt \
        out_dir=runs/s2
    accelerate launch --config_file configs/accelerate/fsdp_stage2.yaml stage2_gpt/train.py \
        --config configs/stage2_gpt.yaml cache=CACHE tokenizer=RUN1/tokenizer.pt out_dir=runs/s2   # GPUs, FSDP2
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 stage2_gpt/train.py --config ...          # 2 CPU processes

Needs ``CACHE/tokens/<name>`` from ``python -m stage1_vq.tokens --tokenizer TOKENIZER --cache CACHE``: the frozen
tokenizer never enters ``accelerator.prepare`` (it is only read for its description). Keys: see
stage2_gpt/config.py (``model.*``, ``train.*``, ``cache``, ``tokenizer``, ``window``, ``model.speaker_only``...).
The loop (lr schedule, NaN guard, logging, checkpoints, exact resume, progress) is common/train/loop.py's
``fit``; this file holds the model, its loss and the validation. At the end the GPT is exported to
``out_dir/gpt.pt`` (stage2_gpt/artifact.py); metrics go to ``out_dir/metrics.jsonl``.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):         # `python stage2_gpt/train.py`: import the repository, not this folder's files
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch

from common.config import ConfigError, to_dict
from common.data.cache import Cache
from common.data.preprocess import content_config
from common.data.datasets import TokenWindows
from common.train.accelerator import make_accelerator
from common.train.loop import fit, spread_indices, train_command
from stage1_vq.tokens import find_tokens
from stage2_gpt.artifact import audio_description, export_gpt, tokenizer_description
from stage2_gpt.config import Stage2Config, load_stage2_config
from stage2_gpt.model import DyadGPT

MODEL_INPUTS = ("codes", "audio", "states", "prev", "shape", "jaw", "audio_prev")


def build_model(cfg: Stage2Config, tok: dict, audio_dim: int, identity_dim: int, cache: Cache | None = None) -> DyadGPT:
    """The GPT, its sizes that come from the data filled in (tokenizer geometry, audio and identity dims; with
    ``jaw_head`` the jaw dims and their normalisation, from ``cache``)."""
    m = cfg.model
    fill = [("num_quantizers", tok["num_quantizers"]), ("codebook_size", tok["codebook_size"]),
            ("downsample", tok["downsample"]), ("audio_dim", audio_dim)]
    if m.use_identity:
        fill.append(("identity_dim", identity_dim))
    if m.jaw_head:
        if cache is None:
            raise ConfigError("model.jaw_head needs the cache (its motion layout and statistics)")
        j0, j1 = cache.layout.jaw
        fill.append(("jaw_dims", j1 - j0))
    for key, value in fill:
        have = getattr(m, key)
        if have and have != value:
            raise ConfigError(f"model.{key}={have} disagrees with the tokenizer/cache ({value}): leave it 0")
        setattr(m, key, int(value))
    model = DyadGPT(m)
    if m.jaw_head:
        model.jaw_mean.copy_(torch.as_tensor(cache.stats["motion_mean"][j0:j1], dtype=torch.float32))
        model.jaw_std.copy_(torch.as_tensor(cache.stats["motion_std"][j0:j1], dtype=torch.float32))
    return model


@torch.no_grad()
def validate(accelerator, model, val_ds, indices, batch_size: int) -> dict:
    """Token cross-entropy and accuracy per RVQ level (and state accuracy), summed over every rank."""
    was = model.training
    model.eval()
    Q = val_ds.codes(0).shape[-1]
    # per level: CE sum, correct, count; then state correct, state count
    acc = torch.zeros(3 * Q + 4, dtype=torch.float64, device=accelerator.device)   # + jaw squared error, count
    world = accelerator.num_processes
    usable = indices[:max(world, len(indices) - len(indices) % world)]   # same number of batches on every rank
    mine = usable[accelerator.process_index::world]
    for k in range(0, len(mine), batch_size):
        items = [val_ds[i] for i in mine[k:k + batch_size]]
        b = {key: torch.stack([torch.as_tensor(it[key]) for it in items]).to(accelerator.device) for key in MODEL_INPUTS}
        out, losses = model(*(b[k] for k in MODEL_INPUTS), reduction="none")
        ce = losses["token"].double()                                   # (B, 2, K, Q)
        hit = (out["logits"].argmax(-1) == b["codes"]).double()
        acc[0:Q] += ce.sum((0, 1, 2))
        acc[Q:2 * Q] += hit.sum((0, 1, 2))
        acc[2 * Q:3 * Q] += ce[..., 0].numel()
        if out["state_logits"] is not None:
            acc[3 * Q] += (out["state_logits"].argmax(-1) == b["states"]).double().sum()
            acc[3 * Q + 1] += b["states"].numel()
        if out["jaw"] is not None:
            acc[3 * Q + 2] += ((out["jaw"].double() - b["jaw"].double()) ** 2).sum()
            acc[3 * Q + 3] += b["jaw"].numel()
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
    if acc[3 * Q + 3] > 0:
        out["jaw_mse"] = float(acc[3 * Q + 2] / acc[3 * Q + 3])
    return out


def describe_val(v: dict) -> str:
    return (f"val loss {v['loss']:.4f}, acc " + "/".join(f"{v[k]:.3f}" for k in sorted(v) if k.startswith("acc_q"))
            + (f", state {v['state_acc']:.3f}" if "state_acc" in v else "")
            + (f", jaw mse {v['jaw_mse']:.4f}" if "jaw_mse" in v else ""))


def train(cfg: Stage2Config) -> dict:
    """Train (or resume) according to ``cfg``; returns ``fit``'s summary (``artifact``: the GPT file)."""
    accelerator = make_accelerator(cfg.train, cfg.out_dir, to_dict(cfg))
    cache = Cache(cfg.cache)
    tok = tokenizer_description(cfg.tokenizer)        # the frozen tokenizer stays out of accelerator.prepare
    tokens_name, tokens_info = find_tokens(cache, cfg.tokenizer, cfg.tokens)
    if int(tokens_info["downsample"]) != tok["downsample"]:
        raise ConfigError(f"tokens {tokens_name} were made with downsample {tokens_info['downsample']}, "
                          f"the tokenizer has {tok['downsample']}")
    identity_dim = int(cache.load(cache.dialogs()[0]["id"]).shape.shape[-1])
    model = build_model(cfg, tok, cache.audio_dim, identity_dim, cache)
    d = tok["downsample"]
    C = cfg.model.audio_context - 1
    train_ds = TokenWindows(cache, tokens_name, d, "train", cfg.window, cfg.stride or cfg.window // 2, audio_before=C)
    val_split = "val" if cache.dialogs("val") else "train"
    val_ds = TokenWindows(cache, tokens_name, d, val_split, cfg.window, cfg.window, audio_before=C)
    val_idx = spread_indices(len(val_ds), cfg.val_windows)
    tc = cfg.train
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=tuple(tc.betas))

    def loss_fn(model, batch):
        _, parts = model(*(batch[k] for k in MODEL_INPUTS))
        return parts["loss"], {k: v for k, v in parts.items() if k != "loss"}

    def export(path, raw, state, step, val):
        export_gpt(path, state, cfg, tok, audio_description(cache),
                   {"step": step, "cache": str(cfg.cache), "tokens": tokens_name, "val": val,
                    "num_params": raw.num_params()})

    return fit(cfg, accelerator, model, opt, train_ds, loss_fn=loss_fn,
               validate=lambda m: validate(accelerator, m, val_ds, val_idx, tc.batch_size),
               describe_val=describe_val, export=export, name="stage2",
               data={"data_config": content_config(cache.manifest), "tokenizer_sha256": tok["sha256"]},
               about=f"{len(train_ds)} train windows of {cfg.window} steps ({cfg.cache}, tokens {tokens_name}), "
                     f"{len(val_idx)} val windows ({val_split}), rvq_head={cfg.model.rvq_head}, "
                     f"speaker_only={cfg.model.speaker_only}")


def main(argv=None) -> int:
    return train_command(argv, doc=__doc__, load_config=load_stage2_config, train=train, name="stage 2",
                         artifact="GPT", describe_val=describe_val,
                         extra_flags={"tokenizer": ("tokenizer", "stage-1 tokenizer file (overrides the config's tokenizer)")})


if __name__ == "__main__":
    sys.exit(main())
