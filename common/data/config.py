"""Configuration of the corpus reader, audio features and preprocessing (``configs/data/*.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from common.config import ConfigError, check_range
from common.layout import Layout, motion_layout

# What a data config (and the audio configuration stored in a GPT file) may ask for: beyond these, a value is a
# mistake or a hostile file, not a corpus (a WAV header's rate is bounded the same way: common/data/audio.py).
SAMPLE_RATES = (1000, 768000)
MAX_FPS = 1000.0
MAX_FEATURE_DIM = 8192


@dataclass
class AudioConfig:
    kind: Literal["logmel", "pretrained"] = "logmel"   # offline log-mel (torchaudio) or a transformers encoder
    n_mels: int = 80
    window_frames: float = 2.0      # STFT window, in motion frames (ends at the end of each frame: causal)
    f_min: float = 40.0
    f_max: float = 8000.0
    # pretrained speech encoder (wav2vec2 / HuBERT): a local path or hub name, or a config dict (random weights)
    pretrained: str = ""
    pretrained_config: dict[str, Any] = field(default_factory=dict)
    pretrained_kind: Literal["wav2vec2", "hubert"] = "wav2vec2"   # used with pretrained_config
    encoder_sample_rate: int = 16000
    layer: int = -1                  # hidden layer to take (-1: last)
    chunk_seconds: float = 30.0      # encoder runs on chunks of this length (bounded memory)

    def validate(self, sample_rate: int = 48000) -> "AudioConfig":
        p = "audio."
        check_range(self, "n_mels", 1, 512, prefix=p)
        check_range(self, "window_frames", maximum=64, above=0, prefix=p)
        check_range(self, "f_min", 0, prefix=p)
        check_range(self, "f_max", above=self.f_min, prefix=p)
        check_range(self, "encoder_sample_rate", *SAMPLE_RATES, prefix=p)
        check_range(self, "layer", -1000, 1000, prefix=p)
        check_range(self, "chunk_seconds", maximum=3600, above=0, prefix=p)
        if self.f_min >= sample_rate / 2:
            raise ConfigError(f"config key audio.f_min ({self.f_min} Hz) must be below half the sample rate "
                              f"({sample_rate / 2:g} Hz)")
        return self


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

    def validate(self) -> "DataConfig":
        check_range(self, "fps", maximum=MAX_FPS, above=0)
        check_range(self, "sample_rate", *SAMPLE_RATES)
        if abs(self.sample_rate / self.fps - round(self.sample_rate / self.fps)) > 1e-6:
            raise ConfigError(f"sample_rate ({self.sample_rate}) / fps ({self.fps}) must be a whole number of "
                              "samples per motion frame")
        check_range(self, "expression_dims", 1, 100)
        check_range(self, "shape_dims", 1, 300)
        check_range(self, "length_tolerance_s", 0)
        check_range(self, "std_floor", above=0)
        if any(r < 0 for r in self.split_ratios) or sum(self.split_ratios) <= 0:
            raise ConfigError(f"config key split_ratios must be three non-negative numbers with a positive sum, "
                              f"got {list(self.split_ratios)}")
        self.audio.validate(self.sample_rate)
        if round(self.audio.window_frames * self.sample_rate / self.fps) < 2:
            raise ConfigError(f"config key audio.window_frames ({self.audio.window_frames}) gives an STFT window of "
                              f"fewer than 2 samples at {self.sample_rate} Hz / {self.fps} fps")
        return self

    @property
    def layout(self) -> Layout:
        return motion_layout(self.expression_dims, self.neck_pose)

    @property
    def motion_dim(self) -> int:
        return self.layout.width
