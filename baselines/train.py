"""Train a learned anchor baseline: the DualTalk-class regressor, non-causal (the offline accuracy reference) or
causal (the streaming regression alternative).

    python baselines/train.py --config configs/baseline_regressor_tiny.yaml cache=CACHE out_dir=runs/dualtalk_class
    python baselines/train.py --config configs/baseline_regressor_tiny.yaml cache=CACHE \
        out_dir=runs/dualtalk_class_causal model.causal=true
    python baselines/train.py --config configs/baseline_regressor_tiny.yaml cache=CACHE \
        out_dir=runs/dualtalk_class_causal_dyad model.causal=true model.partner_motion=false   # dyad protocol
    accelerate launch baselines/train.py --config configs/baseline_regressor.yaml cache=CACHE out_dir=RUN   # GPUs

Each training window holds both participants (``MotionWindows``: motion (2, W, D) and audio (2, W, F),
normalised); both roles are trained: participant ``p`` is predicted from its own audio, the partner's audio and
the partner's true motion (the DualTalk protocol; with ``model.partner_motion=false``, the dyad protocol, from
the two audio tracks only), for p = 0 and 1. Loss: DualTalk's (``main.py``), MSE of exp,
jaw (and neck pose) plus MSE of the velocity, on normalised motion. Keys: baselines/config.py. The loop (lr
schedule, NaN guard, logging, checkpoints, exact resume, progress) is common/train/loop.py's ``fit``; rerunning
the same command resumes. At the end the model is exported to ``out_dir/regressor.pt`` (baselines/artifact.py),
which ``scripts/baselines.py --regressor`` samples.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):         # `python baselines/train.py`: import the repository, not this folder's files
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch

from baselines.artifact import export_regressor
from baselines.config import RegressorConfig, RegressorLossConfig, load_regressor_config
from baselines.model import DualTalkRegressor
from common.config import ConfigError, to_dict
from common.data.cache import Cache
from common.data.preprocess import content_config
from common.data.datasets import MotionWindows
from common.train.accelerator import make_accelerator
from common.train.loop import fit, spread_indices, train_command


def build_model(cfg: RegressorConfig, cache: Cache) -> DualTalkRegressor:
    """The regressor, its motion and audio dims filled in from the cache."""
    m = cfg.model
    for key, value in (("motion_dim", cache.motion_dim), ("audio_dim", cache.audio_dim)):
        have = getattr(m, key)
        if have and have != value:
            raise ConfigError(f"model.{key}={have} disagrees with the cache ({value}): leave it 0")
        setattr(m, key, int(value))
    return DualTalkRegressor(m)


def regression_loss(pred, target, groups: dict[str, slice], weights: RegressorLossConfig):
    """DualTalk's loss: per group (exp, jaw, pose) the MSE over its dims, plus the MSE of the first differences
    over every dim; returns (loss, parts)."""
    parts = {g: torch.mean((pred[..., s] - target[..., s]) ** 2) for g, s in groups.items()}
    parts["velocity"] = torch.mean((pred.diff(dim=-2) - target.diff(dim=-2)) ** 2)
    loss = sum(getattr(weights, k) * v for k, v in parts.items())
    return loss, parts


@torch.no_grad()
def validate(accelerator, model, val_ds, indices, batch_size: int, groups: dict[str, slice]) -> dict:
    """Normalised MSE per group (1.0 = predicting the val windows' mean; both roles), and the velocity MSE,
    summed over every rank."""
    was = model.training
    model.eval()
    D = val_ds.cache.motion_dim
    acc = torch.zeros(3 * D + 3, dtype=torch.float64, device=accelerator.device)   # sse, sum, sum^2 per dim; vel
    world = accelerator.num_processes
    usable = indices[:max(world, len(indices) - len(indices) % world)]      # the same batches on every rank
    mine = usable[accelerator.process_index::world]
    for k in range(0, len(mine), batch_size):
        items = [val_ds[i] for i in mine[k:k + batch_size]]
        motion = torch.stack([torch.from_numpy(it["motion"]) for it in items]).to(accelerator.device)
        audio = torch.stack([torch.from_numpy(it["audio"]) for it in items]).to(accelerator.device)
        pred = model(motion, audio).double()
        y = motion.double()
        acc[:D] += ((pred - y) ** 2).sum((0, 1, 2))
        acc[D:2 * D] += y.sum((0, 1, 2))
        acc[2 * D:3 * D] += (y ** 2).sum((0, 1, 2))
        acc[3 * D] += ((pred.diff(dim=-2) - y.diff(dim=-2)) ** 2).sum()
        acc[3 * D + 1] += y.shape[0] * y.shape[1] * y.shape[2]
        acc[3 * D + 2] += y.shape[0] * y.shape[1] * (y.shape[2] - 1) * D
    if world > 1:
        acc = accelerator.reduce(acc, "sum")
    acc = acc.cpu()
    n = float(acc[3 * D + 1].clamp_min(1))
    sse, mean = acc[:D], acc[D:2 * D] / n
    var_sum = (acc[2 * D:3 * D] - n * mean ** 2).clamp_min(1e-12)       # n * variance per dim
    out = {f"nmse_{g}": float(sse[s].sum() / var_sum[s].sum()) for g, s in groups.items()}
    out["mse"] = float(sse.sum() / (n * D))
    out["mse_velocity"] = float(acc[3 * D] / acc[3 * D + 2].clamp_min(1))
    model.train(was)
    return out


def describe_val(v: dict) -> str:
    return "val " + ", ".join(f"{k} {v[k]:.4f}" for k in v if k.startswith("nmse_")) + f", vel {v['mse_velocity']:.4f}"


def train(cfg: RegressorConfig) -> dict:
    """Train (or resume) according to ``cfg``; returns ``fit``'s summary (``artifact``: the regressor file)."""
    accelerator = make_accelerator(cfg.train, cfg.out_dir, to_dict(cfg))
    cache = Cache(cfg.cache)
    model = build_model(cfg, cache)
    groups = cache.layout.slices()
    train_ds = MotionWindows(cache, "train", cfg.window, cfg.stride or cfg.window // 2)
    val_split = "val" if cache.dialogs("val") else "train"
    val_ds = MotionWindows(cache, val_split, cfg.window, cfg.window)
    val_idx = spread_indices(len(val_ds), cfg.val_windows)
    tc = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)

    def loss_fn(model, batch):
        motion = batch["motion"]                                     # (B, 2, W, D): both participants
        return regression_loss(model(motion, batch["audio"]), motion, groups, cfg.loss)

    def export(path, raw, state, step, val):
        export_regressor(path, state, cfg, cache, {"step": step, "cache": str(cfg.cache), "val": val,
                                                   "num_params": raw.num_params()})

    kind = ("causal" if cfg.model.causal else "non-causal") + (
        ", DualTalk's protocol: the partner's true motion read" if cfg.model.partner_motion else
        ", dyad protocol: both audio tracks only")
    return fit(cfg, accelerator, model, opt, train_ds, loss_fn=loss_fn,
               validate=lambda m: validate(accelerator, m, val_ds, val_idx, tc.batch_size, groups),
               describe_val=describe_val, export=export, name="regressor",
               about=f"DualTalk-class regressor ({kind}), {len(train_ds)} train windows of {cfg.window} frames "
                     f"({cfg.cache}), {len(val_idx)} val windows ({val_split})",
               windows_per_item=2, data={"data_config": content_config(cache.manifest)})


def main(argv=None) -> int:
    return train_command(argv, doc=__doc__, load_config=load_regressor_config, train=train,
                         name="baseline regressor", artifact="regressor", describe_val=describe_val)


if __name__ == "__main__":
    sys.exit(main())
