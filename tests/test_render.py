"""Rendering: the restricted FLAME loader, the FLAME forward pass, mesh rasterisation and the MP4 videos.

The FLAME model is licensed and not shipped, so every test builds a tiny FLAME-*format* model (a few hundred
vertices, real key names and shapes) with common.viz.flame.synthetic_flame_arrays and writes it as a plain-numpy
pickle and as an .npz.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from common.viz.flame import (FLAME_URL, REQUIRED_KEYS, FlameModel, FlameModelError, load_flame_model, rodrigues,
                          synthetic_flame_arrays)

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flame_arrays():
    return synthetic_flame_arrays(n_lat=16, n_lon=24, seed=0)       # 338 vertices, 672 faces


@pytest.fixture(scope="module")
def flame_files(flame_arrays, tmp_path_factory):
    d = tmp_path_factory.mktemp("flame")
    pkl, npz = d / "generic_model.pkl", d / "flame.npz"
    with open(pkl, "wb") as f:
        pickle.dump(dict(flame_arrays, bs_style="lbs", bs_type="lrotmin"), f, protocol=2)
    np.savez(npz, **flame_arrays)
    return pkl, npz


@pytest.fixture(scope="module")
def render_setup(small_corpus_root, tmp_path_factory):
    """A cache of the small corpus and a prediction folder (ground truth + noise) for its first dialog."""
    from common.data.cache import Cache
    from common.data.config import DataConfig
    from common.data.preprocess import preprocess
    cache_dir = tmp_path_factory.mktemp("render_cache")
    preprocess(DataConfig(data_root=str(small_corpus_root), index="dataset_jsons/synthetic.json"), cache_dir,
               workers=1, progress=False)
    cache = Cache(cache_dir)
    entry = cache.manifest["dialogs"][0]
    arrays = cache.load(entry["id"], mmap=False)
    pred = tmp_path_factory.mktemp("pred") / entry["id"]
    pred.mkdir()
    rng = np.random.default_rng(0)
    for p, pid in enumerate(entry["participants"]):
        motion = arrays.motion[p] + 0.1 * rng.normal(size=arrays.motion[p].shape).astype(np.float32)
        T = len(motion)
        exp = np.zeros((T, 1, 100), np.float32)
        exp[:, 0, :50] = motion[:, :50]
        jaw = np.zeros((T, 1, 3), np.float32)
        jaw[:, 0, 0] = motion[:, 50]
        shape = np.zeros((1, 1, 300), np.float32)
        shape[0, 0, :100] = arrays.shape[p]
        np.savez(pred / f"{pid}.npz", motion=motion, expression_params=exp, jaw_params=jaw,
                 pose_params=np.zeros((T, 1, 3), np.float32), shape_params=shape,
                 pred_states=arrays.states[p].astype(np.int8))
    return cache_dir, pred, entry


def probe(path: Path) -> tuple[int, float | None, str]:
    """(video frames, audio seconds or None, `ffmpeg -i` report) with imageio-ffmpeg's bundled ffmpeg."""
    import imageio_ffmpeg
    ff = imageio_ffmpeg.get_ffmpeg_exe()
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    info = subprocess.run([ff, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    audio_s = None
    if "Audio:" in info:
        raw = subprocess.run([ff, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1",
                              "-ar", "48000", "-"], capture_output=True, check=True).stdout
        audio_s = len(raw) / 2 / 48000
    return frames, audio_s, info


# --------------------------------------------------------------------------------------------------------------
# loader
# --------------------------------------------------------------------------------------------------------------
def test_pkl_and_npz_load_the_same_model(flame_files, flame_arrays):
    pkl, npz = flame_files
    a, b = load_flame_model(pkl), load_flame_model(npz)
    assert a.num_vertices == b.num_vertices == len(flame_arrays["v_template"])
    assert a.num_joints == 5 and a.num_expression == 100
    np.testing.assert_array_equal(a.faces, b.faces)
    rng = np.random.default_rng(1)
    args = (rng.normal(size=100), rng.normal(size=(4, 50)), rng.normal(size=(4, 3)) * 0.2)
    np.testing.assert_allclose(a.vertices(*args), b.vertices(*args), atol=1e-6)
    newest = pkl.with_name("highest_protocol.pkl")                  # protocol 5: numpy's _frombuffer path
    newest.write_bytes(pickle.dumps(flame_arrays, protocol=pickle.HIGHEST_PROTOCOL))
    np.testing.assert_allclose(load_flame_model(newest).vertices(*args), a.vertices(*args), atol=1e-6)


def _chumpy_pickle(arrays: dict, protocol: int, monkeypatch) -> bytes:
    """A pickle shaped like FLAME 2020's generic_model.pkl: chumpy Ch objects and a scipy csc J_regressor."""
    import scipy.sparse as sp

    class Ch:                                # what chumpy.ch.Ch pickles as: its __dict__ minus caches
        def __init__(self, x):
            self.x = x
            self._dirty_vars = {"x"}
            self._itr = None
            self._depends_on_deps = {}

        def __getstate__(self):
            return dict(self.__dict__)
    class Select:                            # chumpy.reordering.Select: a.ravel()[idxs].reshape(preferred_shape)
        def __init__(self, a, idxs, preferred_shape):
            self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape

        def __getstate__(self):
            return dict(self.__dict__)
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    pkg, mod, reo = (types.ModuleType(n) for n in ("chumpy", "chumpy.ch", "chumpy.reordering"))
    mod.Ch, reo.Select, pkg.ch, pkg.reordering = Ch, Select, mod, reo
    for name, m in (("chumpy", pkg), ("chumpy.ch", mod), ("chumpy.reordering", reo)):
        monkeypatch.setitem(sys.modules, name, m)
    pd = arrays["posedirs"]
    data = dict(arrays, shapedirs=Ch(arrays["shapedirs"]), v_template=Ch(arrays["v_template"]),
                posedirs=Select(Ch(pd.ravel()[::-1].copy()), np.arange(pd.size)[::-1].copy(), pd.shape),
                J_regressor=sp.csc_matrix(arrays["J_regressor"]))
    blob = pickle.dumps(data, protocol=protocol)
    for name in ("chumpy", "chumpy.ch", "chumpy.reordering"):
        monkeypatch.delitem(sys.modules, name)
    return blob


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_and_sparse_pickles_load_without_chumpy(flame_arrays, protocol, tmp_path, monkeypatch):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(_chumpy_pickle(flame_arrays, protocol, monkeypatch))
    assert "chumpy" not in sys.modules
    m = load_flame_model(path)
    assert "chumpy" not in sys.modules                                   # stand-ins, nothing imported
    np.testing.assert_allclose(m.shapedirs, flame_arrays["shapedirs"])
    np.testing.assert_allclose(m.J_regressor, flame_arrays["J_regressor"])
    np.testing.assert_allclose(m.v_template, flame_arrays["v_template"])
    np.testing.assert_allclose(m.posedirs.reshape(flame_arrays["posedirs"].shape), flame_arrays["posedirs"])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Eval:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


class _RawNdarray:
    def __reduce__(self):
        return np.ndarray, ((2,), "f8", b"\0" * 16)


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "numpy.load", "numpy.ndarray", "in a list"])
def test_pickle_carrying_code_is_refused(flame_arrays, payload, tmp_path):
    marker = tmp_path / "pwned"
    data = dict(flame_arrays)
    if payload == "os.system":
        data["weights"] = _Evil(marker)
    elif payload == "builtins.eval":
        data = {"x": _Eval()}
    elif payload == "numpy.load":
        data["f"] = _NpLoad(str(tmp_path / "x.npy"))
        np.save(tmp_path / "x.npy", np.zeros(3))
    elif payload == "numpy.ndarray":
        data["v_template"] = _RawNdarray()
    else:
        data = {"shapedirs": [_Evil(marker)]}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(FlameModelError, match="refus.*arrays only"):
        load_flame_model(path)
    assert not marker.exists()


class _NpLoad:
    def __init__(self, p):
        self.p = p

    def __reduce__(self):
        return np.load, (self.p,)


def test_not_a_model_and_missing_file(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, v_template=np.zeros((3, 3)))
    with pytest.raises(FlameModelError, match="missing keys"):
        load_flame_model(p)
    with pytest.raises(FlameModelError, match="flame.is.tue.mpg.de"):
        load_flame_model(tmp_path / "nope.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(FlameModelError, match="cannot unpickle"):
        load_flame_model(tmp_path / "junk.pkl")


# --------------------------------------------------------------------------------------------------------------
# forward pass
# --------------------------------------------------------------------------------------------------------------
def _reference_vertices(m: FlameModel, shape, exp, jaw, neck):
    """Frame-by-frame textbook LBS (one joint at a time), to check the vectorised forward."""
    out = []
    for t in range(len(exp)):
        beta = np.zeros(m.shapedirs.shape[2])
        beta[:len(shape)] = shape
        beta[300:300 + exp.shape[1]] = exp[t]
        v = m.v_template + m.shapedirs @ beta
        J = m.J_regressor @ v
        aa = np.zeros((5, 3))
        aa[1], aa[2] = neck[t], jaw[t]
        R = [rodrigues(a) for a in aa]
        feat = np.concatenate([(R[k] - np.eye(3)).ravel() for k in range(1, 5)])
        v = v + (m.posedirs @ feat).reshape(-1, 3)
        G = []
        for k in range(5):
            local = np.eye(4)
            local[:3, :3] = R[k]
            local[:3, 3] = J[k] - (J[m.parents[k]] if k else 0)
            G.append(local if k == 0 else G[m.parents[k]] @ local)
        verts = np.zeros_like(v)
        for k in range(5):
            A = G[k].copy()
            A[:3, 3] -= A[:3, :3] @ J[k]
            verts += m.weights[:, k:k + 1] * (v @ A[:3, :3].T + A[:3, 3])
        out.append(verts)
    return np.stack(out)


def test_forward_matches_reference_lbs(flame_arrays):
    m = FlameModel(*(flame_arrays[k] for k in REQUIRED_KEYS))
    rng = np.random.default_rng(2)
    shape, exp = rng.normal(size=100), rng.normal(size=(3, 50))
    jaw, neck = rng.normal(size=(3, 3)) * 0.3, rng.normal(size=(3, 3)) * 0.2
    np.testing.assert_allclose(m.vertices(shape, exp, jaw, neck), _reference_vertices(m, shape, exp, jaw, neck),
                               atol=1e-5)
    np.testing.assert_allclose(m.vertices(np.zeros(0), np.zeros((1, 0)), None)[0], m.v_template, atol=1e-6)
    R = rodrigues(rng.normal(size=(10, 3)))
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)


def test_jaw_opening_changes_mouth_pixels(flame_arrays):
    from common.viz.render import MeshRenderer
    m = FlameModel(*(flame_arrays[k] for k in REQUIRED_KEYS))
    jaw = np.zeros((2, 3))
    jaw[1, 0] = 0.35                                            # FLAME: +x rotation opens the mouth
    verts = m.vertices(np.zeros(100), np.zeros((2, 50)), jaw)
    r = MeshRenderer(m.faces, m.neutral(), size=128)
    closed, opened = (r.render(v).astype(int) for v in verts)
    assert closed.shape == (128, 128, 3)
    changed = np.abs(closed - opened).sum(-1) > 30
    mouth, forehead = changed[80:128, 32:96], changed[0:40, 32:96]   # lower middle vs upper middle of the face
    assert mouth.mean() > 0.05, mouth.mean()
    assert forehead.mean() < 0.01, forehead.mean()
    bg = np.asarray(r.background * 255).round().astype(int)
    assert (np.abs(closed[2, 2] - bg) <= 1).all() and not (np.abs(closed[64, 64] - bg) <= 1).all()


# --------------------------------------------------------------------------------------------------------------
# videos
# --------------------------------------------------------------------------------------------------------------
def test_mesh_video_has_frames_and_audio(render_setup, flame_files, tmp_path):
    from common.viz.render import render_dialog
    cache_dir, pred, _ = render_setup
    out = tmp_path / "mesh.mp4"
    res = render_dialog(pred, out, cache=cache_dir, flame_model=flame_files[0], seconds=2, progress=False)
    assert res.mode == "mesh" and res.frames == 60 and res.has_audio
    frames, audio_s, info = probe(out)
    assert frames == 60
    assert audio_s == pytest.approx(2.0, abs=0.05), info
    assert "Video: h264" in info and "30 fps" in info
    assert not list(tmp_path.glob(".*tmp*"))                     # the temp file was renamed, nothing left


def test_coefficient_video_without_model(render_setup, tmp_path, caplog):
    from common.viz.render import render_dialog
    cache_dir, pred, entry = render_setup
    out = tmp_path / "coef.mp4"
    with caplog.at_level(logging.WARNING):
        res = render_dialog(pred, out, cache=cache_dir, flame_model=None, progress=False)
    assert FLAME_URL in caplog.text
    assert res.mode == "coefficients" and res.frames == entry["num_frames"]
    frames, audio_s, _ = probe(out)
    assert frames == entry["num_frames"]
    assert audio_s == pytest.approx(entry["num_frames"] / 30, abs=0.05)


def _load_cli():
    spec = importlib.util.spec_from_file_location("render_cli", ROOT / "scripts" / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_with_wavs_listener_folder_and_errors(render_setup, flame_files, small_corpus_root, tmp_path, capsys):
    import shutil
    from common.data.corpus import load_index
    from common.data.config import DataConfig
    cli = _load_cli()
    cache_dir, pred, entry = render_setup
    did, (a, b) = entry["id"], entry["participants"]
    index = load_index(DataConfig(data_root=str(small_corpus_root), index="dataset_jsons/synthetic.json"))
    wavs = [str(small_corpus_root / index[did][p]["audio_path"]) for p in (a, b)]
    out = tmp_path / "wav.mp4"
    # WAVs and no cache: states from the files' pred_states, npz model
    assert cli.main(["--pred", str(pred), "--flame-model", str(flame_files[1]), "--audio-a", wavs[0],
                     "--audio-b", wavs[1], "--seconds", "1", "--out", str(out), "--quiet"]) == 0
    frames, audio_s, _ = probe(out)
    assert frames == 30 and audio_s == pytest.approx(1.0, abs=0.05)
    # listener-mode folder (one participant generated): the other is its ground truth from the cache
    solo = tmp_path / "solo" / did
    solo.mkdir(parents=True)
    shutil.copy(pred / f"{a}.npz", solo / f"{a}.npz")
    assert cli.main(["--pred", str(solo), "--gt", str(cache_dir), "--seconds", "0.5", "--out",
                     str(tmp_path / "solo.mp4"), "--quiet"]) == 0
    assert probe(tmp_path / "solo.mp4")[0] == 15
    # errors are one clear line, exit code 2, and no video
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"f": _Evil(tmp_path / "pwned")}))
    assert cli.main(["--pred", str(pred), "--flame-model", str(evil), "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert cli.main(["--pred", str(tmp_path / "missing"), "--out", str(tmp_path / "y.mp4"), "--quiet"]) == 2
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "y.mp4").exists()
