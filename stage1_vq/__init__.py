"""Stage 1: a causal residual-VQ tokenizer of 51-dim (54 with neck) FLAME motion.

Public API (used by stage 2 and scripts; see docs/STAGE1.md)::

    from stage1_vq import load_tokenizer
    tok = load_tokenizer("runs/stage1/tokenizer.pt", device="cpu")   # nn.Module in eval mode, no other file
    tok.fps, tok.motion_dim, tok.downsample, tok.num_quantizers, tok.codebook_size, tok.lookahead_frames
    codes = tok.encode(motion_raw)        # (B, T, D) float -> (B, T // downsample, Q) long
    motion = tok.decode(codes)            # (B, T', Q)      -> (B, T' * downsample, D) raw motion

Streaming (causal tokenizers, ``lookahead_frames == 0``): the frames of token j depend only on codes
``j - decoder_context + 1 .. j``, so ``tok.decode(codes[:, -tok.decoder_context:])[:, -tok.downsample:]``
equals the newest token's frames of a full decode; ``sd = tok.stream_decoder(); sd.push(new_codes)`` does that
bookkeeping. Code j depends only on frames ``(j + 1) * downsample - encoder_context .. (j + 1) * downsample - 1``.
"""
from __future__ import annotations

from pathlib import Path

from .config import LossConfig, ModelConfig, Stage1Config, load_stage1_config
from .model import MotionTokenizer, StreamingDecoder

Tokenizer = MotionTokenizer
ARTIFACT_KIND = "stage1_tokenizer"

__all__ = ["load_tokenizer", "export_tokenizer", "Tokenizer", "MotionTokenizer", "StreamingDecoder",
           "Stage1Config", "ModelConfig", "LossConfig", "load_stage1_config", "ARTIFACT_KIND", "tokenizer_config"]


def export_tokenizer(path, tokenizer: MotionTokenizer, run_config: dict, extra_meta: dict | None = None,
                     state_dict: dict | None = None) -> Path:
    """Write the self-describing tokenizer file: weights, config, normalisation stats, fps, dims, geometry.

    ``state_dict`` defaults to ``tokenizer.state_dict()``; pass ``accelerator.get_state_dict(model)`` when the
    module is sharded (FSDP)."""
    from common.train.artifact import save_artifact

    meta = tokenizer.describe()
    meta.update({"motion_mean": tokenizer.motion_mean.detach().cpu().numpy(),
                 "motion_std": tokenizer.motion_std.detach().cpu().numpy()})
    meta.update(extra_meta or {})
    state = tokenizer.state_dict() if state_dict is None else state_dict
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in state.items()}
    return save_artifact(path, kind=ARTIFACT_KIND, state_dict=state, config=run_config, meta=meta)


def load_tokenizer(path, device="cpu") -> MotionTokenizer:
    """Load an exported tokenizer (``OUT/tokenizer.pt``) on ``device``, in eval mode, with no other file.

    The stored config and description are checked (sizes within :meth:`ModelConfig.validate`'s bounds, a known
    motion layout, a sane rate) and the module is matched against the stored weights on the meta device before
    it is built, so a hostile file cannot make this allocate more than it holds (:class:`CheckpointError`).
    Codebooks are never synchronised across processes after loading (``sync_codebook=False``), so it is safe to
    call on every rank of a distributed stage-2 job, or on one rank only.
    """
    from common.train.artifact import build_checked, load_artifact

    payload = load_artifact(path, kind=ARTIFACT_KIND)
    model_cfg, meta = _checked_description(path, payload)
    tok = build_checked(path, payload["state_dict"], lambda: MotionTokenizer(
        model_cfg, motion_dim=int(meta["motion_dim"]), fps=float(meta["fps"]), groups=meta.get("groups"),
        sync_codebook=False))
    tok.artifact_meta = {k: v for k, v in meta.items() if k not in ("motion_mean", "motion_std")}
    tok.artifact_path = str(path)
    return tok.to(device).eval()


def tokenizer_config(path) -> ModelConfig:
    """The model config of an exported tokenizer file, checked as :func:`load_tokenizer` checks it, without building
    the module (no random initialisation: a lookup such as stage1_vq.tokens.find_tokens leaves torch's RNG, and so
    the training that follows it, as it was)."""
    from common.train.artifact import load_artifact
    return _checked_description(path, load_artifact(path, kind=ARTIFACT_KIND))[0]


def _checked_description(path, payload) -> tuple[ModelConfig, dict]:
    """The tokenizer file's ModelConfig (bounds checked) and meta (motion layout and rate checked)."""
    from common.config import ConfigError, from_dict, with_added_keys
    from common.data.config import MAX_FPS
    from common.layout import LayoutError, layout_from_json
    from common.train.artifact import CheckpointError, stored_int, stored_rate

    meta, config = payload["meta"], payload["config"]
    try:
        if not isinstance(config, dict) or not isinstance(meta, dict):
            raise ValueError("config and meta must be mappings")
        # keys written before they existed: their former behaviour
        model = with_added_keys(config.get("model"), Stage1Config.ADDED_KEYS, section="model.")[0]
        model_cfg = from_dict(ModelConfig, model, where="model.").validate()
        stored_rate(meta, "fps", MAX_FPS)
        layout_from_json(meta.get("groups"), stored_int(meta, "motion_dim"))
    except (ConfigError, LayoutError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path} is not a usable tokenizer file: {type(e).__name__}: {e}") from None
    return model_cfg, meta
