"""Stage 1 (motion tokenizer): shapes, training, exact resume, 2-process DDP, export, causality, CLIs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data.cache import Cache
from common.config import ConfigError
from stage1_vq import load_tokenizer, load_stage1_config
from stage1_vq.model import MotionTokenizer
from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "stage1_vq_tiny.yaml"
PY = sys.executable


def _cfg(cache_dir, out_dir, *overrides):
    return load_stage1_config(TINY, [f"cache={cache_dir}", f"out_dir={out_dir}", "train.progress=false",
                                     "train.val_every=0", *overrides])


@pytest.fixture(scope="module")
def trained(cache_dir, tmp_path_factory):
    """The tiny config trained for 150 steps on the test cache (in-process, one CPU process)."""
    from stage1_vq.train import train
    out = tmp_path_factory.mktemp("stage1_run")
    cfg = _cfg(cache_dir, out, "train.max_steps=150", "train.val_every=150", "train.save_every=150")
    res = train(cfg)
    return {"out": out, "result": res, "tokenizer": Path(res["artifact"]), "cfg": cfg}


# --- model -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_shapes(cache_dir, downsample):
    cfg = _cfg(cache_dir, "unused", f"model.downsample={downsample}").model
    tok = MotionTokenizer(cfg, motion_dim=51, fps=30.0).eval()
    x = torch.randn(3, 64, 51)
    tok.train()
    recon, codes, commit = tok(x)                       # k-means init on the first training forward
    assert recon.shape == x.shape and codes.shape == (3, 64 // downsample, cfg.num_quantizers)
    assert commit.shape == (cfg.num_quantizers,)
    tok.eval()
    codes = tok.encode(torch.randn(2, 64 + downsample - 1, 51))   # trailing partial token dropped
    assert codes.shape == (2, 64 // downsample, cfg.num_quantizers) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < cfg.codebook_size
    out = tok.decode(codes)
    assert out.shape == (2, 64, 51) and out.dtype == torch.float32
    with pytest.raises(ValueError):
        tok.encode(torch.randn(2, 64, 50))
    with pytest.raises(ValueError):
        tok.decode(torch.full((1, 4, cfg.num_quantizers), cfg.codebook_size))


STAGE1_CONFIGS = sorted((ROOT / "configs").glob("stage1_vq*.yaml"))


@pytest.mark.parametrize("path", STAGE1_CONFIGS, ids=[p.name for p in STAGE1_CONFIGS])
def test_shipped_configs_load(path):
    """Every stage-1 YAML in configs/ loads (no unknown keys), validates and builds its model."""
    assert {p.name for p in STAGE1_CONFIGS} >= {"stage1_vq.yaml", "stage1_vq_tiny.yaml"}
    cfg = load_stage1_config(path)
    assert cfg.cache and cfg.out_dir and cfg.train.max_steps > cfg.train.warmup_steps
    tok = MotionTokenizer(cfg.model, motion_dim=51, fps=30.0)
    assert (tok.num_quantizers, tok.codebook_size) == (cfg.model.num_quantizers, cfg.model.codebook_size)
    assert cfg.model.causal and tok.lookahead_frames == 0            # shipped tokenizers stream (stage 2)


def test_config_errors(cache_dir):
    with pytest.raises(ConfigError, match="unknown config key"):
        _cfg(cache_dir, "x", "model.hiden=3")
    with pytest.raises(ConfigError, match="downsample"):
        _cfg(cache_dir, "x", "model.downsample=3")
    with pytest.raises(ConfigError, match="multiple"):
        _cfg(cache_dir, "x", "model.downsample=4", "window=66")


# --- training ------------------------------------------------------------------------------------------------
def test_loss_decreases_and_roundtrip(trained, cache_dir):
    hist = [l for _, l in trained["result"]["history"]]
    assert len(hist) == 150 and all(np.isfinite(hist))
    assert np.mean(hist[-20:]) < 0.5 * np.mean(hist[:5])
    # encode -> decode of a train dialog is far better than predicting the mean (nMSE 1)
    cache = Cache(cache_dir)
    tok = load_tokenizer(trained["tokenizer"])
    m = torch.from_numpy(np.array(cache.load(cache.dialogs("train")[0]["id"]).motion))
    ref = tok.person_reference(m)                               # each person's own mean (the default)
    rec = tok.decode(tok.encode(m, ref), ref)
    assert rec.shape == (2, m.shape[1] - m.shape[1] % tok.downsample, 51)
    gt = m[:, :rec.shape[1]]
    nmse = ((rec - gt) ** 2).mean((0, 1)) / gt.var((0, 1)).clamp_min(1e-8)
    assert float(nmse.mean()) < 0.5
    v = trained["result"]["val"]
    assert set(v) >= {"nmse_exp", "nmse_jaw", "corr_jaw", "usage", "perplexity", "dead_codes", "nmse_per_dim"}
    assert len(v["usage"]) == tok.num_quantizers and len(v["nmse_per_dim"]) == 51
    lines = (trained["out"] / "metrics.jsonl").read_text().splitlines()
    assert any("val/nmse_jaw" in l for l in lines) and any("train/windows_per_s" in l for l in lines)


def test_person_reference_codes_motion_around_each_persons_mean(trained, cache_dir, tmp_path):
    """``model.reference=person`` (the default): the expression dims are coded around the person's own mean, so
    a static offset costs nothing: a train dialog shifted by a large per-person offset reconstructs as well as
    unshifted when its reference is given (a ``model.reference=global`` tokenizer cannot follow: it ignores
    references), decoding without a reference gives the train mean's centre, and the jaw is never referenced."""
    from stage1_vq.train import train
    tok = load_tokenizer(trained["tokenizer"])
    assert tok.reference == "person" and tok.describe()["reference"] == "person"
    assert tok.reference_mask[:50].all() and not tok.reference_mask[50:].any()
    cache = Cache(cache_dir)
    m = torch.from_numpy(np.array(cache.load(cache.dialogs("train")[0]["id"]).motion))
    offset = torch.zeros(51)
    offset[:50] = 3.0 * torch.from_numpy(cache.stats["motion_std"][:50])   # far outside any train person
    shifted = m + offset

    def nmse(rec, gt):
        gt = gt[:, :rec.shape[1]]
        return float((((rec - gt) ** 2).mean((0, 1)) / m.var((0, 1)).clamp_min(1e-8))[:50].mean())

    ref = tok.person_reference(m)
    base = nmse(tok.decode(tok.encode(m, ref), ref), m)
    moved = nmse(tok.decode(tok.encode(shifted, ref + offset), ref + offset), shifted)
    assert base < 0.5 and moved == pytest.approx(base, rel=1e-4, abs=1e-6)
    codes = tok.encode(m, ref)
    assert torch.allclose(tok.decode(codes) - tok.decode(codes, ref), (tok.motion_mean - torch.where(
        tok.reference_mask, ref[:, None], tok.motion_mean)).expand(2, *tok.decode(codes).shape[1:]), atol=1e-5)
    res = train(_cfg(cache_dir, tmp_path / "g", "model.reference=global", "train.max_steps=150",
                     "train.save_every=150"))
    g = load_tokenizer(res["artifact"])                                # a global tokenizer ignores references
    assert g.reference == "global" and torch.equal(g.encode(m, ref + offset), g.encode(m))


def test_exported_tokenizer_loads_alone(trained, cache_dir, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(trained["tokenizer"], alone / "tok.pt")
    codes = torch.randint(0, 128, (1, 10, 4))
    ref = load_tokenizer(trained["tokenizer"]).decode(codes).numpy()
    np.save(tmp_path / "codes.npy", codes.numpy())
    script = textwrap.dedent(f"""
        import numpy as np, torch
        from stage1_vq import load_tokenizer
        tok = load_tokenizer("tok.pt")
        assert not tok.training
        out = tok.decode(torch.from_numpy(np.load({str(tmp_path / 'codes.npy')!r})))
        np.save("out.npy", out.numpy())
        print(tok.fps, tok.motion_dim, tok.downsample, tok.num_quantizers, tok.codebook_size, tok.lookahead_frames,
              tok.decoder_context)
    """)
    r = subprocess.run([PY, "-c", script], cwd=alone, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    fps, dim, ds, q, k, la, ctx = r.stdout.split()
    assert (float(fps), int(dim), int(ds), int(q), int(k), int(la)) == (30.0, 51, 2, 4, 128, 0) and int(ctx) > 1
    np.testing.assert_allclose(np.load(alone / "out.npy"), ref, rtol=0, atol=1e-6)
    tok = load_tokenizer(alone / "tok.pt")
    st = Cache(cache_dir).stats
    np.testing.assert_allclose(tok.motion_mean.numpy(), st["motion_mean"], rtol=1e-6)
    np.testing.assert_allclose(tok.motion_std.numpy(), st["motion_std"], rtol=1e-6)
    assert tok.artifact_meta["step"] == 150


def _perturb_future(x, t0):
    y = x.clone()
    y[:, t0:] += torch.randn_like(y[:, t0:]) * 3.0
    return y


@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_causality_and_streaming(cache_dir, downsample):
    torch.manual_seed(0)
    cfg = _cfg(cache_dir, "unused", f"model.downsample={downsample}").model
    tok = MotionTokenizer(cfg, 51, 30.0)
    tok.train()
    tok(torch.randn(4, 128, 51))                     # initialise the codebooks
    tok.eval()
    x = torch.randn(2, 480, 51)                       # longer than both receptive fields
    t0 = 240                                          # a token boundary for d = 1, 2, 4
    assert x.shape[1] > tok.encoder_context and x.shape[1] // downsample > tok.decoder_context
    c1, c2 = tok.encode(x), tok.encode(_perturb_future(x, t0))
    j0 = t0 // downsample
    assert torch.equal(c1[:, :j0], c2[:, :j0]) and not torch.equal(c1[:, j0:], c2[:, j0:])
    d1, d2 = tok.decode(c1), tok.decode(c2)
    assert torch.equal(d1[:, :t0], d2[:, :t0]) and not torch.allclose(d1[:, t0:], d2[:, t0:])
    assert tok.lookahead_frames == 0
    # bounded context: the last decoder_context codes determine the newest token's frames exactly
    ctx = tok.decoder_context
    tail = tok.decode(c1[:, -ctx:])[:, -downsample:]
    torch.testing.assert_close(tail, d1[:, -downsample:], rtol=0, atol=1e-5)
    # ... and it is not over-stated: the newest frames do read the oldest of those codes (gradients)
    z = torch.randn(1, ctx + 8, cfg.code_dim, requires_grad=True)
    tok.decoder(z.transpose(1, 2))[..., -downsample:].sum().backward()
    used = (z.grad[0].abs().sum(-1) > 0).nonzero().flatten()
    assert int(used.min()) == 8 and int(used.max()) == ctx + 7
    sd = tok.stream_decoder()
    pieces = [sd.push(c1[:, i:i + n]) for i, n in ((0, 1), (1, 3), (4, 1), (5, c1.shape[1] - 5))]
    torch.testing.assert_close(torch.cat(pieces, 1), d1, rtol=0, atol=1e-5)
    # the encoder's bounded context
    ec = tok.encoder_context
    n = -(-ec // downsample) * downsample              # token-aligned window covering the context
    last = tok.encode(x[:, -n:])[:, -1]
    assert torch.equal(last, c1[:, -1])
    pad = 8 + (-(ec + 8)) % downsample
    f = torch.randn(1, ec + pad, 51, requires_grad=True)
    tok.encoder(f.transpose(1, 2))[..., -1].sum().backward()
    used = (f.grad[0].abs().sum(-1) > 0).nonzero().flatten()
    assert int(used.min()) == pad and int(used.max()) == ec + pad - 1


def test_non_causal_variant_looks_ahead(cache_dir):
    torch.manual_seed(0)
    cfg = _cfg(cache_dir, "unused", "model.causal=false").model
    tok = MotionTokenizer(cfg, 51, 30.0)
    tok.train()
    tok(torch.randn(4, 128, 51))
    tok.eval()
    assert tok.lookahead_frames > 0 and tok.decoder_lookahead > 0
    x = torch.randn(1, 160, 51)
    c1, c2 = tok.encode(x), tok.encode(_perturb_future(x, 96))
    assert not torch.equal(c1[:, :48], c2[:, :48])
    with pytest.raises(ValueError):
        tok.stream_decoder()


def _final_state(out):
    from safetensors.torch import load_file
    ck = sorted((Path(out) / "checkpoints").glob("step-*"))[-1]
    return load_file(str(ck / "model.safetensors"))


def test_resume_is_exact(cache_dir, tmp_path):
    from stage1_vq.train import train
    n = 24                                            # 3 batches per epoch here: resumes mid-epoch
    common = ["train.max_steps=24", "train.save_every=10", "train.warmup_steps=5", "model.quantize_dropout=true",
              "model.threshold_ema_dead_code=4"]     # exercise the RNG-using paths (dropout, dead codes)
    straight = train(_cfg(cache_dir, tmp_path / "a", *common))
    first = train(_cfg(cache_dir, tmp_path / "b", *common, "stop_after=10"))
    assert first["step"] == 10 and first["artifact"] is None
    second = train(_cfg(cache_dir, tmp_path / "b", *common))
    assert second["step"] == n and [s for s, _ in second["history"]] == list(range(11, n + 1))
    full = dict(straight["history"])
    assert [l for _, l in second["history"]] == [full[s] for s in range(11, n + 1)]
    assert [l for _, l in first["history"]] == [full[s] for s in range(1, 11)]
    a, b = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- distributed -----------------------------------------------------------------------------------------------
DIST_HELPER = """
import sys, torch
from stage1_vq import load_stage1_config
from stage1_vq.train import train
mode, out_prefix = sys.argv[1], sys.argv[2]
if mode == "fsdp":
    # accelerate never chooses FSDP on CPU (its MULTI_CPU branch skips the FSDP plugin); switch its state to FSDP2
    # with the settings of the shipped configs/accelerate/fsdp_stage1.yaml, as `accelerate launch` does on GPUs
    import accelerate, yaml
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    fc = yaml.safe_load(open(sys.argv[3]))["fsdp_config"]
    init = accelerate.Accelerator.__init__
    def fsdp_init(self, *a, **kw):
        init(self, *a, **kw)
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=fc["fsdp_version"], auto_wrap_policy=fc["fsdp_auto_wrap_policy"].lower(),
            transformer_cls_names_to_wrap=fc["fsdp_transformer_layer_cls_to_wrap"].split(","),
            state_dict_type=fc["fsdp_state_dict_type"], reshard_after_forward=fc["fsdp_reshard_after_forward"])
        self.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerate.Accelerator.__init__ = fsdp_init
cfg = load_stage1_config(sys.argv[4], sys.argv[5:])
res = train(cfg)
acc, model = res["accelerator"], res["model"]
assert acc.num_processes == 2, acc.num_processes
assert acc.distributed_type == ("FSDP" if mode == "fsdp" else "MULTI_CPU"), acc.distributed_type
assert all(layer._codebook.use_ddp for layer in model.rvq.layers)
if res["artifact"] is None:
    sys.exit(0)
from torch.distributed.tensor import DTensor
sharded = [n for n, p in model.named_parameters() if isinstance(p, DTensor)]
assert (len(sharded) == len(list(model.parameters()))) == (mode == "fsdp"), sharded[:3]
out = {}
for i, layer in enumerate(model.rvq.layers):
    for b in ("embed", "embed_avg", "cluster_size"):
        t = getattr(layer._codebook, b)
        assert not isinstance(t, DTensor)                    # codebooks are buffers: never sharded
        out[f"q{i}.{b}"] = t.detach().clone()
p = next(model.encoder.parameters())
out["enc0"] = (p.to_local() if isinstance(p, DTensor) else p).detach().clone()   # the group is gone: no gather
torch.save(out, f"{out_prefix}{acc.process_index}.pt")
"""
DIST_ARGS = ["train.max_steps=6", "train.batch_size=8", "train.val_every=3", "train.save_every=3",
             "train.log_every=1", "train.progress=false"]


def _launch(mode, tmp_path, cache_dir, out, tag, *extra, port=29531):
    helper = tmp_path / "dist_helper.py"
    helper.write_text(DIST_HELPER)
    env = subprocess_env()
    env["ACCELERATE_USE_CPU"] = "1"
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), str(helper),
           mode, str(tmp_path / f"{tag}_rank"), str(ROOT / "configs" / "accelerate" / "fsdp_stage1.yaml"),
           str(TINY), f"cache={cache_dir}", f"out_dir={out}", *DIST_ARGS, *extra]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_run(cache_dir, tmp_path_factory):
    """The tiny config for 6 steps on 2 CPU processes, DDP over gloo (torchrun + ACCELERATE_USE_CPU=1)."""
    tmp = tmp_path_factory.mktemp("ddp")
    _launch("ddp", tmp, cache_dir, tmp / "run", "ddp")
    return {"out": tmp / "run", "ranks": _rank_files(tmp, "ddp")}


def _rank_files(tmp, tag):
    return [torch.load(f"{tmp / f'{tag}_rank'}{i}.pt", weights_only=True) for i in range(2)]


def _metrics(out) -> list[dict]:
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _losses(out) -> dict[int, float]:
    return {l["step"]: l["train/loss"] for l in _metrics(out) if "train/loss" in l}


@pytest.mark.slow
def test_two_process_cpu_training(ddp_run, cache_dir):
    r0, r1 = ddp_run["ranks"]
    out = ddp_run["out"]
    saved = _final_state(out)
    init = MotionTokenizer(_cfg(cache_dir, out).model, 51, 30.0)
    for i in range(4):
        k = f"q{i}.embed"
        assert torch.equal(r0[k], r1[k]), k
        assert torch.equal(r0[k], saved[f"rvq.layers.{i}._codebook.embed"]), k
        assert r0[k].abs().sum() > 0                          # k-means-initialised, not the zero init
        assert torch.equal(r0[f"q{i}.cluster_size"], r1[f"q{i}.cluster_size"])
    assert torch.equal(r0["enc0"], r1["enc0"])
    assert not torch.equal(r0["enc0"], next(init.encoder.parameters()).detach())
    assert (out / "tokenizer.pt").is_file()
    assert any("val/nmse_exp" in l for l in _metrics(out))


@pytest.mark.slow
def test_fsdp2_sharded_training_on_cpu(ddp_run, cache_dir, tmp_path):
    """The FSDP2 path of stage1_vq/train.py (accelerate's fully_shard of every ResBlock and the root, sharded
    checkpoints, full-state export) on 2 CPU processes: codebooks equal on both ranks and in the exported file,
    the same training as DDP, and exact resume from a sharded checkpoint."""
    out = tmp_path / "fsdp"
    _launch("fsdp", tmp_path, cache_dir, out, "fsdp", port=29533)      # asserts DistributedType.FSDP, world 2
    f0, f1 = _rank_files(tmp_path, "fsdp")
    step = sorted((out / "checkpoints").glob("step-*"))[-1]
    assert len(list((step / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2     # one shard per rank
    tok = load_tokenizer(out / "tokenizer.pt")
    exported = torch.load(out / "tokenizer.pt", weights_only=True)["state_dict"]
    fresh = MotionTokenizer(_cfg(cache_dir, out).model, 51, 30.0).state_dict()
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in fresh.items()}   # full, not shards
    d0 = ddp_run["ranks"][0]
    for i in range(4):
        for b in ("embed", "embed_avg", "cluster_size"):
            k = f"q{i}.{b}"
            assert torch.equal(f0[k], f1[k]), k
            assert torch.equal(f0[k].cpu(), exported[f"rvq.layers.{i}._codebook.{b}"].float()), k
        # the same k-means initialisation and EMA updates as DDP, up to float summation order
        torch.testing.assert_close(f0[f"q{i}.embed"], d0[f"q{i}.embed"], rtol=1e-3, atol=1e-3)
    ddp_exported = torch.load(ddp_run["out"] / "tokenizer.pt", weights_only=True)["state_dict"]
    for k in exported:
        torch.testing.assert_close(exported[k], ddp_exported[k], rtol=1e-3, atol=1e-3, msg=k)
    assert torch.equal(exported["encoder.0.conv.weight"][:len(f0["enc0"])], f0["enc0"])   # rank 0's shard
    ddp_losses, fsdp_losses = _losses(ddp_run["out"]), _losses(out)
    assert sorted(fsdp_losses) == list(range(1, 7))
    for s in fsdp_losses:
        assert fsdp_losses[s] == pytest.approx(ddp_losses[s], rel=1e-4), s
    c = Cache(cache_dir)
    x = torch.from_numpy(np.array(c.load(c.dialogs("test")[0]["id"]).motion[0, :64]))[None]
    assert tok.decode(tok.encode(x)).shape == (1, 64, 51)
    # killed after step 3 (a sharded checkpoint), resumed: steps 4..6 and the export equal the straight run's
    res = tmp_path / "fsdp_resume"
    _launch("fsdp", tmp_path, cache_dir, res, "first", "stop_after=3", port=29535)
    _launch("fsdp", tmp_path, cache_dir, res, "second", port=29537)
    resumed = _losses(res)
    assert [resumed[s] for s in (4, 5, 6)] == [fsdp_losses[s] for s in (4, 5, 6)]
    again = torch.load(res / "tokenizer.pt", weights_only=True)["state_dict"]
    for k in exported:
        assert torch.equal(again[k], exported[k]), k


def test_world_size_guard(cache_dir, tmp_path):
    env = subprocess_env()
    env["WORLD_SIZE"] = "2"
    r = subprocess.run([PY, str(ROOT / "stage1_vq" / "train.py"), "--config", str(TINY), f"cache={cache_dir}",
                        f"out_dir={tmp_path / 'x'}"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3
    assert "WORLD_SIZE=2" in r.stderr and "alone" in r.stderr and "torchrun" in r.stderr
    assert not (tmp_path / "x" / "checkpoints").exists()


# --- command lines -----------------------------------------------------------------------------------------------
def test_tokenize_and_evaluate_cli(trained, cache_dir, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    ckpt = trained["tokenizer"]
    r = subprocess.run([PY, "-m", "stage1_vq.tokens", "--tokenizer", str(ckpt), "--cache", str(cache), "--name", "t1",
                        "--quiet"], env=subprocess_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    c = Cache(cache)
    info = json.loads((cache / "tokens" / "t1" / "tokens.json").read_text())
    assert (info["downsample"], info["num_quantizers"], info["codebook_size"], info["fps"]) == (2, 4, 128, 30.0)
    tok = load_tokenizer(ckpt)
    assert len(c.dialogs()) == len(info["dialogs"])
    for d in c.dialogs():                                     # all splits
        codes = np.load(cache / "tokens" / "t1" / f"{d['id']}.npy")
        assert codes.dtype == np.int32 and codes.shape == (2, d["num_frames"] // 2, 4)
    d = c.dialogs("test")[0]
    m = torch.from_numpy(np.array(c.load(d["id"]).motion))
    ref = tok.encode(m, tok.person_reference(m)).numpy()            # tokens are coded around each person's mean
    np.testing.assert_array_equal(np.load(cache / "tokens" / "t1" / f"{d['id']}.npy"), ref)
    assert not list((cache / "tokens" / "t1").glob(".*tmp*"))

    r = subprocess.run([PY, "-m", "stage1_vq.evaluate", "--tokenizer", str(ckpt), "--cache", str(cache), "--json",
                        str(tmp_path / "m.json")], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "jaw" in r.stdout and "perplexity" in r.stdout
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["split"] == "test" and m["frames"] > 0 and len(m["usage"]) == 4
    assert 0 <= m["nmse_exp"] < 10 and -1 <= m["corr_jaw"] <= 1 and all(0 < u <= 1 for u in m["usage"])
    r = subprocess.run([PY, "-m", "stage1_vq.evaluate", "--tokenizer", str(tmp_path / "nope.pt"), "--cache", str(cache)],
                       env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr
