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
from common.training import TrainConfig

from .model import GPTConfig


@dataclass
class Stage2Config:
    cache: str = "cache/synthetic"    # preprocessed cache (scripts/preprocess.py), tokenized by stage 1
    tokenizer: str = "runs/stage1/tokenizer.pt"   # exported stage-1 tokenizer (stage1_vq.load_tokenizer)
    tokens: str = ""                  # CACHE/tokens/<name>; "": the folder whose tokens.json matches the tokenizer
    out_dir: str = "runs/stage2"
    window: int = 128                 # training window in token steps (> model.attn_window: the band mask is used)
    stride: int = 0                   # window hop in token steps (0: window // 2)
    both_orderings: bool = False      # every window also with the participants swapped (the model already runs
                                      # both perspectives of each window: symmetric by construction)
    val_windows: int = 256            # validation windows (spread over the val split; 0: all)
    resume: bool = True               # continue from out_dir/checkpoints when a good one exists
    stop_after: int = 0               # stop (checkpointed, not exported) after this many steps; 0: run to the end
    export_name: str = "gpt.pt"       # exported GPT file, in out_dir
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def speaker_only(self) -> bool:
        return self.model.speaker_only

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
        if self.train.batch_size < 1:
            raise ConfigError("train.batch_size must be >= 1")
        return self


def load_stage2_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Stage2Config:
    return load_config(Stage2Config, path, overrides).validate()
