"""Train the stage-1 motion tokenizer (causal conv encoder -> ResidualVQ -> causal conv decoder).

    python stage1_vq/train.py --config configs/stage1_vq_tiny.yaml cache=CACHE out_dir=runs/s1 train.max_steps=300
    accelerate launch --config_file configs/accelerate/fsdp_stage1.yaml stage1_vq/train.py \
        --config configs/stage1_vq.yaml cache=CACHE out_dir=runs/s1                     # GPUs, FSDP2, bf16
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 stage1_vq/train.py --config ...    # 2 CPU processes (DDP)

Keys: see stage1_vq/config.py (``model.*``, ``loss.*``, ``train.*``, ``cache``, ``out_dir``, ``window``...).
The loop (lr schedule, NaN guard, logging, checkpoints, exact resume, progress) is common/train/loop.py's
``fit``; this file holds the model, the loss of a batch and the validation. Re-running the same command resumes
from the newest good checkpoint in ``out_dir/checkpoints`` (same batches, RNG and codebooks). At the end the
tokenizer is exported to ``out_dir/tokenizer.pt`` (``stage1_vq.load_tokenizer``); metrics go to
``out_dir/metrics.jsonl`` (and the tracker, if any).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

if __package__ in (None, ""):         # `python stage1_vq/train.py`: import the repository, not this folder's files
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch

from common.config import to_dict
from common.data.cache import Cache
from common.data.preprocess import content_config
from common.data.datasets import MotionWindows
from common.train.accelerator import make_accelerator
from common.train.loop import fit, spread_indices, train_command
from stage1_vq import export_tokenizer
from stage1_vq.config import Stage1Config, load_stage1_config
from stage1_vq.evaluate import ReconAccumulator, dead_codes
from stage1_vq.model import MotionTokenizer, stage1_loss


def build_tokenizer(cfg: Stage1Config, cache: Cache) -> MotionTokenizer:
    """The model for ``cache`` (dims, fps, stats, layout). Build it after the Accelerator exists: under several
    processes ResidualVQ decides at construction whether to synchronise its codebooks."""
    st = cache.stats
    return MotionTokenizer(cfg.model, motion_dim=cache.motion_dim, fps=cache.fps, motion_mean=st["motion_mean"],
                           motion_std=st["motion_std"], groups=cache.layout.to_json())


def coded_motion(item_motion: torch.Tensor, item_reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Windows (B, 2, W, D) normalised -> (2B, W, D) what the tokenizer codes: motion around each participant's
    reference on the ``mask`` dims (a "person" tokenizer; an all-False mask leaves the motion as it is)."""
    centred = item_motion - (item_reference * mask.to(item_reference.dtype)).unsqueeze(2)
    return centred.flatten(0, 1)


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
        items = [val_ds[i] for i in (part or indices[:1])]
        x = coded_motion(torch.stack([torch.from_numpy(it["motion"]) for it in items]),
                         torch.stack([torch.from_numpy(it["reference"]) for it in items]),
                         model.reference_mask.cpu()).to(accelerator.device)   # (2b, W, D) normalised
        recon, codes, _ = model(x)
        if part:
            acc.update(x, recon.float(), codes)
    acc.reduce(accelerator)
    model.train(was)
    out = acc.summary(model.groups)
    out["dead_codes"] = dead_codes(model)
    return out


def describe_val(v: dict) -> str:
    return (f"val nMSE exp {v['nmse_exp']:.4f} jaw {v['nmse_jaw']:.4f}, jaw r {v['corr_jaw']:.4f}, "
            f"usage min {min(v['usage']):.0%}")


def train(cfg: Stage1Config) -> dict:
    """Train (or resume) according to ``cfg``; returns ``fit``'s summary (``artifact``: the tokenizer file)."""
    accelerator = make_accelerator(cfg.train, cfg.out_dir, to_dict(cfg))
    cache = Cache(cfg.cache)
    model = build_tokenizer(cfg, cache)
    groups = model.groups                                           # exp / jaw (/ pose) dims, weighted in the loss
    mask = model.reference_mask.clone()                             # dims coded around each person's mean
    train_ds = MotionWindows(cache, "train", cfg.window, cfg.stride or cfg.window // 2)
    val_split = "val" if cache.dialogs("val") else "train"
    val_ds = MotionWindows(cache, val_split, cfg.window, cfg.window)
    val_idx = spread_indices(len(val_ds), cfg.val_windows)
    tc = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)

    def loss_fn(model, batch):
        x = coded_motion(batch["motion"], batch["reference"], mask.to(batch["motion"].device))   # (2B, W, D)
        recon, _, commit = model(x)
        return stage1_loss(recon, x, commit, cfg.loss, groups)

    def export(path, raw, state, step, val):
        export_tokenizer(
            path, raw, to_dict(cfg), state_dict=state,
            extra_meta={"step": step, "cache": str(cfg.cache), "data_config": cache.manifest.get("data_config"),
                        "val": {k: v for k, v in val.items() if k != "nmse_per_dim"}})

    return fit(cfg, accelerator, model, opt, train_ds, loss_fn=loss_fn,
               validate=lambda m: validate(accelerator, accelerator.unwrap_model(m), val_ds, val_idx, tc.batch_size),
               describe_val=lambda v: describe_val(v) + f", dead {v['dead_codes']}", export=export, name="stage1",
               about=f"{len(train_ds)} train windows ({cfg.cache}), {len(val_idx)} val windows ({val_split})",
               windows_per_item=2, protect_buffers=True, data={"data_config": content_config(cache.manifest)})


def main(argv=None) -> int:
    return train_command(argv, doc=__doc__, load_config=load_stage1_config, train=train, name="stage 1",
                         artifact="tokenizer", describe_val=describe_val)


if __name__ == "__main__":
    sys.exit(main())
