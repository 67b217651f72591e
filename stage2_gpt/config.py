"""Stage 2 configuration: one dataclass, loaded from YAML with ``key=value`` overrides (common/config.py).

    cfg = load_stage2_config("configs/stage2_gpt_tiny.yaml", ["model.depth=4", "train.max_steps=500"])

The YAML files only say what differs from the defaults below. The whole config is saved in every checkpoint
(``checkpoint.json``) and inside the exported GPT file (``OUT/gpt.pt``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

from common.config import ConfigError, check_range, load_config
from common.io import UnsafeNameError, check_name
from common.train.config import RunConfig

from .model import GPTConfig


@dataclass
class Stage2Config(RunConfig):
    """``cache`` (tokenized by stage 1), ``out_dir``, ``window`` (token steps; longer than model.attn_window: the
    band mask is used), ``stride``, ``val_windows``, ``resume``, ``stop_after``, ``export_name``, ``train``:
    common/train/config.py."""
    out_dir: str = "runs/stage2"
    window: int = 128
    export_name: str = "gpt.pt"
    tokenizer: str = "runs/stage1/tokenizer.pt"   # exported stage-1 tokenizer (stage1_vq.load_tokenizer)
    tokens: str = ""                  # CACHE/tokens/<name>; "": the folder whose tokens.json matches the tokenizer
    model: GPTConfig = field(default_factory=GPTConfig)

    ADDED_KEYS: ClassVar[dict[str, Any]] = {          # RunConfig.ADDED_KEYS: read as these when a file lacks them
        "model.jaw_head": False, "model.jaw_loss": 1.0, "model.jaw_dims": 0,     # 2026-12-03 (8b394fe)
        "model.audio_context": 1,                     # 2026-12-03 (d686cf3): each frame read alone; default now 9
        "model.audio_dropout": 0.0,                   # 2026-12-05 (5deaccb)
        "model.partner_token_noise": None,            # 2026-12-05 (9d13464): the partner's codes as one's own
    }

    def validate(self) -> "Stage2Config":
        super().validate()                  # common/train/config.py: windows, train.*, export_name
        check_model_bounds(self.model)
        if self.tokens:
            try:
                check_name(self.tokens, "tokens")
            except UnsafeNameError as e:
                raise ConfigError(f"config key {e} (the name of a CACHE/tokens/ folder)") from None
        if self.window < 2:
            raise ConfigError(f"window must be >= 2 token steps, got {self.window}")
        return self


# (key, lowest, highest): sizes a GPT may have (0 where the size is filled in from the tokenizer / cache). A GPT
# file is checked against these before anything is built (stage2_gpt/artifact.py).
MODEL_BOUNDS = [("num_quantizers", 0, 64), ("codebook_size", 0, 65536), ("audio_dim", 0, 8192),
                ("num_states", 1, 64), ("dim", 1, 8192), ("depth", 1, 256), ("heads", 1, 256), ("dim_head", 1, 1024),
                ("ff_mult", 1, 16), ("attn_window", 1, 65536), ("audio_hidden", 1, 8192), ("audio_context", 1, 1024),
                ("partner_audio_hidden", 0, 8192), ("identity_dim", 0, 1024), ("partner_levels", 0, 64),
                ("head_hidden", 1, 8192), ("dropout", 0, 1), ("identity_dropout", 0, 1), ("partner_dropout", 0, 1),
                ("audio_dropout", 0, 1),
                ("state_loss", 0, None), ("jaw_loss", 0, None), ("jaw_dims", 0, 64)]


def check_model_bounds(m: GPTConfig) -> GPTConfig:
    """``model.*`` within :data:`MODEL_BOUNDS` (ConfigError naming the key and the value)."""
    for key, lo, hi in MODEL_BOUNDS:
        check_range(m, key, lo, hi, prefix="model.")
    if m.downsample not in (0, 1, 2, 4):
        raise ConfigError(f"config key model.downsample must be 1, 2 or 4 (0: from the tokenizer), got {m.downsample}")
    if m.partner_audio not in ("full", "energy"):
        raise ConfigError(f"config key model.partner_audio must be 'full' or 'energy', got {m.partner_audio!r}")
    if m.rvq_head not in ("depth", "parallel"):
        raise ConfigError(f"config key model.rvq_head must be 'depth' or 'parallel', got {m.rvq_head!r}")
    if not 0 <= m.token_noise < 1:
        raise ConfigError(f"config key model.token_noise must be in [0, 1), got {m.token_noise}")
    if m.partner_token_noise is not None and not 0 <= m.partner_token_noise < 1:
        raise ConfigError(f"config key model.partner_token_noise must be in [0, 1) or null, got {m.partner_token_noise}")
    return m


def load_stage2_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Stage2Config:
    return load_config(Stage2Config, path, overrides)          # validated
