"""Stage 1 configuration: one dataclass, loaded from YAML with ``key=value`` overrides (common/config.py).

    cfg = load_stage1_config("configs/stage1_vq_tiny.yaml", ["model.downsample=4", "train.max_steps=500"])

The YAML files only say what differs from the defaults below. The whole config is saved in every checkpoint
(``checkpoint.json``) and inside the exported tokenizer file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from common.config import ConfigError, load_config
from common.train.config import RunConfig


@dataclass
class ModelConfig:
    hidden: int = 256                 # channels of the conv encoder / decoder
    code_dim: int = 64                # dimension the ResidualVQ works in
    downsample: int = 2               # frames per token: 1, 2 or 4
    kernel_size: int = 3              # kernel of the dilated residual convolutions
    dilations: tuple[int, ...] = (1, 3, 9)   # one residual block per dilation, at every resolution
    causal: bool = True               # causal convs (streamable); false: centred convs (look-ahead)
    reference: str = "global"         # what the codes are relative to: "global": the train mean; "person": each
                                      # person's own mean expression (trackers leak identity into expression:
                                      # a static offset per person), given with the motion (common/layout.py's
                                      # exp dims; jaw and neck stay around the train mean)
    activation: str = "gelu"          # "gelu" | "silu" | "relu"
    # ResidualVQ (vector_quantize_pytorch)
    num_quantizers: int = 4
    codebook_size: int = 512
    kmeans_init: bool = True
    kmeans_iters: int = 10
    ema_decay: float = 0.99
    threshold_ema_dead_code: float = 2.0
    quantize_dropout: bool = False
    rotation_trick: bool = True


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

    def validate(self) -> "Stage1Config":
        m = self.model
        if m.downsample not in (1, 2, 4):
            raise ConfigError(f"model.downsample must be 1, 2 or 4, got {m.downsample}")
        if self.window % m.downsample:
            raise ConfigError(f"window ({self.window}) must be a multiple of model.downsample ({m.downsample})")
        if m.kernel_size < 1 or (not m.causal and m.kernel_size % 2 == 0):
            raise ConfigError(f"model.kernel_size must be >= 1 (odd when causal=false), got {m.kernel_size}")
        if m.num_quantizers < 1 or m.codebook_size < 2:
            raise ConfigError("model.num_quantizers must be >= 1 and model.codebook_size >= 2")
        if m.reference not in ("global", "person"):
            raise ConfigError(f"model.reference must be global or person, got {m.reference!r}")
        if m.activation not in ("gelu", "silu", "relu"):
            raise ConfigError(f"model.activation must be gelu, silu or relu, got {m.activation!r}")
        return super().validate()


def load_stage1_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Stage1Config:
    return load_config(Stage1Config, path, overrides).validate()
