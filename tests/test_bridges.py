"""Baseline bridges: export ground truth in each baseline's layout, read it back through the evaluator as if it
were a prediction, and get a perfect score (up to the documented 30 -> 25 -> 30 fps resampling error)."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.eval import external as L
from common.eval.bridges import ExportError, export
from common.data.cache import Cache
from common.eval.predictions import PredictionError, read_prediction
from common.eval.scoring import evaluate_method

ROOT = Path(__file__).resolve().parent.parent
SPLITS = "train,val,test"


@pytest.fixture(scope="module")
def exports(cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {fmt: (root / fmt, export(cache_dir, fmt, root / fmt, SPLITS)) for fmt in ("dualtalk", "dim", "manifest")}


def corpus_flame(data_cfg, dialog, pid):
    from common.data.corpus import load_index
    rec = load_index(data_cfg)[dialog][pid]
    with np.load(Path(data_cfg.data_root) / rec["flame_coeff_save_path"]) as z:
        return z["jaw_params"][:, 0, :3], z["pose_params"][:, 0, :3]


# --- the resampler -----------------------------------------------------------------------------------------
def test_resampler_is_exact_on_affine_motion_and_its_round_trip_error_is_as_documented():
    rng = np.random.default_rng(0)
    for T in (1, 2, 7, 300, 356, 357, 361):
        t = np.arange(T, dtype=np.float64)[:, None]
        x = 0.3 - 0.02 * t * np.array([[1.0, -2.0, 0.5]])
        for src, dst in ((30, 25), (25, 30), (30, 30)):
            y = L.resample_motion(x, src, dst)
            assert len(y) == L.resampled_length(T, src, dst)
            if T > 1:
                np.testing.assert_allclose(y, 0.3 - 0.02 * (np.arange(len(y)) * src / dst)[:, None] * [1.0, -2.0, 0.5],
                                           atol=1e-12)
        np.testing.assert_array_equal(L.resample_motion(x, 30, 30), x)
    # one frame of 30 -> 25: frame j sits at source position 1.2 j
    x = np.arange(12, dtype=np.float64)[:, None] ** 2
    y = L.resample_motion(x, 30, 25)
    assert len(y) == 10 and y[1, 0] == pytest.approx(0.8 * 1 + 0.2 * 4) and y[5, 0] == 36.0
    with pytest.raises(L.ResampleError, match="extrapolation"):
        L.resample_motion(x, 25, 30, num_frames=20)
    # round trip: error = G @ d2 exactly, within the per-frame bound, g = (0, 1/6, 4/15, 3/10, 4/15, 1/6) * d2
    x = rng.normal(size=(361, 4)).cumsum(0)
    err = L.roundtrip(x, 30, 25) - x
    d2 = np.zeros_like(x)
    d2[1:-1] = x[2:] - 2 * x[1:-1] + x[:-2]
    np.testing.assert_allclose(err, L.roundtrip_kernel(len(x), 30, 25) @ d2, atol=1e-9)
    assert (np.abs(err) <= L.roundtrip_error_bound(x, 30, 25) + 1e-9).all()
    g = np.array([0, 1 / 6, 4 / 15, 3 / 10, 4 / 15, 1 / 6])
    np.testing.assert_allclose(err[:-1], (g[np.arange(360) % 6][:, None] * d2[:-1]), atol=1e-9)
    assert L.roundtrip_constant() == pytest.approx(0.3)


# --- exports -------------------------------------------------------------------------------------------------
def test_exported_splits_equal_the_caches(cache_dir, exports):
    cache = Cache(cache_dir)
    for fmt, (out, m) in exports.items():
        assert json.loads((out / "export.json").read_text())["format"] == fmt
        for split in SPLITS.split(","):
            want = {d["id"]: d for d in cache.dialogs(split)}
            entries = m["splits"][split]
            assert {e["dialog"] for e in entries} == set(want), (fmt, split)
            assert len(entries) == 2 * len(want)
            for e in entries:
                d = want[e["dialog"]]
                assert e["participant"] in d["participants"] and e["partner"] in d["participants"]
                assert (out / e["npz"]).is_file() and (out / e["wav"]).is_file()
        assert m["corpus"]["reachable"] and m["corpus"]["notes"] == []


def test_wavs_are_16k_mono_with_the_right_duration(cache_dir, exports):
    cache = Cache(cache_dir)
    for fmt, (out, m) in exports.items():
        for es in m["splits"].values():
            for e in es:
                info = sf.info(str(out / e["wav"]))
                T = cache.dialog(e["dialog"])["num_frames"]
                assert (info.samplerate, info.channels) == (16000, 1)
                assert info.frames == round(T / 30 * 16000) == e["samples"]
                assert abs(info.duration - T / 30) < 1 / 16000


def test_dualtalk_files_follow_its_layout(cache_dir, data_cfg, exports):
    out, m = exports["dualtalk"]
    cache = Cache(cache_dir)
    d = cache.dialogs("test")[0]
    a = cache.load(d["id"])
    for i, pid in enumerate(d["participants"]):
        with np.load(out / "test" / f"{d['id']}_speaker{i + 1}.npz") as z:
            assert sorted(z.files) == ["exp", "pose"]
            exp, pose = z["exp"], z["pose"]
        T25 = round(d["num_frames"] * 25 / 30)
        assert exp.shape == (T25, 50) and pose.shape == (T25, 6) and exp.dtype == np.float32
        jaw, neck = corpus_flame(data_cfg, d["id"], pid)
        T = d["num_frames"]
        np.testing.assert_allclose(exp, L.resample_motion(np.asarray(a.motion[i][:, :50]), 30, 25), atol=1e-6)
        np.testing.assert_allclose(pose[:, 3:], L.resample_motion(jaw[:T], 30, 25), atol=1e-6)   # jaw after neck
        np.testing.assert_allclose(pose[:, :3], L.resample_motion(neck[:T], 30, 25), atol=1e-6)
        assert np.abs(pose[:, 4:]).max() > 0 and np.abs(pose[:, :3]).max() > 0   # full jaw and neck, not zeros
    assert m["fps"] == 25.0 and m["source_fps"] == 30.0


def test_dim_pairs_and_manifest_csv(cache_dir, data_cfg, exports):
    cache = Cache(cache_dir)
    out, m = exports["dim"]
    for split in SPLITS.split(","):
        pairs = m["pairs"][split]
        assert len(pairs) == 2 * len(cache.dialogs(split))
        for d in cache.dialogs(split):
            p, q = d["participants"]
            assert {(x["speaker"], x["listener"]) for x in pairs if x["dialog"] == d["id"]} == {(p, q), (q, p)}
    d = cache.dialogs("test")[0]
    a = cache.load(d["id"])
    for i, pid in enumerate(d["participants"]):
        with np.load(out / "test" / d["id"] / f"{pid}.npz") as z:
            motion, pose_exp = z["motion"], z["pose_exp"]
        jaw, neck = corpus_flame(data_cfg, d["id"], pid)
        T = d["num_frames"]
        assert motion.shape == (T, 54) and pose_exp.shape == (T, 56)
        np.testing.assert_array_equal(motion[:, :51], a.motion[i])
        np.testing.assert_array_equal(motion[:, 51:], neck[:T])
        np.testing.assert_array_equal(pose_exp[:, :3], neck[:T])
        np.testing.assert_array_equal(pose_exp[:, 3:6], jaw[:T])
        np.testing.assert_array_equal(pose_exp[:, 6:], a.motion[i][:, :50])
    out, m = exports["manifest"]
    with open(out / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    entries = [e for es in m["splits"].values() for e in es]
    assert [(r["split"], r["dialog"], r["participant"], int(r["frames"]), float(r["fps"]), r["npz"], r["wav"])
            for r in rows] == [(e["split"], e["dialog"], e["participant"], e["frames"], 30.0, e["npz"], e["wav"])
                               for e in entries]


# --- round trips through the evaluator ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt,layout", [("dim", "dim"), ("manifest", "ours")])
def test_30fps_exports_score_perfectly(cache_dir, exports, fmt, layout):
    cache = Cache(cache_dir)
    out, _ = exports[fmt]
    r = evaluate_method(cache, out / "test", n_boot=10, layout="auto", pred_fps="auto")
    assert (r.layout, r.pred_fps) == (layout, 30.0) and r.n_sequences == 2 * len(cache.dialogs("test"))
    assert r.metrics["mse_exp"] == 0 and r.metrics["mse_jaw"] == 0
    assert abs(r.metrics["fid_exp"]) < 1e-6 and abs(r.metrics["p_fid_jaw"]) < 1e-6
    for d in cache.dialogs("train"):             # the other splits read back exactly too (without the metrics)
        a = cache.load(d["id"])
        for i, pid in enumerate(d["participants"]):
            x = read_prediction(out / "train" / d["id"] / f"{pid}.npz", 51, layout="auto", pred_fps="auto",
                                target_frames=d["num_frames"])
            np.testing.assert_array_equal(x, a.motion[i])


def roundtrip_mse_bound(cache, split):
    """The documented bound (common.eval.external.roundtrip_error_bound) on what evaluate reports as mse_exp / mse_jaw."""
    be, bj = [], []
    for d in cache.dialogs(split):
        a = cache.load(d["id"])
        for i in range(2):
            b = L.roundtrip_error_bound(np.asarray(a.motion[i], np.float64), 30, 25)
            be.append(np.mean(b[:, :50] ** 2))
            bj.append(np.mean(b[:, 50:51] ** 2))
    return float(np.mean(be)), float(np.mean(bj))


def test_dualtalk_export_scores_within_the_resampling_bound(cache_dir, exports, tmp_path):
    cache = Cache(cache_dir)
    out, _ = exports["dualtalk"]
    bound_exp, bound_jaw = roundtrip_mse_bound(cache, "test")
    # 1) the exported npz (exp + pose keys) read back as a prediction
    r = evaluate_method(cache, out / "test", n_boot=10, layout="auto", pred_fps="auto")
    assert (r.layout, r.pred_fps) == ("dualtalk-npz", 25.0)
    # the bound is attained (the round trip's error is exactly g * d2); float32 storage adds ~1e-7 relative
    assert 0 < r.metrics["mse_exp"] <= bound_exp * (1 + 1e-4) + 1e-12
    assert 0 < r.metrics["mse_jaw"] <= bound_jaw * (1 + 1e-4) + 1e-12
    gt_var = np.mean([np.asarray(cache.load(d["id"]).motion[i][:, :50]).var(0).sum()
                      for d in cache.dialogs("test") for i in range(2)])
    assert 0 <= r.metrics["fid_exp"] < 0.01 * gt_var
    # 2) the way DualTalk's test.py writes predictions: flat <dialog>_speakerN.npy, (T25, 56) = exp, jaw, neck
    pred = tmp_path / "result_DualTalk"
    pred.mkdir()
    for f in (out / "test").glob("*.npz"):
        with np.load(f) as z:
            np.save(pred / f"{f.stem}.npy", np.concatenate([z["exp"], z["pose"][:, 3:], z["pose"][:, :3]], 1))
    res = subprocess.run([sys.executable, "scripts/evaluate.py", "--cache", str(cache_dir), "--pred-dir", str(pred),
                          "--boot", "10", "--out", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "read 2 as dualtalk@25fps, mapped onto the ground truth's 30 fps" in res.stdout
    m = json.loads((tmp_path / "r.json").read_text())["methods"]["result_DualTalk"]
    assert (m["layout"], m["pred_fps"], m["read_as"]) == ("dualtalk", 25.0, {"dualtalk@25fps": 2})
    assert m["metrics"]["mse_exp"] == pytest.approx(r.metrics["mse_exp"], rel=1e-9)


# --- named errors ---------------------------------------------------------------------------------------------
def test_wrong_layouts_and_frame_counts_are_named(cache_dir, tmp_path):
    cache = Cache(cache_dir)
    d = cache.dialogs("test")[0]
    T = d["num_frames"]
    p0, p1 = d["participants"]
    pred = tmp_path / "p"
    (pred / d["id"]).mkdir(parents=True)
    f0, f1 = pred / d["id"] / f"{p0}.npy", pred / d["id"] / f"{p1}.npy"
    np.save(f1, np.zeros((T, 51), np.float32))

    np.save(f0, np.zeros((T, 56), np.float32))           # DualTalk's width declared as ours
    with pytest.raises(PredictionError, match=rf"{p0}.npy: motion has shape \({T}, 56\), expected \(T, 51\) for "
                                              r"layout 'ours'; width 56 is the dualtalk / dim56 layout"):
        evaluate_method(cache, pred, n_boot=5, layout="ours", pred_fps="auto")
    _, info = read_prediction(f0, 51, layout="auto", pred_fps="auto", target_frames=T, return_info=True)
    assert (info.layout, info.width, info.fps) == ("dualtalk", 56, 30.0)       # the same file, auto
    with pytest.raises(PredictionError, match=r"expected \(T, 54\) for layout 'dim'"):
        read_prediction(f0, 51, layout="dim")
    np.save(f0, np.zeros((T, 53), np.float32))
    with pytest.raises(PredictionError, match=rf"{p0}.npy: .*width 53 matches no known layout"):
        evaluate_method(cache, pred, n_boot=5, layout="auto", pred_fps="auto")

    np.save(f0, np.zeros((T - 30, 51), np.float32))      # 1 s short: neither 30 fps (T) nor 25 fps (T * 5 / 6)
    with pytest.raises(PredictionError, match=rf"{p0}.npy: frame count {T - 30} fits neither rate"):
        evaluate_method(cache, pred, n_boot=5, layout="auto", pred_fps="auto")
    np.save(f0, np.zeros((T, 51), np.float32))
    with pytest.raises(PredictionError, match=rf"{p0}.npy: frame count {T} does not fit the declared 25 fps"):
        read_prediction(f0, 51, pred_fps=25, target_frames=T)
    x, info = read_prediction(f0, 51, pred_fps="auto", target_frames=T, return_info=True)
    assert (info.layout, info.fps, info.frames_out) == ("ours", 30.0, T)

    np.save(f0, np.zeros((T, 56), np.float32))
    res = subprocess.run([sys.executable, "scripts/evaluate.py", "--cache", str(cache_dir), "--pred-dir", str(pred),
                          "--layout", "ours"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and f"{p0}.npy" in res.stderr and "layout 'ours'" in res.stderr
    assert "Traceback" not in res.stderr


def test_export_without_the_corpus_fills_zeros_and_says_so(cache_dir, exports, tmp_path):
    cache_copy = tmp_path / "cache"
    shutil.copytree(cache_dir, cache_copy)
    man = json.loads((cache_copy / "manifest.json").read_text())
    man["data_config"]["data_root"] = str(tmp_path / "gone")
    (cache_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ExportError, match="corpus unreachable"):
        export(cache_copy, "dualtalk", tmp_path / "strict", "test", strict=True)
    m = export(cache_copy, "dualtalk", tmp_path / "dt", "test")
    assert not m["corpus"]["reachable"] and "jaw[1:3] and neck filled with zeros" in m["corpus"]["notes"][0]
    for e in m["splits"]["test"]:
        assert e["wav"] is None and not (tmp_path / "dt" / "test" / f"{e['name']}.wav").exists()
        with np.load(tmp_path / "dt" / e["npz"]) as z:
            assert np.abs(z["pose"][:, :3]).max() == 0 and np.abs(z["pose"][:, 4:]).max() == 0
            assert np.abs(z["pose"][:, 3]).max() > 0      # jaw opening from the cache
    # one format per folder
    with pytest.raises(ExportError, match="holds a 'dualtalk' export"):
        export(cache_copy, "dim", tmp_path / "dt", "test")
    # the CLI
    res = subprocess.run([sys.executable, "scripts/export_baseline_data.py", "--cache", str(cache_copy), "--format",
                          "manifest", "--split", "test", "--out", str(tmp_path / "mf"), "--quiet"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "corpus unreachable" in res.stdout and (tmp_path / "mf" / "manifest.csv").is_file()
    res = subprocess.run([sys.executable, "scripts/export_baseline_data.py", "--cache", str(cache_copy), "--format",
                          "dim", "--split", "nope", "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 2 and "unknown split" in res.stderr and "Traceback" not in res.stderr
