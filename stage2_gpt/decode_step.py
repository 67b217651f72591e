"""One cached position of the GPT's x-transformers ``Decoder``, without its per-layer generality.

x-transformers' ``AttentionLayers.forward`` serves every variant the library knows (memory tokens, hyper
connections, value residuals, ...): at one position with a KV cache, the default size (6 layers x 256) spent
about 80 % of a generation step in that Python, not in arithmetic (docs/BENCHMARKS.md, "Stage 2"). This module
runs the same torch ops, in the same order and on the same shapes, for the plain pre-norm decoder that
``stage2_gpt/model.py`` builds (LayerNorm, rotary self-attention, GELU feed-forward, final LayerNorm), so its
hidden states are bit-identical to the library's cached forward (tests/test_stage2.py checks that).

The cache keeps keys *before* rotary, as x-transformers does, and re-rotates them at every step from their
place in the cache: trimming it to ``attn_window - 1`` positions keeps relative positions exact. The rotary
angles of positions ``0 .. attn_window - 1`` are computed once (the library recomputes them at every step).

    cache = KVCache(keep=cfg.attn_window - 1)
    h = decoder_step(model.decoder, x (B, 1, dim), cache, tables)    # -> (B, 1, dim); cache updated in place

**Row groups** (``groups``): a batch of several dialogs is ``groups`` equal blocks of rows, one per dialog. A
BLAS matrix product does not give a row the same bits whatever the other rows are (MKL on this CPU rounds
differently for 1, 2-3 and >= 4 rows), so every linear layer runs as one batched product of the groups
(:func:`group_linear`, ``bmm``): each dialog's rows get exactly the product they get alone, and a batch of
dialogs generates exactly what each dialog generates alone. Everything else (norms, attention, activations) is
computed row by row already.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


SMALL_PRODUCT = 400     # torch's CPU bmm multiplies batches this small (rows * inner * cols) with its own loop


def group_linear(layer, x, groups: int = 1):
    """``layer(x)`` (an ``nn.Linear``) with the rows of x (leading dims) in ``groups`` equal blocks, each block
    multiplied on its own (one ``baddbmm``), so a block's result does not depend on the other blocks."""
    return group_matmul(x, layer.weight.t(), groups, layer.bias)


def group_matmul(x, w, groups: int = 1, bias=None):
    """``x @ w`` (+ ``bias``, fused as ``F.linear`` fuses it) with the rows of x in ``groups`` blocks, each
    multiplied on its own: one ``bmm`` (per block, the product a lone block gets), or one product per block
    for products too small for ``bmm`` to hand to BLAS."""
    if groups == 1:
        return (x @ w) if bias is None else F.linear(x, w.t(), bias)
    lead, xg = x.shape[:-1], x.reshape(groups, -1, x.shape[-1])
    if xg.shape[1] * w.shape[0] * w.shape[1] < SMALL_PRODUCT:
        y = torch.stack([group_matmul(b, w, 1, bias) for b in xg])
    elif bias is None:
        y = torch.bmm(xg, w.expand(groups, *w.shape))
    else:
        y = torch.baddbmm(bias.expand(groups, xg.shape[1], -1), xg, w.expand(groups, *w.shape))
    return y.reshape(*lead, w.shape[-1])


class KVCache:
    """Per attention layer, the keys (unrotated) and values of the last ``keep`` positions: (B, H, L, dh)."""

    def __init__(self, keep: int):
        self.keep = int(keep)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def length(self) -> int:
        return self.keys[0].shape[-2] if self.keys else 0

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def select(self, rows) -> None:
        """Keep only these batch rows (e.g. the sequences still being generated)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


class RotaryTables:
    """cos / sin of the rotary angles of positions ``0 .. positions - 1``, as x-transformers computes them, with
    ``rotate_half`` folded in: ``rotate_half(t) * sin == t[..., swap] * signed_sin`` exactly (a sign flip and a
    permutation are exact), one gather instead of five ops."""

    def __init__(self, decoder, positions: int):
        rot = decoder.rotary_pos_emb
        with torch.no_grad():
            freqs, scale = rot(torch.arange(positions, device=rot.inv_freq.device))     # (1, n, rot_dim)
        if torch.is_tensor(scale):
            raise ValueError("decode_step supports plain rotary embeddings (no xpos)")
        self.rot_dim = freqs.shape[-1]
        pairs = torch.arange(self.rot_dim, device=freqs.device).view(-1, 2)
        self.swap = pairs.flip(-1).reshape(-1)                                           # (x1, x2) -> (x2, x1)
        sign = torch.tensor([-1.0, 1.0], device=freqs.device).repeat(self.rot_dim // 2)   # -> (-x2, x1)
        self.cos, self.signed_sin = freqs.cos()[:, None], (freqs.sin() * sign)[:, None]  # (1, 1, n, rot_dim)
        with torch.no_grad():                                       # the angle per unit of position (t = 1)
            self.freqs, self.sign = rot(torch.arange(2, device=freqs.device))[0][0, 1], sign


def apply_rotary(t, cos, signed_sin, tables: RotaryTables):
    """x-transformers' ``apply_rotary_pos_emb`` on the first ``rot_dim`` dims: the same products and sum."""
    t, t_rest = t[..., :tables.rot_dim], t[..., tables.rot_dim:]
    t = t * cos + t.index_select(-1, tables.swap) * signed_sin
    return torch.cat((t, t_rest), -1)


def layer_norm(norm, x):
    """x-transformers' ``LayerNorm`` (no affine, then a learned gain)."""
    gamma = norm.gamma + float(norm.unit_offset) if norm.unit_offset else norm.gamma
    return F.layer_norm(x, norm.ln.normalized_shape, None, None, norm.ln.eps) * gamma


TRANSPOSED_KEYS_ROWS = 512     # from this many rows a RingKVCache lays its keys out as (B, H, dh, W)


def keys_layout(k: torch.Tensor) -> torch.Tensor:
    """``k`` (B, H, W, dh) in the memory layout its row count B calls for: from ``TRANSPOSED_KEYS_ROWS`` rows
    stored as (B, H, dh, W) (``k.transpose(-1, -2)`` contiguous: ``q @ k^T`` a plain matrix-vector product),
    fewer rows as (B, H, W, dh). Measured on an H200 (docs/BENCHMARKS.md, "Fifth session"): with 1,024 rows the
    step's replay took 7.6 ms instead of 10.0, with 256 rows 3.67 ms instead of 3.56."""
    if k.shape[0] < TRANSPOSED_KEYS_ROWS:
        return k.contiguous()
    return k.transpose(-1, -2).contiguous().transpose(-1, -2)


class RingKVCache:
    """A :class:`KVCache` of fixed shape, for a captured (CUDA graph) step: per attention layer ``window`` slots
    (B, H, window, dh), the newest position written over the oldest (``slot``: where the next one goes, a device
    tensor, so a replayed graph advances it). Keys are stored rotated at their absolute position (``position``;
    the angles computed in float64, so they stay exact over hours), the query likewise: rotary attention depends
    only on the distance, so this is :class:`KVCache`'s attention up to float rounding (the slots are summed in
    ring order, empty ones masked), without rotating the whole cache again at every step. Nothing in a step
    depends on host values: every step has the same shapes.

    The keys (B, H, window, dh) of many rows are laid out in memory as (B, H, dh, window) (:func:`keys_layout`),
    so ``q @ k^T`` is a plain matrix-vector product: on an H200 with 512 samples (1,024 rows) the transposed
    product took 4.4 of the replay's 10.0 ms. The values keep (B, H, window, dh) (``a @ v`` is plain that way)."""

    def __init__(self, window: int, layers: int, batch: int, heads: int, dim_head: int, device, dtype=torch.float32):
        self.window = int(window)
        shape = (batch, heads, window, dim_head)
        self.keys = [keys_layout(torch.zeros(shape, device=device, dtype=dtype)) for _ in range(layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]   # (W, dh) always:
        # a @ v reads them row by row
        self.empty = torch.ones(window, dtype=torch.bool, device=device)      # slots not written yet
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.float64, device=device)   # of the next step
        self.cos = self.signed_sin = None

    @classmethod
    def from_cache(cls, cache: KVCache, tables: RotaryTables, window: int, layers: int, batch: int, heads: int,
                   dim_head: int, device, dtype=torch.float32) -> "RingKVCache":
        """A ring holding what ``cache`` holds (its ``length`` <= ``window - 1`` positions from the dialog's start)."""
        ring = cls(window, layers, batch, heads, dim_head, device, dtype)
        n = cache.length
        if n:
            if n >= window or cache.batch != batch:
                raise ValueError(f"cannot hold a cache of {n} positions x {cache.batch} rows in {window} x {batch}")
            cos, signed_sin = ring.angles(tables, torch.arange(n, device=device, dtype=torch.float64))
            for mine, theirs in zip(ring.keys, cache.keys):
                mine[:, :, :n] = apply_rotary(theirs, cos, signed_sin, tables)
            for mine, theirs in zip(ring.values, cache.values):
                mine[:, :, :n] = theirs
            ring.empty[:n] = False
            ring.slot.fill_(n)
            ring.position.fill_(n)
        return ring

    @staticmethod
    def angles(tables: RotaryTables, positions: torch.Tensor):
        """cos / signed sin (1, 1, n, rot_dim) of float64 ``positions`` (n,), as :class:`RotaryTables` makes them."""
        ang = positions[:, None] * tables.freqs.to(torch.float64)
        return ang.cos().float()[None, None], (ang.sin().float() * tables.sign)[None, None]

    @property
    def length(self) -> int:
        return int((~self.empty).sum())

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def select(self, rows) -> None:
        self.keys = [keys_layout(k[rows]) for k in self.keys]
        self.values = [v[rows].contiguous() for v in self.values]

    def begin(self, tables: RotaryTables) -> None:
        """Before a step's layers: the newest slot counts as written; the rotary angles of the step's position."""
        self.empty.index_fill_(0, self.slot, False)
        self.cos, self.signed_sin = self.angles(tables, self.position)

    def end(self) -> None:
        self.slot.add_(1).remainder_(self.window)
        self.position.add_(1)


def _qkv(attn, x, groups: int):
    h = attn.heads
    return [group_linear(lin, x, groups).unflatten(-1, (h, -1)).transpose(1, 2)             # (B, H, 1, dh)
            for lin in (attn.to_q, attn.to_k, attn.to_v)]


def _attend(attn, q, k, v, groups: int, empty=None):
    scale = attn.attend.scale if attn.attend.scale is not None else q.shape[-1] ** -0.5
    sim = (q @ k.transpose(-1, -2)) * scale                  # == x-transformers' einsum (the same bmm)
    if empty is not None:
        sim = sim.masked_fill(empty, float("-inf"))
    a = sim.softmax(-1, dtype=torch.float32).type(sim.dtype)
    return group_linear(attn.to_out, (a @ v).transpose(1, 2).flatten(2), groups)


def ring_attention_step(attn, x, cache: RingKVCache, layer: int, tables: RotaryTables, groups: int = 1):
    """:func:`attention_step` on a :class:`RingKVCache` (fixed shapes: capturable in a CUDA graph)."""
    q, k, v = _qkv(attn, x, groups)
    q = apply_rotary(q, cache.cos, cache.signed_sin, tables)
    cache.keys[layer].index_copy_(2, cache.slot, apply_rotary(k, cache.cos, cache.signed_sin, tables))
    cache.values[layer].index_copy_(2, cache.slot, v)
    return _attend(attn, q, cache.keys[layer], cache.values[layer], groups, cache.empty)


def attention_step(attn, x, cache: KVCache, layer: int, tables: RotaryTables, groups: int = 1):
    """x (B, 1, dim) normed input of one self-attention layer -> (B, 1, dim); appends to the cache."""
    if isinstance(cache, RingKVCache):
        return ring_attention_step(attn, x, cache, layer, tables, groups)
    q, k, v = _qkv(attn, x, groups)
    if layer < len(cache.keys):
        k = torch.cat((cache.keys[layer], k), -2)
        v = torch.cat((cache.values[layer], v), -2)
        cache.keys[layer], cache.values[layer] = k[..., -cache.keep:, :], v[..., -cache.keep:, :]
    else:
        cache.keys.append(k[..., -cache.keep:, :])
        cache.values.append(v[..., -cache.keep:, :])
    n = k.shape[-2]
    q = apply_rotary(q, tables.cos[:, :, n - 1:n], tables.signed_sin[:, :, n - 1:n], tables)
    k = apply_rotary(k, tables.cos[:, :, :n], tables.signed_sin[:, :, :n], tables)
    return _attend(attn, q, k, v, groups)


def feedforward_step(ff, x, groups: int = 1):
    """x-transformers' ``FeedForward`` (Linear, GELU, Linear) in eval mode."""
    (proj_in, act), _, proj_out = ff.ff[0], ff.ff[1], ff.ff[2]
    return group_linear(proj_out, act(group_linear(proj_in, x, groups)), groups)


def check_plain_decoder(decoder) -> None:
    """Refuse decoders this step does not reproduce (anything but pre-norm 'a', 'f' layers with rotary)."""
    from x_transformers.x_transformers import Attention, FeedForward, LayerNorm, Residual
    ok = decoder.rotary_pos_emb is not None and not decoder.training
    for kind, (norms, block, residual) in zip(decoder.layer_types, decoder.layers):
        ok &= kind in ("a", "f") and isinstance(norms[0], LayerNorm) and norms[1] is None and norms[2] is None
        ok &= type(residual) is Residual and residual.residual_scale is None and residual.scale_residual_constant == 1
        if kind == "a":
            a = block.attend
            ok &= isinstance(block, Attention) and block.kv_heads == block.heads and not block.qk_norm
            ok &= block.num_mem_kv == 0 and not a.flash and a.attn_fn.keywords.get("dtype") == torch.float32
            ok &= all(getattr(block, n, None) is None for n in ("to_v_gate", "to_output_gate", "to_v_head_gate",
                                                                "hybrid_module", "data_dependent_alibi"))
        else:
            ok &= isinstance(block, FeedForward) and len(block.ff) == 3
    ok &= isinstance(decoder.final_norm, LayerNorm)
    if not ok:
        raise ValueError("decode_step reproduces only the plain decoder of stage2_gpt/model.py (in eval mode)")


def decoder_step(decoder, x, cache: KVCache, tables: RotaryTables, groups: int = 1):
    """One position of every sequence in the batch: x (B, 1, dim) -> the decoder's output (B, 1, dim)."""
    layer, ring = 0, isinstance(cache, RingKVCache)
    if ring:
        cache.begin(tables)
    for kind, (norms, block, _) in zip(decoder.layer_types, decoder.layers):
        y = layer_norm(norms[0], x)
        if kind == "a":
            y = attention_step(block, y, cache, layer, tables, groups)
            layer += 1
        else:
            y = feedforward_step(block, y, groups)
        x = y + x
    if ring:
        cache.end()
    return layer_norm(decoder.final_norm, x)
