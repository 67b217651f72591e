"""Stage 2 configuration: one dataclass, loaded from YAML with ``key=value`` overrides (common/config.py).

    cfg = load_stage2_config("configs/stage2_gpt_tiny.yaml", ["model.depth=4", "train.max_steps=500"])

The YAML files only say what differs from the defaults below. The whole config is saved in every checkpoint
(``checkpoint.json``) and inside the exported GPT file (``OUT/gpt.pt``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from common.config import ConfigError, load_config
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

    def validate(self) -> "Stage2Config":
        m = self.model
        if self.window < 2:
            raise ConfigError(f"window must be >= 2 token steps, got {self.window}")
        if m.attn_window < 1:
            raise ConfigError(f"model.attn_window must be >= 1, got {m.attn_window}")
        if m.rvq_head not in ("depth", "parallel"):
            raise ConfigError(f"model.rvq_head must be 'depth' or 'parallel', got {m.rvq_head!r}")
        if m.dim % m.heads and m.dim_head <= 0:
            raise ConfigError("model.dim_head must be > 0")
        if not 0 <= m.token_noise < 1:
            raise ConfigError(f"model.token_noise must be in [0, 1), got {m.token_noise}")
        return super().validate()


def load_stage2_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Stage2Config:
    return load_config(Stage2Config, path, overrides).validate()
