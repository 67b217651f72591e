"""The stage-1 motion tokenizer: causal temporal conv encoder -> ResidualVQ -> causal conv decoder.

Shapes: motion (B, T, D) with D = 51 (50 expression + jaw) or 54 (+ neck pose), codes (B, T // d, Q).

Causality (``causal: true``, the default), with d = ``downsample``:
- code j depends only on motion frames ``< (j + 1) * d`` (its own block of d frames and the past);
- decoded frames ``j*d .. j*d + d - 1`` depend only on codes ``<= j``.
So the decoder streams with no look-ahead (one token in, d frames out); encoding a live signal waits for the
d frames of a token. ``lookahead_frames`` is 0. The non-causal variant (``causal: false``) centres every
convolution; ``lookahead_frames`` then says how many frames past a token's block it reads (encoder look-ahead
plus the decoder's look-ahead in tokens times d).

Receptive fields are computed exactly from the layer geometry (:meth:`Seq.input_range`):
``encoder_context`` frames (the frames ending at a token's block that determine its code) and
``decoder_context`` tokens (the codes ending at token j that determine frames of token j). Decoding only the
last ``decoder_context`` codes gives bit-for-bit the same frames for the newest token as a full decode (up to
float summation order): :class:`StreamingDecoder` does exactly that.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from common.layout import layout_for_dim

from .config import LossConfig, ModelConfig


# ----------------------------------------------------------------------------------------------------------
# layers that know which input positions an output position reads
# ----------------------------------------------------------------------------------------------------------
def _act(name: str) -> nn.Module:
    return {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}[name]()


class Pointwise(nn.Module):
    """Wraps a per-timestep module (activation, 1x1 conv): output t reads input t."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)

    def input_range(self, lo: int, hi: int) -> tuple[int, int]:
        return lo, hi


class Conv(nn.Module):
    """Conv1d on (B, C, T), padded so that T divisible by ``stride`` gives T // stride outputs.

    Causal: all padding on the left, so output j reads inputs ``<= j * stride + stride - 1``.
    Non-causal: padding split evenly (centred kernel).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, causal: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation)
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        total = (kernel - 1) * dilation + 1 - stride
        assert total >= 0, "kernel must cover the stride"
        self.left = total if causal else total // 2
        self.right = total - self.left

    def forward(self, x):
        return self.conv(F.pad(x, (self.left, self.right)))

    def input_range(self, lo: int, hi: int) -> tuple[int, int]:
        return lo * self.stride - self.left, hi * self.stride - self.left + (self.kernel - 1) * self.dilation


class Repeat(nn.Module):
    """Nearest-neighbour upsampling in time by ``factor`` (frame t reads token t // factor)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x.repeat_interleave(self.factor, dim=-1)

    def input_range(self, lo: int, hi: int) -> tuple[int, int]:
        return lo // self.factor, hi // self.factor


class Seq(nn.Sequential):
    def input_range(self, lo: int, hi: int) -> tuple[int, int]:
        for layer in reversed(self):
            lo, hi = layer.input_range(lo, hi)
        return lo, hi


class ResBlock(nn.Module):
    """x + W1 act(conv_k,dilated(act(x))): a dilated residual unit (no normalisation: streams exactly)."""

    def __init__(self, channels: int, kernel: int, dilation: int, causal: bool, activation: str):
        super().__init__()
        self.body = Seq(Pointwise(_act(activation)), Conv(channels, channels, kernel, dilation=dilation, causal=causal),
                        Pointwise(_act(activation)), Pointwise(nn.Conv1d(channels, channels, 1)))

    def forward(self, x):
        return x + self.body(x)

    def input_range(self, lo: int, hi: int) -> tuple[int, int]:
        a, b = self.body.input_range(lo, hi)
        return min(a, lo), max(b, hi)


def _res_stack(cfg: ModelConfig) -> list[nn.Module]:
    return [ResBlock(cfg.hidden, cfg.kernel_size, d, cfg.causal, cfg.activation) for d in cfg.dilations]


def _levels(downsample: int) -> int:
    levels = int(round(math.log2(downsample)))
    if 2 ** levels != downsample:
        raise ValueError(f"downsample must be a power of two (1, 2, 4), got {downsample}")
    return levels


class Encoder(Seq):
    """(B, D, T) -> (B, code_dim, T // downsample)."""

    def __init__(self, motion_dim: int, cfg: ModelConfig):
        layers = [Conv(motion_dim, cfg.hidden, cfg.kernel_size, causal=cfg.causal)]
        for _ in range(_levels(cfg.downsample)):
            layers += _res_stack(cfg)
            layers += [Pointwise(_act(cfg.activation)), Conv(cfg.hidden, cfg.hidden, 4, stride=2, causal=cfg.causal)]
        layers += _res_stack(cfg)
        layers += [Pointwise(_act(cfg.activation)), Pointwise(nn.Conv1d(cfg.hidden, cfg.code_dim, 1))]
        super().__init__(*layers)


class Decoder(Seq):
    """(B, code_dim, T') -> (B, D, T' * downsample)."""

    def __init__(self, motion_dim: int, cfg: ModelConfig):
        layers = [Conv(cfg.code_dim, cfg.hidden, cfg.kernel_size, causal=cfg.causal)]
        layers += _res_stack(cfg)
        for _ in range(_levels(cfg.downsample)):
            layers += [Repeat(2), Conv(cfg.hidden, cfg.hidden, 3, causal=cfg.causal)]
            layers += _res_stack(cfg)
        layers += [Pointwise(_act(cfg.activation)), Conv(cfg.hidden, motion_dim, cfg.kernel_size, causal=cfg.causal)]
        super().__init__(*layers)


# ----------------------------------------------------------------------------------------------------------
# the tokenizer
# ----------------------------------------------------------------------------------------------------------
class MotionTokenizer(nn.Module):
    """Motion <-> residual-VQ codes. Public API (see :func:`stage1_vq.load_tokenizer`):

    Attributes: ``fps``, ``motion_dim``, ``downsample``, ``num_quantizers``, ``codebook_size``,
    ``lookahead_frames`` (0 when causal), ``decoder_context`` (tokens), ``encoder_context`` (frames),
    ``causal``, ``groups`` (dim ranges of exp / jaw / pose: :mod:`common.layout`).

    - ``encode(motion_raw (B, T, D) float) -> codes (B, T // downsample, Q) long``. Raw (unnormalised) FLAME
      coefficients; trailing ``T % downsample`` frames are dropped.
    - ``decode(codes (B, T', Q)) -> motion_raw (B, T' * downsample, D)``.
    - Streaming: ``decode(codes[:, -decoder_context:])[:, -downsample:]`` equals the newest token's frames of a
      full decode; :meth:`stream_decoder` wraps that in a stateful object (``push(codes) -> frames``).
      Likewise code j is determined by the ``encoder_context`` frames ending at frame ``(j + 1) * downsample - 1``
      (plus ``lookahead_frames`` more when not causal).

    Normalisation statistics (``motion_mean``, ``motion_std``, from the cache's train split) are buffers.
    ``forward(x_norm)`` is the training pass on *normalised* motion: ``(recon_norm, codes, commit_losses (Q,))``.

    Reference (``model.reference``): with ``"person"`` the codes describe motion around each person's own mean
    expression, so that the static per-person offset (identity leaking into expression) costs no codes and an
    unseen person is coded as well as a known one. ``encode`` / ``decode`` then take ``reference`` (B, D) (or
    per frame, (B, T, D)): the person's mean motion, e.g. :meth:`person_reference` of an observed sequence or
    an enrollment clip; ``None`` means the train mean (an unknown person). Only the expression dims use it;
    jaw and neck stay around the train mean. With ``"global"`` (the default) ``reference`` is ignored.
    """

    def __init__(self, cfg: ModelConfig, motion_dim: int, fps: float, motion_mean=None, motion_std=None,
                 groups: dict | None = None, sync_codebook: bool | None = None):
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ

        self.cfg = cfg
        self.motion_dim = int(motion_dim)
        self.fps = float(fps)
        self.downsample = int(cfg.downsample)
        self.num_quantizers = int(cfg.num_quantizers)
        self.codebook_size = int(cfg.codebook_size)
        self.causal = bool(cfg.causal)
        self.groups = {k: list(v) for k, v in (groups or layout_for_dim(self.motion_dim).to_json()).items()}
        self.encoder = Encoder(self.motion_dim, cfg)
        self.decoder = Decoder(self.motion_dim, cfg)
        # sync_codebook=None lets vector_quantize_pytorch decide "is torch.distributed initialised?" now:
        # build this module after the Accelerator exists.
        self.rvq = ResidualVQ(
            dim=cfg.code_dim, num_quantizers=cfg.num_quantizers, codebook_size=cfg.codebook_size,
            kmeans_init=cfg.kmeans_init, kmeans_iters=cfg.kmeans_iters, decay=cfg.ema_decay,
            threshold_ema_dead_code=cfg.threshold_ema_dead_code, quantize_dropout=cfg.quantize_dropout,
            rotation_trick=cfg.rotation_trick, commitment_weight=1.0, sync_codebook=sync_codebook)
        mean = torch.zeros(self.motion_dim) if motion_mean is None else torch.as_tensor(motion_mean, dtype=torch.float32)
        std = torch.ones(self.motion_dim) if motion_std is None else torch.as_tensor(motion_std, dtype=torch.float32)
        self.register_buffer("motion_mean", mean.clone().reshape(self.motion_dim))
        self.register_buffer("motion_std", std.clone().reshape(self.motion_dim))
        self.reference = cfg.reference
        mask = torch.zeros(self.motion_dim, dtype=torch.bool)
        if cfg.reference == "person":
            a, b = self.groups["exp"]
            mask[a:b] = True
        self.register_buffer("reference_mask", mask, persistent=False)   # dims coded around the person's mean
        self._receptive_fields()

    # --- geometry ----------------------------------------------------------------------------------------
    def _receptive_fields(self):
        d = self.downsample
        j = 1000                                     # any interior token
        lo, hi = self.encoder.input_range(j, j)      # frames read by code j
        self.encoder_context = int((j + 1) * d - 1 - lo + 1)
        enc_ahead = max(0, hi - ((j + 1) * d - 1))
        lo, hi = self.decoder.input_range(j * d, j * d + d - 1)   # codes read by token j's frames
        self.decoder_context = int(j - lo + 1)
        self.decoder_lookahead = int(max(0, hi - j))               # tokens
        self.lookahead_frames = int(enc_ahead + self.decoder_lookahead * d)

    # --- training pass -----------------------------------------------------------------------------------
    def forward(self, x_norm: torch.Tensor):
        z = self.encoder(x_norm.transpose(1, 2)).transpose(1, 2)          # (B, T', C)
        q, codes, commit = self.rvq(z)
        recon = self.decoder(q.transpose(1, 2)).transpose(1, 2)           # (B, T, D)
        return recon, codes, commit

    # --- public API ----------------------------------------------------------------------------------------
    def center(self, reference=None) -> torch.Tensor:
        """What motion is coded around: the train mean, with a person's ``reference`` on the referenced dims
        ((D,) when ``reference`` is None, else broadcastable against (B, T, D))."""
        if reference is None or self.reference != "person":   # (no test of the mask on the device: a CUDA
            return self.motion_mean                            # graph captures this)
        ref = torch.as_tensor(reference, dtype=torch.float32, device=self.motion_mean.device)
        if ref.ndim == 2:                                               # (B, D): one reference per sequence
            ref = ref.unsqueeze(1)
        return torch.where(self.reference_mask, ref, self.motion_mean)

    def normalize(self, x, reference=None):
        return (x - self.center(reference)) / self.motion_std

    def denormalize(self, x, reference=None):
        return x * self.motion_std + self.center(reference)

    @staticmethod
    def person_reference(motion_raw) -> torch.Tensor:
        """(B, T, D) observed motion -> (B, D) its mean: the person's reference (an enrollment clip's too)."""
        return torch.as_tensor(motion_raw, dtype=torch.float32).mean(1)

    def _check_motion(self, motion):
        if not torch.is_tensor(motion):
            motion = torch.as_tensor(motion)
        if motion.ndim != 3 or motion.shape[-1] != self.motion_dim:
            raise ValueError(f"motion must be (B, T, {self.motion_dim}), got {tuple(motion.shape)}")
        t = motion.shape[1] - motion.shape[1] % self.downsample
        if t == 0:
            raise ValueError(f"motion has {motion.shape[1]} frames: fewer than one token ({self.downsample} frames)")
        return motion[:, :t].to(self.motion_mean.device, torch.float32)

    @torch.no_grad()
    def encode_normalized(self, x_norm: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x_norm.transpose(1, 2)).transpose(1, 2)
        was_training = self.rvq.training
        self.rvq.eval()                      # never touch the codebooks when encoding
        try:
            _, codes, _ = self.rvq(z, freeze_codebook=True)
        finally:
            self.rvq.train(was_training)
        return codes.long()

    @torch.no_grad()
    def encode(self, motion_raw: torch.Tensor, reference=None) -> torch.Tensor:
        """(B, T, D) raw motion -> (B, T // downsample, Q) long codes (``reference``: see the class docstring)."""
        x = self._check_motion(motion_raw)
        if reference is not None and torch.as_tensor(reference).ndim == 3:
            reference = torch.as_tensor(reference)[:, :x.shape[1]]
        return self.encode_normalized(self.normalize(x, reference))

    @torch.no_grad()
    def decode_normalized(self, codes: torch.Tensor, check: bool = True) -> torch.Tensor:
        """(B, T', Q) codes -> (B, T' * downsample, D) normalised motion. ``check=False`` skips the test that the
        codes lie in the codebook (it waits for the device): for codes a model just produced, and in a CUDA graph."""
        codes = torch.as_tensor(codes, device=self.motion_mean.device).long()
        if codes.ndim != 3 or codes.shape[-1] != self.num_quantizers:
            raise ValueError(f"codes must be (B, T', {self.num_quantizers}), got {tuple(codes.shape)}")
        if check and codes.numel() and (codes.max() >= self.codebook_size or codes.min() < 0):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        q = self.rvq.get_output_from_indices(codes)
        return self.decoder(q.transpose(1, 2)).transpose(1, 2)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, reference=None) -> torch.Tensor:
        """(B, T', Q) codes -> (B, T' * downsample, D) raw motion (``reference``: see the class docstring)."""
        return self.denormalize(self.decode_normalized(codes), reference)

    def stream_decoder(self) -> "StreamingDecoder":
        return StreamingDecoder(self)

    def describe(self) -> dict:
        return {"fps": self.fps, "motion_dim": self.motion_dim, "downsample": self.downsample,
                "num_quantizers": self.num_quantizers, "codebook_size": self.codebook_size,
                "causal": self.causal, "lookahead_frames": self.lookahead_frames,
                "decoder_context": self.decoder_context, "decoder_lookahead": self.decoder_lookahead,
                "encoder_context": self.encoder_context, "groups": self.groups, "reference": self.reference,
                "model": asdict(self.cfg)}


class StreamingDecoder:
    """Incremental decoding: ``push(codes (B, n, Q)) -> motion_raw (B, n * downsample, D)``.

    Keeps the last ``decoder_context - 1`` codes; every push decodes (context + new codes) and returns only the
    new frames, identical to the matching frames of one full decode. Causal tokenizers only.
    """

    def __init__(self, tokenizer: MotionTokenizer):
        if tokenizer.decoder_lookahead:
            raise ValueError("streaming decode needs a causal tokenizer (decoder_lookahead = 0)")
        self.tok = tokenizer
        self.buffer = None

    def reset(self):
        self.buffer = None

    @torch.no_grad()
    def push(self, codes: torch.Tensor, reference=None) -> torch.Tensor:
        """``reference``: the persons' references (B, D), or per new frame (B, n * downsample, D)."""
        codes = torch.as_tensor(codes, device=self.tok.motion_mean.device).long()
        n = codes.shape[1]
        if n == 0:
            return codes.new_zeros((codes.shape[0], 0, self.tok.motion_dim), dtype=torch.float32)
        buf = codes if self.buffer is None else torch.cat([self.buffer, codes], dim=1)
        buf = buf[:, -(self.tok.decoder_context - 1 + n):]
        out = self.tok.denormalize(self.tok.decode_normalized(buf)[:, -n * self.tok.downsample:], reference)
        keep = self.tok.decoder_context - 1
        self.buffer = buf[:, max(0, buf.shape[1] - keep):]
        return out


# ----------------------------------------------------------------------------------------------------------
# loss
# ----------------------------------------------------------------------------------------------------------
def stage1_loss(recon: torch.Tensor, target: torch.Tensor, commit: torch.Tensor, cfg: LossConfig,
                groups: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted reconstruction + velocity + commitment on normalised motion; returns (loss, parts)."""
    w = torch.ones(recon.shape[-1], device=recon.device, dtype=recon.dtype)
    if "jaw" in groups and cfg.jaw_weight != 1.0:
        a, b = groups["jaw"]
        w[a:b] = cfg.jaw_weight
    w = w / w.mean()
    rec = ((recon - target) ** 2 * w).mean()
    if recon.shape[1] > 1:
        vel = (((recon[:, 1:] - recon[:, :-1]) - (target[:, 1:] - target[:, :-1])) ** 2 * w).mean()
    else:
        vel = recon.new_zeros(())
    com = commit.sum()
    loss = cfg.recon * rec + cfg.velocity * vel + cfg.commit * com
    return loss, {"recon": rec.detach(), "velocity": vel.detach(), "commit": com.detach()}
