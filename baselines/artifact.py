"""The exported regressor file (``RUN/regressor.pt``): written by baselines/train.py, read by baselines/predict.py.

Self-describing (common/train/artifact.py): the training config, the model's config and weights, the motion
layout and frame rate, and the normalisation statistics and audio-feature description of the cache it was
trained on, so sampling needs no other file and refuses a cache whose audio features differ.

    from baselines.artifact import load_regressor
    bundle = load_regressor("runs/dualtalk_class/regressor.pt")     # model in eval mode + what it needs
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from baselines.config import RegressorConfig, RegressorModelConfig
from baselines.model import DualTalkRegressor
from common.config import ConfigError, from_dict, to_dict, with_added_keys
from common.data.cache import Cache
from common.data.config import MAX_FPS
from common.layout import Layout, LayoutError, layout_from_json
from common.train.artifact import (CheckpointError, build_checked, load_artifact, save_artifact,
                                   stored_int, stored_rate)

ARTIFACT_KIND = "baseline_regressor"


def export_regressor(path, state_dict: dict, cfg, cache: Cache, extra: dict | None = None) -> Path:
    """Write the regressor file: ``cfg`` (the RegressorConfig), weights, and what sampling needs from ``cache``."""
    st = cache.stats
    meta = {"model_config": to_dict(cfg.model), "window": int(cfg.window), "fps": cache.fps,
            "motion_layout": cache.layout.to_json(), "audio_features": cache.manifest["audio_features"],
            "motion_mean": st["motion_mean"], "motion_std": st["motion_std"],
            "audio_mean": st["audio_mean"], "audio_std": st["audio_std"],
            "data_config": cache.manifest.get("data_config"), **(extra or {})}
    return save_artifact(path, kind=ARTIFACT_KIND, state_dict=state_dict, config=to_dict(cfg), meta=meta)


@dataclass
class RegressorBundle:
    """An exported regressor: the model (eval mode) and its normalisation, layout and training window."""
    model: DualTalkRegressor
    config: dict          # the RegressorConfig it was trained with (plain dict)
    meta: dict
    path: str = ""

    @property
    def causal(self) -> bool:
        return bool(self.model.cfg.causal)

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def layout(self) -> Layout:
        return layout_from_json(self.meta["motion_layout"], self.model.cfg.motion_dim)

    def normalize_motion(self, x: np.ndarray) -> np.ndarray:
        return (x - self.meta["motion_mean"]) / self.meta["motion_std"]

    def denormalize_motion(self, x: np.ndarray) -> np.ndarray:
        return x * self.meta["motion_std"] + self.meta["motion_mean"]

    def normalize_audio(self, x: np.ndarray) -> np.ndarray:
        return (x - self.meta["audio_mean"]) / self.meta["audio_std"]

    def check_cache(self, cache: Cache) -> None:
        """Refuse a cache whose audio features, motion layout or frame rate differ from the training cache's."""
        if cache.manifest["audio_features"] != self.meta["audio_features"]:
            raise CheckpointError(f"{self.path} was trained on audio features {self.meta['audio_features']}, the "
                                  f"cache {cache.root} has {cache.manifest['audio_features']}")
        if cache.layout.to_json() != self.layout.to_json() or abs(cache.fps - self.fps) > 1e-6:
            raise CheckpointError(f"{self.path} was trained on motion {self.layout.to_json()} at {self.fps:g} fps, "
                                  f"the cache {cache.root} has {cache.layout.to_json()} at {cache.fps:g} fps")


def load_regressor(path: str | Path, device: str | torch.device = "cpu") -> RegressorBundle:
    """Load a regressor file: its stored sizes, statistics, rate and window are checked, and the model is matched
    against the stored weights on the meta device, before anything is built (common/train/artifact.py)."""
    payload = load_artifact(path, kind=ARTIFACT_KIND)
    meta = payload["meta"]
    cfg = _checked_description(path, meta)
    model = build_checked(path, payload["state_dict"], lambda: DualTalkRegressor(cfg))
    config = with_added_keys(payload["config"], RegressorConfig.ADDED_KEYS)[0]      # as trained, older files too
    return RegressorBundle(model.to(device).eval(), config, meta, str(path))


def regressor_model_config(path: str | Path) -> RegressorModelConfig:
    """The model config of a regressor file, checked as :func:`load_regressor` checks it (keys written before they
    existed read with their former behaviour), without building the model."""
    return _checked_description(path, load_artifact(path, kind=ARTIFACT_KIND)["meta"])


def _checked_description(path, meta) -> RegressorModelConfig:
    try:
        if not isinstance(meta, dict):
            raise ValueError("meta is not a mapping")
        stored = with_added_keys(meta.get("model_config"), RegressorConfig.ADDED_KEYS, section="model.")[0]
        cfg = from_dict(RegressorModelConfig, stored, where="model.").check_bounds()
        stored_rate(meta, "fps", MAX_FPS)
        if not 1 <= stored_int(meta, "window") <= 1_000_000:
            raise ValueError(f"window {meta['window']} is not in 1..1000000 frames")
        layout_from_json(meta.get("motion_layout"), cfg.motion_dim)
        for key, dim in (("motion_mean", cfg.motion_dim), ("motion_std", cfg.motion_dim),
                         ("audio_mean", cfg.audio_dim), ("audio_std", cfg.audio_dim)):
            x = np.asarray(meta[key])
            if x.shape != (dim,) or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
                raise ValueError(f"{key} must be {dim} finite floats, got {x.dtype} {x.shape}")
            if key.endswith("_std") and not (x > 0).all():
                raise ValueError(f"{key} must be positive")
    except (ConfigError, LayoutError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path} is not a usable regressor file: {type(e).__name__}: {e}") from None
    return cfg
