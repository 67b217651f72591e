"""Learned anchor baselines (the DualTalk-class regressor, non-causal and causal): configs, causality of the model
and of whole-dialog prediction, training, export, exact resume, sampling into the prediction layout, and
scripts/baselines.py --regressor end to end."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.artifact import RegressorBundle, load_regressor
from baselines.config import RegressorModelConfig, load_regressor_config
from baselines.model import DualTalkRegressor
from baselines.predict import predict_dialog, predict_split, window_starts
from common.config import ConfigError
from common.data.cache import Cache
from common.eval.baselines import REGRESSOR_VARIANTS, regressor_name, regressor_overrides
from common.eval.predictions import read_prediction
from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "baseline_regressor_tiny.yaml"
PY = sys.executable
VARIANTS = {name: regressor_overrides(name) for name in REGRESSOR_VARIANTS}   # both protocols, (non-)causal
# small and fast: 2 s windows, a narrow model; on the test cache (6 train dialogs x 12 s) 8 batches per epoch
FAST = ["window=60", "model.dim=32", "model.ff_dim=64", "model.interaction_layers=1", "train.batch_size=8",
        "train.warmup_steps=5", "train.progress=false", "train.val_every=0", "val_windows=8"]


def _cfg(cache_dir, out_dir, *overrides):
    return load_regressor_config(TINY, [f"cache={cache_dir}", f"out_dir={out_dir}", *FAST, *overrides])


def _bundle(causal: bool, window: int = 40, motion_dim: int = 51, audio_dim: int = 80,
            partner_motion: bool = True) -> RegressorBundle:
    """An untrained regressor with identity normalisation (for causality and shape checks)."""
    torch.manual_seed(0)
    cfg = RegressorModelConfig(motion_dim=motion_dim, audio_dim=audio_dim, causal=causal, dim=32, ff_dim=64,
                               interaction_layers=1, partner_motion=partner_motion)
    meta = {"window": window, "fps": 30.0, "motion_layout": {"exp": [0, 50], "jaw": [50, 51]},
            "motion_mean": np.zeros(motion_dim), "motion_std": np.ones(motion_dim),
            "audio_mean": np.zeros(audio_dim), "audio_std": np.ones(audio_dim)}
    return RegressorBundle(DualTalkRegressor(cfg).eval(), {}, meta)


# --- configs and model ---------------------------------------------------------------------------------------
CONFIGS = sorted((ROOT / "configs").glob("baseline_regressor*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    assert {p.name for p in CONFIGS} == {"baseline_regressor.yaml", "baseline_regressor_tiny.yaml"}
    cfg = load_regressor_config(path)
    assert cfg.export_name == "regressor.pt" and cfg.train.max_steps > cfg.train.warmup_steps
    assert not cfg.model.causal
    for causal in (False, True):
        cfg.model.causal = causal
        m = DualTalkRegressor(RegressorModelConfig(**{**vars(cfg.model), "motion_dim": 51, "audio_dim": 80}))
        y = m(torch.randn(2, 2, 16, 51), torch.randn(2, 2, 16, 80))
        assert y.shape == (2, 2, 16, 51)


def test_config_errors(cache_dir):
    with pytest.raises(ConfigError, match="unknown config key"):
        _cfg(cache_dir, "x", "model.causl=true")
    with pytest.raises(ConfigError, match="multiple of model.heads"):
        _cfg(cache_dir, "x", "model.dim=30")
    with pytest.raises(ConfigError, match="audio_kernel"):
        _cfg(cache_dir, "x", "model.audio_kernel=4")


def _perturbed(x, t0):
    y = x.clone()
    y[..., t0:, :] += 3.0 * torch.randn_like(y[..., t0:, :])
    return y


@pytest.mark.parametrize("causal", [False, True], ids=["non_causal", "causal"])
def test_model_causality(causal):
    """Causal: perturbing every input from frame t0 on leaves outputs before t0 bit-identical (and changes the
    rest); non-causal: the earlier outputs change too (it looks ahead)."""
    m = _bundle(causal).model
    torch.manual_seed(1)
    motion, audio, t0 = torch.randn(2, 2, 96, 51), torch.randn(2, 2, 96, 80), 50
    with torch.no_grad():
        y1 = m(motion, audio)
        y2 = m(_perturbed(motion, t0), _perturbed(audio, t0))
    assert torch.equal(y1[..., :t0, :], y2[..., :t0, :]) == causal
    assert not torch.allclose(y1[..., t0:, :], y2[..., t0:, :])
    # one input at a time (partner motion only), the partner's role: participant 0 sees motion[1]
    m2 = motion.clone()
    m2[:, 1, t0:] += 1.0
    with torch.no_grad():
        y3 = m(m2, audio)
    assert torch.equal(y1[:, 0, :t0], y3[:, 0, :t0]) == causal
    assert torch.equal(y1[:, 1], y3[:, 1])                  # participant 1 never sees its own motion


@pytest.mark.parametrize("causal", [False, True], ids=["non_causal", "causal"])
def test_dyad_protocol_reads_the_audio_only(causal):
    """`model.partner_motion=false` (the dyad protocol): no weights read motion, whole-dialog predictions do not
    change when every motion value does (the truth never reaches it), they follow the partner's audio, and the
    causal one stays causal; each protocol refuses the other's inputs."""
    b = _bundle(causal, window=40, partner_motion=False)
    assert not any(k.startswith("partner_motion.") for k in b.model.state_dict())
    assert any(k.startswith("partner_motion.") for k in _bundle(causal).model.state_dict())
    rng = np.random.default_rng(2)
    T = 97
    motion, audio = rng.normal(size=(2, T, 51)).astype(np.float32), rng.normal(size=(2, T, 80)).astype(np.float32)
    y = predict_dialog(b, motion, audio, batch_size=4)
    assert y.shape == (2, T, 51) and np.isfinite(y).all()
    assert np.array_equal(predict_dialog(b, rng.normal(size=motion.shape).astype(np.float32), audio), y)
    a2 = audio.copy()
    a2[1] += 1.0                                        # participant 1's voice: participant 0's partner audio
    y2 = predict_dialog(b, motion, a2)
    assert not np.allclose(y2[0], y[0])
    t0 = 60
    a3 = audio.copy()
    a3[:, t0:] -= 2.0
    assert np.array_equal(predict_dialog(b, motion, a3)[:, :t0], y[:, :t0]) == causal
    # the training path (forward over a window of both participants): the motion is only the target's shape
    listener = _bundle(causal).model
    g = torch.Generator().manual_seed(3)
    mo, other, au = (torch.randn(2, 2, 40, d, generator=g) for d in (51, 51, 80))
    with torch.no_grad():
        assert torch.equal(b.model(mo, au), b.model(other, au))
        assert not torch.equal(listener(mo, au), listener(other, au))
    assert [regressor_name(v["causal"], v["partner_motion"]) for v in REGRESSOR_VARIANTS.values()] == \
        list(REGRESSOR_VARIANTS) == ["dualtalk_class", "dualtalk_class_causal", "dualtalk_class_dyad",
                                     "dualtalk_class_causal_dyad"]
    x = torch.zeros(1, 8, 80)
    with pytest.raises(ValueError, match="audio only"):
        b.model.regress(x, x, torch.zeros(1, 8, 51))
    with pytest.raises(ValueError, match="give it"):
        _bundle(causal).model.regress(x, x)


def test_window_starts():
    assert window_starts(30, 40, 20) == [0]
    assert window_starts(40, 40, 20) == [0]
    assert window_starts(100, 40, 20) == [0, 20, 40, 60]
    assert window_starts(105, 40, 20) == [0, 20, 40, 60, 65]


@pytest.mark.parametrize("causal", [False, True], ids=["non_causal", "causal"])
@pytest.mark.parametrize("T", [25, 40, 173])
def test_predict_dialog_length_and_causality(causal, T):
    """Whole dialogs of any length (shorter than, equal to, several windows) come back with exactly T frames;
    with the causal model, perturbing the dialog's inputs from t0 on leaves every earlier frame bit-identical."""
    b = _bundle(causal, window=40)
    rng = np.random.default_rng(0)
    motion, audio = rng.normal(size=(2, T, 51)).astype(np.float32), rng.normal(size=(2, T, 80)).astype(np.float32)
    y = predict_dialog(b, motion, audio, batch_size=3)
    assert y.shape == (2, T, 51) and y.dtype == np.float32 and np.isfinite(y).all()
    t0 = T // 2 + 3
    m2, a2 = motion.copy(), audio.copy()
    m2[:, t0:] += 2.0
    a2[:, t0:] -= 2.0
    y2 = predict_dialog(b, m2, a2, batch_size=3)
    assert np.array_equal(y[:, :t0], y2[:, :t0]) == causal
    # each participant is predicted from the partner's motion, never its own
    m3 = motion.copy()
    m3[0] += 1.0
    assert np.array_equal(predict_dialog(b, m3, audio, batch_size=3)[0], y[0])


def test_windows_agree_with_one_pass_for_short_dialogs():
    """A dialog of one window's length runs as a single forward pass."""
    b = _bundle(False, window=40)
    rng = np.random.default_rng(1)
    motion, audio = rng.normal(size=(2, 40, 51)).astype(np.float32), rng.normal(size=(2, 40, 80)).astype(np.float32)
    with torch.no_grad():
        ref = b.model(torch.from_numpy(motion)[None], torch.from_numpy(audio)[None])[0].numpy()
    np.testing.assert_allclose(predict_dialog(b, motion, audio), ref, rtol=0, atol=1e-5)


def test_trains_through_the_one_loop_and_loads_no_code():
    """No second training loop (common.train.loop.fit does it all), and nothing in baselines/ unpickles."""
    import re
    src = (ROOT / "baselines" / "train.py").read_text()
    assert re.search(r"return fit\(", src)
    assert "accelerator.backward" not in src and "CheckpointManager" not in src and ".step()" not in src
    for path in sorted((ROOT / "baselines").glob("*.py")):
        text = path.read_text()
        assert "torch.load" not in text and "pickle" not in text and "allow_pickle=True" not in text, path


# --- training, export, sampling -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(cache_dir, tmp_path_factory):
    """The four variants trained 30 steps on the test cache: the non-causal one of DualTalk's protocol through the
    command line (`python baselines/train.py`), the others in-process."""
    from baselines.train import train
    runs = {}
    out = tmp_path_factory.mktemp("regressor_cli")
    r = subprocess.run([PY, "baselines/train.py", "--config", str(TINY), f"cache={cache_dir}", f"out_dir={out}",
                        *FAST, "train.max_steps=30", "train.val_every=30", "train.save_every=30"],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "baseline regressor: 30 steps" in r.stdout and "regressor.pt" in r.stdout
    runs["dualtalk_class"] = {"out": out, "artifact": out / "regressor.pt", "result": None}
    out = tmp_path_factory.mktemp("regressor_causal")
    res = train(_cfg(cache_dir, out, "model.causal=true", "train.max_steps=30", "train.val_every=30",
                     "train.save_every=30"))
    runs["dualtalk_class_causal"] = {"out": out, "artifact": Path(res["artifact"]), "result": res}
    for name in ("dualtalk_class_dyad", "dualtalk_class_causal_dyad"):
        out = tmp_path_factory.mktemp(name)
        res = train(_cfg(cache_dir, out, *VARIANTS[name], "train.max_steps=30", "train.val_every=30",
                         "train.save_every=30"))
        runs[name] = {"out": out, "artifact": Path(res["artifact"]), "result": res}
    return runs


def test_training_learns_and_validates(trained):
    res = trained["dualtalk_class_causal"]["result"]
    hist = [l for _, l in res["history"]]
    assert len(hist) == 30 and all(np.isfinite(hist))
    assert np.mean(hist[-5:]) < np.mean(hist[:3])
    v = res["val"]
    assert set(v) >= {"nmse_exp", "nmse_jaw", "mse", "mse_velocity"}
    assert v["nmse_jaw"] < 1.0                       # better than the val mean on the jaw (speech moves it)
    lines = (trained["dualtalk_class_causal"]["out"] / "metrics.jsonl").read_text()
    assert "val/nmse_jaw" in lines and "train/velocity" in lines and "train/jaw" in lines


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_is_self_describing(trained, cache_dir, tmp_path, variant):
    """The exported file loads alone (another folder, a fresh process) and reproduces the predictions."""
    art = trained[variant]["artifact"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(art, alone / "regressor.pt")
    cache = Cache(cache_dir)
    d = cache.dialogs("test")[0]
    a = cache.load(d["id"])
    np.save(tmp_path / "motion.npy", np.asarray(a.motion))
    np.save(tmp_path / "audio.npy", np.asarray(a.audio))
    script = textwrap.dedent(f"""
        import numpy as np
        from baselines.artifact import load_regressor
        from baselines.predict import predict_dialog
        b = load_regressor("regressor.pt")
        assert not b.model.training
        y = predict_dialog(b, np.load({str(tmp_path / 'motion.npy')!r}), np.load({str(tmp_path / 'audio.npy')!r}))
        np.save("pred.npy", y)
        print(b.causal, b.window, b.fps, b.model.cfg.motion_dim, b.model.cfg.audio_dim, b.meta["step"])
    """)
    r = subprocess.run([PY, "-c", script], cwd=alone, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    causal, window, fps, mdim, adim, step = r.stdout.split()
    assert (causal, int(window), float(fps), int(mdim), int(adim), int(step)) == (
        str("_causal" in variant), 60, 30.0, 51, cache.audio_dim, 30)
    b = load_regressor(art)
    ref = predict_dialog(b, a.motion, a.audio)
    np.testing.assert_allclose(np.load(alone / "pred.npy"), ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(b.meta["motion_std"], cache.stats["motion_std"], rtol=1e-6)
    assert b.config["model"]["causal"] == ("_causal" in variant)
    assert b.model.cfg.partner_motion == (not variant.endswith("_dyad"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_predict_split_writes_the_layout(trained, cache_dir, tmp_path, variant):
    out = predict_split(trained[variant]["artifact"], cache_dir, tmp_path / variant, "test", progress=False)
    cache = Cache(cache_dir)
    for d in cache.dialogs("test"):
        a = cache.load(d["id"])
        for p, pid in enumerate(d["participants"]):
            f = out / d["id"] / f"{pid}.npz"
            with np.load(f) as z:
                assert z["motion"].shape == (d["num_frames"], cache.motion_dim)
                assert z["expression_params"].shape == (d["num_frames"], 1, 100)
                np.testing.assert_allclose(z["shape_params"][0, 0, :a.shape.shape[-1]], a.shape[p])
            x = read_prediction(f, cache.layout, pred_fps="auto", target_frames=d["num_frames"])
            assert x.shape == (d["num_frames"], cache.motion_dim) and np.isfinite(x).all()


def test_predict_refuses_another_cache(trained, cache_dir, tmp_path):
    import json
    from common.train.artifact import CheckpointError
    other = tmp_path / "cache"
    shutil.copytree(cache_dir, other)
    man = json.loads((other / "manifest.json").read_text())
    man["audio_features"]["n_mels"] = 1 + int(man["audio_features"].get("n_mels", 80))
    (other / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="audio features"):
        predict_split(trained["dualtalk_class"]["artifact"], other, tmp_path / "p", progress=False)


def _final_state(out):
    from safetensors.torch import load_file
    ck = sorted((Path(out) / "checkpoints").glob("step-*"))[-1]
    return load_file(str(ck / "model.safetensors"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_is_exact(cache_dir, tmp_path, variant):
    """Stopped at step 5 (mid-epoch: 7 batches per epoch here) and rerun: the same losses step for step and the
    same final weights as an uninterrupted run (dropout's RNG included); only the finished run exports."""
    from baselines.train import train
    common = ["train.max_steps=10", "train.save_every=5", *VARIANTS[variant]]
    straight = train(_cfg(cache_dir, tmp_path / "a", *common))
    first = train(_cfg(cache_dir, tmp_path / "b", *common, "stop_after=5"))
    assert first["step"] == 5 and first["artifact"] is None and not (tmp_path / "b" / "regressor.pt").exists()
    second = train(_cfg(cache_dir, tmp_path / "b", *common))
    assert second["step"] == 10 and [s for s, _ in second["history"]] == list(range(6, 11))
    full = dict(straight["history"])
    assert [l for _, l in first["history"]] == [full[s] for s in range(1, 6)]
    assert [l for _, l in second["history"]] == [full[s] for s in range(6, 11)]
    a, b = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "b" / "regressor.pt").is_file()


# --- scripts/baselines.py --------------------------------------------------------------------------------------
def test_baselines_script_with_regressors(trained, cache_dir, tmp_path):
    """`scripts/baselines.py --regressor` (three times, default names) beside a simple baseline, then scored."""
    out = tmp_path / "bases"
    r = subprocess.run([PY, "scripts/baselines.py", "--cache", str(cache_dir), "--out", str(out), "--only", "mean",
                        "--quiet", *[x for v in VARIANTS for x in ("--regressor", str(trained[v]["artifact"]))]],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([*VARIANTS, "mean"])
    cache = Cache(cache_dir)
    from common.eval.scoring import evaluate_method
    for name in VARIANTS:
        files = sorted((out / name).glob("*/*.npz"))
        assert len(files) == 2 * len(cache.dialogs("test"))
        m = evaluate_method(cache, out / name, n_boot=10).metrics
        assert np.isfinite(m["mse_exp"]) and np.isfinite(m["mse_jaw"])
    # named folders; a clash is refused
    r = subprocess.run([PY, "scripts/baselines.py", "--cache", str(cache_dir), "--out", str(out), "--only", "none",
                        "--quiet", "--regressor", str(trained["dualtalk_class"]["artifact"]), "--name", "dt"],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (out / "dt").is_dir(), r.stderr[-3000:]
    r = subprocess.run([PY, "scripts/baselines.py", "--cache", str(cache_dir), "--out", str(out), "--only", "none",
                        "--regressor", str(trained["dualtalk_class"]["artifact"]),
                        "--regressor", str(trained["dualtalk_class"]["artifact"])],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "used twice" in r.stderr


def test_a_regressor_file_older_than_the_protocol_key_reads_the_partner(trained, cache_dir, tmp_path):
    """A file written before `model.partner_motion` existed (RegressorConfig.ADDED_KEYS) loads as what it was
    trained as, the listener protocol, predicts exactly as before and keeps its default folder name."""
    from scripts.baselines import regressor_names
    art = trained["dualtalk_class_causal"]["artifact"]
    payload = torch.load(art, weights_only=True)
    del payload["meta"]["model_config"]["partner_motion"], payload["config"]["model"]["partner_motion"]
    torch.save(payload, tmp_path / "old.pt")
    old, new = load_regressor(tmp_path / "old.pt"), load_regressor(art)
    assert old.model.cfg.partner_motion is True and old.config["model"]["partner_motion"] is True
    a = Cache(cache_dir).load(Cache(cache_dir).dialogs("test")[0]["id"])
    assert np.array_equal(predict_dialog(old, a.motion, a.audio), predict_dialog(new, a.motion, a.audio))
    assert regressor_names([str(tmp_path / "old.pt")], []) == ["dualtalk_class_causal"]
