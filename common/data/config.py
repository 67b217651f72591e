"""Configuration of the corpus reader, audio features and preprocessing (``configs/data/*.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.layout import Layout, motion_layout


@dataclass
class AudioConfig:
    kind: str = "logmel"            # "logmel" (offline, torchaudio) or "pretrained" (transformers encoder)
    n_mels: int = 80
    window_frames: float = 2.0      # STFT window, in motion frames (ends at the end of each frame: causal)
    f_min: float = 40.0
    f_max: float = 8000.0
    # pretrained speech encoder (wav2vec2 / HuBERT): a local path or hub name, or a config dict (random weights)
    pretrained: str = ""
    pretrained_config: dict[str, Any] = field(default_factory=dict)
    pretrained_kind: str = "wav2vec2"   # "wav2vec2" | "hubert" (used with pretrained_config)
    encoder_sample_rate: int = 16000
    layer: int = -1                  # hidden layer to take (-1: last)
    chunk_seconds: float = 30.0      # encoder runs on chunks of this length (bounded memory)


@dataclass
class DataConfig:
    data_root: str = "data/synthetic"
    index: str = "dataset_jsons/synthetic.json"   # relative to data_root, or absolute
    fps: float = 30.0
    sample_rate: int = 48000                       # audio is resampled to this rate when it differs
    neck_pose: bool = False                        # 54-dim mode: append pose_params[:, 0, :3]
    expression_dims: int = 50
    shape_dims: int = 100
    length_tolerance_s: float = 1.0                # larger disagreements between lengths are errors
    allow_outside_root: bool = False               # refuse index paths escaping data_root unless set
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)   # train, val, test (by dialog)
    split_seed: int = 0
    split_file: str = ""                           # JSON {dialog id: train|val|test} (relative to data_root): a
                                                   # fixed split instead of split_ratios / split_seed
    std_floor: float = 1e-4
    audio: AudioConfig = field(default_factory=AudioConfig)

    @property
    def layout(self) -> Layout:
        return motion_layout(self.expression_dims, self.neck_pose)

    @property
    def motion_dim(self) -> int:
        return self.layout.width
