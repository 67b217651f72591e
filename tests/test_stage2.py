"""Stage 2 (dyadic GPT): training, exact resume, causality, streaming == offline, listener mode, determinism,
bounded long generation, speaker-only ablation, sample.py on raw WAVs, 2-process CPU training."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from common.data.cache import Cache
from conftest import subprocess_env, tokenized_copy

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "stage2_gpt_tiny.yaml"
PY = sys.executable
# small enough for the 8 x 12 s test corpus: windows of 32 steps, attention over the last 12
TEST_OVERRIDES = ["window=32", "model.attn_window=12", "train.batch_size=8", "train.warmup_steps=10",
                  "train.progress=false", "train.val_every=0", "train.log_every=10"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Step-by-step generation is many small ops: one thread is fastest, and immune to a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tokenized(cache_dir, tmp_path_factory):
    """A tiny stage-1 tokenizer (briefly trained) and a private copy of the test cache tokenized with it."""
    return tokenized_copy(cache_dir, tmp_path_factory.mktemp("stage2_tok"), steps=40)


def _cfg(tokenized, out_dir, *overrides):
    from stage2_gpt.config import load_stage2_config
    return load_stage2_config(TINY, [f"cache={tokenized['cache']}", f"tokenizer={tokenized['tokenizer']}",
                                     f"out_dir={out_dir}", *TEST_OVERRIDES, *overrides])


@pytest.fixture(scope="module")
def gpt_run(tokenized, tmp_path_factory):
    from stage2_gpt.train import train
    out = tmp_path_factory.mktemp("stage2_run")
    # the identity input and the jaw decoded from the codes (the tiny config's jaw head, no identity: jaw_run below)
    res = train(_cfg(tokenized, out, "train.max_steps=120", "train.val_every=120", "train.save_every=120",
                     "model.use_identity=true", "model.jaw_head=false"))
    return {"out": out, "result": res, "gpt": Path(res["artifact"])}


@pytest.fixture(scope="module")
def gen(gpt_run, tokenized):
    from stage2_gpt.generate import Generator
    return Generator.load(gpt_run["gpt"], tokenized["tokenizer"])


@pytest.fixture(scope="module")
def dialog(tokenized):
    c = Cache(tokenized["cache"])
    d = c.dialogs("test")[0]
    a = c.load(d["id"])
    return {"id": d["id"], "participants": d["participants"], "audio": np.array(a.audio),
            "motion": np.array(a.motion), "states": np.array(a.states), "shape": np.array(a.shape)}


# --- training ----------------------------------------------------------------------------------------------
def test_training_loss_decreases_and_export(gpt_run, tokenized):
    from stage2_gpt.artifact import load_gpt
    res = gpt_run["result"]
    losses = [l for _, l in res["history"]]
    assert len(losses) == 120 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), (losses[:10], losses[-10:])
    v = res["val"]
    Q = 4
    assert {f"acc_q{i}" for i in range(Q)} <= set(v) and {f"loss_q{i}" for i in range(Q)} <= set(v)
    assert v["acc_q0"] > 1.0 / 128 * 5                        # far above chance on the coarse level
    metrics = [json.loads(l) for l in (gpt_run["out"] / "metrics.jsonl").read_text().splitlines()]
    assert any("val/acc_q0" in m for m in metrics) and any("train/loss" in m for m in metrics)
    b = load_gpt(gpt_run["gpt"])                              # self-describing: nothing else needed
    assert b.tokenizer["downsample"] == 2 and b.tokenizer["num_quantizers"] == Q
    assert b.audio["features"]["kind"] == "logmel" and b.audio["audio_mean"].shape == (80,)
    assert b.config["model"]["attn_window"] == 12 and b.model.cfg.audio_dim == 80


def _final_state(out: Path) -> dict:
    from stage2_gpt.artifact import load_gpt
    return load_gpt(out / "gpt.pt").model.state_dict()


def test_resume_is_exact(tokenized, tmp_path):
    from stage2_gpt.train import train
    n, common = 16, ["train.max_steps=16", "train.save_every=7", "model.token_noise=0.1"]   # noise: RNG in forward
    straight = train(_cfg(tokenized, tmp_path / "a", *common))
    first = train(_cfg(tokenized, tmp_path / "b", *common, "stop_after=7"))
    assert first["step"] == 7 and first["artifact"] is None
    second = train(_cfg(tokenized, tmp_path / "b", *common))
    assert [s for s, _ in second["history"]] == list(range(8, n + 1))
    full = dict(straight["history"])
    assert [l for _, l in first["history"]] == [full[s] for s in range(1, 8)]
    assert [l for _, l in second["history"]] == [full[s] for s in range(8, n + 1)]
    a, b = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_token_windows(tokenized):
    from common.data.datasets import TokenWindows
    ds = TokenWindows(tokenized["cache"], _tokens_name(tokenized), 2, "train", 32, 16)
    a = ds[0]
    assert a["codes"].shape == (2, 32, 4) and a["audio"].shape == (2, 64, 80) and a["states"].shape == (2, 64)
    assert (a["prev"] == -1).all() and a["start"] == 0
    c = ds[1]                                                           # the next window: prev = the code before it
    codes = np.load(tokenized["cache"] / "tokens" / _tokens_name(tokenized) / f"{ds.entries[c['dialog']]['id']}.npy")
    np.testing.assert_array_equal(c["prev"], codes[:, c["start"] - 1])
    np.testing.assert_array_equal(c["codes"], codes[:, c["start"]:c["start"] + 32])
    assert a["audio_prev"].shape == (2, 0, 80)
    ctx = TokenWindows(tokenized["cache"], _tokens_name(tokenized), 2, "train", 32, 16, audio_before=5)
    assert (ctx[0]["audio_prev"] == 0).all() and ctx[0]["audio_prev"].shape == (2, 5, 80)   # the dialog starts
    later = ctx[1]                                   # the 5 normalised frames before its first frame
    whole = ctx.cache.normalize_audio(np.asarray(ctx.arrays(later["dialog"]).audio, np.float32))
    f0 = later["start"] * 2
    np.testing.assert_allclose(later["audio_prev"], whole[:, f0 - 5:f0], rtol=1e-6)
    np.testing.assert_array_equal(later["audio"], c["audio"])


def _tokens_name(tokenized) -> str:
    return next(p.name for p in (tokenized["cache"] / "tokens").iterdir() if p.is_dir())


# --- model ------------------------------------------------------------------------------------------------
def _tiny_model(**kw):
    from stage2_gpt.model import DyadGPT, GPTConfig
    torch.manual_seed(0)
    cfg = GPTConfig(**{**dict(num_quantizers=3, codebook_size=16, downsample=2, audio_dim=8, dim=32, depth=2, heads=2,
                              dim_head=16, attn_window=5, audio_hidden=8, head_hidden=16, dropout=0.0), **kw})
    m = DyadGPT(cfg).eval()
    if m.partner_gate is not None:                  # zero at init (training starts speaker-only); a trained
        assert not m.partner_gate.weight.any()      # gate is not, and the tests exercise the partner path
        torch.nn.init.normal_(m.partner_gate.weight, std=0.1)
    return m


def _batch(K=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 16, (2, 2, K, 3), generator=g), torch.randn(2, 2, K * 2, 8, generator=g),
            torch.randint(0, 4, (2, 2, K * 2), generator=g))


@pytest.mark.parametrize("head,context", [("depth", 1), ("parallel", 1), ("depth", 5)])
def test_causality_teacher_forced(head, context):
    m = _tiny_model(rvq_head=head, audio_context=context)
    codes, audio, states = _batch()
    out, _ = m(codes, audio, states)
    k = 6                                                      # change everything after token step k
    audio2, codes2 = audio.clone(), codes.clone()
    audio2[:, :, (k + 1) * 2:] += 3 * torch.randn_like(audio2[:, :, (k + 1) * 2:])
    codes2[:, :, k + 1:] = torch.randint(0, 16, codes2[:, :, k + 1:].shape)
    out2, _ = m(codes2, audio2, states)
    assert torch.allclose(out["logits"][:, :, :k + 1], out2["logits"][:, :, :k + 1], atol=1e-6)
    assert not torch.allclose(out["logits"][:, :, k + 1:], out2["logits"][:, :, k + 1:], atol=1e-3)


@pytest.mark.parametrize("head,speaker_only,identity,context", [("depth", False, False, 1), ("parallel", False, True, 1),
                                                               ("depth", True, True, 1), ("depth", False, True, 4)])
def test_windowed_cache_equals_band_masked_forward(head, speaker_only, identity, context):
    """Step-by-step with the KV cache trimmed to the window == one forward with the window's band mask,
    well past the window (rotary positions survive trimming); with ``audio_context`` each step reads the frames
    before it too (the window's first step: the ``audio_prev`` frames given to the forward)."""
    m = _tiny_model(rvq_head=head, speaker_only=speaker_only, use_identity=identity, identity_dim=5,
                    audio_context=context)
    codes, audio, _ = _batch(K=17)
    before = torch.randn(2, 2, context - 1, 8)
    ident = torch.randn(2, 2, 5) if identity else None
    out, _ = m(codes, audio, identity=ident, audio_prev=before)
    cs, au = m.perspectives(codes), m.perspectives(torch.cat([before, audio], 2))   # (2B, P, ...): self, partner
    id_s = None if ident is None else ident.flatten(0, 1)
    prev, cache, hs = torch.full((cs.shape[0], cs.shape[1], 3), -1), m.new_cache(), []
    for k in range(codes.shape[2]):
        h = m.step_hidden(prev, au[:, :, 2 * k:2 * k + context + 1], cache, id_s)
        assert cache.length <= m.cfg.attn_window - 1
        assert all(t.shape[-2] <= m.cfg.attn_window - 1 for t in cache.keys + cache.values)
        hs.append(h)
        prev = cs[:, :, k]
    target = codes.flatten(0, 1)                                       # (2B, K, Q): self's codes
    lg = m.head(torch.stack(hs, 1), target).reshape(out["logits"].shape)
    assert torch.allclose(lg, out["logits"], atol=1e-5)
    if identity:                                                        # the identity is an input
        other, _ = m(codes, audio, identity=ident + 1, audio_prev=before)
        assert not torch.allclose(other["logits"], out["logits"], atol=1e-4)
    if context > 1:                                                     # the frames before the window are read
        other, _ = m(codes, audio, identity=ident, audio_prev=before + 1)
        assert not torch.allclose(other["logits"][:, :, 0], out["logits"][:, :, 0], atol=1e-4)


def test_speaker_only_ignores_partner():
    m = _tiny_model(speaker_only=True)
    codes, audio, _ = _batch()
    out, _ = m(codes, audio)
    audio2, codes2 = audio.clone(), codes.clone()
    audio2[:, 1] = torch.randn_like(audio2[:, 1])
    codes2[:, 1] = torch.randint(0, 16, codes2[:, 1].shape)
    out2, _ = m(codes2, audio2)
    assert torch.equal(out["logits"][:, 0], out2["logits"][:, 0])          # participant 0 sees only itself
    m2 = _tiny_model()                                                      # the dyadic model does see the partner
    a, _ = m2(codes, audio)
    b, _ = m2(codes2, audio2)
    assert not torch.allclose(a["logits"][:, 0], b["logits"][:, 0], atol=1e-4)


@pytest.mark.parametrize("own,partner", [(0.5, None), (0.5, 0.0), (0.0, 0.5)])
def test_token_noise_per_perspective(own, partner, monkeypatch):
    """Training replaces input codes at random: one's own at ``token_noise``, the partner's at
    ``partner_token_noise`` (None: the same rate); evaluation never."""
    m = _tiny_model(codebook_size=256, token_noise=own, partner_token_noise=partner)
    codes, audio, _ = _batch(K=64)
    codes = codes * 16 + 7                           # a wider codebook: a random code rarely equals the true one
    seen = []
    embed = m.embed
    monkeypatch.setattr(m, "embed", lambda prev_codes, *a, **kw: seen.append(prev_codes) or embed(prev_codes, *a, **kw))
    m(codes, audio)
    m.train()
    torch.manual_seed(1)
    m(codes, audio)
    m.eval()
    m(codes, audio)
    clean, noisy, again = seen
    assert torch.equal(again, clean)                                      # evaluation: the codes as they are
    changed = (noisy != clean).float().mean(dim=(0, 1, 3))                # per perspective: self, partner
    rates = torch.tensor([own, own if partner is None else partner])
    assert torch.allclose(changed, rates, atol=0.05), (changed, rates)
    assert ((clean < 0) == (noisy < 0)).all()                             # BOS stays BOS
    if partner is None:                      # one rate for both: the draws of the single-rate noise, bit for bit
        torch.manual_seed(1)
        u, rand = torch.rand(clean.shape), torch.randint_like(clean, 256)
        assert torch.equal(noisy, torch.where((u < own) & (clean >= 0), rand, clean))


def _xtransformers_step(m, prev, audio, cache, identity):
    """The reference: one cached position through x-transformers' own forward, its cache trimmed to the window."""
    from x_transformers.autoregressive_wrapper import modify_cached_kv
    x = m.embed(prev.unsqueeze(1), audio.unsqueeze(1), identity)
    h, cache = m.decoder(x, cache=cache, return_hiddens=True)
    keep = m.cfg.attn_window - 1
    if cache.cache_length > keep:
        modify_cached_kv(cache, lambda t: t[..., t.shape[-2] - keep:, :])
        cache.cache_length, cache.hiddens, cache.layer_hiddens = keep, None, None
    return h[:, -1], cache


@pytest.mark.parametrize("dims", [dict(), dict(dim=64, heads=2, dim_head=64, attn_window=7)])   # rotary 16 / 32 of dh
def test_decode_step_is_bit_identical_to_x_transformers(dims):
    """stage2_gpt/decode_step.py (the generation step without x-transformers' per-layer Python) gives exactly the
    library's cached forward, far past the window, for full and partial rotary dims."""
    m = _tiny_model(use_identity=True, identity_dim=5, **dims)
    g = torch.Generator().manual_seed(1)
    ref, cache = None, m.new_cache()
    for k in range(3 * m.cfg.attn_window):
        prev, audio = torch.randint(-1, 16, (4, 2, 3), generator=g), torch.randn(4, 2, m.audio_frames, 8, generator=g)
        ident = torch.randn(4, 5, generator=g)
        h_ref, ref = _xtransformers_step(m, prev, audio, ref, ident)
        assert torch.equal(m.step_hidden(prev, audio, cache, ident), h_ref), k
    assert cache.length == m.cfg.attn_window - 1


def test_row_groups_compute_each_dialog_as_alone():
    """Several dialogs in one batch (groups): each dialog's hidden states equal its own batch's, bit for bit
    (a BLAS product alone would round rows differently with the batch size)."""
    m = _tiny_model()
    g = torch.Generator().manual_seed(2)
    D = 5
    caches, batch = [m.new_cache() for _ in range(D)], m.new_cache()
    for k in range(12):
        prev, audio = torch.randint(-1, 16, (2 * D, 2, 3), generator=g), torch.randn(2 * D, 2, m.audio_frames, 8, generator=g)
        h = m.step_hidden(prev, audio, batch, groups=D)
        alone = torch.cat([m.step_hidden(prev[2 * i:2 * i + 2], audio[2 * i:2 * i + 2], caches[i]) for i in range(D)])
        assert torch.equal(h, alone), k
        z, za = m.head.base(h, D), torch.cat([m.head.base(h[2 * i:2 * i + 2]) for i in range(D)])
        assert torch.equal(m.head.level_logits(z, 1, D), torch.cat([m.head.level_logits(za[2 * i:2 * i + 2], 1)
                                                                    for i in range(D)]))


@pytest.mark.parametrize("dims", [dict(), dict(dim=64, heads=2, dim_head=64, attn_window=7)])
@pytest.mark.parametrize("transposed", [False, True])
def test_ring_cache_attends_as_the_trimmed_cache(dims, transposed, monkeypatch):
    """The fixed-shape cache a CUDA graph captures (decode_step.RingKVCache: slots written over, keys rotated
    at their absolute position) gives the trimmed KVCache's hidden states to float rounding, far past the window,
    also when it takes over a plain cache mid-dialog, and 10 million steps into a session (float64 angles); with
    its keys laid out either way (many rows: (B, H, dh, W))."""
    from stage2_gpt import decode_step
    from stage2_gpt.decode_step import RingKVCache
    monkeypatch.setattr(decode_step, "TRANSPOSED_KEYS_ROWS", 3 if transposed else 512)
    m = _tiny_model(use_identity=True, identity_dim=5, **dims)
    W = m.cfg.attn_window
    g = torch.Generator().manual_seed(3)
    plain, ring, worst = m.new_cache(), None, 0.0
    late = m.new_ring_cache(4)                              # as if hours into a session: same attention
    late.position.fill_(10 ** 7)
    for k in range(3 * W + 2):
        if k == 2:                                                      # take over what the plain cache holds
            ring = m.new_ring_cache(4, plain)
            assert isinstance(ring, RingKVCache) and ring.length == 2
        prev, audio = torch.randint(-1, 16, (4, 2, 3), generator=g), torch.randn(4, 2, m.audio_frames, 8, generator=g)
        ident = torch.randn(4, 5, generator=g)
        h = m.step_hidden(prev, audio, plain, ident)
        worst = max(worst, float((m.step_hidden(prev, audio, late, ident) - h).abs().max()))
        if ring is not None:
            hr = m.step_hidden(prev, audio, ring, ident)
            worst = max(worst, float((hr - h).abs().max()))
            assert ring.length == min(k + 1, W) and int(ring.slot) == (k + 1) % W and float(ring.position) == k + 1
    assert worst < 1e-5, worst
    assert all(t.shape == (4, 2, W, m.cfg.dim_head) for t in ring.keys + ring.values)
    assert all(k.transpose(-1, -2).is_contiguous() == transposed for k in ring.keys + late.keys)
    assert all(v.is_contiguous() for v in ring.values + late.values)       # values (W, dh) either way
    ring.select(torch.tensor([3, 1]))                       # rows leave: the layout of 2 rows, (W, dh)
    assert ring.batch == 2 and all(k.is_contiguous() for k in ring.keys)


@pytest.mark.parametrize("head", ["depth", "parallel"])
def test_cuda_graph_step_every_head_and_sampling(head):
    """The fixed-shape step (uncaptured on a CPU) gives the plain step's codes, step by step, for both RVQ heads,
    per-level temperatures (greedy levels included), top-k + top-p, dyad and listener mode, 2 dialogs x 2 samples,
    audio context, classifier-free guidance, a Sampling changed mid-dialog and a dialog leaving the batch (exact here; on a GPU a near tie
    could go the other way: float rounding)."""
    from stage2_gpt.generate import Generator, Sampling
    m = _tiny_model(rvq_head=head, audio_context=3, audio_dropout=0.1)
    torch.nn.init.normal_(m.null_audio, std=0.5)     # as trained: the rows without audio differ from those with

    def generator(graph):                            # the step needs the model only: no bundle, no tokenizer
        g = Generator.__new__(Generator)
        g.model, g.cfg, g.device, g.d, g.Q = m, m.cfg, torch.device("cpu"), m.cfg.downsample, m.cfg.num_quantizers
        g.row_groups, g.cuda_graph = True, graph
        return g

    samplings = [Sampling(seed=1), Sampling(seed=1, fine_temperature=0.5), Sampling(seed=1, temperature=0.0, fine_temperature=1.0),
                 Sampling(seed=1, temperature=0.0), Sampling(seed=1, top_k=5, top_p=0.8), Sampling(seed=1, guidance=2.0),
                 Sampling(seed=1, guidance=0.5, fine_temperature=0.5), Sampling(seed=1, guidance=2.0, fine_guidance=1.0),
                 Sampling(seed=1, fine_guidance=3.0)]
    for s in samplings:
        for given in (None, 0):
            runs = []
            for graph in (False, True):
                gen, rg, codes = generator(graph), torch.Generator().manual_seed(9), []
                st = gen.new_batch_state([3, 4], 2, given=given)
                for k in range(23):
                    a = torch.randn(2, 2, 2, 8, generator=rg)
                    gv = torch.randint(0, 16, (2, 2, 3), generator=rg) if given is not None else None
                    if k == 17:
                        st.keep(1)
                    if k >= 17:
                        a, gv = a[:1], None if gv is None else gv[:1]
                    later = Sampling(seed=1, temperature=0.7, guidance=s.guidance, fine_guidance=s.fine_guidance)
                    codes.append(gen.step(st, a, gv, s if k < 12 else later)[0])
                runs.append(codes)
                assert st.steps == 23 and (st.graph is not None) == graph
            for k, (x, y) in enumerate(zip(*runs)):
                assert torch.equal(x, y), (s, given, k)


def test_cuda_graph_step_generates_the_plain_codes(gen, dialog):
    """``Generator(cuda_graph=True)``: the fixed-shape step a CUDA graph captures (stage2_gpt/graphed_step.py; on a
    CPU it runs uncaptured) generates the plain step's codes from the same seed, far past the attention window:
    several samples, nucleus sampling, listener mode, a batch of dialogs of different lengths (rows leave the
    batch: the step is made again) and streaming; motion to float rounding. (Exact on this CPU; the ring sums the
    attention in another order, so after a torch or model change a near tie could differ: float rounding.)"""
    from stage2_gpt.decode_step import RingKVCache
    from stage2_gpt.generate import Generator, Sampling
    graphed = Generator(gen.bundle, gen.tok, cuda_graph=True)
    T = 101
    audio, motion = dialog["audio"][:, :T], dialog["motion"][:, :T]
    assert T // 2 > 3 * gen.cfg.attn_window
    for kw in (dict(num_samples=3, sampling=Sampling(seed=2)), dict(sampling=Sampling(seed=3, top_p=0.9, temperature=0.8)),
               dict(given=0, given_motion=motion[0], sampling=Sampling(seed=4))):
        a, b = gen.generate(audio, identity=dialog["shape"], **kw), graphed.generate(audio, identity=dialog["shape"], **kw)
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_allclose(a.motion, b.motion, atol=1e-5)
    many = [audio, audio[:, :40], audio[:, :71]]
    for a, b in zip(gen.generate_many(many, num_samples=2), graphed.generate_many(many, num_samples=2)):
        np.testing.assert_array_equal(a.codes, b.codes)
    off = gen.generate(audio, sampling=Sampling(seed=6, slow_s=None), num_samples=2)
    sess = graphed.stream(Sampling(seed=6, slow_s=None), num_samples=2)
    on = np.concatenate([sess.push(audio[:, i:i + 3]) for i in range(0, T, 3)] + [sess.flush()], 1)
    np.testing.assert_allclose(on, off.motion, atol=1e-5)
    assert isinstance(sess.state.cache, RingKVCache) and sess.state.cache.length == gen.cfg.attn_window
    assert sess.state.graph is not None and sess.state.steps == off.codes.shape[1]
    assert off.codes.shape[1] > gen.tok.decoder_context and torch.equal(sess.decode.codes, sess.codes_hist)   # the
    # window filled: the newest token decoded through graphed_step.GraphedDecode (its buffers; uncaptured here)
    import gc
    import weakref
    gc.disable()                                     # no reference cycle: a state, its captured step, a session
    try:                                             # and its captured decode go (with a GPU's graph memory)
        st = graphed.new_state(0, 2)                 # as soon as their last reference does
        graphed.step(st, graphed.normalize_audio(audio[:, :gen.d]), None, Sampling())
        refs = [weakref.ref(st), weakref.ref(st.graph), weakref.ref(sess), weakref.ref(sess.decode)]
        del st, sess
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


# --- generation -----------------------------------------------------------------------------------------------
def test_generation_causal(gen, dialog):
    from stage2_gpt.generate import Sampling
    T, cut = 120, 61
    audio = dialog["audio"][:, :T].copy()
    a = gen.generate(audio, sampling=Sampling(seed=5))
    audio[:, cut:] = audio[:, cut:][:, ::-1] * 1.5 + 1.0                # change the future audio
    b = gen.generate(audio, sampling=Sampling(seed=5))
    k = cut // 2                                                        # token steps entirely before the cut
    np.testing.assert_array_equal(a.codes[:, :k], b.codes[:, :k])
    np.testing.assert_array_equal(a.motion[:, :k * 2], b.motion[:, :k * 2])
    assert not np.array_equal(a.codes[:, k + 2:], b.codes[:, k + 2:])


@pytest.mark.parametrize("given,identity,samples", [(None, True, 1), (1, False, 1), (1, False, 3)])
def test_streaming_equals_offline(gen, dialog, given, identity, samples):
    from stage2_gpt.generate import Sampling
    T = 151                                                             # odd: a partial last token step
    audio, motion = dialog["audio"][:, :T], dialog["motion"][:, :T]
    ident = dialog["shape"] if identity else None
    s = Sampling(temperature=0.9, top_p=0.95, seed=11)
    off = gen.generate(audio, given=given, given_motion=None if given is None else motion[given], sampling=s,
                       identity=ident, num_samples=samples)
    if samples > 1:                                                     # the mean of distinct samples
        assert off.samples.shape == (samples, 2, T, 51)
        assert np.abs(off.samples[0, 0] - off.samples[1, 0]).max() > 1e-3
    sess = gen.stream(s, given=given, identity=ident, num_samples=samples)
    rng, i, outs = np.random.default_rng(0), 0, []
    while i < T:
        n = int(rng.integers(1, 6))
        outs.append(sess.push(audio[:, i:i + n], None if given is None else motion[given, i:i + n]))
        assert outs[-1].shape[1] % 2 == 0
        i += n
    outs.append(sess.flush())
    on = np.concatenate(outs, 1)
    assert on.shape == off.motion.shape == (2, T, 51)
    np.testing.assert_allclose(on, off.motion, atol=1e-5)
    assert sess.state.steps == off.codes.shape[1]


def test_stream_warms_the_tokenizer_windows_once(gen, monkeypatch):
    """A new session runs the tokenizer once on every window length it will meet (decode: 1 .. decoder_context
    codes; listener mode also encode: d .. encoder_context frames), once per process and row count, so its first
    seconds are not slower than the rest (docs/BENCHMARKS.md); ``warm=False`` skips it."""
    from stage2_gpt.generate import Sampling
    tok, d = gen.tok, gen.d
    decoded, encoded = [], []
    dec, enc = tok.decode_normalized, tok.encode
    monkeypatch.setattr(tok, "decode_normalized", lambda codes: decoded.append(tuple(codes.shape)) or dec(codes))
    monkeypatch.setattr(tok, "encode", lambda x, ref=None: encoded.append(x.shape[1]) or enc(x, ref))
    monkeypatch.setattr(tok, "_warm_windows", set(), raising=False)
    gen.stream(Sampling(seed=0), num_samples=3)
    assert decoded == [(6, n, gen.Q) for n in range(1, tok.decoder_context + 1)] and encoded == []
    decoded.clear()
    gen.stream(Sampling(seed=1), num_samples=3)                         # this row count is warm already
    gen.stream(Sampling(seed=1), warm=False)
    assert decoded == []
    gen.stream(Sampling(seed=1), given=1)
    assert len(decoded) == tok.decoder_context and decoded[0] == (2, 1, gen.Q)
    ctx = int(tok.encoder_context)
    assert ctx > 0 and encoded == list(range(d, ctx + 2 * d, d))


def test_stream_imports_at_creation_not_in_its_first_step(gpt_run, tokenized):
    """What a session's steps import lazily (scipy's filter, about a second on a small CPU) is imported when the
    session is made, so its first push is not a second late; checked in a fresh process."""
    code = ("import sys; from stage2_gpt.generate import Generator, Sampling; "
            f"gen = Generator.load({str(gpt_run['gpt'])!r}, {str(tokenized['tokenizer'])!r}); "
            "before = 'scipy.signal' in sys.modules; gen.stream(Sampling()); "
            "print(before, 'scipy.signal' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == ["False", "True"]


def test_listener_mode_reproduces_given_tokens(gen, dialog):
    from stage2_gpt.generate import Sampling
    T = 150
    motion = dialog["motion"][:, :T]
    res = gen.generate(dialog["audio"][:, :T], given=0, given_motion=motion[0], sampling=Sampling(seed=1))
    from stage2_gpt.generate import running_reference
    around = running_reference(motion[0])[None]                        # the given person's causal reference
    ref = gen.tok.encode(torch.from_numpy(motion[0][None]), around)[0].numpy()
    np.testing.assert_array_equal(res.codes[0], ref)
    np.testing.assert_allclose(res.motion[0], gen.tok.decode(torch.from_numpy(ref)[None], around)[0].numpy(), atol=1e-5)
    assert res.generated == [1]
    dyad = gen.generate(dialog["audio"][:, :T], sampling=Sampling(seed=1))
    assert not np.array_equal(dyad.codes[0], ref)                      # in dyad mode participant 0 is sampled


@pytest.fixture(scope="module")
def person_tokenizer(tokenized, tmp_path_factory) -> Path:
    """A tokenizer file that codes expression around each person's mean (model.reference=person; the test GPT's
    geometry, so the GPT runs with it: these tests check the reference bookkeeping, not quality)."""
    from stage1_vq import load_stage1_config
    from stage1_vq.train import train as train_stage1
    out = tmp_path_factory.mktemp("person_tok")
    cfg = load_stage1_config(ROOT / "configs" / "stage1_vq_tiny.yaml",
                             [f"cache={tokenized['cache']}", f"out_dir={out}", "model.reference=person",
                              "train.max_steps=20", "train.val_every=0", "train.save_every=20", "train.progress=false"])
    return Path(train_stage1(cfg)["artifact"])


@pytest.fixture(scope="module")
def person_gen(gpt_run, person_tokenizer):
    """The test GPT with the person-reference tokenizer."""
    from stage1_vq import load_tokenizer
    from stage2_gpt.artifact import load_gpt
    from stage2_gpt.generate import Generator
    return Generator(load_gpt(gpt_run["gpt"]), load_tokenizer(person_tokenizer))


@pytest.mark.parametrize("given,samples", [(None, 1), (1, 1), (None, 2)])
def test_person_reference_streaming_equals_offline(person_gen, dialog, given, samples):
    from stage2_gpt.generate import Generator, Sampling
    T = 121
    audio, motion = dialog["audio"][:, :T], dialog["motion"][:, :T]
    enrolled = [motion[0, :40].mean(0), None]                           # A enrolled, B unknown
    s = Sampling(seed=5)
    off = person_gen.generate(audio, given=given, given_motion=None if given is None else motion[given], sampling=s,
                              reference=enrolled, num_samples=samples)
    graphed = Generator(person_gen.bundle, person_gen.tok, cuda_graph=True)    # its step and its decode captured
    for g in (person_gen, graphed):                                     # (on this CPU: their fixed buffers)
        sess = g.stream(s, given=given, reference=enrolled, num_samples=samples)   # each sample anchored
        outs, i = [], 0
        for n in (0, 3, 1, 0, 4, 2, 7) * 40:                           # empty pushes too (nothing arrived yet)
            if i >= T:
                break
            outs.append(sess.push(audio[:, i:i + n], None if given is None else motion[given, i:i + n]))
            i += n
        outs.append(sess.flush())
        np.testing.assert_allclose(np.concatenate(outs, 1), off.motion, atol=1e-5)
    assert torch.equal(sess.decode.codes, sess.codes_hist) and sess.decode.reference is not None   # decoded
    # through graphed_step.GraphedDecode around the references


@pytest.mark.parametrize("mode", ["dyad", "listener"])
def test_enrollment_moves_sample_py_output_by_the_reference(person_gen, dialog, mode):
    """What the quality bench's enrollment protocol relies on (scripts/quality.py ``write_enrolled``): with
    sample.py's defaults of either mode (several samples mixed or averaged, the mean anchor, the output low-pass)
    an enrollment clip's mean as ``reference`` moves a generated participant's expression by exactly (reference -
    train mean) and changes nothing else: not the codes, not the jaw, not a given partner."""
    from stage2_gpt.generate import Sampling, mode_defaults
    T = 96
    audio, motion = dialog["audio"][:, :T], dialog["motion"][:, :T]
    s = Sampling(seed=4, **mode_defaults(mode))
    given = 1 if mode == "listener" else None
    kw = dict(given=given, given_motion=None if given is None else motion[given], sampling=s, num_samples=3)
    ref = [motion[0].mean(0) + 0.4, None if given is not None else motion[1].mean(0) - 0.2]
    a = person_gen.generate(audio, **kw)
    b = person_gen.generate(audio, reference=ref, **kw)
    np.testing.assert_array_equal(a.codes, b.codes)
    mean = person_gen.tok.motion_mean.numpy()
    for p in (0, 1):
        moved = b.motion[p, :, :50] - a.motion[p, :, :50]
        if ref[p] is None:
            np.testing.assert_array_equal(moved, 0)
        else:
            np.testing.assert_allclose(moved, np.broadcast_to(ref[p][:50] - mean[:50], moved.shape), atol=1e-5)
            assert np.abs(ref[p][:50] - mean[:50]).mean() > 0.1         # a visible move, not a no-op
    np.testing.assert_array_equal(b.motion[..., 50:], a.motion[..., 50:])


def test_sample_cli_enroll_dir(gpt_run, person_tokenizer, person_gen, tokenized, dialog, tmp_path):
    """scripts/sample.py on cached dialogs with --enroll-dir: a participant with a clip DIR/<id>.npz is decoded
    around the clip's mean (expression moved by exactly clip mean - train mean, jaw untouched), one without keeps
    the train mean (the move the quality bench's enrollment protocol applies to every method's files,
    tests/test_quality.py); a folder with no clip of them and the WAV-only flags with --cache are refused."""
    a, b = dialog["participants"]
    clips = tmp_path / "clips"
    clips.mkdir()
    T, m = 150, dialog["motion"]
    exp = np.zeros((T, 1, 100), np.float32)
    exp[:, 0, :50] = m[0, :T, :50] + 0.3                            # participant a in another clip, offset
    jaw = np.zeros((T, 1, 3), np.float32)
    jaw[:, 0, 0] = m[0, :T, 50]
    np.savez(clips / f"{a}.npz", expression_params=exp, jaw_params=jaw, pose_params=np.zeros((T, 1, 3), np.float32),
             shape_params=np.zeros((T, 1, 300), np.float32), cam=np.zeros((T, 1, 3), np.float32))
    cmd = [PY, str(ROOT / "scripts" / "sample.py"), "--gpt", str(gpt_run["gpt"]), "--tokenizer", str(person_tokenizer),
           "--cache", str(tokenized["cache"]), "--dialog", dialog["id"], "--samples", "2", "--quiet", "--no-plot"]
    for name, extra in (("plain", []), ("enrolled", ["--enroll-dir", str(clips)])):
        r = subprocess.run(cmd + extra + ["--out", str(tmp_path / name)], env=subprocess_env(), capture_output=True,
                           text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
    assert f"no clip of 1 participant(s), decoded around the train mean: {b}" in r.stderr     # warned even --quiet
    out = {n: {p: np.load(tmp_path / n / dialog["id"] / f"{p}.npz")["motion"] for p in (a, b)}
           for n in ("plain", "enrolled")}
    move = (m[0, :T, :50] + 0.3).mean(0) - person_gen.tok.motion_mean.numpy()[:50]
    assert np.abs(move).mean() > 0.1
    np.testing.assert_allclose(out["enrolled"][a][:, :50] - out["plain"][a][:, :50],
                               np.broadcast_to(move, out["plain"][a][:, :50].shape), atol=1e-5)
    np.testing.assert_array_equal(out["enrolled"][a][:, 50:], out["plain"][a][:, 50:])
    np.testing.assert_array_equal(out["enrolled"][b], out["plain"][b])
    # refused: no clip of these participants; the WAV-only flags with --cache
    (tmp_path / "empty").mkdir()
    r = subprocess.run(cmd + ["--enroll-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "x")],
                       env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 2 and "no clip of any participant" in r.stderr and f"{a}.npz" in r.stderr
    r = subprocess.run(cmd + ["--enroll-a", str(clips / f"{a}.npz"), "--out", str(tmp_path / "x")],
                       env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 2 and "are for WAV input" in r.stderr and "--enroll-dir" in r.stderr
    # a tokenizer that codes around the train mean cannot use a clip: refused, not silently ignored
    from stage1_vq import load_stage1_config
    from stage1_vq.train import train as train_stage1
    cfg = load_stage1_config(ROOT / "configs" / "stage1_vq_tiny.yaml",
                             [f"cache={tokenized['cache']}", f"out_dir={tmp_path / 'global_tok'}", "model.reference=global",
                              "train.max_steps=2", "train.val_every=0", "train.save_every=2", "train.progress=false"])
    global_tok = train_stage1(cfg)["artifact"]
    glob = [str(global_tok) if c == str(person_tokenizer) else c for c in cmd]
    r = subprocess.run(glob + ["--enroll-dir", str(clips), "--out", str(tmp_path / "x")], env=subprocess_env(),
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 2 and "model.reference=global" in r.stderr and "enrollment clip" in r.stderr, r.stderr[-2000:]


def test_person_reference_decodes_each_participant_around_its_own(person_gen, dialog):
    """Generated participants: the same codes whatever the reference, the motion moved by exactly the reference
    on the expression dims (jaw untouched), the train mean when unknown. A given participant: coded and decoded
    around the running mean of their observed frames."""
    from stage2_gpt.generate import Sampling, running_reference
    tok, T = person_gen.tok, 90
    audio, motion = dialog["audio"][:, :T], dialog["motion"][:, :T]
    ref = np.stack([motion[0].mean(0) + 0.5, motion[1].mean(0) - 0.3]).astype(np.float32)
    a = person_gen.generate(audio, sampling=Sampling(seed=2))
    b = person_gen.generate(audio, sampling=Sampling(seed=2), reference=ref)
    np.testing.assert_array_equal(a.codes, b.codes)
    shift = (ref - tok.motion_mean.numpy())[:, None, :]
    np.testing.assert_allclose(b.motion[..., :50] - a.motion[..., :50], np.broadcast_to(shift[..., :50], a.motion[..., :50].shape),
                               atol=1e-5)
    np.testing.assert_array_equal(b.motion[..., 50:], a.motion[..., 50:])
    res = person_gen.generate(audio, given=0, given_motion=motion[0], sampling=Sampling(seed=2))
    run = running_reference(motion[0])
    assert torch.allclose(run[-1], torch.from_numpy(motion[0].mean(0)), atol=1e-5)
    codes = tok.encode(torch.from_numpy(motion[0])[None], run[None])[0].numpy()
    np.testing.assert_array_equal(res.codes[0], codes)
    np.testing.assert_allclose(res.motion[0], tok.decode(torch.from_numpy(codes)[None], run[None])[0].numpy(),
                               atol=1e-5)
    assert not np.array_equal(codes, tok.encode(torch.from_numpy(motion[0])[None])[0].numpy())


def test_mean_anchor(person_gen, gen, dialog):
    """generate.MeanAnchor: a generated participant's expression becomes x_t - S_t / (t + 1 + prior) of the
    unanchored frames (S_t: the sum of their deviations from the reference), codes, jaw and a given participant
    untouched; frames pushed in chunks give the numbers of one call; a constant offset is mostly removed."""
    from stage2_gpt.generate import MeanAnchor, Sampling
    tok, T = person_gen.tok, 150
    audio, motion = dialog["audio"][:, :T], dialog["motion"][:, :T]
    free = person_gen.generate(audio, sampling=Sampling(seed=3, mean_anchor_s=None, smooth_s=None))
    held = person_gen.generate(audio, sampling=Sampling(seed=3, mean_anchor_s=2.0, smooth_s=None))
    np.testing.assert_array_equal(free.codes, held.codes)
    dev = free.motion[..., :50].astype(np.float64) - tok.motion_mean.numpy()[:50]
    t = np.arange(1, T + 1)[:, None]
    expect = free.motion[..., :50] - np.cumsum(dev, 1) / (t + 2.0 * tok.fps)
    np.testing.assert_allclose(held.motion[..., :50], expect, atol=1e-5)
    assert np.abs(held.motion[..., :50] - free.motion[..., :50]).max() > 1e-3
    np.testing.assert_array_equal(held.motion[..., 50:], free.motion[..., 50:])
    lf = person_gen.generate(audio, given=1, given_motion=motion[1], sampling=Sampling(seed=3, mean_anchor_s=None, smooth_s=None))
    lh = person_gen.generate(audio, given=1, given_motion=motion[1], sampling=Sampling(seed=3))
    np.testing.assert_array_equal(lh.motion[1], lf.motion[1])
    assert np.abs(lh.motion[0] - lf.motion[0]).max() > 1e-3
    if getattr(gen.tok, "reference", "global") == "global":             # nothing coded around a person: no anchor
        assert gen.mean_anchor(gen.reference_rows(None), None, Sampling()) is None
    mask = np.zeros(51, bool)
    mask[:50] = True
    x = (np.random.default_rng(0).standard_normal((1, 2, 3000, 51)) * 0.1 + 0.4).astype(np.float32)
    whole = MeanAnchor(np.zeros((2, 51)), mask, [0, 1], 150.0)(x)
    a = MeanAnchor(np.zeros((2, 51)), mask, [0, 1], 150.0)
    parts = [a(x[:, :, i:j]) for i, j in ((0, 1), (1, 7), (7, 1000), (1000, 3000))]
    np.testing.assert_allclose(np.concatenate(parts, 2), whole, atol=1e-6)
    # the offset 0.4: what is left at frame t is 0.4 * (1 + prior) / (t + 1 + prior) (15 % on average, 6 % at the end)
    assert abs(whole[..., :50].mean()) < 0.2 * 0.4
    assert abs(whole[..., 2000:, :50].mean()) < 0.08 * 0.4
    np.testing.assert_array_equal(whole[..., 50], x[..., 50])
    np.testing.assert_array_equal(MeanAnchor(np.zeros((2, 51)), mask, [1], 150.0)(x)[:, 0], x[:, 0])
    with pytest.raises(ValueError, match="prior"):
        MeanAnchor(np.zeros((2, 51)), mask, [0], -1.0)


def test_fine_temperature(gen, dialog):
    """Sampling.fine_temperature sets the temperature of the RVQ levels after the first: greedy fine levels give
    the codes of a fully greedy run on those levels' given the same coarse level; None changes nothing."""
    from stage2_gpt.generate import Sampling
    audio = dialog["audio"][:, :60]
    base = gen.generate(audio, sampling=Sampling(seed=4))
    same = gen.generate(audio, sampling=Sampling(seed=4, fine_temperature=1.0))
    np.testing.assert_array_equal(base.codes, same.codes)
    greedy = gen.generate(audio, sampling=Sampling(temperature=0, seed=4))
    fine0 = gen.generate(audio, sampling=Sampling(temperature=0, fine_temperature=0.0, seed=4))
    np.testing.assert_array_equal(greedy.codes, fine0.codes)
    hot = gen.generate(audio, sampling=Sampling(temperature=0, fine_temperature=1.0, seed=4))
    np.testing.assert_array_equal(hot.codes[0, :1, 0], greedy.codes[0, :1, 0])   # first step: same coarse argmax
    assert not np.array_equal(hot.codes[..., 1:], greedy.codes[..., 1:])


@pytest.fixture(scope="module")
def jaw_run(tokenized, tmp_path_factory):
    from stage2_gpt.generate import Generator
    from stage2_gpt.train import train
    out = tmp_path_factory.mktemp("stage2_jaw")
    res = train(_cfg(tokenized, out, "model.jaw_head=true", "train.max_steps=60", "train.val_every=60",
                     "train.save_every=60"))
    return res, Generator.load(res["artifact"], tokenized["tokenizer"])


def test_jaw_head(jaw_run, dialog):
    """model.jaw_head: trained with an MSE on the normalised jaw (validated); generation outputs the head's jaw for
    generated participants (exactly the teacher-forced forward's over the generated codes), a given participant keeps
    its reconstruction, streaming == offline."""
    from stage2_gpt.generate import Sampling
    res, gen = jaw_run
    assert 0 < res["val"]["jaw_mse"] < 2.0
    T = 61
    audio, motion = dialog["audio"][:, :T], dialog["motion"][:, :T]
    s = Sampling(seed=1)
    off = gen.generate(audio, sampling=s, identity=dialog["shape"])
    m, K = gen.model, off.codes.shape[1]
    a = gen.normalize_audio(np.concatenate([audio, audio[:, -1:]], 1))[None]          # the last step padded
    ident = torch.as_tensor(dialog["shape"], dtype=torch.float32)[None, :, :m.cfg.identity_dim]
    with torch.no_grad():
        o, _ = m(torch.from_numpy(off.codes)[None], a, identity=ident)
    jaw = (o["jaw"][0] * m.jaw_std + m.jaw_mean).numpy()[:, :T]
    np.testing.assert_allclose(off.motion[..., 50:51], jaw, atol=1e-4)
    decoded = gen.tok.decode(torch.from_numpy(off.codes))[:, :T, 50:51].numpy()
    assert np.abs(decoded - off.motion[..., 50:51]).max() > 1e-3                     # not the decoded jaw
    lis = gen.generate(audio, given=1, given_motion=motion[1], sampling=s)
    np.testing.assert_allclose(lis.motion[1, :, 50], gen.tok.decode(torch.from_numpy(lis.codes[1])[None])[0, :T, 50].numpy(),
                               atol=1e-5)
    sess = gen.stream(s, identity=dialog["shape"])
    outs = [sess.push(audio[:, i:i + 5]) for i in range(0, T, 5)] + [sess.flush()]
    np.testing.assert_allclose(np.concatenate(outs, 1), off.motion, atol=1e-5)
    assert K == (T + 1) // 2
    two = gen.generate(audio, sampling=Sampling(seed=1, slow_s=None), identity=dialog["shape"], num_samples=2)
    np.testing.assert_allclose(two.motion[..., 50], two.samples[..., 50].mean(0), atol=1e-6)   # 2 samples' jaws
    sess = gen.stream(Sampling(seed=1, slow_s=None), identity=dialog["shape"], num_samples=2)
    outs = [sess.push(audio[:, i:i + 5]) for i in range(0, T, 5)] + [sess.flush()]
    np.testing.assert_allclose(np.concatenate(outs, 1), two.motion, atol=1e-5)


@pytest.fixture(scope="module")
def guided_run(tokenized, tmp_path_factory):
    from stage2_gpt.generate import Generator
    from stage2_gpt.train import train
    out = tmp_path_factory.mktemp("stage2_guided")
    res = train(_cfg(tokenized, out, "model.audio_dropout=0.3", "model.use_identity=true", "train.max_steps=60",
                     "train.val_every=60", "train.save_every=60"))
    g = Generator.load(res["artifact"], tokenized["tokenizer"])
    g.path = Path(res["artifact"])
    return g


def test_guidance_on_audio(guided_run, gen, dialog):
    """model.audio_dropout trains a learned "no audio" input; Sampling.guidance mixes each step's logits with and
    without audio (uncond + g * (cond - uncond)): at g = 0 the codes are the unconditional model's and do not depend
    on the audio at all, at g = 1 (off) they do; g = 2 samples differently again. Each level's draw is exactly the
    guided logits' argmax at temperature 0 (checked against the teacher-forced forward, both passes).
    Streaming == offline and a batch of dialogs == each alone with guidance on; a GPT trained without audio
    dropout refuses guidance with an error saying why, and guidance cannot change during a dialog."""
    from stage2_gpt.generate import Sampling
    g = guided_run
    assert g.model.null_audio is not None and g.model.null_audio.abs().sum() > 0      # trained away from zero
    T = 61
    audio, motion = dialog["audio"][:, :T], dialog["motion"][:, :T]
    other = audio[:, ::-1] * 1.3 + 0.5
    run = lambda a, gd, **kw: g.generate(a, sampling=Sampling(seed=3, guidance=gd), identity=dialog["shape"], **kw)  # noqa: E731
    np.testing.assert_array_equal(run(audio, 0.0).codes, run(other, 0.0).codes)      # unconditional: audio unused
    assert not np.array_equal(run(audio, 1.0).codes, run(other, 1.0).codes)
    assert not np.array_equal(run(audio, 2.0).codes, run(audio, 1.0).codes)
    # greedy guided codes == argmax of uncond + g * (cond - uncond) from the teacher-forced passes over those codes
    # (fine_guidance 1: the levels after the first from the conditional logits alone)
    m = g.model
    a = g.normalize_audio(np.concatenate([audio, audio[:, -1:]], 1))[None]              # the last step padded
    ident = torch.as_tensor(dialog["shape"], dtype=torch.float32)[None, :, :m.cfg.identity_dim]
    for fine in (None, 1.0):
        greedy = g.generate(audio, sampling=Sampling(temperature=0.0, guidance=2.5, fine_guidance=fine),
                            identity=dialog["shape"])
        codes, K = torch.from_numpy(greedy.codes)[None], greedy.codes.shape[1]             # (1, 2, K, Q)
        with torch.no_grad():
            c = m.perspectives(codes).permute(0, 2, 1, 3)
            prev = torch.cat([c.new_full((2, 1, 2, c.shape[-1]), -1), c[:, :-1]], 1)
            C = m.cfg.audio_context - 1
            full = torch.cat([a.new_zeros(1, 2, C, a.shape[-1]), a], 2).unfold(2, C + m.cfg.downsample, m.cfg.downsample)
            au = m.perspectives(full.transpose(-1, -2)).permute(0, 2, 1, 3, 4)
            logits = []
            for off in (False, True):
                x = m.embed(prev, au, ident.flatten(0, 1), no_audio=torch.full((2,), off))
                logits.append(m.head(m.decoder(x, attn_mask=m._window_mask(K, x.device)), codes.flatten(0, 1)))
        guided = logits[1] + 2.5 * (logits[0] - logits[1])                                # (2, K, Q, V)
        if fine is not None:
            guided[:, :, 1:] = logits[0][:, :, 1:]
        np.testing.assert_array_equal(guided.argmax(-1).numpy(), greedy.codes)
    # streaming == offline, batch == alone, listener mode with several samples
    s = Sampling(seed=5, guidance=1.5)
    off = g.generate(audio, given=1, given_motion=motion[1], sampling=s, num_samples=2)
    sess = g.stream(s, given=1, num_samples=2)
    outs = [sess.push(audio[:, i:i + 4], motion[1, i:i + 4]) for i in range(0, T, 4)] + [sess.flush()]
    np.testing.assert_allclose(np.concatenate(outs, 1), off.motion, atol=1e-5)
    many = [audio, audio[:, :31], other[:, :45]]
    for b, au_ in zip(g.generate_many(many, sampling=s, num_samples=2), many):
        np.testing.assert_array_equal(b.codes, g.generate(au_, sampling=s, num_samples=2).codes)
    with pytest.raises(ValueError, match="audio_dropout"):
        gen.generate(audio, sampling=Sampling(guidance=2.0))
    with pytest.raises(ValueError, match="audio_dropout"):                              # a session: at creation
        gen.stream(Sampling(fine_guidance=2.0), warm=False)
    st = g.new_state(0)
    g.step(st, g.normalize_audio(audio[:, :2]), None, s)
    with pytest.raises(ValueError, match="during a dialog"):
        g.step(st, g.normalize_audio(audio[:, 2:4]), None, Sampling())


def test_sample_cli_guidance(guided_run, tokenized, dialog, tmp_path):
    """scripts/sample.py --guidance G: exactly the library's guided generation (temperature 1), the output low-pass
    at GUIDED_SMOOTH_S unless --smooth-s says otherwise; without the flag no guidance, even with a GPT that has the
    "no audio" input, and dyad mode's defaults: DYAD_TEMPERATURE, the low-pass at DYAD_SMOOTH_S."""
    from stage2_gpt.generate import (DYAD_SMOOTH_S, DYAD_TEMPERATURE, GUIDED_SMOOTH_S, SMOOTH_S, Sampling,
                                     default_smooth_s, default_temperature)
    assert default_smooth_s(False, "listener") == SMOOTH_S != GUIDED_SMOOTH_S == default_smooth_s(True, "dyad")
    assert default_smooth_s(False, "dyad") == DYAD_SMOOTH_S not in (SMOOTH_S, GUIDED_SMOOTH_S)
    assert default_temperature("dyad", False) == DYAD_TEMPERATURE != 1.0
    assert default_temperature("listener", False) == default_temperature("dyad", True) == 1.0
    cmd = [PY, str(ROOT / "scripts" / "sample.py"), "--gpt", str(guided_run.path), "--tokenizer",
           str(tokenized["tokenizer"]), "--cache", str(tokenized["cache"]), "--dialog", dialog["id"],
           "--samples", "2", "--quiet", "--no-plot"]
    kw = dict(identity=dialog["shape"], num_samples=2)
    guided = guided_run.generate(dialog["audio"], sampling=Sampling(seed=0, guidance=2.0, smooth_s=GUIDED_SMOOTH_S), **kw)
    plain = guided_run.generate(dialog["audio"], sampling=Sampling(seed=0, temperature=DYAD_TEMPERATURE,
                                                                   smooth_s=DYAD_SMOOTH_S), **kw)
    at_one = guided_run.generate(dialog["audio"], sampling=Sampling(seed=0), **kw)
    assert np.abs(plain.motion - at_one.motion).max() > 1e-3           # the dyad defaults are not the library's
    for name, extra, want in (("guided", ["--guidance", "2"], guided), ("plain", [], plain)):
        r = subprocess.run(cmd + extra + ["--out", str(tmp_path / name)], env=subprocess_env(), capture_output=True,
                           text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        for p, who in enumerate(dialog["participants"]):
            np.testing.assert_allclose(np.load(tmp_path / name / dialog["id"] / f"{who}.npz")["motion"], want.motion[p],
                                       atol=1e-5)
    assert np.abs(guided.motion - plain.motion).max() > 1e-3


def test_determinism_and_sampling_controls(gen, dialog):
    from stage2_gpt.generate import Sampling, sample_logits
    audio = dialog["audio"][:, :90]
    a = gen.generate(audio, sampling=Sampling(seed=3))
    b = gen.generate(audio, sampling=Sampling(seed=3))
    c = gen.generate(audio, sampling=Sampling(seed=4))
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.motion, b.motion)
    assert not np.array_equal(a.codes, c.codes)
    assert gen.cfg.use_identity                                        # the tiny config conditions on identity
    i = gen.generate(audio, sampling=Sampling(seed=3), identity=dialog["shape"])
    assert not np.array_equal(a.codes, i.codes)                        # ... and it is used (None = unknown)
    g1 = gen.generate(audio, sampling=Sampling(temperature=0, seed=1))
    g2 = gen.generate(audio, sampling=Sampling(temperature=1.0, top_k=1, seed=2))
    np.testing.assert_array_equal(g1.codes, g2.codes)                  # top-k 1 == greedy, whatever the seed
    avg = gen.generate(audio, sampling=Sampling(seed=3, slow_s=None, smooth_s=None), num_samples=3)  # samples averaged
    assert avg.samples.shape == (3, 2, 90, 51)
    np.testing.assert_allclose(avg.motion, avg.samples.mean(0), atol=1e-6)
    assert not np.allclose(avg.samples[0], avg.samples[1])
    mix = gen.generate(audio, sampling=Sampling(seed=3, smooth_s=None, drift_s=None), num_samples=3)  # SampleMix
    np.testing.assert_array_equal(mix.samples, avg.samples)                         # the same draws, combined
    dev = (mix.samples[0] - mix.samples.mean(0)).astype(np.float64)
    a = np.exp(-1 / (Sampling().slow_s * gen.tok.fps))
    from scipy.signal import lfilter
    low = lfilter([1 - a], [1, -a], dev, axis=1)                                   # sample 0's deviation, low-passed
    np.testing.assert_allclose(mix.motion, avg.motion + low, atol=1e-5)
    b = np.exp(-1 / (Sampling().drift_s * gen.tok.fps))                            # the default: less its drift
    nodrift = gen.generate(audio, sampling=Sampling(seed=3, smooth_s=None), num_samples=3)
    np.testing.assert_allclose(nodrift.motion, avg.motion + low - lfilter([1 - b], [1, -b], low, axis=1), atol=1e-5)
    v = lambda m: np.abs(np.diff(m[..., :50], axis=1)).mean()
    assert v(mix.motion) < v(mix.samples[0])                            # calmer than one sample ...
    d = lambda m: np.abs(m - mix.samples[0]).mean()
    assert d(mix.motion) < d(avg.motion)                                # ... and nearer to it than the plain mean
    # the default: the mix, then the expression's causal one-pole low-pass (LowPass, SMOOTH_S); the jaw untouched
    from stage2_gpt.generate import SMOOTH_S
    out = gen.generate(audio, sampling=Sampling(seed=3), num_samples=3)
    c = 1 - np.exp(-1 / (SMOOTH_S * gen.tok.fps))
    y = nodrift.motion[..., :50].astype(np.float64).copy()
    for t in range(1, y.shape[1]):
        y[:, t] = y[:, t - 1] + c * (y[:, t] - y[:, t - 1])
    np.testing.assert_allclose(out.motion[..., :50], y, atol=1e-5)
    np.testing.assert_array_equal(out.motion[..., 50:], nodrift.motion[..., 50:])
    acc = lambda m: np.abs(np.diff(m[..., :50], 2, axis=1)).mean()
    assert acc(out.motion) < acc(nodrift.motion)                       # calmer: less acceleration
    logits = torch.tensor([[0.0, 1.0, 2.0, 5.0]])
    gen_ = torch.Generator().manual_seed(0)
    draws = {int(sample_logits(logits, Sampling(top_p=0.5), gen_)) for _ in range(50)}
    assert draws == {3}                                                # nucleus keeps only the dominant code
    draws = {int(sample_logits(logits, Sampling(top_k=2, temperature=5.0), gen_)) for _ in range(200)}
    assert draws == {2, 3}


def test_lowpass_mix_and_running_mean_are_chunk_invariant_empty_chunks_included():
    from stage2_gpt.generate import LowPass
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 61, 51)).astype(np.float32)
    whole = LowPass(0.015, 30.0, (0, 50))(x)
    lp = LowPass(0.015, 30.0, (0, 50))
    parts = np.concatenate([lp(x[:, :1]), lp(x[:, 1:1]), lp(x[:, 1:20]), lp(x[:, 20:])], 1)
    np.testing.assert_allclose(parts, whole, atol=1e-6)                  # chunks == one call (streaming == offline)
    np.testing.assert_array_equal(whole[:, 0], x[:, 0])                  # y_0 = x_0: no ramp from zero
    np.testing.assert_array_equal(whole[..., 50:], x[..., 50:])          # other dims untouched
    c = 1 - np.exp(-1 / (0.015 * 30.0))
    np.testing.assert_allclose(whole[:, 1, :50], x[:, 0, :50] + c * (x[:, 1, :50] - x[:, 0, :50]), atol=1e-6)
    step = np.concatenate([np.zeros((1, 1, 51)), np.ones((1, 5, 51))], 1)
    y = LowPass(0.015, 30.0, (0, 50))(step)[0, :, 0]
    np.testing.assert_allclose(y[1:], 1 - (1 - c) ** np.arange(1, 6), atol=1e-9)   # the one-pole's step response
    with pytest.raises(ValueError, match="smooth_s"):
        LowPass(0.0, 30.0, (0, 50))
    from stage2_gpt.generate import RunningMean, SampleMix, Sampling    # empty chunks leave every state unchanged
    whole = RunningMean(2.0).push(x[0])
    rm = RunningMean(2.0)
    parts = [rm.push(x[0, a:b]) for a, b in ((0, 0), (0, 1), (1, 1), (1, 4), (4, 61))]
    np.testing.assert_allclose(np.concatenate(parts, 0), whole, atol=1e-12)
    samples = np.stack([x, x[:, ::-1] * 0.5, x * 0.3])                  # (3, 2, 61, 51)
    one = SampleMix(Sampling(), 30.0, (0, 50))(samples)
    mix = SampleMix(Sampling(), 30.0, (0, 50))
    parts = [mix(samples[:, :, a:b]) for a, b in ((0, 0), (0, 5), (5, 5), (5, 61))]
    np.testing.assert_allclose(np.concatenate(parts, 1), one, atol=1e-6)


def test_sample_mix_drops_sample_zeros_own_level_and_keeps_its_motion():
    """SampleMix's drift removal (``drift_s``): a level sample 0 keeps apart from the other samples (its own guess
    of the person's offset) leaves the output, its motion between ``slow_s`` and ``drift_s`` stays; off (None) the
    level stays as well."""
    from stage2_gpt.generate import Sampling, SampleMix
    fps, T = 30.0, 3000
    t = np.arange(T) / fps
    mean = np.zeros((2, T, 51))
    wave = 0.5 * np.sin(2 * np.pi * 1.0 * t)[None, :, None]             # 1 Hz: motion, inside the band kept
    x0 = mean + 0.3 + wave                                               # sample 0: its own level, and motion
    samples = np.stack([x0, mean - 0.3 - wave])                          # the samples' mean is zero
    kw = dict(slow_s=0.2, smooth_s=None)
    kept = SampleMix(Sampling(drift_s=None, **kw), fps)(samples)
    gone = SampleMix(Sampling(drift_s=5.0, **kw), fps)(samples)
    late = slice(T // 2, None)                                           # after both filters settled (50 s)
    assert abs(kept[:, late].mean() - 0.3) < 0.01                       # without it the level stays ...
    assert abs(gone[:, late].mean()) < 0.01                              # ... with it the level leaves
    amp = lambda y: y[:, late].std() * np.sqrt(2)
    gain = 1 / np.sqrt(1 + (2 * np.pi * 1.0 * 0.2) ** 2)                 # the 0.2 s one-pole's gain at 1 Hz
    assert abs(amp(kept) - 0.5 * gain) < 0.01 and abs(amp(gone) / amp(kept) - 1) < 0.02   # the motion stays
    one = SampleMix(Sampling(drift_s=5.0, **kw), fps)                    # chunks == one call
    parts = np.concatenate([one(samples[:, :, a:b]) for a, b in ((0, 7), (7, 7), (7, 1000), (1000, T))], 1)
    np.testing.assert_allclose(parts, gone, atol=1e-9)
    with pytest.raises(ValueError, match="drift_s"):
        SampleMix(Sampling(drift_s=0.0), fps)
    np.testing.assert_array_equal(SampleMix(Sampling(slow_s=None), fps)(samples), samples.mean(0))  # plain mean


@pytest.mark.parametrize("given,samples", [(None, 1), (1, 2)])
def test_batched_dialogs_equal_each_alone(gen, dialog, given, samples):
    """generate_many: dialogs of different lengths in one batch (one KV cache; a dialog's rows leave when it ends)
    give exactly what each gives alone (codes and states; motion to float rounding)."""
    from stage2_gpt.generate import Sampling
    a, mo = dialog["audio"], dialog["motion"]
    audios = [a[:, :151], a[:, 40:130][:, ::-1] * 1.2, a[:, 100:341], a[:, :3]]
    motions = [mo[:, :151], mo[:, 40:130], mo[:, 100:341], mo[:, :3]]
    shapes = [dialog["shape"], None, dialog["shape"][::-1], dialog["shape"]]
    s = Sampling(temperature=0.9, top_k=50, seed=4)
    kw = dict(given=given, sampling=s, num_samples=samples)
    batch = gen.generate_many(audios, given_motions=None if given is None else [m[given] for m in motions],
                              identities=shapes, **kw)
    for au, m, sh, b in zip(audios, motions, shapes, batch):
        alone = gen.generate(au, given_motion=None if given is None else m[given], identity=sh, **kw)
        np.testing.assert_array_equal(b.codes, alone.codes)
        np.testing.assert_array_equal(b.states, alone.states)
        assert b.motion.shape == alone.motion.shape == (2, au.shape[1], 51)
        np.testing.assert_allclose(b.motion, alone.motion, atol=1e-5)
        assert (b.samples is None) == (samples == 1)


def test_offline_decodes_in_chunks(gen, dialog):
    """Offline generation decodes chunk by chunk with the tokenizer's causal window: any chunk size gives the codes
    of one pass and the motion of one whole decode (to float rounding); chunks come in time order."""
    from stage2_gpt.generate import Sampling
    audio = np.concatenate([dialog["audio"]] * 2, 1)[:, :501]
    s = Sampling(seed=9, smooth_s=None)                                 # chunk motion: the raw sample
    chunks = list(gen.iter_generate([audio], sampling=s, chunk_steps=7))
    assert [c.start for c in chunks] == list(range(0, 501, 14)) and chunks[-1].last and not chunks[0].last
    codes = np.concatenate([c.codes for c in chunks], 2)[0]
    motion = np.concatenate([c.motion for c in chunks], 2)[0]
    whole = gen.generate(audio, sampling=s)
    np.testing.assert_array_equal(codes, whole.codes)
    np.testing.assert_allclose(motion, whole.motion, atol=1e-5)
    ref = gen.tok.decode(torch.from_numpy(codes)).numpy()[:, :501]
    anchor = gen.mean_anchor(gen.reference_rows(None), None, s)         # the mean anchor over the whole decode
    np.testing.assert_allclose(motion, ref if anchor is None else anchor(ref[None])[0], atol=1e-5)
    smooth = Sampling(seed=9)                                           # the default output's low-pass, chunk by chunk
    out = np.concatenate([c.output for c in gen.iter_generate([audio], sampling=smooth, chunk_steps=7)], 1)
    np.testing.assert_allclose(out, gen.generate(audio, sampling=smooth).motion, atol=1e-5)
    assert np.abs(out[..., :50] - whole.motion[..., :50]).max() > 1e-4


def test_long_generation_bounded_cache(gen, dialog):
    """Minutes of audio: the KV cache never exceeds the window; output stays in the range of the data."""
    from stage2_gpt.generate import Sampling
    reps = 10                                                           # 10 x 12 s = 2 minutes, 150 attention windows
    audio = np.concatenate([dialog["audio"]] * reps, 1)
    sess = gen.stream(Sampling(seed=0))
    w = gen.cfg.attn_window
    chunks = []
    for i in range(0, audio.shape[1], 30):
        chunks.append(sess.push(audio[:, i:i + 30]))
        cache = sess.state.cache
        assert cache.length <= w - 1
        kv = [t.shape[-2] for t in cache.keys + cache.values]
        assert len(kv) == 2 * gen.cfg.depth and max(kv) <= w - 1
        assert sess.codes_hist.shape[1] <= gen.tok.decoder_context
    out = np.concatenate(chunks + [sess.flush()], 1)
    assert out.shape == (2, audio.shape[1], 51) and np.isfinite(out).all()
    # no drift: the same audio, heard in the first minute and again in the second, gives motion with the same
    # statistics (per-dim mean and spread, in units of the data's std)
    std = gen.tok.motion_std.cpu().numpy()
    n = audio.shape[1] // 2
    first, last = out[:, :n] / std, out[:, -n:] / std
    mean_shift = np.abs(first.mean(axis=(0, 1)) - last.mean(axis=(0, 1))).mean()
    spread = last.std(axis=(0, 1)).mean() / first.std(axis=(0, 1)).mean()
    print(f"drift: mean shift {mean_shift:.3f} std, spread ratio {spread:.3f}")
    # bound: the synthetic idle drift is 6 shared factors with 1-3 s time constants, so the mean of the true motion
    # itself moves between halves (the demo corpus's ground truth, halves of 60 s dialogs: 0.30 on average, 0.38
    # at the 90th percentile); a drifting model moves by more than 1 std or collapses / blows up its spread
    assert mean_shift < 0.5 and 0.67 < spread < 1.5


def test_streaming_from_raw_audio_equals_offline_features(gen, dialog, tokenized, tmp_path):
    from stage2_gpt.generate import Sampling
    corpus_wavs = _dialog_wavs(tokenized, dialog)
    feats = gen.features_from_wav(corpus_wavs)
    T = 100
    waves = [sf.read(str(p), dtype="float32")[0][:T * 1600] for p in corpus_wavs]
    s = Sampling(seed=2)
    off = gen.generate(feats[:, :T], sampling=s)
    sess = gen.stream(s)
    outs, i = [], 0
    for n in (700, 1600, 3333, 50, 9000, 10 ** 6):
        outs.append(sess.push_wav(waves[0][i:i + n], waves[1][i:i + n]))
        i += n
    on = np.concatenate(outs, 1)
    assert on.shape[1] == T
    np.testing.assert_allclose(on, off.motion, atol=1e-4)


def test_wav_features_in_blocks_equal_whole_file(gen, dialog, tokenized, tmp_path):
    """features_from_wav reads and computes in blocks (bounded memory): the frames of the whole-file path, exactly,
    also for a 44.1 kHz stereo file (resampled block by block)."""
    import torchaudio.functional as AF
    from common.data.audio import read_wav
    src = _dialog_wavs(tokenized, dialog)
    x, sr = sf.read(str(src[0]), dtype="float32")
    y = AF.resample(torch.from_numpy(x), sr, 44100).numpy()
    stereo = tmp_path / "p.wav"
    sf.write(str(stereo), np.stack([y, 0.25 * y], 1), 44100, subtype="FLOAT")
    for path in (src[0], stereo):
        w = read_wav(path, gen.sample_rate)
        T = len(w) // 1600
        whole = gen.extractor(w, T)
        lazy = gen.wav_features([path, src[1]])
        assert lazy.shape == (2, min(T, gen.features_from_wav([src[1]]).shape[1]), 80)
        blocks = np.concatenate([lazy[:, i:i + 37] for i in range(0, lazy.shape[1], 37)], 1)
        np.testing.assert_array_equal(blocks[0], whole[:lazy.shape[1]])
        np.testing.assert_array_equal(gen.features_from_wav([path])[0], whole)


def test_prediction_writer_equals_write_prediction(tmp_path):
    from common.eval.predictions import PredictionWriter, open_prediction, write_prediction
    from common.layout import layout_for_dim
    rng = np.random.default_rng(0)
    lay = layout_for_dim(51)
    motion, codes = rng.standard_normal((101, 51)).astype(np.float32), rng.integers(0, 9, (51, 4)).astype(np.int32)
    states, shape = rng.integers(-1, 4, 101).astype(np.int8), rng.standard_normal(100).astype(np.float32)
    ref = write_prediction(tmp_path / "ref.npz", motion, lay, shape, {"pred_states": states, "codes": codes})
    w = PredictionWriter(tmp_path / "d" / "p.npz", 101, lay, shape, {"pred_states": ((101,), np.int8),
                                                                     "codes": ((51, 4), np.int32)})
    for i in range(0, 101, 30):
        w.append(motion=motion[i:i + 30], pred_states=states[i:i + 30], codes=codes[i // 2:(i + 30) // 2])
    got, want = open_prediction(w.close()), open_prediction(ref)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["p.npz"]          # no parts left behind


def _dialog_wavs(tokenized, dialog) -> list[Path]:
    c = Cache(tokenized["cache"])
    dc = c.manifest["data_config"]
    index = json.loads((Path(dc["data_root"]) / dc["index"]).read_text())
    recs = index[dialog["id"]]
    return [Path(dc["data_root"]) / recs[p]["audio_path"] for p in dialog["participants"]]


# --- command line -----------------------------------------------------------------------------------------------
def test_sample_cli_raw_wavs_44k_stereo(gpt_run, tokenized, dialog, tmp_path):
    import torchaudio.functional as AF
    wavs = []
    for i, p in enumerate(_dialog_wavs(tokenized, dialog)):
        x, sr = sf.read(str(p), dtype="float32")
        x = AF.resample(torch.from_numpy(x[:sr * 4]), sr, 44100).numpy()          # 4 s
        stereo = np.stack([x, 0.5 * x], 1)
        wavs.append(tmp_path / f"p{i}.wav")
        sf.write(str(wavs[-1]), stereo, 44100, subtype="PCM_16")
    out = tmp_path / "out"
    cmd = [PY, str(ROOT / "scripts" / "sample.py"), "--gpt", str(gpt_run["gpt"]), "--tokenizer",
           str(tokenized["tokenizer"]), "--audio-a", str(wavs[0]), "--audio-b", str(wavs[1]), "--out", str(out),
           "--name", "wavdialog", "--seed", "3", "--quiet"]
    r = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("A", "B"):
        z = np.load(out / "wavdialog" / f"{name}.npz")
        assert z["motion"].shape == (120, 51) and z["motion"].dtype == np.float32      # 4 s at 30 fps
        assert z["expression_params"].shape == (120, 1, 100) and z["jaw_params"].shape == (120, 1, 3)
        assert z["pose_params"].shape == (120, 1, 3) and "shape_params" not in z.files
        np.testing.assert_array_equal(z["expression_params"][:, 0, :50], z["motion"][:, :50])
        np.testing.assert_array_equal(z["expression_params"][:, 0, 50:], 0)
        np.testing.assert_array_equal(z["jaw_params"][:, 0, 0], z["motion"][:, 50])
    assert (out / "wavdialog" / "trajectories.png").stat().st_size > 10_000
    # the same audio through the offline path in-process gives the same motion (the CLI adds nothing; by default it
    # draws 8 samples at dyad mode's temperature, combined by SampleMix, its low-pass at DYAD_SMOOTH_S)
    from stage2_gpt.generate import DYAD_SMOOTH_S, DYAD_TEMPERATURE, Generator, Sampling
    g = Generator.load(gpt_run["gpt"], tokenized["tokenizer"])
    res = g.generate(g.features_from_wav(wavs), sampling=Sampling(seed=3, temperature=DYAD_TEMPERATURE,
                                                                  smooth_s=DYAD_SMOOTH_S), num_samples=8)
    np.testing.assert_allclose(np.load(out / "wavdialog" / "A.npz")["motion"], res.motion[0], atol=1e-5)


def test_sample_cli_cached_listener(gpt_run, tokenized, dialog, tmp_path):
    out = tmp_path / "out"
    a, b = dialog["participants"]
    cmd = [PY, str(ROOT / "scripts" / "sample.py"), "--gpt", str(gpt_run["gpt"]), "--tokenizer",
           str(tokenized["tokenizer"]), "--cache", str(tokenized["cache"]), "--dialog", dialog["id"],
           "--mode", "listener", "--given", b, "--out", str(out), "--quiet", "--no-plot"]
    r = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    files = sorted(p.name for p in (out / dialog["id"]).iterdir())
    assert files == [f"{a}.npz"]                                        # only the generated participant
    z = np.load(out / dialog["id"] / f"{a}.npz")
    T = dialog["motion"].shape[1]
    assert z["motion"].shape == (T, 51) and z["shape_params"].shape == (1, 1, 300)
    shape = np.array(Cache(tokenized["cache"]).load(dialog["id"]).shape)[0]
    np.testing.assert_array_equal(z["shape_params"][0, 0, :100], shape)
    # listener mode's default output: the plain mean of 8 samples (the library's, partner given)
    from stage2_gpt.generate import Generator, Sampling
    g = Generator.load(gpt_run["gpt"], tokenized["tokenizer"])
    res = g.generate(dialog["audio"], given=1, given_motion=dialog["motion"][1], identity=dialog["shape"],
                     sampling=Sampling(seed=0, slow_s=None), num_samples=8)
    np.testing.assert_allclose(z["motion"], res.motion[0], atol=1e-5)
    from stage2_gpt.generate import SMOOTH_S, LowPass                  # the mean, its expression low-passed
    mean = res.samples[:, 0].mean(0)
    np.testing.assert_allclose(z["motion"], LowPass(SMOOTH_S, g.fps, g.bundle.layout.exp)(mean), atol=1e-5)
    r = subprocess.run(cmd + ["--smooth-s", "0", "--out", str(tmp_path / "raw")], env=subprocess_env(), capture_output=True,
                       text=True, timeout=180)                                    # --smooth-s 0: the plain mean
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "raw" / dialog["id"] / f"{a}.npz")["motion"], mean, atol=1e-5)
    assert np.abs(res.samples[0, 0] - res.samples[1, 0]).max() > 1e-3              # the samples differ
    r = subprocess.run(cmd + ["--slow-s", "0.2", "--out", str(tmp_path / "mix")], env=subprocess_env(), capture_output=True,
                       text=True, timeout=180)                                    # --slow-s: the mix in listener mode
    assert r.returncode == 0, r.stderr[-3000:]
    mix = g.generate(dialog["audio"], given=1, given_motion=dialog["motion"][1], identity=dialog["shape"],
                     sampling=Sampling(seed=0, slow_s=0.2), num_samples=8)
    np.testing.assert_allclose(np.load(tmp_path / "mix" / dialog["id"] / f"{a}.npz")["motion"], mix.motion[0], atol=1e-5)
    assert np.abs(mix.motion[0] - res.motion[0]).max() > 1e-3
    r = subprocess.run(cmd + ["--slow-s", "0.2", "--drift-s", "0", "--out", str(tmp_path / "drift0")],
                       env=subprocess_env(), capture_output=True, text=True, timeout=180)   # --drift-s 0: drift kept
    assert r.returncode == 0, r.stderr[-3000:]
    from stage2_gpt.generate import SampleMix
    kept = SampleMix(Sampling(slow_s=0.2, drift_s=None), g.fps, g.bundle.layout.exp, given=1)(mix.samples)
    np.testing.assert_allclose(np.load(tmp_path / "drift0" / dialog["id"] / f"{a}.npz")["motion"], kept[0], atol=1e-5)
    assert np.abs(kept[0] - mix.motion[0]).max() > 1e-4                # the default removes it
    r = subprocess.run(cmd + ["--drift-s", "5"], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--drift-s applies to the sample mix" in r.stderr   # the plain mean has no drift
    r = subprocess.run(cmd[:-6] + ["--mode", "listener", "--given", "nobody", "--out", str(out)], env=subprocess_env(),
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 2 and "nobody" in r.stderr
    r = subprocess.run(cmd + ["--plain-mean", "--slow-s", "0.2"], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "exclude each other" in r.stderr
    r = subprocess.run(cmd + ["--guidance", "2", "--out", str(tmp_path / "guided")], env=subprocess_env(),
                       capture_output=True, text=True, timeout=60)          # this GPT has no "no audio" input
    assert r.returncode == 2 and "audio_dropout" in r.stderr and not (tmp_path / "guided").exists()


@pytest.mark.parametrize("mode", ["dyad", "listener"])
def test_sample_split_batched_equals_one_by_one(gpt_run, tokenized, tmp_path, mode):
    """sample.py --split --batch N writes exactly the files of one dialog at a time (dialogs of several lengths), with
    the default fixed-shape step (--cuda-graph auto: on, uncaptured on a CPU) and with the plain step
    (--cuda-graph off)."""
    import importlib.util
    from common.eval.predictions import open_prediction
    spec = importlib.util.spec_from_file_location("sample_script", ROOT / "scripts" / "sample.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    base = ["--gpt", str(gpt_run["gpt"]), "--tokenizer", str(tokenized["tokenizer"]), "--cache",
            str(tokenized["cache"]), "--split", "train", "--mode", mode, "--seed", "5", "--quiet", "--no-plot"]
    threads = torch.get_num_threads()
    assert sample.main(base + ["--out", str(tmp_path / "one")]) == 0
    assert sample.main(base + ["--batch", "3", "--out", str(tmp_path / "three")]) == 0
    assert sample.main(base + ["--batch", "3", "--cuda-graph", "off", "--out", str(tmp_path / "graph")]) == 0
    torch.set_num_threads(threads)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.npz"))
    for other in ("three", "graph"):
        assert len(files) >= 4 and files == sorted(p.relative_to(tmp_path / other) for p in (tmp_path / other).rglob("*.npz"))
        for f in files:
            a, b = open_prediction(tmp_path / "one" / f), open_prediction(tmp_path / other / f)
            assert sorted(a) == sorted(b)
            np.testing.assert_array_equal(a["codes"], b["codes"])
            np.testing.assert_array_equal(a["pred_states"], b["pred_states"])
            np.testing.assert_allclose(a["motion"], b["motion"], atol=1e-5)


# --- distributed -----------------------------------------------------------------------------------------------
DDP_HELPER = """
import sys, torch
from stage2_gpt.config import load_stage2_config
from stage2_gpt.train import train
res = train(load_stage2_config(sys.argv[1], sys.argv[3:]))
acc, model = res["accelerator"], res["model"]
assert acc.num_processes == 2, acc.num_processes
torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{sys.argv[2]}/rank{acc.process_index}.pt")
"""


@pytest.mark.slow
def test_two_process_cpu_training(tokenized, tmp_path):
    helper = tmp_path / "ddp_helper.py"
    helper.write_text(DDP_HELPER)
    out = tmp_path / "run"
    env = subprocess_env()
    env["ACCELERATE_USE_CPU"] = "1"
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541", str(helper),
           str(TINY), str(tmp_path), f"cache={tokenized['cache']}", f"tokenizer={tokenized['tokenizer']}",
           f"out_dir={out}", *TEST_OVERRIDES, "train.max_steps=4", "train.batch_size=4", "train.val_every=2",
           "train.save_every=4"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt", weights_only=True), torch.load(tmp_path / "rank1.pt", weights_only=True)
    saved = _final_state(out)
    for k in saved:
        assert torch.equal(r0[k], r1[k]) and torch.equal(r0[k], saved[k]), k
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val/acc_q0" in l for l in lines)
