"""What every trained model's config holds besides its model: the training knobs and the run's data and output.

Each stage's config dataclass extends :class:`RunConfig` (adding ``model`` and, for stage 1, ``loss``); YAML
files say only what differs from these defaults (common/config.py loads them with ``key=value`` overrides).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from common.config import ConfigError, check_range
from common.io import UnsafeNameError, check_name


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
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"   # accelerate
    log_every: int = 20
    val_every: int = 500
    save_every: int = 500
    keep_last: int = 3
    max_nonfinite: int = 5            # NaN/Inf losses in a row before training stops
    tracker: Literal["none", "wandb", "tensorboard"] = "none"
    project: str = "dyadic-face"
    progress: bool = True

    def validate(self) -> "TrainConfig":
        p = "train."
        check_range(self, "batch_size", 1, prefix=p)
        check_range(self, "lr", above=0, prefix=p)
        check_range(self, "weight_decay", 0, prefix=p)
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"config key train.betas must be two numbers in [0, 1), got {list(self.betas)}")
        for key in ("warmup_steps", "grad_clip", "seed", "val_every", "save_every"):
            check_range(self, key, 0, prefix=p)
        check_range(self, "num_workers", 0, 256, prefix=p)
        check_range(self, "max_steps", 1, prefix=p)
        check_range(self, "seed", maximum=2 ** 32 - 1, prefix=p)
        for key in ("log_every", "keep_last", "max_nonfinite"):
            check_range(self, key, 1, prefix=p)
        return self


@dataclass
class RunConfig:
    cache: str = "cache/synthetic"    # preprocessed cache (scripts/preprocess.py)
    out_dir: str = "runs/run"         # checkpoints/, metrics.jsonl, config.json and the exported artifact
    window: int = 64                  # training window (frames in stage 1, token steps in stage 2)
    stride: int = 0                   # window hop (0: window // 2)
    val_windows: int = 256            # validation windows (spread over the val split; 0: all)
    resume: bool = True               # continue from out_dir/checkpoints when a good one exists
    stop_after: int = 0               # stop (checkpointed, not exported) at this step, before train.max_steps; 0: run
                                      # to the end. The schedule still follows train.max_steps: rerun without it to resume
    export_name: str = "model.pt"     # exported artifact, in out_dir
    train: TrainConfig = field(default_factory=TrainConfig)

    # Keys added after this stage's checkpoints were first written, each with the value that reproduces a run
    # written before the key existed (its former behaviour, which is not always today's default): a checkpoint
    # or an exported file that lacks the key is read as holding that value (resuming: common/train/loop.py's
    # check_same_run; loading: each stage's artifact reader). A new key goes here when adding it kept older runs
    # reproducible; one that came with an architecture change stays out, so such checkpoints are refused by name.
    ADDED_KEYS: ClassVar[dict[str, Any]] = {}

    def validate(self):
        """Checks shared by every stage (each stage's ``validate`` adds its own and calls this)."""
        check_range(self, "window", 1)
        check_range(self, "stride", 0)
        check_range(self, "val_windows", 0)
        check_range(self, "stop_after", 0)
        try:
            check_name(self.export_name, "export_name")
        except UnsafeNameError as e:
            raise ConfigError(f"config key {e} (it is written inside out_dir)") from None
        self.train.validate()
        return self
