"""The dyadic GPT: a causal transformer over both participants' token streams and audio (nanoGPT style).

One sequence per participant *perspective* (``self`` and ``partner``), one position per token step ``k``
(``downsample`` motion frames). The input at ``k`` is the sum of

- the codes of step ``k - 1`` of self and of the partner (all RVQ levels, one embedding table per input and
  level; a learned BOS vector at the start of a dialog, or when the partner's codes are hidden);
- the audio features of the ``downsample`` frames of step ``k`` of self and of the partner (each person's own
  microphone; frames projected and concatenated: nothing pooled away, nothing later than step ``k`` used);
- optionally self's identity (``use_identity``: FLAME shape, zeros = unknown).

Self's inputs are normalised exactly as in the speaker-only model; the partner's (codes, of the first
``partner_levels`` RVQ levels, and audio, full or loudness only) are normalised apart and added through a
zero-initialised linear gate, so training starts from the speaker-only model and learns what the partner adds.

The output at ``k`` predicts self's codes of step ``k``, every RVQ level, through ``rvq_head``:

- ``"depth"``: level ``q`` from the transformer state plus the embeddings of the levels ``< q`` already chosen
  (a small MLP per level; teacher-forced in training, sampled coarse to fine);
- ``"parallel"``: all levels independently from the transformer state.

An auxiliary head predicts self's per-frame conversational state (idle/listen/speak/crosstalk) of step ``k``
(``state_loss``; no state is needed at generation time, predicted states come for free). With ``jaw_head`` another
regresses self's jaw of step ``k``'s frames (MSE): the jaw is the one dim that own speech nearly determines, and
sampled codes add noise there that a regression does not; generation outputs it in place of the decoded jaw, the
codes still carry the jaw into the next steps. On in the shipped configs (the dataclass default stays off, so older
GPT files load unchanged): with audio context and without the identity input it ties the regressors on the jaw
(docs/STAGE2.md, "Quality levers").

Both perspectives of a dialog run as one batch, so the two roles are symmetric by construction and a dyad is
generated jointly: at every step each side sees both audios and both token histories (its partner's codes of
the previous step included). Measured against one joint sequence predicting both people from a shared state,
and against partner codes as input at all, in docs/STAGE2.md.

Attention is causal and limited to the last ``attn_window`` steps (a band mask in training, a KV cache trimmed
to the same window at generation), with rotary positions: a sequence of any length sees exactly what training
showed, and memory stays flat.

``speaker_only``: the ablation; self's audio and self's codes only (the partner is never seen).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from x_transformers import Decoder

from .decode_step import (KVCache, RingKVCache, RotaryTables, check_plain_decoder, decoder_step, group_linear,
                          group_matmul)


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
    audio_context: int = 9            # frames of own audio each frame's projection reads, itself included: a causal
                                      # convolution of that kernel over the features (9 = 0.3 s at 30 fps; 1: the
                                      # frame alone, as GPT files written before this key)
    partner_audio_hidden: int = 0     # a narrower projection of the partner's audio (a bottleneck: their voice
                                      # activity and prosody, not their voice's identity); 0: audio_hidden, shared
    partner_audio: str = "full"       # "full": the partner's audio features; "energy": only their per-frame
                                      # loudness (mean of the normalised log-mel bins): voice activity and
                                      # prosody, not the voice, so the partner cannot identify the dialog
    use_identity: bool = False        # condition on each participant's identity (FLAME shape; zeros = unknown)
    identity_dim: int = 0             # filled from the cache (shape dims) when use_identity
    identity_dropout: float = 0.2     # training only: identities hidden at random, so unknown ones work too
    token_noise: float = 0.0          # training only: fraction of one's own input codes replaced by random codes
    partner_token_noise: float | None = None   # training only: the same for the partner's codes (None: token_noise)
    partner_levels: int = 0           # RVQ levels of the partner's codes seen (1: the coarse level only, a bottleneck
                                      # against memorising dialogs from the partner's fine detail); 0: all
    partner_dropout: float = 0.0      # training only: probability that the partner's codes are hidden (BOS) for a
                                      # whole window: less reliance on them (the partner's audio stays)
    audio_dropout: float = 0.0        # training only: probability that a perspective's audio (own and partner's) is
                                      # replaced by a learned "no audio" input for a whole window; > 0 makes the
                                      # model usable with classifier-free guidance on audio (Sampling.guidance)
    # outputs
    rvq_head: str = "depth"           # "depth" | "parallel"
    head_hidden: int = 256
    state_loss: float = 0.1           # weight of the auxiliary per-frame state prediction (0: off)
    jaw_head: bool = False            # also regress self's jaw of the step's frames from the transformer state (MSE);
                                      # generation outputs it in place of the jaw decoded from the sampled codes
    jaw_loss: float = 1.0             # weight of the jaw regression (normalised units)
    jaw_dims: int = 0                 # filled from the cache's motion layout when jaw_head

    @property
    def inputs(self) -> int:
        """Participants seen per sequence: self and partner, or self only (speaker-only)."""
        return 1 if self.speaker_only else 2

    def validate(self) -> "GPTConfig":
        needed = ("num_quantizers", "codebook_size", "downsample", "audio_dim")
        for k in needed + (("identity_dim",) if self.use_identity else ()) + (("jaw_dims",) if self.jaw_head else ()):
            if getattr(self, k) < 1:
                raise ValueError(f"GPTConfig.{k} must be set (>= 1), got {getattr(self, k)}")
        if self.partner_audio not in ("full", "energy"):
            raise ValueError(f"model.partner_audio must be 'full' or 'energy', got {self.partner_audio!r}")
        if self.rvq_head not in ("depth", "parallel"):
            raise ValueError(f"model.rvq_head must be 'depth' or 'parallel', got {self.rvq_head!r}")
        if self.attn_window < 1:
            raise ValueError("model.attn_window must be >= 1")
        if self.audio_context < 1:
            raise ValueError(f"model.audio_context must be >= 1 (frames), got {self.audio_context}")
        return self


class DepthHead(nn.Module):
    """Levels coarse-to-fine: ``logits_q = MLP_q(W h + sum_{i<q} E_i(c_i))``, one small MLP per level."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        Q, V, H = cfg.num_quantizers, cfg.codebook_size, cfg.head_hidden
        self.Q, self.V, self.H = Q, V, H
        self.inp = nn.Linear(cfg.dim, H)
        self.level_emb = nn.Embedding(Q * V, H)                      # embeddings of already chosen levels
        self.norm = nn.LayerNorm(H)
        self.w1 = nn.Parameter(torch.randn(Q, H, H) / math.sqrt(H))
        self.b1 = nn.Parameter(torch.zeros(Q, H))
        self.w2 = nn.Parameter(torch.randn(Q, H, V) * 0.02)
        self.b2 = nn.Parameter(torch.zeros(Q, V))
        self.register_buffer("offsets", torch.arange(Q) * V, persistent=False)     # (Q,)

    def base(self, h, groups: int = 1):                              # (..., dim) -> (..., H)
        return group_linear(self.inp, h, groups)

    def level_logits(self, z, q, groups: int = 1):
        """z (..., H) running input of level q -> logits (..., V) (``groups``: decode_step.group_matmul)."""
        y = F.gelu(group_matmul(self.norm(z), self.w1[q], groups) + self.b1[q])
        return group_matmul(y, self.w2[q], groups) + self.b2[q]

    def embed_level(self, codes, q):                                 # codes (...) -> (..., H)
        return self.level_emb(codes + self.offsets[q])

    def forward(self, h, codes):
        """Teacher-forced: h (B, K, dim), codes (B, K, Q) -> logits (B, K, Q, V)."""
        emb = self.level_emb(codes + self.offsets)                   # (B, K, Q, H)
        prev = torch.cumsum(emb, dim=-2) - emb                       # sum of levels < q
        z = self.base(h).unsqueeze(-2) + prev                        # (B, K, Q, H)
        y = F.gelu(torch.einsum("bkqh,qhg->bkqg", self.norm(z), self.w1) + self.b1)
        return torch.einsum("bkqh,qhv->bkqv", y, self.w2) + self.b2


class ParallelHead(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.Q, self.V = cfg.num_quantizers, cfg.codebook_size
        self.proj = nn.Sequential(nn.Linear(cfg.dim, cfg.head_hidden), nn.GELU(),
                                  nn.Linear(cfg.head_hidden, self.Q * self.V))

    def forward(self, h, codes=None):
        return self.proj(h).unflatten(-1, (self.Q, self.V))


class DyadGPT(nn.Module):
    """One participant's perspective per sequence: inputs of ``self`` (and, unless speaker-only, ``partner``),
    outputs for ``self``. ``forward`` takes both participants (B, 2, ...) and runs both perspectives as a batch
    of 2B sequences (roles are symmetric by construction)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg.validate()
        P, Q, V, d = cfg.inputs, cfg.num_quantizers, cfg.codebook_size, cfg.downsample
        self.code_emb = nn.Embedding(P * Q * V + P, cfg.dim)        # per input (self, partner) and level; + BOS
        offs = (torch.arange(P)[:, None] * Q + torch.arange(Q)[None]) * V
        self.register_buffer("code_offsets", offs, persistent=False)
        self.register_buffer("bos_index", torch.arange(P) + P * Q * V, persistent=False)
        seen = torch.ones(P, Q, 1)
        if P == 2 and 0 < cfg.partner_levels < Q:
            seen[1, cfg.partner_levels:] = 0                           # the partner's finer levels are not seen
        self.register_buffer("levels_seen", seen, persistent=False)
        # self: exactly the speaker-only input (own codes, own audio, own identity)
        self.audio_frame = nn.Sequential(nn.Linear(cfg.audio_context * cfg.audio_dim, cfg.audio_hidden), nn.GELU())
        self.audio_step = nn.Linear(d * cfg.audio_hidden, cfg.dim)
        self.identity = nn.Linear(cfg.identity_dim, cfg.dim) if cfg.use_identity else None
        self.in_norm = nn.LayerNorm(cfg.dim)
        # partner: its codes and audio, normalised apart and added through a zero-initialised gate, so training
        # starts from the speaker-only model and learns what the partner adds (measured in docs/STAGE2.md)
        self.partner_audio_frame = self.partner_audio_step = self.partner_norm = self.partner_gate = None
        if P == 2:
            energy = cfg.partner_audio == "energy"
            ph = cfg.partner_audio_hidden or (16 if energy else cfg.audio_hidden)
            self.partner_audio_frame = nn.Sequential(nn.Linear(1 if energy else cfg.audio_dim, ph), nn.GELU())
            self.partner_audio_step = nn.Linear(d * ph, cfg.dim)
            self.partner_norm = nn.LayerNorm(cfg.dim)
            self.partner_gate = nn.Linear(cfg.dim, cfg.dim)
        self.decoder = Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, attn_dim_head=cfg.dim_head,
                               ff_mult=cfg.ff_mult, rotary_pos_emb=True,
                               rotary_emb_dim=max(cfg.dim_head // 2, min(32, cfg.dim_head)), attn_dropout=cfg.dropout,
                               ff_dropout=cfg.dropout)
        self.head = DepthHead(cfg) if cfg.rvq_head == "depth" else ParallelHead(cfg)
        self.state_head = nn.Linear(cfg.dim, d * cfg.num_states) if cfg.state_loss > 0 else None
        self.jaw_out = None
        if cfg.jaw_head:                        # self's jaw of the step's d frames, normalised (jaw_mean, jaw_std)
            self.jaw_out = nn.Sequential(nn.Linear(cfg.dim, cfg.head_hidden), nn.GELU(),
                                         nn.Linear(cfg.head_hidden, d * cfg.jaw_dims))
            self.register_buffer("jaw_mean", torch.zeros(cfg.jaw_dims))
            self.register_buffer("jaw_std", torch.ones(cfg.jaw_dims))
        self.null_audio = None                  # the "no audio" input of classifier-free guidance (audio_dropout > 0):
        if cfg.audio_dropout > 0:               # what replaces the own and the partner's audio projections
            self.null_audio = nn.Parameter(torch.zeros(P, cfg.dim))
        self._rotary = None                     # rotary tables of the generation step (step_hidden)
        self.apply(self._init)
        if self.partner_gate is not None:
            nn.init.zeros_(self.partner_gate.weight)

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
    @property
    def audio_frames(self) -> int:
        """Audio frames one step reads: its ``downsample`` frames and the ``audio_context - 1`` before them."""
        return self.cfg.audio_context - 1 + self.cfg.downsample

    def embed(self, prev_codes, audio, identity=None, groups: int = 1, no_audio=None):
        """prev_codes (B, K, P, Q) long (input 0 = self, 1 = partner; -1 = BOS: no previous step / hidden);
        audio (B, K, P, audio_frames, F): each step's frames, the ``audio_context - 1`` frames before them first;
        identity (B, I) of self, or None (unknown) -> (B, K, dim). ``groups``: the B rows are that many dialogs,
        each computed as if alone (stage2_gpt/decode_step.py, "Row groups"). ``no_audio`` (B,) bool or None: those
        rows see the learned "no audio" input in place of every audio (``audio_dropout`` models only)."""
        lin = lambda layer, x: group_linear(layer, x, groups)           # noqa: E731
        d, c = self.cfg.downsample, self.cfg.audio_context
        own = audio[:, :, 0]                                           # (B, K, c - 1 + d, F)
        if c > 1:                                                      # frame j reads frames j - c + 1 .. j
            own = own.unfold(-2, c, 1).transpose(-1, -2).flatten(-2)   # (B, K, d, c * F)
        bos = prev_codes[..., 0] < 0                                   # (B, K, P)
        idx = prev_codes.clamp(min=0) + self.code_offsets
        e = (self.code_emb(idx) * self.levels_seen.to(self.code_emb.weight.dtype)).sum(-2)   # (B, K, P, dim)
        e = torch.where(bos[..., None], self.code_emb(self.bos_index).expand_as(e), e)
        a_own = lin(self.audio_step, self.audio_frame[1](lin(self.audio_frame[0], own)).flatten(2))
        if no_audio is not None:
            a_own = torch.where(no_audio[:, None, None], self.null_audio[0].to(a_own.dtype), a_own)
        x = e[:, :, 0] + a_own
        if self.identity is not None:
            if identity is None:
                identity = x.new_zeros(x.shape[0], self.cfg.identity_dim)
            x = x + lin(self.identity, identity.to(x.dtype)).unsqueeze(1)
        x = self.in_norm(x)
        if self.partner_gate is not None:
            pa = audio[:, :, 1, -d:]
            if self.cfg.partner_audio == "energy":
                pa = pa.mean(-1, keepdim=True)                         # (B, K, d, 1) loudness per frame
            a_partner = lin(self.partner_audio_step, self.partner_audio_frame[1](lin(self.partner_audio_frame[0], pa)).flatten(2))
            if no_audio is not None:
                a_partner = torch.where(no_audio[:, None, None], self.null_audio[1].to(a_partner.dtype), a_partner)
            xp = e[:, :, 1] + a_partner
            x = x + lin(self.partner_gate, self.partner_norm(xp))
        return x

    def perspectives(self, x):
        """(B, 2, ...) both participants -> (2B, P, ...): row ``2b + p`` is [participant p, its partner][:P]."""
        return torch.stack([x, x.flip(1)], 1).flatten(0, 1)[:, :self.cfg.inputs]

    def token_noise_rates(self) -> tuple[float, float]:
        """Training's input-code noise (own codes, partner's codes)."""
        cfg = self.cfg
        return cfg.token_noise, cfg.token_noise if cfg.partner_token_noise is None else cfg.partner_token_noise

    def _window_mask(self, K: int, device):
        w = self.cfg.attn_window
        if K <= w:
            return None
        i = torch.arange(K, device=device)
        return (i[:, None] - i[None, :]) < w                          # causality is the decoder's own

    # --- training / teacher-forced forward ----------------------------------------------------------------
    def forward(self, codes, audio, states=None, prev=None, identity=None, jaw=None, audio_prev=None,
                reduction: str = "mean"):
        """Teacher-forced pass over a window, both participants (each from its own perspective).

        codes (B, 2, K, Q) long; audio (B, 2, K*d, F) normalised features; states (B, 2, K*d) long or None;
        prev (B, 2, Q) codes of the step before the window (-1: the window starts the dialog) or None (-1);
        identity (B, 2, I) each participant's identity (``use_identity``; zeros or None: unknown); jaw (B, 2, K*d, J)
        each participant's jaw, normalised (``jaw_head``; None: no jaw loss); audio_prev (B, 2, >= audio_context - 1, F)
        the frames before the window (zeros where the dialog has none, as at generation; None: zeros).
        Returns ({"logits": (B, 2, K, Q, V), "state_logits": (B, 2, K*d, C) or None, "jaw": (B, 2, K*d, J) or None},
        losses) with losses ``loss`` (total), ``token`` (cross-entropy; per element (B, 2, K, Q) with
        reduction="none"), ``state``, ``jaw`` (mean squared error, normalised units).
        """
        cfg = self.cfg
        B, _, K, Q = codes.shape
        d = cfg.downsample
        if prev is None:
            prev = codes.new_full((B, 2, Q), -1)
        c = self.perspectives(codes).permute(0, 2, 1, 3)               # (2B, K, P, Q)
        pv = self.perspectives(prev)                                   # (2B, P, Q)
        C = cfg.audio_context - 1
        if C:                                                          # each step's frames with the C before them
            before = audio.new_zeros(*audio.shape[:2], C, audio.shape[-1]) if audio_prev is None else audio_prev[:, :, -C:]
            full = torch.cat([before.to(audio.dtype), audio], dim=2)  # (B, 2, C + K*d, F)
            audio = full.unfold(2, C + d, d).transpose(-1, -2)        # (B, 2, K, C + d, F)
        else:
            audio = audio.unflatten(2, (K, d))
        a = self.perspectives(audio).permute(0, 2, 1, 3, 4)            # (2B, K, P, C + d, F)
        prev_codes = torch.cat([pv.unsqueeze(1), c[:, :-1]], dim=1)   # codes of step k-1 at position k
        rates = self.token_noise_rates()[:prev_codes.shape[2]]
        if self.training and max(rates) > 0:
            u = torch.rand(prev_codes.shape, device=codes.device)      # per perspective (self, partner) its own rate
            noise = torch.stack([u[:, :, p] < r for p, r in enumerate(rates)], dim=2)
            rand = torch.randint_like(prev_codes, cfg.codebook_size)
            prev_codes = torch.where(noise & (prev_codes >= 0), rand, prev_codes)
        if self.training and cfg.partner_dropout > 0 and cfg.inputs == 2:
            hide = torch.rand(prev_codes.shape[0], device=codes.device) < cfg.partner_dropout
            mask = torch.zeros_like(prev_codes, dtype=torch.bool)
            mask[:, :, 1] = hide[:, None, None]
            prev_codes = prev_codes.masked_fill(mask, -1)             # the partner's codes hidden (BOS)
        ident = None
        if self.identity is not None and identity is not None:
            ident = identity.flatten(0, 1)                             # (2B, I): self's identity
            if self.training and cfg.identity_dropout > 0:
                keep = torch.rand(ident.shape[0], device=ident.device) >= cfg.identity_dropout
                ident = ident * keep[:, None].to(ident.dtype)
        no_audio = None
        if self.training and cfg.audio_dropout > 0:
            no_audio = torch.rand(prev_codes.shape[0], device=codes.device) < cfg.audio_dropout
        x = self.embed(prev_codes, a, ident, no_audio=no_audio)
        h = self.decoder(x, attn_mask=self._window_mask(K, x.device))
        target = codes.flatten(0, 1)                                   # (2B, K, Q): self's codes
        logits = self.head(h, target)                                  # (2B, K, Q, V)
        logits = logits.reshape(B, 2, K, Q, -1)
        state_logits = None
        if self.state_head is not None:
            state_logits = self.state_head(h).reshape(B, 2, K * d, cfg.num_states)
        jaw_pred = None
        if self.jaw_out is not None:
            jaw_pred = self.jaw_out(h).reshape(B, 2, K * d, cfg.jaw_dims)
        token = F.cross_entropy(logits.flatten(0, -2).float(), codes.flatten(), reduction="none").view(codes.shape)
        losses = {"token": token.mean() if reduction == "mean" else token}
        total = losses["token"] if reduction == "mean" else token.mean()
        if state_logits is not None and states is not None:
            st = F.cross_entropy(state_logits.flatten(0, -2).float(), states.flatten(), reduction="none")
            losses["state"] = st.mean()
            total = total + cfg.state_loss * losses["state"]
        if jaw_pred is not None and jaw is not None:
            losses["jaw"] = F.mse_loss(jaw_pred.float(), jaw.float())
            total = total + cfg.jaw_loss * losses["jaw"]
        losses["loss"] = total
        return {"logits": logits, "state_logits": state_logits, "jaw": jaw_pred}, losses

    # --- generation (one step; stage2_gpt/generate.py drives it) --------------------------------------------
    def new_cache(self) -> KVCache:
        """An empty KV cache for :meth:`step_hidden`: it keeps ``attn_window - 1`` steps, so every step attends to
        ``attn_window`` positions, as in training."""
        return KVCache(self.cfg.attn_window - 1)

    def new_ring_cache(self, rows: int, like: KVCache | None = None) -> RingKVCache:
        """The fixed-shape cache of the captured step (stage2_gpt/graphed_step.py) for ``rows`` sequences, holding
        what ``like`` (a :meth:`new_cache` cache, at most ``attn_window - 1`` steps in) holds."""
        c, w = self.cfg, self.code_emb.weight
        return RingKVCache.from_cache(like or self.new_cache(), self.rotary_tables(), c.attn_window, c.depth, rows,
                                      c.heads, c.dim_head, w.device, w.dtype)

    @torch.no_grad()
    def step_hidden(self, prev_codes, audio_step, cache: KVCache, identity=None, groups: int = 1, no_audio=None):
        """One position of B perspectives: prev_codes (B, P, Q) long (-1: BOS), audio_step (B, P, audio_frames, F)
        (the step's frames, the ``audio_context - 1`` before them first),
        identity (B, I) or None -> hidden (B, dim); ``cache`` (:meth:`new_cache`) is updated in place.
        The decoder runs through :func:`stage2_gpt.decode_step.decoder_step` (bit-identical to x-transformers'
        cached forward, without its per-layer Python); ``groups``: the B rows are that many dialogs; ``no_audio``
        (B,) bool: rows without audio (:meth:`embed`; classifier-free guidance)."""
        x = self.embed(prev_codes.unsqueeze(1), audio_step.unsqueeze(1), identity, groups, no_audio)    # (B, 1, dim)
        return decoder_step(self.decoder, x, cache, self.rotary_tables(), groups)[:, -1]

    def rotary_tables(self) -> RotaryTables:
        """The generation step's rotary tables (made once; the decoder checked then)."""
        if self._rotary is None or self._rotary.cos.device != self.code_emb.weight.device:
            check_plain_decoder(self.decoder)
            self._rotary = RotaryTables(self.decoder, self.cfg.attn_window)
        return self._rotary

    def train(self, mode: bool = True):
        self._rotary = None                     # rebuilt (and the decoder re-checked) at the next step
        return super().train(mode)

    @torch.no_grad()
    def jaw_values(self, h, groups: int = 1):
        """h (B, dim) -> (B, d, J) the regressed jaw of the step's frames, raw (denormalised), or None."""
        if self.jaw_out is None:
            return None
        y = group_linear(self.jaw_out[2], self.jaw_out[1](group_linear(self.jaw_out[0], h, groups)), groups)
        return y.unflatten(-1, (self.cfg.downsample, self.cfg.jaw_dims)) * self.jaw_std + self.jaw_mean

    @torch.no_grad()
    def state_probs(self, h, groups: int = 1):
        """h (B, dim) -> (B, d, C) state probabilities of the step's frames, or None."""
        if self.state_head is None:
            return None
        return group_linear(self.state_head, h, groups).unflatten(-1, (self.cfg.downsample, self.cfg.num_states)).softmax(-1)
