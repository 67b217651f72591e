"""The dyadic GPT: one causal transformer over the token streams of both participants (nanoGPT style).

One sequence position per token step ``k`` (``downsample`` motion frames). Its input is the sum of

- both participants' codes of step ``k - 1`` (all RVQ levels, one embedding table per slot and level;
  a learned BOS vector per slot at the start of a dialog), and
- both participants' audio features of the ``downsample`` frames of step ``k`` (each person's own mic; the
  frames are projected and concatenated, so nothing is pooled away and nothing later than step ``k`` is used).

Its output predicts the codes of step ``k`` of both participants, every RVQ level, through ``rvq_head``:

- ``"depth"``: per slot, level ``q`` is predicted from the transformer state plus the embeddings of the levels
  ``< q`` already chosen (a small MLP per level; teacher-forced in training, sampled coarse-to-fine);
- ``"parallel"``: all levels independently from the transformer state (one linear head).

An auxiliary head predicts each participant's per-frame conversational state (idle/listen/speak/crosstalk) of
step ``k`` (``state_loss`` weight; it needs no state at generation time and gives predicted states for free).

Attention is causal and limited to the last ``attn_window`` steps (a band mask in training, a KV cache trimmed
to the same window at generation), with rotary positions: a generated sequence of any length sees exactly what
training showed, and memory stays flat.

``speaker_only``: the ablation; each participant is its own sequence (one slot) of its own audio and tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from x_transformers import Decoder


@dataclass
class GPTConfig:
    # filled from the tokenizer / cache at training time when 0
    num_quantizers: int = 0
    codebook_size: int = 0
    downsample: int = 0
    audio_dim: int = 0
    num_states: int = 4
    # mode
    speaker_only: bool = False        # ablation: own audio + own tokens only (the partner is not seen)
    # transformer
    dim: int = 256
    depth: int = 6
    heads: int = 4
    dim_head: int = 64
    ff_mult: int = 4
    dropout: float = 0.1
    attn_window: int = 64             # token steps a position attends to (itself included); KV cache size
    # inputs
    audio_hidden: int = 128           # per-frame audio projection before concatenating a step's frames
    use_identity: bool = False        # condition on each participant's identity (FLAME shape; zeros = unknown)
    identity_dim: int = 0             # filled from the cache (shape dims) when use_identity
    identity_dropout: float = 0.2     # training only: identities hidden at random, so unknown ones work too
    token_noise: float = 0.0          # training only: fraction of input codes replaced by random codes
    # outputs
    rvq_head: str = "depth"           # "depth" | "parallel"
    head_hidden: int = 256
    state_loss: float = 0.1           # weight of the auxiliary per-frame state prediction (0: off)

    @property
    def slots(self) -> int:
        return 1 if self.speaker_only else 2

    def validate(self) -> "GPTConfig":
        needed = ("num_quantizers", "codebook_size", "downsample", "audio_dim")
        for k in needed + (("identity_dim",) if self.use_identity else ()):
            if getattr(self, k) < 1:
                raise ValueError(f"GPTConfig.{k} must be set (>= 1), got {getattr(self, k)}")
        if self.rvq_head not in ("depth", "parallel"):
            raise ValueError(f"model.rvq_head must be 'depth' or 'parallel', got {self.rvq_head!r}")
        if self.attn_window < 1:
            raise ValueError("model.attn_window must be >= 1")
        return self


class DepthHead(nn.Module):
    """Levels coarse-to-fine: ``logits_q = MLP_q(W h + sum_{i<q} E_i(c_i))``, per slot and level."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        S, Q, V, H = cfg.slots, cfg.num_quantizers, cfg.codebook_size, cfg.head_hidden
        self.S, self.Q, self.V, self.H = S, Q, V, H
        self.inp = nn.Linear(cfg.dim, S * H)
        self.level_emb = nn.Embedding(S * Q * V, H)                  # embeddings of already chosen levels
        self.norm = nn.LayerNorm(H)
        self.w1 = nn.Parameter(torch.randn(S, Q, H, H) / math.sqrt(H))
        self.b1 = nn.Parameter(torch.zeros(S, Q, H))
        self.w2 = nn.Parameter(torch.randn(S, Q, H, V) * 0.02)
        self.b2 = nn.Parameter(torch.zeros(S, Q, V))
        offs = (torch.arange(S)[:, None] * Q + torch.arange(Q)[None]) * V
        self.register_buffer("offsets", offs, persistent=False)        # (S, Q)

    def base(self, h):                                               # (..., dim) -> (..., S, H)
        return self.inp(h).unflatten(-1, (self.S, self.H))

    def level_logits(self, z, q, slots=None):
        """z (..., S', H) running input of level q for slots ``slots`` (all when None) -> logits (..., S', V)."""
        s = slice(None) if slots is None else slots
        y = F.gelu(torch.einsum("...sh,shg->...sg", self.norm(z), self.w1[s, q]) + self.b1[s, q])
        return torch.einsum("...sh,shv->...sv", y, self.w2[s, q]) + self.b2[s, q]

    def embed_level(self, codes, q, slots=None):                     # codes (..., S') -> (..., S', H)
        s = slice(None) if slots is None else slots
        return self.level_emb(codes + self.offsets[s, q])

    def forward(self, h, codes):
        """Teacher-forced: h (B, K, dim), codes (B, K, S, Q) -> logits (B, K, S, Q, V)."""
        z0 = self.base(h)                                            # (B, K, S, H)
        emb = self.level_emb(codes + self.offsets)                   # (B, K, S, Q, H)
        prev = torch.cumsum(emb, dim=-2) - emb                       # sum of levels < q
        z = z0.unsqueeze(-2) + prev                                  # (B, K, S, Q, H)
        y = F.gelu(torch.einsum("bksqh,sqhg->bksqg", self.norm(z), self.w1) + self.b1)
        return torch.einsum("bksqh,sqhv->bksqv", y, self.w2) + self.b2


class ParallelHead(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.S, self.Q, self.V = cfg.slots, cfg.num_quantizers, cfg.codebook_size
        self.proj = nn.Sequential(nn.Linear(cfg.dim, cfg.head_hidden), nn.GELU(),
                                  nn.Linear(cfg.head_hidden, self.S * self.Q * self.V))

    def forward(self, h, codes=None):
        return self.proj(h).unflatten(-1, (self.S, self.Q, self.V))


class DyadGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg.validate()
        S, Q, V, d = cfg.slots, cfg.num_quantizers, cfg.codebook_size, cfg.downsample
        self.code_emb = nn.Embedding(S * Q * V + S, cfg.dim)        # per slot and level; last S rows: BOS
        offs = (torch.arange(S)[:, None] * Q + torch.arange(Q)[None]) * V
        self.register_buffer("code_offsets", offs, persistent=False)
        self.register_buffer("bos_index", torch.arange(S) + S * Q * V, persistent=False)
        self.audio_frame = nn.Sequential(nn.Linear(cfg.audio_dim, cfg.audio_hidden), nn.GELU())
        self.audio_step = nn.Linear(S * d * cfg.audio_hidden, cfg.dim)
        self.identity = nn.Linear(S * cfg.identity_dim, cfg.dim) if cfg.use_identity else None
        self.in_norm = nn.LayerNorm(cfg.dim)
        self.decoder = Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, attn_dim_head=cfg.dim_head,
                               ff_mult=cfg.ff_mult, rotary_pos_emb=True,
                               rotary_emb_dim=max(cfg.dim_head // 2, min(32, cfg.dim_head)), attn_dropout=cfg.dropout,
                               ff_dropout=cfg.dropout)
        self.head = DepthHead(cfg) if cfg.rvq_head == "depth" else ParallelHead(cfg)
        self.state_head = nn.Linear(cfg.dim, S * d * cfg.num_states) if cfg.state_loss > 0 else None
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- inputs ------------------------------------------------------------------------------------------
    def embed(self, prev_codes, audio, identity=None):
        """prev_codes (B, K, S, Q) long, -1 = BOS (no previous step); audio (B, K, S, d, F); identity (B, S, I)
        or None (unknown) -> (B, K, dim)."""
        bos = prev_codes[..., 0] < 0                                   # (B, K, S)
        idx = prev_codes.clamp(min=0) + self.code_offsets
        e = self.code_emb(idx).sum(-2)                                 # (B, K, S, dim)
        e = torch.where(bos[..., None], self.code_emb(self.bos_index).expand_as(e), e)
        a = self.audio_frame(audio).flatten(2)                         # (B, K, S*d*ah)
        x = e.sum(2) + self.audio_step(a)
        if self.identity is not None:
            if identity is None:
                identity = x.new_zeros(x.shape[0], self.cfg.slots, self.cfg.identity_dim)
            x = x + self.identity(identity.flatten(1).to(x.dtype)).unsqueeze(1)
        return self.in_norm(x)

    def _window_mask(self, K: int, device):
        w = self.cfg.attn_window
        if K <= w:
            return None
        i = torch.arange(K, device=device)
        return (i[:, None] - i[None, :]) < w                          # causality is the decoder's own

    # --- training / teacher-forced forward ----------------------------------------------------------------
    def forward(self, codes, audio, states=None, prev=None, identity=None, reduction: str = "mean"):
        """Teacher-forced pass over a window.

        codes (B, 2, K, Q) long; audio (B, 2, K*d, F) normalised features; states (B, 2, K*d) long or None;
        prev (B, 2, Q) codes of the step before the window (-1: the window starts the dialog) or None (-1);
        identity (B, 2, I) each participant's identity (``use_identity``; zeros or None: unknown).
        Returns (logits (B, 2, K, Q, V), loss dict with ``loss`` (total), ``token`` and ``state``) when
        ``codes`` are targets; speaker-only models predict each participant from its own inputs alone.
        """
        cfg = self.cfg
        B, P, K, Q = codes.shape
        d = cfg.downsample
        if prev is None:
            prev = codes.new_full((B, P, Q), -1)
        audio = audio.unflatten(2, (K, d))                             # (B, P, K, d, F)
        if self.identity is not None and identity is not None and self.training and cfg.identity_dropout > 0:
            keep = torch.rand(identity.shape[:2], device=identity.device) >= cfg.identity_dropout
            identity = identity * keep.unsqueeze(-1).to(identity.dtype)
        if self.identity is None:
            identity = None
        if cfg.speaker_only:                                           # (B*P, 1, ...)
            codes_s, audio_s, prev_s = (x.flatten(0, 1).unsqueeze(1) for x in (codes, audio, prev))
            ident_s = None if identity is None else identity.flatten(0, 1).unsqueeze(1)
        else:
            codes_s, audio_s, prev_s, ident_s = codes, audio, prev, identity
        Bs = codes_s.shape[0]
        codes_t = codes_s.permute(0, 2, 1, 3)                          # (Bs, K, S, Q)
        prev_codes = torch.cat([prev_s.unsqueeze(1), codes_t[:, :-1]], dim=1)
        if self.training and cfg.token_noise > 0:
            noise = torch.rand(prev_codes.shape, device=codes.device) < cfg.token_noise
            rand = torch.randint_like(prev_codes, cfg.codebook_size)
            prev_codes = torch.where(noise & (prev_codes >= 0), rand, prev_codes)
        x = self.embed(prev_codes, audio_s.permute(0, 2, 1, 3, 4), ident_s)
        h = self.decoder(x, attn_mask=self._window_mask(K, x.device))
        logits = self.head(h, codes_t)                                 # (Bs, K, S, Q, V)
        logits = logits.permute(0, 2, 1, 3, 4)                         # (Bs, S, K, Q, V)
        state_logits = None
        if self.state_head is not None:
            state_logits = self.state_head(h).unflatten(-1, (cfg.slots, d, cfg.num_states))   # (Bs, K, S, d, C)
            state_logits = state_logits.permute(0, 2, 1, 3, 4).flatten(2, 3)                  # (Bs, S, K*d, C)
        if cfg.speaker_only:
            logits = logits.reshape(B, P, *logits.shape[2:])
            if state_logits is not None:
                state_logits = state_logits.reshape(B, P, *state_logits.shape[2:])
        token = F.cross_entropy(logits.flatten(0, -2).float(), codes.flatten(), reduction="none").view(codes.shape)
        losses = {"token": token.mean() if reduction == "mean" else token}
        total = losses["token"] if reduction == "mean" else token.mean()
        if state_logits is not None and states is not None:
            st = F.cross_entropy(state_logits.flatten(0, -2).float(), states.flatten(), reduction="none")
            losses["state"] = st.mean()
            total = total + cfg.state_loss * losses["state"]
        losses["loss"] = total
        return {"logits": logits, "state_logits": state_logits}, losses

    # --- generation (one step with a KV cache; stage2_gpt/generate.py drives it) ----------------------------
    @torch.no_grad()
    def step_hidden(self, prev_codes, audio_step, cache=None, identity=None):
        """prev_codes (B, S, Q) long (-1: BOS), audio_step (B, S, d, F), identity (B, S, I) or None
        -> (hidden (B, dim), cache).

        The returned cache holds at most ``attn_window - 1`` steps, so the next step attends to
        ``attn_window`` positions, as the training mask does.
        """
        x = self.embed(prev_codes.unsqueeze(1), audio_step.unsqueeze(1), identity)    # (B, 1, dim)
        h, cache = self.decoder(x, cache=cache, return_hiddens=True)
        trim_cache(cache, self.cfg.attn_window - 1)
        return h[:, -1], cache

    @torch.no_grad()
    def state_probs(self, h):
        if self.state_head is None:
            return None
        cfg = self.cfg
        return self.state_head(h).unflatten(-1, (cfg.slots, cfg.downsample, cfg.num_states)).softmax(-1)


def trim_cache(cache, keep: int):
    """Keep the last ``keep`` positions of an x-transformers KV cache (rotary: keys are cached unrotated and
    re-rotated from their place in the cache at each step, so trimming keeps relative positions exact)."""
    if cache.cache_length <= keep:
        return cache
    for inter in cache.attn_intermediates:
        if getattr(inter, "cached_kv", None) is not None:
            k, v = inter.cached_kv
            inter.cached_kv = (k[..., -keep:, :], v[..., -keep:, :]) if keep > 0 else (k[..., :0, :], v[..., :0, :])
    cache.cache_length = keep
    cache.hiddens = None
    cache.layer_hiddens = None
    return cache
