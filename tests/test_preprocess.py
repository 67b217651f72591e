"""Preprocessing: manifest, 30 fps alignment, train-only statistics, --skip-bad, resume, shards, CLI errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import common.data.preprocess as pre
from common.data.cache import Cache
from common.data.config import AudioConfig, DataConfig
from common.data.corpus import load_index
from common.data.datasets import DialogSequences, MotionWindows

ROOT = Path(__file__).resolve().parent.parent


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a cache except per-shard bookkeeping, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "shards" not in p.parts}


def test_manifest_alignment_and_stats(cache_dir, data_cfg):
    cache = Cache(cache_dir)
    m = cache.manifest
    assert m["fps"] == 30 and m["motion_dim"] == 51 and m["skipped"] == []
    assert m["audio_features"]["kind"] == "logmel" and m["audio_features"]["dim"] == 80
    assert len(m["dialogs"]) == 8
    assert {d["split"] for d in m["dialogs"]} == {"train", "val", "test"}
    for d in m["dialogs"]:
        a = cache.load(d["id"])
        T = d["num_frames"]
        assert a.motion.shape == (2, T, 51) and a.audio.shape == (2, T, 80) and a.states.shape == (2, T)
        assert a.shape.shape == (2, 100)
        assert np.isfinite(a.audio).all()
        assert set(np.unique(a.states)) <= {0, 1, 2, 3}
        # partners' states are complementary (listen <-> speak)
        s0, s1 = np.asarray(a.states[0]), np.asarray(a.states[1])
        assert np.all((s0 == 1) == (s1 == 2)) and np.all((s0 == 3) == (s1 == 3))
    # statistics come from the train split only
    train = [cache.load(d["id"]).motion for d in cache.dialogs("train")]
    x = np.concatenate([np.asarray(t).reshape(-1, 51) for t in train]).astype(np.float64)
    np.testing.assert_allclose(cache.stats["motion_mean"], x.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cache.stats["motion_std"], np.maximum(x.std(0), 1e-4), rtol=1e-3, atol=1e-5)
    everything = [cache.load(d["id"]).motion for d in cache.dialogs()]
    y = np.concatenate([np.asarray(t).reshape(-1, 51) for t in everything])
    assert not np.allclose(cache.stats["motion_mean"], y.mean(0), rtol=1e-6, atol=1e-7)


def test_audio_features_follow_own_speech(cache_dir):
    """Feature frames line up with motion frames: loud frames are the speaker's (state speak/crosstalk)."""
    cache = Cache(cache_dir)
    for d in cache.dialogs():
        a = cache.load(d["id"])
        for p in range(2):
            energy = np.asarray(a.audio[p]).mean(1)
            speaking = np.isin(np.asarray(a.states[p]), (2, 3))
            if speaking.any() and (~speaking).any():
                assert energy[speaking].mean() > energy[~speaking].mean() + 1.0


def test_datasets(cache_dir):
    w = MotionWindows(cache_dir, "train", window=32)
    item = w[len(w) // 2]
    assert item["motion"].shape == (2, 32, 51) and item["audio"].shape == (2, 32, 80)
    assert item["states"].shape == (2, 32)
    allm = np.concatenate([w[i]["motion"].reshape(-1, 51) for i in range(len(w))])
    assert abs(allm.mean()) < 0.2 and 0.7 < allm.std() < 1.3        # normalised
    seqs = DialogSequences(cache_dir, "test")
    s = seqs[0]
    assert s["motion"].shape[0] == 2 and s["motion"].shape[1] == Cache(cache_dir).dialog(s["id"])["num_frames"]


def test_skip_bad_records_reason(broken_corpus, tmp_path):
    index = json.loads((broken_corpus / "dataset_jsons/synthetic.json").read_text())
    bad = sorted(index)[1]
    pid = sorted(index[bad])[0]
    (broken_corpus / index[bad][pid]["audio_path"]).unlink()
    cfg = DataConfig(data_root=str(broken_corpus))
    with pytest.raises(pre.CorpusError, match="--skip-bad"):
        pre.preprocess(cfg, tmp_path / "c1", progress=False)
    pre.preprocess(cfg, tmp_path / "c2", skip_bad=True, progress=False)
    m = Cache(tmp_path / "c2").manifest
    assert [s["id"] for s in m["skipped"]] == [bad]
    assert "audio_path" in m["skipped"][0]["reason"] and "missing" in m["skipped"][0]["reason"]
    assert bad not in [d["id"] for d in m["dialogs"]] and len(m["dialogs"]) == len(index) - 1


def test_resume_after_interruption(small_corpus_root, tmp_path, monkeypatch):
    cfg = DataConfig(data_root=str(small_corpus_root))
    whole = tmp_path / "whole"
    pre.preprocess(cfg, whole, progress=False)

    out = tmp_path / "interrupted"
    real = pre.process_dialog
    calls = []

    def dies_on_second(dialog_id, records, cfg_, out_):
        calls.append(dialog_id)
        if len(calls) == 2:
            # a kill mid-write: a temp folder is left behind, no dialog folder
            (Path(out_) / "dialogs" / f".{dialog_id}.zz.tmp").mkdir(parents=True)
            raise KeyboardInterrupt
        return real(dialog_id, records, cfg_, out_)

    monkeypatch.setattr(pre, "process_dialog", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        pre.preprocess(cfg, out, progress=False)
    assert not (out / "manifest.json").exists()
    first_done = out / "dialogs" / calls[0] / "motion.npy"
    mtime = first_done.stat().st_mtime_ns
    monkeypatch.setattr(pre, "process_dialog", real)
    pre.preprocess(cfg, out, progress=False)
    assert first_done.stat().st_mtime_ns == mtime                # not redone
    assert not list((out / "dialogs").glob(".*.tmp"))             # debris of the kill removed
    assert tree_bytes(out) == tree_bytes(whole)


def test_shards_union_equals_whole(corpus_root, cache_dir, tmp_path):
    cfg = DataConfig(data_root=str(corpus_root))
    out = tmp_path / "sharded"
    for i in range(3):
        pre.preprocess(cfg, out, shard=(i, 3), progress=False)
        assert not (out / "manifest.json").exists()
    with pytest.raises(FileNotFoundError):
        pre.merge(cfg, tmp_path / "nothing", num_shards=3)
    pre.merge(cfg, out, num_shards=3)
    assert tree_bytes(out) == tree_bytes(cache_dir)


def test_parallel_workers_equal_serial(small_corpus_root, tmp_path):
    cfg = DataConfig(data_root=str(small_corpus_root))
    pre.preprocess(cfg, tmp_path / "serial", workers=1, progress=False)
    pre.preprocess(cfg, tmp_path / "parallel", workers=2, progress=False)
    assert tree_bytes(tmp_path / "serial") == tree_bytes(tmp_path / "parallel")


def test_cli_error_names_file(broken_corpus, tmp_path):
    index = json.loads((broken_corpus / "dataset_jsons/synthetic.json").read_text())
    did = sorted(index)[0]
    pid = sorted(index[did])[0]
    p = broken_corpus / index[did][pid]["flame_coeff_save_path"]
    p.write_bytes(b"garbage")
    r = subprocess.run([sys.executable, "scripts/preprocess.py", "--data-root", str(broken_corpus), "--out",
                        str(tmp_path / "c"), "--quiet", "--workers", "1"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert "error:" in r.stderr and index[did][pid]["flame_coeff_save_path"] in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "scripts/preprocess.py", "--data-root", str(broken_corpus), "--out",
                        str(tmp_path / "c"), "--quiet", "--skip-bad", "--workers", "1"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert f"skipped {did}" in r.stdout


def test_pretrained_encoder_features_at_motion_rate(small_corpus_root, tmp_path):
    """A tiny random wav2vec2 (no download) gives one feature frame per motion frame."""
    pytest.importorskip("transformers")
    audio = AudioConfig(kind="pretrained", pretrained_kind="wav2vec2", pretrained_config=dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32, 32, 32, 32, 32), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2))
    cfg = DataConfig(data_root=str(small_corpus_root), audio=audio)
    pre.preprocess(cfg, tmp_path / "c", progress=False)
    cache = Cache(tmp_path / "c")
    assert cache.audio_dim == 32 and cache.manifest["audio_features"]["kind"] == "pretrained"
    for d in cache.dialogs():
        a = cache.load(d["id"])
        assert a.audio.shape == (2, d["num_frames"], 32) and np.isfinite(a.audio).all()


def test_split_file_fixes_the_split_and_names_what_is_wrong(small_corpus_root, tmp_path):
    """``split_file``: the splits come from the file (not the hash), and a file that misses a dialog or holds
    an unknown split is refused naming it."""
    ids = sorted(load_index(DataConfig(data_root=str(small_corpus_root))))
    table = {ids[0]: "test", ids[1]: "train", ids[2]: "train"}
    (tmp_path / "splits.json").write_text(json.dumps(table))
    cfg = DataConfig(data_root=str(small_corpus_root), split_file=str(tmp_path / "splits.json"))
    pre.preprocess(cfg, tmp_path / "c", workers=1, progress=False)
    got = {d["id"]: d["split"] for d in json.loads((tmp_path / "c" / "manifest.json").read_text())["dialogs"]}
    assert got == table
    (tmp_path / "bad.json").write_text(json.dumps({ids[0]: "test", ids[1]: "holdout"}))
    bad = DataConfig(data_root=str(small_corpus_root), split_file=str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match=r"bad.json: splits must be one of .*holdout"):
        pre.preprocess(bad, tmp_path / "c2", workers=1, progress=False)
    (tmp_path / "short.json").write_text(json.dumps({ids[0]: "test"}))
    short = DataConfig(data_root=str(small_corpus_root), split_file=str(tmp_path / "short.json"))
    with pytest.raises(ValueError, match=rf"short.json does not list 2 dialog.*{ids[1]}"):
        pre.preprocess(short, tmp_path / "c3", workers=1, progress=False)
