"""The Accelerator of a training run: mixed precision, trackers (wandb offline by default, imported lazily),
seeding, and a refusal to let several processes each train alone."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from common.train.config import TrainConfig

log = logging.getLogger(__name__)


class DistributedLaunchError(RuntimeError):
    pass


def make_accelerator(train: TrainConfig, out_dir: str | Path, run_config: dict | None = None):
    """An Accelerator for this run, with every RNG seeded from ``train.seed`` (build the model after this call:
    initial weights and, under several processes, ResidualVQ's codebook sync depend on it); refuses several
    processes that would each train alone."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

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
            "`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 SCRIPT ...` (accelerate 1.15's launcher starts a "
            "single process for use_cpu configs); on GPUs `accelerate launch --config_file "
            "configs/accelerate/fsdp_stage1.yaml` (or fsdp_stage2.yaml).")
    if log_with is not None:
        try:
            acc.init_trackers(train.project, config=_flat(run_config or {}))
        except Exception as e:  # not logged in, offline problems...: train on, log locally
            log.warning("tracker %s could not start (%s): logging locally only", log_with, e)
            acc.log_with = []
    set_seed(train.seed)
    return acc


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
