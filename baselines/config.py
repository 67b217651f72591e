"""Configuration of the learned baselines: one dataclass, loaded from YAML with ``key=value`` overrides.

    cfg = load_regressor_config("configs/baseline_regressor_tiny.yaml", ["model.causal=true"])

The YAML files say only what differs from the defaults below, which are DualTalk's sizes (``DualTalk.py``,
``main.py`` of its code release; docs/BASELINES.md). The whole config is saved in every checkpoint and inside
the exported ``regressor.pt``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

from common.config import ConfigError, check_range, load_config
from common.train.config import RunConfig


@dataclass
class RegressorModelConfig:
    # filled from the cache at training time when 0
    motion_dim: int = 0
    audio_dim: int = 0
    # the one switch between the two baselines
    causal: bool = False              # true: every output frame depends only on inputs up to that frame
    # what it reads of the partner: true, DualTalk's listener protocol (the partner's ground-truth motion, the
    # counterpart of the model's listener mode); false, the dyad protocol (both audio tracks only, the counterpart
    # of dyad mode, which generates both people): the temporal enhancer then attends over the partner's audio
    partner_motion: bool = True
    # sizes (defaults: DualTalk's feature_dim 256, 4 heads, 3 interaction layers, 1 synthesis layer, FF 2048)
    dim: int = 256                    # audio / motion features; the interaction and synthesis run at 2 * dim
    heads: int = 4
    audio_layers: int = 2             # residual temporal convolutions per audio encoder (log-mel, not wav2vec2)
    audio_kernel: int = 5
    lstm_layers: int = 2              # the temporal enhancer (bidirectional, or forward only when causal)
    interaction_layers: int = 3       # transformer encoder layers over [own audio, partner features]
    synthesis_layers: int = 1         # transformer decoder layers (target = memory = the interaction features)
    ff_dim: int = 2048                # feed-forward width inside the transformer layers
    dropout: float = 0.1              # inside the transformer layers (residual and feed-forward)
    attn_dropout: float = 0.1         # on the attention weights of the transformer layers (slow on CPU)
    interaction_dropout: float = 0.5  # after the interaction module's self-attention
    modulation: float = 0.1           # "adaptive expression modulation": h + modulation * Linear(h)

    def check_bounds(self) -> "RegressorModelConfig":
        """Sizes a regressor may have (a regressor file is checked against them before anything is built)."""
        for key, lo, hi in (("motion_dim", 0, 1024), ("audio_dim", 0, 8192), ("dim", 1, 8192), ("heads", 1, 256),
                            ("audio_layers", 0, 64), ("audio_kernel", 1, 63), ("lstm_layers", 1, 64),
                            ("interaction_layers", 1, 64), ("synthesis_layers", 1, 64), ("ff_dim", 1, 65536),
                            ("dropout", 0, 1), ("attn_dropout", 0, 1), ("interaction_dropout", 0, 1)):
            check_range(self, key, lo, hi, prefix="model.")
        return self


@dataclass
class RegressorLossConfig:
    """DualTalk's loss (main.py): MSE of exp + MSE of jaw + MSE of neck pose + MSE of the velocity, here on
    normalised motion; each group's MSE is a mean over its own dims."""
    exp: float = 1.0
    jaw: float = 1.0
    pose: float = 1.0                 # neck pose (54-dim caches only)
    velocity: float = 1.0             # first differences, every dim


@dataclass
class RegressorConfig(RunConfig):
    """``cache``, ``out_dir``, ``window`` (frames), ``stride``, ``val_windows``, ``resume``, ``stop_after``,
    ``export_name``, ``train``: common/train/config.py. ``window`` is also the window predictions run in."""
    out_dir: str = "runs/baseline_regressor"
    window: int = 240                 # 8 s at 30 fps: DualTalk's 200-frame windows at 25 fps
    export_name: str = "regressor.pt"
    model: RegressorModelConfig = field(default_factory=RegressorModelConfig)
    loss: RegressorLossConfig = field(default_factory=RegressorLossConfig)

    ADDED_KEYS: ClassVar[dict[str, Any]] = {          # RunConfig.ADDED_KEYS: read as these when a file lacks them
        "model.partner_motion": True,                 # 2026-12-05: every regressor before read the partner's motion
    }

    def validate(self) -> "RegressorConfig":
        m = self.model.check_bounds()
        if self.window < 2:
            raise ConfigError(f"window must be >= 2 frames, got {self.window}")
        if m.dim < 1 or m.dim % m.heads or (2 * m.dim) % m.heads:
            raise ConfigError(f"model.dim ({m.dim}) must be a positive multiple of model.heads ({m.heads})")
        if not m.causal and m.dim % 2:
            raise ConfigError(f"model.dim must be even for the bidirectional LSTM, got {m.dim}")
        if m.audio_kernel < 1 or (not m.causal and m.audio_kernel % 2 == 0):
            raise ConfigError(f"model.audio_kernel must be >= 1 (odd when causal=false), got {m.audio_kernel}")
        if min(m.lstm_layers, m.interaction_layers, m.synthesis_layers) < 1 or m.audio_layers < 0:
            raise ConfigError("model.lstm_layers, interaction_layers, synthesis_layers must be >= 1, "
                              "audio_layers >= 0")
        return super().validate()


def load_regressor_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RegressorConfig:
    return load_config(RegressorConfig, path, overrides)          # validated
