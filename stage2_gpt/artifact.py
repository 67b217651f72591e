"""The exported GPT file (``OUT/gpt.pt``): written by training, read by generation, in one place.

The file is self-describing (common/train/artifact.py): the stage-2 config, the model's ``GPTConfig``, its
weights, what it agreed on with its tokenizer (geometry, rate, checksum) and everything needed to turn a raw
WAV into its audio input (feature configuration, sample rate, training statistics) plus the motion layout.

    from stage2_gpt.artifact import load_gpt
    bundle = load_gpt("runs/stage2/gpt.pt")          # model in eval mode + its descriptions
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.config import ConfigError, from_dict, to_dict, with_added_keys
from common.data.cache import Cache
from common.data.config import MAX_FPS, AudioConfig, DataConfig
from common.layout import Layout, LayoutError, layout_from_json
from common.train.artifact import (CheckpointError, build_checked, file_sha256, load_artifact,
                                   save_artifact, stored_int, stored_rate)

from .config import Stage2Config, check_model_bounds
from .model import DyadGPT, GPTConfig

log = logging.getLogger(__name__)
ARTIFACT_KIND = "stage2_gpt"


def tokenizer_description(tokenizer_path: str | Path) -> dict:
    """What the GPT must agree on with its tokenizer (read through stage1_vq.load_tokenizer)."""
    from stage1_vq import load_tokenizer
    tok = load_tokenizer(tokenizer_path)
    return {"path": str(Path(tokenizer_path).resolve()), "sha256": file_sha256(tokenizer_path), "fps": tok.fps,
            "motion_dim": tok.motion_dim, "downsample": tok.downsample, "num_quantizers": tok.num_quantizers,
            "codebook_size": tok.codebook_size, "lookahead_frames": tok.lookahead_frames}


def audio_description(cache: Cache) -> dict:
    """Everything needed to compute the model's audio input from a raw WAV (common/data/audio.py's path), and the
    motion layout / data config to write and read FLAME files."""
    dc = cache.manifest.get("data_config", {}) or {}
    return {"features": cache.manifest["audio_features"], "audio_config": dc.get("audio", {}),
            "sample_rate": int(cache.manifest.get("sample_rate", dc.get("sample_rate", 48000))),
            "fps": cache.fps, "audio_mean": cache.stats["audio_mean"], "audio_std": cache.stats["audio_std"],
            "motion_layout": cache.layout.to_json(), "data_config": dc}


def export_gpt(path, state_dict: dict, cfg, tok: dict, audio: dict, extra: dict | None = None) -> Path:
    """Write the GPT file: ``cfg`` (the Stage2Config), weights, tokenizer and audio descriptions, ``extra`` meta."""
    meta = {"gpt_config": to_dict(cfg.model), "tokenizer": tok, "audio": audio, **(extra or {})}
    return save_artifact(path, kind=ARTIFACT_KIND, state_dict=state_dict, config=to_dict(cfg), meta=meta)


@dataclass
class GPTBundle:
    """An exported GPT file: the model (eval mode) and what it needs to run (tokenizer and audio description)."""
    model: DyadGPT
    config: dict          # the Stage2Config it was trained with (plain dict)
    tokenizer: dict       # fps, motion_dim, downsample, num_quantizers, codebook_size, sha256, path
    audio: dict           # features, audio_config, sample_rate, fps, audio_mean, audio_std, motion_layout
    meta: dict
    path: str = ""

    @property
    def layout(self) -> Layout:
        """The motion layout the GPT was trained on (older files without one: the default of its motion_dim)."""
        return layout_from_json(self.audio.get("motion_layout"), int(self.tokenizer["motion_dim"]))


def load_gpt(path: str | Path, device: str | torch.device = "cpu") -> GPTBundle:
    """Load a GPT file. Its stored sizes, tokenizer description and audio settings are checked against sane bounds
    and against each other (:func:`check_description`), and the model is matched against the stored weights on
    the meta device, before anything is built: a hostile file cannot make this allocate more than it holds."""
    payload = load_artifact(path, kind=ARTIFACT_KIND)
    meta = payload["meta"]
    cfg = check_description(path, meta)
    model = build_checked(path, payload["state_dict"], lambda: DyadGPT(cfg))
    return GPTBundle(model.to(device).eval(), payload["config"], meta["tokenizer"], meta["audio"], meta, str(path))


def check_description(path, meta) -> GPTConfig:
    """The GPT file's model config (within stage2_gpt.config.MODEL_BOUNDS), checked against its tokenizer
    description (geometry, rate, layout) and its audio description (feature dims, statistics, rates, the audio and
    data configs' own bounds); :class:`CheckpointError` naming the file and the field."""
    try:
        if not isinstance(meta, dict):
            raise ValueError("meta is not a mapping")
        # keys written before they existed: their former behaviour
        gc = with_added_keys(meta.get("gpt_config"), Stage2Config.ADDED_KEYS, section="model.")[0]
        cfg = check_model_bounds(from_dict(GPTConfig, gc, where="model."))
        cfg.validate()
        tok, audio = meta["tokenizer"], meta["audio"]
        for key in ("num_quantizers", "codebook_size", "downsample"):
            if tok[key] != getattr(cfg, key):
                raise ValueError(f"tokenizer.{key} is {tok[key]!r}, the model was built for {getattr(cfg, key)}")
        layout_from_json(audio.get("motion_layout"), stored_int(tok, "motion_dim"))
        _check_audio(audio, cfg, stored_rate(tok, "fps", MAX_FPS))
    except (ConfigError, LayoutError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path} is not a usable GPT file: {type(e).__name__}: {e}") from None
    return cfg


def _check_audio(audio: dict, cfg: GPTConfig, fps: float) -> None:
    """The audio description: what turns a WAV into the model's input, within bounds and of the model's width."""
    if abs(stored_rate(audio, "fps", MAX_FPS) - fps) > 1e-6:
        raise ValueError(f"audio.fps {audio['fps']} differs from the tokenizer's {fps}")
    rate = stored_int(audio, "sample_rate")
    DataConfig(sample_rate=rate, fps=fps).validate()
    if int(audio["features"]["dim"]) != cfg.audio_dim:
        raise ValueError(f"audio.features.dim {audio['features']['dim']} differs from model.audio_dim {cfg.audio_dim}")
    for key in ("audio_mean", "audio_std"):
        x = np.asarray(audio[key])
        if x.shape != (cfg.audio_dim,) or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise ValueError(f"audio.{key} must be {cfg.audio_dim} finite floats, got {x.dtype} {x.shape}")
    if not (np.asarray(audio["audio_std"]) > 0).all():
        raise ValueError("audio.audio_std must be positive")
    from_dict(AudioConfig, audio.get("audio_config") or {}, where="audio.").validate(rate)
    if audio.get("data_config"):
        from_dict(DataConfig, audio["data_config"]).validate()


def check_tokenizer(bundle: GPTBundle, tok) -> None:
    """Refuse a tokenizer whose geometry or rate differs from the one the GPT was trained with (warn when only
    the file differs)."""
    t = bundle.tokenizer
    for key in ("downsample", "num_quantizers", "codebook_size", "motion_dim"):
        if int(getattr(tok, key)) != int(t[key]):
            raise CheckpointError(f"the GPT {bundle.path} was trained on tokens with {key}={t[key]}, the tokenizer "
                                  f"{getattr(tok, 'artifact_path', '')} has {getattr(tok, key)}")
    if abs(float(tok.fps) - float(t["fps"])) > 1e-6:
        raise CheckpointError(f"the GPT was trained at {t['fps']} fps, the tokenizer runs at {tok.fps} fps")
    path = getattr(tok, "artifact_path", None)
    if path and t.get("sha256") and file_sha256(path) != t["sha256"]:
        log.warning("tokenizer %s is not the file the GPT was trained with (%s): same geometry, but the codes "
                    "may mean something else", path, t.get("path"))
