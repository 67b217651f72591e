"""Stage 1 configuration: one dataclass, loaded from YAML with ``key=value`` overrides (common/config.py).

    cfg = load_stage1_config("configs/stage1_vq_tiny.yaml", ["model.downsample=4", "train.max_steps=500"])

The YAML files only say what differs from the defaults below. The whole config is saved in every checkpoint
(``checkpoint.json``) and inside the exported tokenizer file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal

from common.config import ConfigError, check_range, load_config
from common.train.config import RunConfig


@dataclass
class ModelConfig:
    hidden: int = 256                 # channels of the conv encoder / decoder
    code_dim: int = 64                # dimension the ResidualVQ works in
    downsample: int = 2               # frames per token: 1, 2 or 4
    kernel_size: int = 3              # kernel of the dilated residual convolutions
    dilations: tuple[int, ...] = (1, 3, 9)   # one residual block per dilation, at every resolution
    causal: bool = True               # causal convs (streamable); false: centred convs (look-ahead)
    # what the codes are relative to: "person": each person's own mean expression (trackers leak identity into
    # expression: a static offset per person; codes then carry only what moves), given with the motion
    # (common/layout.py's exp dims; jaw and neck stay around the train mean); "global": the train mean (the
    # tokenizer must then code every person's offset: unseen persons' test nMSE exp 0.91 vs 0.012, docs/STAGE1.md)
    reference: Literal["global", "person"] = "person"
    activation: Literal["gelu", "silu", "relu"] = "gelu"
    # ResidualVQ (vector_quantize_pytorch)
    num_quantizers: int = 4
    codebook_size: int = 512
    kmeans_init: bool = True
    kmeans_iters: int = 10
    ema_decay: float = 0.99
    threshold_ema_dead_code: float = 2.0
    quantize_dropout: bool = False
    rotation_trick: bool = True

    def validate(self) -> "ModelConfig":
        """Sizes within sane bounds (a tokenizer file is checked against them before anything is built)."""
        p = "model."
        if self.downsample not in (1, 2, 4):
            raise ConfigError(f"model.downsample must be 1, 2 or 4, got {self.downsample}")
        if self.kernel_size < 1 or self.kernel_size > 63 or (not self.causal and self.kernel_size % 2 == 0):
            raise ConfigError(f"model.kernel_size must be in 1..63 (odd when causal=false), got {self.kernel_size}")
        check_range(self, "hidden", 1, 8192, prefix=p)
        check_range(self, "code_dim", 1, 8192, prefix=p)
        check_range(self, "num_quantizers", 1, 64, prefix=p)
        check_range(self, "codebook_size", 2, 65536, prefix=p)
        check_range(self, "kmeans_iters", 0, 1000, prefix=p)
        check_range(self, "ema_decay", 0, 1, prefix=p)
        check_range(self, "threshold_ema_dead_code", 0, prefix=p)
        if not 1 <= len(self.dilations) <= 16 or not all(1 <= d <= 4096 for d in self.dilations):
            raise ConfigError(f"model.dilations must be 1..16 dilations, each in 1..4096, got {list(self.dilations)}")
        return self


@dataclass
class LossConfig:
    recon: float = 1.0                # MSE on normalised motion
    velocity: float = 1.0             # MSE of first differences (frame-to-frame motion)
    commit: float = 0.02              # commitment, summed over quantizers
    jaw_weight: float = 1.0           # extra weight of the jaw dim(s) inside recon / velocity


@dataclass
class Stage1Config(RunConfig):
    """``cache``, ``out_dir``, ``window`` (frames, a multiple of model.downsample), ``stride``, ``val_windows``,
    ``resume``, ``stop_after``, ``export_name``, ``train``: common/train/config.py."""
    out_dir: str = "runs/stage1"
    window: int = 64
    export_name: str = "tokenizer.pt"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    ADDED_KEYS: ClassVar[dict[str, Any]] = {          # RunConfig.ADDED_KEYS: read as these when a file lacks them
        "model.reference": "global",                  # 2026-12-03 (6999d29); its default became "person" later
    }

    def validate(self) -> "Stage1Config":
        super().validate()                  # common/train/config.py: windows, train.*, export_name
        m = self.model.validate()
        if self.window % m.downsample:
            raise ConfigError(f"window ({self.window}) must be a multiple of model.downsample ({m.downsample})")
        for key in ("recon", "velocity", "commit", "jaw_weight"):
            check_range(self.loss, key, 0, prefix="loss.")
        return self


def load_stage1_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Stage1Config:
    return load_config(Stage1Config, path, overrides)          # validated
