"""scripts/baselines.py and scripts/evaluate.py end to end on the synthetic cache; named errors for bad files."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.eval.baselines import make_baselines
from common.data.cache import Cache
from common.eval.predictions import PredictionError
from common.eval.scoring import comparison_table, evaluate_method

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def baselines_dir(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    make_baselines(cache_dir, out, progress=False)
    return out


def write_truth(cache: Cache, out: Path, flame_keys=False):
    for d in cache.dialogs("test"):
        a = cache.load(d["id"])
        for i, pid in enumerate(d["participants"]):
            (out / d["id"]).mkdir(parents=True, exist_ok=True)
            m = np.asarray(a.motion[i])
            if flame_keys:
                exp = np.zeros((len(m), 1, 100), np.float32)
                exp[:, 0, :50] = m[:, :50]
                jaw = np.zeros((len(m), 1, 3), np.float32)
                jaw[:, 0, 0] = m[:, 50]
                np.savez(out / d["id"] / f"{pid}.npz", expression_params=exp, jaw_params=jaw)
            else:
                np.save(out / d["id"] / f"{pid}.npy", m)


def test_ground_truth_scores_perfectly_in_both_layouts(cache_dir, tmp_path):
    cache = Cache(cache_dir)
    for flame in (False, True):
        out = tmp_path / f"gt{flame}"
        write_truth(cache, out, flame_keys=flame)
        r = evaluate_method(cache, out, n_boot=50)
        assert r.metrics["mse_exp"] == 0 and r.metrics["mse_jaw"] == 0
        assert abs(r.metrics["fid_exp"]) < 1e-6 and abs(r.metrics["p_fid_jaw"]) < 1e-6
        assert r.metrics["jaw_speech_r"] == pytest.approx(r.metrics["jaw_speech_r_gt"])


def test_copy_sources_name_what_the_copying_baselines_wrote(cache_dir, baselines_dir):
    """common.eval.baselines.copy_sources (what the quality bench's enrollment protocol moves a copy by) names, for
    every test participant, the motion mirror and random_other wrote: the partner's, and another dialog's same slot."""
    from common.eval.baselines import copy_sources
    cache = Cache(cache_dir)
    srcs = copy_sources(cache, "test", seed=0)
    assert set(srcs) == {"mirror", "random_other"}
    n = 0
    for d in cache.dialogs("test"):
        for i, pid in enumerate(d["participants"]):
            for name in ("mirror", "random_other"):
                sd, slot = srcs[name][(d["id"], pid)]
                src = np.asarray(cache.load(sd).motion[slot])
                got = np.load(baselines_dir / name / d["id"] / f"{pid}.npz")["motion"]
                k = min(len(got), len(src))
                np.testing.assert_array_equal(got[:k], src[:k])
                assert (sd, slot) == (d["id"], 1 - i) if name == "mirror" else sd != d["id"]
                n += 1
    assert n == 2 * 2 * len(cache.dialogs("test"))
    assert copy_sources(cache, "test", seed=0) == srcs          # seeded


def test_baselines_and_compare(cache_dir, baselines_dir, tmp_path):
    assert sorted(p.name for p in baselines_dir.iterdir()) == ["mean", "mirror", "nn_audio", "random_other"]
    cache = Cache(cache_dir)
    d = cache.dialogs("test")[0]
    a = cache.load(d["id"])
    mirror = np.load(baselines_dir / "mirror" / d["id"] / f"{d['participants'][0]}.npz")["motion"]
    np.testing.assert_array_equal(mirror, a.motion[1])
    mean = np.load(baselines_dir / "mean" / d["id"] / f"{d['participants'][1]}.npz")["motion"]
    np.testing.assert_allclose(mean[7], cache.stats["motion_mean"], rtol=1e-6)
    r = subprocess.run([sys.executable, "scripts/evaluate.py", "--cache", str(cache_dir), "--boot", "100",
                        "--compare", *[f"{n}={baselines_dir / n}" for n in ("mean", "mirror", "nn_audio")],
                        "--out", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "t.md"),
                        "--plots", str(tmp_path / "plots")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["methods"]) == {"mean", "mirror", "nn_audio"}
    m = report["methods"]
    # retrieval by audio moves the jaw with speech; the constant mean does not
    assert m["nn_audio"]["metrics"]["jaw_speech_r"] > m["mean"]["metrics"]["jaw_speech_r"] + 0.2
    table = (tmp_path / "t.md").read_text()
    assert all(f"| {n} |" in table for n in ("mean", "mirror", "nn_audio")) and "p_fid_exp" in table
    assert (tmp_path / "plots" / "metrics.png").stat().st_size > 10000
    assert list((tmp_path / "plots").glob("timeline_*.png"))


def test_missing_and_malformed_predictions_are_named(cache_dir, baselines_dir, tmp_path):
    cache = Cache(cache_dir)
    pred = tmp_path / "p"
    shutil.copytree(baselines_dir / "mean", pred)
    d = cache.dialogs("test")[0]
    p0, p1 = d["participants"]
    (pred / d["id"] / f"{p0}.npz").unlink()
    with pytest.raises(PredictionError, match=f"{d['id']}/{p0}"):
        evaluate_method(cache, pred, n_boot=10)
    r = evaluate_method(cache, pred, n_boot=10, allow_missing=True)
    assert r.missing == [f"{d['id']}/{p0}"]
    np.save(pred / d["id"] / f"{p0}.npy", np.zeros((100, 56), np.float32))
    with pytest.raises(PredictionError, match=r"shape \(100, 56\), expected \(T, 51\)"):
        evaluate_method(cache, pred, n_boot=10)
    (pred / d["id"] / f"{p0}.npy").unlink()
    (pred / d["id"] / f"{p1}.npz").write_bytes(b"not an npz")
    out = subprocess.run([sys.executable, "scripts/evaluate.py", "--cache", str(cache_dir), "--pred-dir", str(pred)],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and f"{p1}.npz" in out.stderr and "Traceback" not in out.stderr


def test_markdown_marks_best(cache_dir, baselines_dir):
    cache = Cache(cache_dir)
    rs = [evaluate_method(cache, baselines_dir / n, n_boot=20) for n in ("mean", "random_other")]
    t = comparison_table(rs)
    assert t.count("**") >= 2 and "[" in t
