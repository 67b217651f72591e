"""The corpus reader on generated corpora, and each bad-input case with a message naming the file."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.data.corpus import CorpusError, load_index, read_dialog
from common.data.config import DataConfig
from common.data.splits import assign_splits


def cfg_for(root: Path, **kw) -> DataConfig:
    return DataConfig(data_root=str(root), index="dataset_jsons/synthetic.json", **kw)


def index_of(root: Path) -> dict:
    return json.loads((root / "dataset_jsons" / "synthetic.json").read_text())


def write_index(root: Path, index: dict) -> None:
    (root / "dataset_jsons" / "synthetic.json").write_text(json.dumps(index))


def first(root: Path):
    index = index_of(root)
    did = sorted(index)[0]
    pid = sorted(index[did])[0]
    return index, did, pid, index[did][pid]


def test_reader_aligns_both_participants(corpus_root):
    cfg = cfg_for(corpus_root)
    index = load_index(cfg)
    assert len(index) == 8
    for did, recs in index.items():
        d = read_dialog(did, recs, cfg)
        assert [p.id for p in d.participants] == sorted(recs)
        lengths = []
        for p, pid in zip(d.participants, sorted(recs)):
            rec = recs[pid]
            with np.load(corpus_root / rec["flame_coeff_save_path"]) as z:
                exp, jaw, shape = z["expression_params"], z["jaw_params"], z["shape_params"]
            states = np.load(corpus_root / rec["state_path"])
            info = sf.info(str(corpus_root / rec["audio_path"]))
            lengths += [rec["valid_frames_num"], len(exp), len(states), info.frames // 1600]
            assert p.motion.shape == (d.num_frames, 51) and p.motion.dtype == np.float32
            np.testing.assert_array_equal(p.motion[:, :50], exp[:d.num_frames, 0, :50])
            np.testing.assert_array_equal(p.motion[:, 50], jaw[:d.num_frames, 0, 0])
            np.testing.assert_array_equal(p.shape, shape[0, 0, :100])
            np.testing.assert_array_equal(p.states, states[:d.num_frames])
            assert len(p.audio) == d.num_frames * 1600            # 48 kHz / 30 fps
        assert d.num_frames == min(lengths)                     # the usable length is the shortest


def test_neck_pose_mode_is_54_dims(small_corpus_root):
    cfg = cfg_for(small_corpus_root, neck_pose=True)
    index = load_index(cfg)
    did = sorted(index)[0]
    d = read_dialog(did, index[did], cfg)
    pid = d.participants[0].id
    with np.load(small_corpus_root / index[did][pid]["flame_coeff_save_path"]) as z:
        pose = z["pose_params"]
    assert d.participants[0].motion.shape[1] == 54 and cfg.motion_dim == 54
    np.testing.assert_array_equal(d.participants[0].motion[:, 51:], pose[:d.num_frames, 0, :3])


def read_first(root: Path, **kw):
    cfg = cfg_for(root, **kw)
    index = load_index(cfg)
    did = sorted(index)[0]
    return read_dialog(did, index[did], cfg)


def expect_error(root, *fragments, **kw):
    with pytest.raises(CorpusError) as e:
        read_first(root, **kw)
    msg = str(e.value)
    for frag in fragments:
        assert str(frag) in msg, msg
    return e.value


def test_missing_audio_file(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    (broken_corpus / rec["audio_path"]).unlink()
    err = expect_error(broken_corpus, did, pid, "audio_path", rec["audio_path"], "missing")
    assert err.field == "audio_path"


def test_truncated_npz(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["flame_coeff_save_path"]
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    expect_error(broken_corpus, did, pid, rec["flame_coeff_save_path"])


def test_truncated_wav(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["audio_path"]
    p.write_bytes(p.read_bytes()[:30])
    expect_error(broken_corpus, did, pid, rec["audio_path"])


def _rewrite_npz(path: Path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)
    return arrays


def test_nan_in_expression(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["flame_coeff_save_path"]
    with np.load(p) as z:
        exp = z["expression_params"].copy()
    exp[17, 0, 3] = np.nan
    _rewrite_npz(p, expression_params=exp)
    expect_error(broken_corpus, did, pid, "expression_params", "NaN", "frame 17")


def test_inf_in_jaw(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["flame_coeff_save_path"]
    with np.load(p) as z:
        jaw = z["jaw_params"].copy()
    jaw[5, 0, 0] = np.inf
    _rewrite_npz(p, jaw_params=jaw)
    expect_error(broken_corpus, did, pid, "jaw_params", "frame 5")


def test_too_few_expression_dims(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["flame_coeff_save_path"]
    with np.load(p) as z:
        exp = z["expression_params"][:, :, :40].copy()
    _rewrite_npz(p, expression_params=exp)
    expect_error(broken_corpus, did, pid, "expression_params", ">=50", rec["flame_coeff_save_path"])


def test_missing_npz_key(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["flame_coeff_save_path"]
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files if k != "jaw_params"}
    np.savez(p, **arrays)
    expect_error(broken_corpus, did, pid, "jaw_params")


@pytest.mark.parametrize("n", [1, 3])
def test_dialog_needs_two_participants(broken_corpus, n):
    index, did, pid, rec = first(broken_corpus)
    if n == 1:
        index[did] = {pid: rec}
    else:
        index[did]["P9999"] = dict(rec)
    write_index(broken_corpus, index)
    expect_error(broken_corpus, did, f"{n} participants", "exactly two")


def test_state_values_outside_range(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["state_path"]
    s = np.load(p)
    s[9] = 7
    np.save(p, s)
    expect_error(broken_corpus, did, pid, "state_path", "7", "frame 9", rec["state_path"])


def test_lengths_disagree_beyond_tolerance(broken_corpus):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["flame_coeff_save_path"]
    with np.load(p) as z:
        arrays = {k: z[k][:-45] for k in z.files}           # 1.5 s shorter than everything else
    np.savez(p, **arrays)
    expect_error(broken_corpus, did, "lengths disagree", f"{pid}.motion")
    # within a larger tolerance it is accepted and cropped to the shortest
    d = read_first(broken_corpus, length_tolerance_s=2.0)
    assert d.num_frames == len(arrays["expression_params"])


def test_audio_at_other_rate_and_stereo_is_converted_with_log(broken_corpus, caplog):
    _, did, pid, rec = first(broken_corpus)
    p = broken_corpus / rec["audio_path"]
    ref = read_first(broken_corpus)
    audio, rate = sf.read(str(p), dtype="float32")
    import torch
    import torchaudio.functional as AF
    a441 = AF.resample(torch.from_numpy(audio), rate, 44100).numpy()
    sf.write(str(p), np.stack([a441, a441], axis=1), 44100, subtype="FLOAT")
    with caplog.at_level(logging.INFO):
        d = read_first(broken_corpus)
    assert "2 channels" in caplog.text and "44100 Hz" in caplog.text
    assert d.num_frames == ref.num_frames
    got, want = d.participants[0].audio, ref.participants[0].audio
    n = min(len(got), len(want))
    corr = np.corrcoef(got[:n], want[:n])[0, 1]
    assert corr > 0.98                                      # same signal after a round trip through 44.1 kHz


def test_missing_field_and_path_escape(broken_corpus):
    index, did, pid, rec = first(broken_corpus)
    del index[did][pid]["state_path"]
    write_index(broken_corpus, index)
    expect_error(broken_corpus, did, pid, "state_path", "missing field")
    index[did][pid]["state_path"] = "../../etc/passwd"
    write_index(broken_corpus, index)
    expect_error(broken_corpus, did, pid, "escapes the data root")


def test_index_not_json(broken_corpus):
    (broken_corpus / "dataset_jsons" / "synthetic.json").write_text("{not json")
    with pytest.raises(CorpusError, match="synthetic.json"):
        load_index(cfg_for(broken_corpus))


def test_splits_ignore_split_field_and_are_by_dialog(small_corpus_root, corpus_root):
    index = index_of(corpus_root)
    a = assign_splits(index)
    for recs in index.values():                          # scramble the meaningless field
        for r in recs.values():
            r["split"] = "test" if r["split"] != "test" else "train"
    b = assign_splits(index)
    assert a == b
    assert assign_splits(reversed(list(index))) == a      # order of the index does not matter
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 6, "val": 1, "test": 1}
    assert assign_splits(index, seed=1) != a or len(index) < 3
    # ratios hold on a larger corpus
    big = {f"d{i:03d}": {} for i in range(200)}
    s = assign_splits(big)
    assert abs(sum(v == "train" for v in s.values()) - 160) <= 1
