"""The DualTalk-class regressor: one participant's whole motion sequence from both audio tracks and the partner's
motion, in one forward pass (no tokens, no sampling). nanoGPT style: every block is written out here.

The architecture follows DualTalk (Peng et al., CVPR 2025; ``DualTalk.py`` of its code release), module by module:

1. **Joint encoder**: a separate audio encoder per person (own, partner), and an MLP over the partner's motion
   (``D -> dim / 2 -> dim``, ReLU). DualTalk's audio encoders are two wav2vec2-large models; ours read the cache's
   log-mel features (a linear projection and ``audio_layers`` residual temporal convolutions each).
2. **Cross-modal temporal enhancer**: the partner's audio features attend to the partner's motion features
   (cross-attention, queries = audio), then a 2-layer LSTM.
3. **Interaction module**: ``[own audio, enhanced partner]`` (2 * dim) through a transformer encoder
   (``interaction_layers``), a self-attention, and dropout 0.5.
4. **Synthesis module**: a transformer decoder whose target and memory are both the interaction features, the
   "adaptive expression modulation" ``h + 0.1 * Linear(h)``, and a linear layer to the motion dims.

Transformer layers are post-norm with ReLU feed-forwards, as PyTorch's ``nn.TransformerEncoderLayer`` /
``nn.TransformerDecoderLayer`` that DualTalk uses. DualTalk is non-causal (bidirectional LSTM, full attention).
``causal=True`` is the same network made causal: causal (left-padded) convolutions, a forward-only LSTM (hidden
``dim``: the same output width) and a causal mask in every attention, so output frame ``t`` depends only on
input frames ``<= t``. Nothing else reads positions: order reaches the attention layers through the LSTM (and
the convolutions), as in DualTalk.

``partner_motion=False`` is the **dyad protocol**: the same network without the partner's motion (no motion MLP;
the enhancer's attention runs over the partner's audio features instead), for comparison with the model's dyad
mode, which generates both people from their audio; DualTalk's own protocol (the default) is the counterpart of
the model's listener mode.

Inputs and outputs are normalised (the cache's train statistics). :meth:`DualTalkRegressor.regress` is one role
(own motion from own audio, partner audio and partner motion); ``forward`` runs both roles of a training window.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.config import RegressorModelConfig


class Attention(nn.Module):
    """Multi-head attention: queries from ``x``, keys and values from ``context`` (``x`` itself when None).
    Causal: query ``t`` sees keys ``<= t`` (both sequences are frame-aligned)."""

    def __init__(self, dim: int, heads: int, causal: bool, dropout: float = 0.0):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, context=None):
        B, T, C = x.shape
        context = x if context is None else context
        q = self.query(x)
        k, v = self.key_value(context).chunk(2, dim=-1)
        q, k, v = (t.view(B, t.shape[1], self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.up, self.down, self.drop = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.Dropout(dropout)

    def forward(self, x):
        return self.down(self.drop(F.relu(self.up(x))))


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (``nn.TransformerEncoderLayer``'s defaults): self-attention, FF."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, attn_dropout: float, causal: bool):
        super().__init__()
        self.attn = Attention(dim, heads, causal, attn_dropout)
        self.ff = FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x):
        x = self.norm1(x + self.drop1(self.attn(x)))
        return self.norm2(x + self.drop2(self.ff(x)))


class DecoderLayer(nn.Module):
    """Post-norm transformer decoder layer (``nn.TransformerDecoderLayer``'s defaults): self-attention,
    attention to ``memory``, FF."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, attn_dropout: float, causal: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads, causal, attn_dropout)
        self.cross_attn = Attention(dim, heads, causal, attn_dropout)
        self.ff = FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x, memory):
        x = self.norm1(x + self.drop1(self.self_attn(x)))
        x = self.norm2(x + self.drop2(self.cross_attn(x, memory)))
        return self.norm3(x + self.drop3(self.ff(x)))


class TemporalConv(nn.Module):
    """A residual temporal convolution over (B, T, dim): ``x + conv(gelu(norm(x)))``; causal: left padding."""

    def __init__(self, dim: int, kernel: int, causal: bool):
        super().__init__()
        self.pad = (kernel - 1, 0) if causal else ((kernel - 1) // 2, (kernel - 1) // 2)
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel)

    def forward(self, x):
        h = F.pad(F.gelu(self.norm(x)).transpose(1, 2), self.pad)
        return x + self.conv(h).transpose(1, 2)


class AudioEncoder(nn.Module):
    """One person's audio features (B, T, audio_dim) -> (B, T, dim): DualTalk's wav2vec2 + projection, here a
    projection of the log-mel frames and a few residual temporal convolutions (local context)."""

    def __init__(self, audio_dim: int, dim: int, layers: int, kernel: int, causal: bool):
        super().__init__()
        self.proj = nn.Linear(audio_dim, dim)
        self.convs = nn.ModuleList(TemporalConv(dim, kernel, causal) for _ in range(layers))

    def forward(self, audio):
        x = self.proj(audio)
        for conv in self.convs:
            x = conv(x)
        return x


class DualTalkRegressor(nn.Module):
    """DualTalk's four modules in order (the numbered comments); ``cfg.causal`` switches every one to causal."""

    def __init__(self, cfg: RegressorModelConfig):
        super().__init__()
        if cfg.motion_dim < 1 or cfg.audio_dim < 1:
            raise ValueError(f"model.motion_dim and model.audio_dim must be set, got {cfg.motion_dim}, {cfg.audio_dim}")
        self.cfg = cfg
        d, c = cfg.dim, cfg.causal
        # 1. joint encoder
        self.own_audio = AudioEncoder(cfg.audio_dim, d, cfg.audio_layers, cfg.audio_kernel, c)
        self.partner_audio = AudioEncoder(cfg.audio_dim, d, cfg.audio_layers, cfg.audio_kernel, c)
        self.partner_motion = (nn.Sequential(nn.Linear(cfg.motion_dim, d // 2), nn.ReLU(), nn.Linear(d // 2, d), nn.ReLU())
                               if cfg.partner_motion else None)        # None: the dyad protocol (audio only)
        # 2. cross-modal temporal enhancer
        self.cross_attn = Attention(d, cfg.heads, c)
        self.lstm = nn.LSTM(d, d if c else d // 2, num_layers=cfg.lstm_layers, bidirectional=not c, batch_first=True)
        # 3. interaction module
        self.interaction = nn.ModuleList(EncoderLayer(2 * d, cfg.heads, cfg.ff_dim, cfg.dropout, cfg.attn_dropout, c)
                                         for _ in range(cfg.interaction_layers))
        self.interaction_attn = Attention(2 * d, cfg.heads, c)
        self.interaction_drop = nn.Dropout(cfg.interaction_dropout)
        # 4. synthesis module
        self.synthesis = nn.ModuleList(DecoderLayer(2 * d, cfg.heads, cfg.ff_dim, cfg.dropout, cfg.attn_dropout, c)
                                       for _ in range(cfg.synthesis_layers))
        self.modulation = nn.Linear(2 * d, 2 * d)
        self.to_motion = nn.Linear(2 * d, cfg.motion_dim)

    def forward(self, motion, audio):
        """A window of both participants, motion (B, 2, T, D) and audio (B, 2, T, F) -> predictions (B, 2, T, D):
        participant ``p`` from its own audio, the partner's audio and (listener protocol) the partner's motion (a
        batch of 2B); in the dyad protocol (``partner_motion=False``) the motion is the target's shape only."""
        partner = [1, 0]
        seen = motion[:, partner].flatten(0, 1) if self.partner_motion is not None else None
        pred = self.regress(audio.flatten(0, 1), audio[:, partner].flatten(0, 1), seen)
        return pred.view(motion.shape)

    def regress(self, own_audio, partner_audio, partner_motion=None):
        """(B, T, audio_dim), (B, T, audio_dim), (B, T, motion_dim) normalised -> own motion (B, T, motion_dim).
        ``partner_motion`` is required in the listener protocol and must be None in the dyad protocol."""
        if (partner_motion is None) != (self.partner_motion is None):
            raise ValueError("this regressor reads the partner's motion (model.partner_motion=true): give it"
                             if self.partner_motion is not None else
                             "this regressor reads audio only (model.partner_motion=false): give no partner motion")
        own = self.own_audio(own_audio)
        partner = self.partner_audio(partner_audio)
        partner = self.cross_attn(partner, None if partner_motion is None else self.partner_motion(partner_motion))
        partner, _ = self.lstm(partner)
        h = torch.cat([own, partner], dim=-1)
        for layer in self.interaction:
            h = layer(h)
        h = self.interaction_drop(self.interaction_attn(h))
        for layer in self.synthesis:
            h = layer(h, memory=h)
        h = h + self.cfg.modulation * self.modulation(h)
        return self.to_motion(h)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
