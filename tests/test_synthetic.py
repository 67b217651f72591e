"""The synthetic corpus generator: layout, file formats, and the documented structure in the data."""
from __future__ import annotations

import hashlib
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.data import synthetic as syn
from common.data.synthetic import make_corpus

SEED = 3
DIALOGS = 4
SECONDS = 12.0
FPS = 30
SR = 48000
HOP = SR // FPS
RECORD_KEYS = ["video_path", "frame_dir", "frames_num", "audio_path", "valid_frames_num", "fan_crop_frames_dir",
               "pixelai_kp", "flame_coeff_save_path", "speaker_id", "state_path", "motion_feature_path", "split"]
NPZ_DIMS = {"shape_params": 300, "expression_params": 100, "pose_params": 3, "jaw_params": 3, "cam": 3}
PARTNER_STATE = np.array([0, 2, 1, 3])     # idle<->idle, listen<->speak, crosstalk<->crosstalk
MOTION_DRIFT_DIMS = [d for d in syn.DRIFT_ONLY_EXP_DIMS if d < 50]   # drift-only dims inside the 51-dim motion


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    index_path = make_corpus(root, num_dialogs=DIALOGS, seconds=SECONDS, seed=SEED)
    return root, index_path, json.loads(index_path.read_text())


def load_participant(root: Path, rec: dict):
    with np.load(root / rec["flame_coeff_save_path"], allow_pickle=False) as z:
        flame = {k: z[k] for k in z.files}
    states = np.load(root / rec["state_path"], allow_pickle=False)
    audio, rate = sf.read(str(root / rec["audio_path"]), dtype="float32")
    return flame, states, audio, rate


def frame_rms(audio: np.ndarray, T: int) -> np.ndarray:
    return np.sqrt((audio[:T * HOP].astype(np.float64).reshape(T, HOP) ** 2).mean(1))


def dialogs(corpus):
    """Per dialog: [(pid, flame, states, audio) x 2] cropped to the common length T, and T."""
    root, _, index = corpus
    out = []
    for did in sorted(index):
        parts = [(pid, *load_participant(root, index[did][pid])[:3]) for pid in sorted(index[did])]
        T = min(min(len(f["jaw_params"]), len(s), len(a) // HOP) for _, f, s, a in parts)
        out.append(([(pid, {k: v[:T] for k, v in f.items()}, s[:T], a[:T * HOP]) for pid, f, s, a in parts], T))
    return out


def talks(states: np.ndarray) -> bool:
    """Speaks and listens >= 1 s each (in a short dialog one person can hold the floor throughout)."""
    return (states == 2).sum() >= FPS and (states == 1).sum() >= FPS


def corr(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_index_layout_and_records(corpus):
    root, index_path, index = corpus
    assert index_path == root / "dataset_jsons" / "synthetic.json"
    assert sorted(index) == [f"V00_S{SEED:04d}_I{i:08d}" for i in range(DIALOGS)]
    for did, recs in index.items():
        assert len(recs) == 2
        for pid, rec in recs.items():
            assert re.fullmatch(r"P\d{4}", pid)
            assert list(rec) == RECORD_KEYS                          # same fields, same order as the users' index
            base = f"synthetic/{did}/{pid}/"
            for key in ("video_path", "frame_dir", "audio_path", "fan_crop_frames_dir", "pixelai_kp",
                        "flame_coeff_save_path", "state_path"):
                assert rec[key].startswith(base), (key, rec[key])
            assert rec["audio_path"] == base + "audio.wav"
            assert rec["flame_coeff_save_path"] == base + "features/emica_flame.npz"
            assert rec["state_path"] == base + "state.npy"
            for key in ("audio_path", "flame_coeff_save_path", "state_path"):
                assert (root / rec[key]).is_file()
            assert rec["speaker_id"] == [pid]
            assert rec["motion_feature_path"] == ""
            assert rec["split"] in syn.SPLIT_DECOYS
            assert isinstance(rec["frames_num"], int) and isinstance(rec["valid_frames_num"], int)
        assert len(set(recs)) == 2


def test_flame_npz_shapes_dtypes_and_ranges(corpus):
    root, _, index = corpus
    for did, recs in index.items():
        for pid, rec in recs.items():
            flame, states, *_ = load_participant(root, rec)
            assert set(flame) == set(NPZ_DIMS)
            T = len(flame["expression_params"])
            assert T == rec["frames_num"]
            for key, k in NPZ_DIMS.items():
                a = flame[key]
                assert a.shape == (T, 1, k) and a.dtype == np.float32, (key, a.shape, a.dtype)
                assert np.isfinite(a).all()
            shape = flame["shape_params"]
            assert (shape == shape[:1]).all()                        # identity constant over time
            np.testing.assert_array_equal(shape[0, 0], syn.person_style(int(pid[1:])).shape.astype(np.float32))
            exp = flame["expression_params"][:, 0]
            assert np.abs(exp).max() <= syn.EXPRESSION_CLIP
            assert np.abs(exp).mean() < 1.0
            jaw = flame["jaw_params"][:, 0]
            assert jaw[:, syn.JAW_DIM].min() >= 0 and jaw[:, syn.JAW_DIM].max() <= syn.JAW_MAX
            if talks(states):
                assert jaw[:, syn.JAW_DIM].max() > 0.15              # the mouth does open
            assert np.abs(jaw[:, 1:]).max() < 0.05
            assert np.abs(flame["pose_params"]).max() < 0.5
            # idle drift: every expression dim moves, larger dims move more (a PCA-like spectrum)
            sd = exp.std(0)
            assert (sd > 1e-3).all()
            assert sd[:10].mean() > sd[90:].mean() * 2


def test_wav_is_48k_mono_float32(corpus):
    root, _, index = corpus
    for recs in index.values():
        for rec in recs.values():
            info = sf.info(str(root / rec["audio_path"]))
            assert (info.samplerate, info.channels, info.format, info.subtype) == (SR, 1, "WAV", "FLOAT")
            audio, _ = sf.read(str(root / rec["audio_path"]), dtype="float32")
            assert audio.ndim == 1 and np.isfinite(audio).all() and np.abs(audio).max() < 1.0
            if talks(np.load(root / rec["state_path"])):
                assert np.abs(audio).max() > 0.1


def test_states_complementary_and_match_speech_energy(corpus):
    counts = np.zeros(4, int)
    speak_rms, listen_rms, idle_rms = [], [], []
    for parts, T in dialogs(corpus):
        (_, _, sa, aa), (_, _, sb, ab) = parts
        for s in (sa, sb):
            assert np.issubdtype(s.dtype, np.integer) and s.min() >= 0 and s.max() <= 3
        np.testing.assert_array_equal(PARTNER_STATE[sa], sb)
        for s, a in ((sa, aa), (sb, ab)):
            counts += np.bincount(s, minlength=4)
            rms = frame_rms(a, T)
            speak_rms.append(rms[s == 2])
            listen_rms.append(rms[s == 1])
            idle_rms.append(rms[s == 0])
    assert (counts[:3] > 0).all(), counts
    speak, listen, idle = map(np.concatenate, (speak_rms, listen_rms, idle_rms))
    assert np.median(speak) > 10 * np.median(listen)              # own voice vs partner's 3 % bleed
    assert np.median(listen) > 2 * np.median(idle)                 # the bleed is there, the floor is lower
    assert np.quantile(speak, 0.2) > 20 * syn.NOISE_FLOOR          # speaking frames are loud nearly always
    assert np.quantile(idle, 0.9) < 5 * syn.NOISE_FLOOR            # idle frames near-silent


def test_jaw_and_speech_dims_follow_own_lagged_audio_not_partner(corpus):
    L = syn.SPEECH_LAG_FRAMES
    checked = 0
    for parts, T in dialogs(corpus):
        for i in (0, 1):
            _, flame, states, own_audio = parts[i]
            if not talks(states):
                continue
            checked += 1
            partner_audio = parts[1 - i][3]
            own, other = frame_rms(own_audio, T), frame_rms(partner_audio, T)
            jaw = flame["jaw_params"][:, 0, syn.JAW_DIM]
            c_own = corr(jaw[L:], own[:-L])
            c_other = corr(jaw[L:], other[:-L])
            assert c_own > 0.8, c_own
            assert c_other < 0.3 and c_own - c_other > 0.6, (c_own, c_other)
            lags = [corr(jaw[k:], own[:T - k]) for k in range(6)]
            assert int(np.argmax(lags)) == L, lags                    # the documented lag, not another one
            # speech dims: compare frame-to-frame changes (the smooth idle drift and the offset drop out)
            exp = flame["expression_params"][:, 0].astype(np.float64)
            d_own, d_other = np.diff(own[:-L]), np.diff(other[:-L])
            for d in syn.FAST_SPEECH_EXP_DIMS:
                dx = np.diff(exp[L:, d])
                assert abs(corr(dx, d_own)) > 0.7, (d, corr(dx, d_own))
                assert abs(corr(dx, d_own)) > abs(corr(dx, d_other)) + 0.4
            assert abs(corr(np.diff(exp[L:, 60]), d_own)) < 0.3     # an unstructured dim carries no speech
    assert checked >= 4


def test_listener_dims_build_up_while_partner_speaks(corpus):
    sign = np.sign(syn.SMILE_PATTERN)
    gaps, rises, control_rises = [], [], []
    for parts, _ in dialogs(corpus):
        for _, flame, s, _ in parts:
            exp = flame["expression_params"][:, 0].astype(np.float64)
            smile = exp[:, list(syn.LISTENER_EXP_DIMS)] @ sign
            control = exp[:, [70, 71, 72]].sum(1)                   # unstructured dims, same treatment
            listen, speak = s == 1, s == 2
            if talks(s):
                gaps.append(smile[listen].mean() - smile[speak].mean())
            # every listening stretch of >= 0.6 s: the smile ends higher than it started
            d = np.diff(np.r_[0, listen.astype(np.int8), 0])
            for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
                if b - a >= 18:
                    rises.append(smile[b - 1] - smile[a])
                    control_rises.append(control[b - 1] - control[a])
    assert len(gaps) >= 3 and len(rises) >= 5, (gaps, rises)
    assert np.mean(gaps) > 0.2, gaps
    assert np.mean(np.array(rises) > 0) >= 0.8, rises
    assert np.mean(rises) > 0.3, rises
    assert abs(np.mean(control_rises)) < 0.5 * np.mean(rises)


def test_secondary_dims_carry_speech_and_listening(corpus):
    speech_gap, listen_gap = [], []
    for parts, _ in dialogs(corpus):
        for _, flame, s, _ in parts:
            exp = flame["expression_params"][:, 0].astype(np.float64)
            sp = exp[:, list(syn.SPEECH_SECONDARY_DIMS)] @ np.sign(syn.SPEECH_SECONDARY_LOADING)
            li = exp[:, list(syn.LISTENER_SECONDARY_DIMS)] @ np.sign(syn.LISTENER_SECONDARY_LOADING)
            listen, speak = s == 1, s == 2
            if talks(s):
                speech_gap.append(sp[speak].mean() - sp[listen].mean())
                listen_gap.append(li[listen].mean() - li[speak].mean())
    assert len(speech_gap) >= 3
    assert np.mean(speech_gap) > 0.3 and min(speech_gap) > 0, speech_gap
    assert np.mean(listen_gap) > 0.3, listen_gap


def test_idle_drift_and_person_offsets_are_low_rank(corpus):
    # the drift-only dims of every participant, centred per participant: IDLE_FACTORS shared processes carry
    # all but IDLE_UNIQUE_VAR of their variance (50 independent processes would need ~50 components)
    dims = MOTION_DRIFT_DIMS
    centred = []
    for parts, _ in dialogs(corpus):
        for pid, flame, _, _ in parts:
            x = flame["expression_params"][:, 0, dims].astype(np.float64)
            centred.append((x - x.mean(0)) / syn.DRIFT_STD[dims])
    ev = np.linalg.eigvalsh(np.cov(np.concatenate(centred).T))[::-1]
    share = ev[:syn.IDLE_FACTORS].sum() / ev.sum()
    assert share > 0.9, share
    assert ev[syn.IDLE_FACTORS:].sum() / ev.sum() > 0.01     # each dim still has a little of its own
    # the resting offsets of 12 persons span OFFSET_FACTORS directions exactly
    offsets = np.array([syn.person_style(p).exp_offset for p in range(12)])
    assert np.linalg.matrix_rank(offsets, tol=1e-9) == syn.OFFSET_FACTORS


def test_partners_share_affect_through_their_drift(corpus):
    # MIMIC_RHO of each person's drift factors follows the partner's: the drift-only dims of the two partners
    # correlate (independent persons would give ~0); shuffled across dialogs they do not
    dims = MOTION_DRIFT_DIMS
    per_dialog = []
    for parts, _ in dialogs(corpus):
        x = [p[1]["expression_params"][:, 0, dims].astype(np.float64) for p in parts]
        per_dialog.append([(v - v.mean(0)) / v.std(0) for v in x])

    def corr(a, b):
        n = min(len(a), len(b))
        return float(np.mean(a[:n] * b[:n]))

    same = np.mean([corr(a, b) for a, b in per_dialog])
    other = np.mean([corr(per_dialog[i][0], per_dialog[(i + 1) % len(per_dialog)][1]) for i in range(len(per_dialog))])
    assert same > 0.3 and same > other + 0.25, (same, other)


def test_nods_follow_partner_phrase_ends(corpus):
    after, elsewhere = [], []
    for parts, T in dialogs(corpus):
        for i in (0, 1):
            _, flame, s, _ = parts[i]
            partner_speaks = np.isin(parts[1 - i][2], (2, 3))
            own_speaks = np.isin(s, (2, 3))
            ends = np.flatnonzero(partner_speaks[:-1] & ~partner_speaks[1:]) + 1
            ends = ends[~own_speaks[ends]]
            pitch = flame["pose_params"][:, 0, syn.NOD_POSE_DIM].astype(np.float64)
            wiggle = np.abs(np.diff(pitch, 2))                      # the nod's oscillation, not the slow drift
            near = np.zeros(len(wiggle), bool)
            for e in ends:
                near[e + syn.NOD_DELAY_FRAMES[0]:e + syn.NOD_DELAY_FRAMES[1] + 20] = True
            after.append(wiggle[near])
            elsewhere.append(wiggle[~near])
    assert np.mean(np.concatenate(after)) > 2 * np.mean(np.concatenate(elsewhere))


def test_lengths_disagree_only_a_little(corpus):
    root, _, index = corpus
    partner_diffs, audio_offsets = [], []
    for did, recs in index.items():
        lengths = []
        npz_lens = []
        for rec in recs.values():
            flame, states, audio, rate = load_participant(root, rec)
            T = len(flame["expression_params"])
            npz_lens.append(T)
            assert rec["frames_num"] == T and 0 < rec["valid_frames_num"] <= T
            assert T - rec["valid_frames_num"] <= 3
            assert len(states) in (T, T + 1)
            offset_s = len(audio) / rate - T / FPS
            assert -0.021 <= offset_s <= 0.041
            audio_offsets.append(offset_s)
            lengths += [rec["valid_frames_num"], T, len(states), len(audio) / HOP]
        assert max(lengths) - min(lengths) <= 0.3 * FPS, (did, lengths)
        assert abs(SECONDS * FPS - max(npz_lens)) <= 4
        partner_diffs.append(abs(npz_lens[0] - npz_lens[1]))
    assert any(d > 0 for d in partner_diffs)                         # the messiness is really there
    assert any(abs(o) > 1e-3 for o in audio_offsets)


def test_same_seed_same_bytes_other_seed_differs(corpus, tmp_path):
    root, _, index = corpus
    again = make_corpus(tmp_path / "again", num_dialogs=DIALOGS, seconds=SECONDS, seed=SEED).parent.parent
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(files) == 1 + DIALOGS * 2 * 3
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel

    other = make_corpus(tmp_path / "other", num_dialogs=DIALOGS, seconds=SECONDS, seed=SEED + 1)
    other_index = json.loads(other.read_text())
    assert set(other_index).isdisjoint(index)                        # dialog ids carry the seed
    a_rec = next(iter(next(iter(index.values())).values()))
    b_rec = next(iter(next(iter(other_index.values())).values()))
    a, *_ = load_participant(root, a_rec)
    b, *_ = load_participant(other.parent.parent, b_rec)
    n = min(len(a["expression_params"]), len(b["expression_params"]))
    assert not np.allclose(a["expression_params"][:n], b["expression_params"][:n])
    sa = (root / a_rec["audio_path"]).read_bytes()
    sb = (other.parent.parent / b_rec["audio_path"]).read_bytes()
    assert sa != sb


def test_no_wall_clock_in_files(corpus):
    """Same bytes on another day too: zip entries carry a fixed date, the WAV PEAK chunk a zero timestamp."""
    import zipfile
    root, _, index = corpus
    rec = next(iter(next(iter(index.values())).values()))
    with zipfile.ZipFile(root / rec["flame_coeff_save_path"]) as zf:
        infos = zf.infolist()
    assert sorted(i.filename for i in infos) == sorted(f"{k}.npy" for k in NPZ_DIMS)
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
    head = (root / rec["audio_path"]).read_bytes()[:4096]
    pos, peak = 12, None
    while pos + 8 <= len(head) and head[pos:pos + 4] != b"data":
        size = int.from_bytes(head[pos + 4:pos + 8], "little")
        if head[pos:pos + 4] == b"PEAK":
            peak = pos
        pos += 8 + size + (size & 1)
    if peak is not None:                                             # libsndfile adds one to float WAVs
        assert head[peak + 12:peak + 16] == b"\0\0\0\0"


def test_persons_recur_with_a_consistent_style(tmp_path):
    index = json.loads(make_corpus(tmp_path, num_dialogs=9, seconds=2.0, seed=5).read_text())
    appearances: dict[str, list[str]] = {}
    for did, recs in index.items():
        for pid in recs:
            appearances.setdefault(pid, []).append(did)
    assert len(appearances) == 6                                     # pool of about 2/3 * dialogs persons
    assert sorted(len(v) for v in appearances.values()) == [3] * 6    # every person in several dialogs
    pid, dids = max(appearances.items(), key=lambda kv: len(kv[1]))
    shapes = []
    for did in dids:
        with np.load(tmp_path / index[did][pid]["flame_coeff_save_path"]) as z:
            shapes.append(z["shape_params"][0, 0])
    for s in shapes[1:]:
        np.testing.assert_array_equal(s, shapes[0])
    a, b = syn.person_style(7), syn.person_style(7)
    np.testing.assert_array_equal(a.exp_offset, b.exp_offset)
    assert a.f0 == b.f0 and syn.person_style(8).f0 != a.f0
    assert 90 <= a.f0 <= 250


def test_state_derivation():
    a = np.array([0, 0, 1, 1, 0, 1], bool)
    b = np.array([0, 1, 0, 1, 1, 0], bool)
    np.testing.assert_array_equal(syn.states_from_activity(a, b), [0, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(syn.states_from_activity(b, a), [0, 2, 1, 3, 2, 1])


@pytest.mark.parametrize("kw", [{"num_dialogs": 0}, {"seconds": 0.5}, {"fps": 0}])
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(ValueError):
        make_corpus(tmp_path, **{"num_dialogs": 1, "seconds": 2.0, **kw})
    assert not (tmp_path / "dataset_jsons").exists()


def test_cli_writes_index_and_reports_it(tmp_path, capsys):
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "scripts" / "make_synthetic_corpus.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_corpus", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "cli"
    assert mod.main(["--out", str(out), "--dialogs", "2", "--seconds", "2", "--seed", "4"]) == 0
    index = out / "dataset_jsons" / "synthetic.json"
    assert str(index) in capsys.readouterr().out
    assert sorted(json.loads(index.read_text())) == ["V00_S0004_I00000000", "V00_S0004_I00000001"]


# sha256 of every file of two tiny default-preset corpora, computed with the generator before the hard preset
# existed (numpy 2.4.6, scipy 1.17.1, libsndfile 1.2.2): the default preset must keep writing these bytes.
DEFAULT_PRESET_DIGESTS = {
    (2, 4.0, 0, 30, 48000): {
        "dataset_jsons/synthetic.json": "a2664489b04dfeed15f5eef40fa1bba811e7eac4f4b8e8f30807e015488adf9f",
        "synthetic/V00_S0000_I00000000/P0510/audio.wav": "38d53184f2c0047713aaaaf8f7fd12947880e393ed1265f45e86d3089fe90e9d",
        "synthetic/V00_S0000_I00000000/P0510/features/emica_flame.npz": "d8e2539f153dfcd378aeafba8e91462912a28184d9f2b13203aef15d30f4cf36",
        "synthetic/V00_S0000_I00000000/P0510/state.npy": "508b5ae11a582daa42b2c0f5feb8397c9f05c211d7087a30f7a77a3693653804",
        "synthetic/V00_S0000_I00000000/P0848/audio.wav": "5085bc8a131c367720f36307ecd0e82f590e54a50593eb2f7d5c6df6442b23d4",
        "synthetic/V00_S0000_I00000000/P0848/features/emica_flame.npz": "a94630a29847568238040c635e79b6810d3c9f95246d221a53d1f040e275a9eb",
        "synthetic/V00_S0000_I00000000/P0848/state.npy": "03a7436fa31427944875914cba30804c8c1f5cd46e574a5b80b3f66eb5c91de2",
        "synthetic/V00_S0000_I00000001/P0269/audio.wav": "930862ae65a4d68ee9db5b8a811c8c061d1ecefc522ad7edbfafdad8bfe5d7df",
        "synthetic/V00_S0000_I00000001/P0269/features/emica_flame.npz": "4276b1e0a22d907adc42c9128c5d891b3be78f0b6fbf7ea23c819a45734c524b",
        "synthetic/V00_S0000_I00000001/P0269/state.npy": "5ac8e123dc60165c170d0cfe4613feec3755e25705cd312e0ffd507c2e7f23b3",
        "synthetic/V00_S0000_I00000001/P0635/audio.wav": "7de2fe99b2d01616d07e3cc1a9c48024b6f0c8ff125a93ef696cbe06aa58638f",
        "synthetic/V00_S0000_I00000001/P0635/features/emica_flame.npz": "e9d1de41e9cf244486645007d53f3fd9ff0e25a4ed7fe3106dda324f509a8945",
        "synthetic/V00_S0000_I00000001/P0635/state.npy": "e7c59a8ba8415066930951f4229ee7733890f8e55563fd8629e602df15feab1d",
    },
    (1, 3.0, 7, 25, 16000): {
        "dataset_jsons/synthetic.json": "9a50dbf82755e4927e3b21fcb2efa9f63910bdfc7c2073348a53ad9b2f4e74f4",
        "synthetic/V00_S0007_I00000000/P0623/audio.wav": "65a60ae103855b8e788a7fc11864141bce0a09d3fe04b81247673c9711124675",
        "synthetic/V00_S0007_I00000000/P0623/features/emica_flame.npz": "c83e1e57d6954402e247f999a065ec299e7837a00045243aed27693c27fafd29",
        "synthetic/V00_S0007_I00000000/P0623/state.npy": "f6771a3eb36ff95a19226482c56d1b60e87d473f2c7ed2766c1a9591f75b2576",
        "synthetic/V00_S0007_I00000000/P0897/audio.wav": "b4e880b5b61d7253386ce878bf20509b044811b3bbc94a3d68f5fd4bea9988b5",
        "synthetic/V00_S0007_I00000000/P0897/features/emica_flame.npz": "064835e31b0e43079fc1c5f1f8498b9961ef9c57c3e601141c2638c248bc6d03",
        "synthetic/V00_S0007_I00000000/P0897/state.npy": "f5a3728456d1070306faa219db243600cd7d2f8b8a0e2c7badd00b097a8be79b",
    },
}


@pytest.mark.parametrize("args", sorted(DEFAULT_PRESET_DIGESTS))
def test_default_preset_bytes_unchanged(tmp_path, args):
    dialogs_, seconds, seed, fps, rate = args
    make_corpus(tmp_path, num_dialogs=dialogs_, seconds=seconds, seed=seed, fps=fps, sample_rate=rate)
    digests = {str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert digests == DEFAULT_PRESET_DIGESTS[args]


# ---------------------------------------------------------------------------------------------------------
# The hard preset: real speech, large full-rank person offsets, unseen persons, varied lengths
# ---------------------------------------------------------------------------------------------------------
HARD_SEED = 11
HARD_DIALOGS = 3
HARD_MIN_S, HARD_MAX_S = 6.0, 20.0


def needs_espeak():
    pytest.importorskip("espeakng_loader", reason="the hard preset's real speech needs espeakng-loader")


def hard_corpus_at(root: Path, speech: str = "auto", num_dialogs: int = HARD_DIALOGS, seed: int = HARD_SEED,
                   min_seconds: float = HARD_MIN_S, max_seconds: float = HARD_MAX_S):
    index_path = make_corpus(root, num_dialogs=num_dialogs, seed=seed, preset="hard", min_seconds=min_seconds,
                             max_seconds=max_seconds, speech=speech)
    return root, index_path, json.loads(index_path.read_text())


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    needs_espeak()
    return hard_corpus_at(tmp_path_factory.mktemp("hard"), speech="tts")


@pytest.fixture(scope="module")
def hard_harmonic(tmp_path_factory):
    """The same hard corpus with the harmonic voice instead of speech."""
    return hard_corpus_at(tmp_path_factory.mktemp("hard_harmonic"), speech="harmonic")


def transcripts(corpus) -> dict[str, list[dict]]:
    root, _, index = corpus
    return {f"{did}/{pid}": json.loads((root / Path(rec["audio_path"]).parent / "transcript.json").read_text())
            ["utterances"] for did, recs in index.items() for pid, rec in recs.items()}


def zero_crossing_rate(audio: np.ndarray, T: int) -> np.ndarray:
    frames = audio[:T * HOP].astype(np.float64).reshape(T, HOP)
    return (np.abs(np.diff(np.sign(frames), axis=1)) > 0).mean(1)


def test_hard_layout_metadata_and_states(hard):
    root, index_path, index = hard
    assert sorted(index) == [f"V00_S{HARD_SEED:04d}_I{i:08d}" for i in range(HARD_DIALOGS)]
    about = json.loads(syn.about_path(index_path).read_text())
    assert syn.about_path(index_path) == root / "dataset_jsons" / "synthetic.about.json"
    assert about["preset"] == "hard" and about["seed"] == HARD_SEED and about["speech_requested"] == "tts"
    assert re.fullmatch(r"espeak-ng \d+\.\d+.*", about["speech"]), about["speech"]
    assert about["persons"] == 2 * HARD_DIALOGS and "fallback_reason" not in about
    assert sorted(about["dialogs"]) == sorted(index)
    for did, recs in index.items():
        assert sorted(about["dialogs"][did]["persons"]) == sorted(recs)
        for pid, rec in recs.items():
            assert list(rec) == RECORD_KEYS and re.fullmatch(r"P\d{4}", pid)
            assert abs(rec["frames_num"] - about["dialogs"][did]["seconds"] * FPS) <= syn.MESS_FRAMES_SHORTER[1]
            flame, *_ = load_participant(root, rec)
            assert {k: v.shape[1:] for k, v in flame.items()} == {k: (1, d) for k, d in NPZ_DIMS.items()}
    for parts, _ in dialogs(hard):
        (_, _, sa, _), (_, _, sb, _) = parts
        np.testing.assert_array_equal(PARTNER_STATE[sa], sb)


def test_hard_wavs_hold_speech_not_the_harmonic_voice(hard, hard_harmonic):
    """Speaking frames carry speech-band energy and, unlike the harmonic voice, fricatives (frames that cross
    zero on a third of their samples); two utterances of a person differ."""
    def speaking_frames(corpus):
        zcr, band = [], []
        for parts, T in dialogs(corpus):
            for _, _, s, a in parts:
                speak = s == 2
                zcr.append(zero_crossing_rate(a, T)[speak])
                spec = np.abs(np.fft.rfft(a[:T * HOP].reshape(T, HOP)[speak].astype(np.float64), axis=1)) ** 2
                f = np.fft.rfftfreq(HOP, 1.0 / SR)
                band.append(spec[:, (f > 300) & (f < 3400)].sum(1) / spec.sum(1))
        return np.concatenate(zcr), np.concatenate(band)

    zcr, band = speaking_frames(hard)
    zcr_harmonic, _ = speaking_frames(hard_harmonic)
    assert len(zcr) > 300
    assert np.median(band) > 0.5                                   # most energy in the speech band
    assert np.mean(zcr > 0.3) > 0.03, np.mean(zcr > 0.3)           # fricatives
    assert np.mean(zcr_harmonic > 0.3) < 0.005                     # the harmonic voice has none
    root, _, index = hard
    did = sorted(index)[0]
    for rec in index[did].values():                                 # same persons and timing, other audio
        assert (root / rec["audio_path"]).read_bytes() != (hard_harmonic[0] / rec["audio_path"]).read_bytes()
    # two phrases of one person: different words, different waveforms
    key, utts = next((k, u) for k, u in transcripts(hard).items() if sum(x["kind"] == "phrase" for x in u) >= 2)
    did, pid = key.split("/")
    audio, _ = sf.read(str(root / index[did][pid]["audio_path"]), dtype="float32")
    a, b = [x for x in utts if x["kind"] == "phrase"][:2]
    assert a["text"] != b["text"]
    seg = [audio[int(u["start"] * SR):int(u["end"] * SR)].astype(np.float64) for u in (a, b)]
    n = min(map(len, seg))
    assert n > 0.3 * SR and abs(corr(seg[0][:n], seg[1][:n])) < 0.2
    assert all(np.sqrt(np.mean(x ** 2)) > 20 * syn.NOISE_FLOOR for x in seg)


def test_hard_transcripts_match_voice_activity_and_never_repeat_a_sentence(hard):
    root, _, index = hard
    texts = [u["text"] for utts in transcripts(hard).values() for u in utts if u["kind"] == "phrase"]
    assert len(texts) >= 10 and len(set(texts)) == len(texts)
    for utts in transcripts(hard).values():
        assert all(u["kind"] in ("phrase", "backchannel") and u["end"] > u["start"] for u in utts)
        assert all(u["text"] in syn.BACKCHANNEL_WORDS for u in utts if u["kind"] == "backchannel")
    # the speaking states are the utterances (frames at least half inside one)
    agree = []
    for did, recs in index.items():
        for pid, rec in recs.items():
            states = np.load(root / rec["state_path"])
            T = len(states)
            voiced = np.zeros(T, bool)
            for u in transcripts(hard)[f"{did}/{pid}"]:
                voiced[int(np.ceil(u["start"] * FPS - 0.5)):int(np.floor(u["end"] * FPS - 0.5)) + 1] = True
            agree.append(np.mean(voiced == np.isin(states, (2, 3))))
    assert min(agree) > 0.97, agree
    # the grammar's sentences with one set of used ones: never the same twice
    used: set[str] = set()
    rng = np.random.default_rng(0)
    many = [syn.fresh_sentence(rng, used) for _ in range(5000)]
    assert len(set(many)) == 5000 and used == set(many)


def test_hard_persons_each_in_exactly_one_dialog(hard_harmonic):
    _, _, index = hard_harmonic
    pids = [pid for recs in index.values() for pid in recs]
    assert len(pids) == 2 * HARD_DIALOGS and len(set(pids)) == len(pids)
    plan = syn._hard_plan(300, seed=0, min_seconds=30.0, max_seconds=300.0, fps=FPS)
    persons = [p for pair, _ in plan for p in pair]
    assert len(set(persons)) == 600                                # 300 dialogs, 600 distinct persons
    assert plan[:5] == syn._hard_plan(5, seed=0, min_seconds=30.0, max_seconds=300.0, fps=FPS)


def test_hard_lengths_vary_between_min_and_max(hard_harmonic):
    _, _, index = hard_harmonic
    frames = [rec["frames_num"] for recs in index.values() for rec in recs.values()]
    assert min(frames) >= HARD_MIN_S * FPS - syn.MESS_FRAMES_SHORTER[1] and max(frames) <= HARD_MAX_S * FPS
    assert len({f // 10 for f in frames}) > 1                       # not all the same length
    seconds = np.array([n / FPS for _, n in syn._hard_plan(400, 3, 30.0, 300.0, FPS)])
    assert seconds.min() >= 30.0 and seconds.max() <= 300.0
    assert seconds.min() < 40.0 and seconds.max() > 250.0
    assert abs(np.median(np.log(seconds)) - np.log(np.sqrt(30.0 * 300.0))) < 0.2    # log-uniform


def test_hard_length_messiness_like_the_default(hard):
    """The default preset's length messiness stays."""
    root, _, index = hard
    for did, recs in index.items():
        lengths = []
        for rec in recs.values():
            flame, states, audio, rate = load_participant(root, rec)
            T = len(flame["expression_params"])
            assert rec["frames_num"] == T and 0 <= T - rec["valid_frames_num"] <= 3
            assert len(states) in (T, T + 1)
            assert -0.021 <= len(audio) / rate - T / FPS <= 0.041
            lengths += [rec["valid_frames_num"], T, len(states), len(audio) / HOP]
        assert max(lengths) - min(lengths) <= 0.3 * FPS, (did, lengths)


def test_hard_offsets_are_full_rank_and_larger_than_the_default(hard_harmonic, corpus):
    """Per-participant means of the drift-only dims (the person offset plus the mean of the drift) spread about
    twice as far between persons as in the default preset; the offsets themselves are full rank."""
    def spread(c):
        means = np.array([f["expression_params"][:, 0, 40:].astype(np.float64).mean(0)
                          for parts, _ in dialogs(c) for _, f, _, _ in parts])
        return float(np.sqrt(np.mean(np.var(means, axis=0) / syn.OFFSET_STD[40:] ** 2)))

    hard_spread, default_spread = spread(hard_harmonic), spread(corpus)
    assert hard_spread > 1.4 * default_spread, (hard_spread, default_spread)
    persons = [syn.hard_person_style(5000 + p) for p in range(12)]
    offsets = np.array([p.exp_offset for p in persons])
    assert np.linalg.matrix_rank(offsets, tol=1e-9) == 12          # full rank (the default's: OFFSET_FACTORS)
    ratio = np.sqrt(np.mean((offsets / syn.HARD_OFFSET_STD) ** 2))
    assert 0.8 < ratio < 1.2                                       # generator v1's size: 2 x OFFSET_STD
    np.testing.assert_allclose(syn.HARD_OFFSET_STD, 2 * syn.OFFSET_STD)
    assert all(p.voice is not None and p.voice.name.split("+")[0] in syn.TTS_ACCENTS for p in persons)
    assert len({p.voice for p in persons}) == len(persons)


def test_hard_motion_follows_the_own_speech_waveform(hard):
    """The jaw follows the own microphone's frame RMS SPEECH_LAG_FRAMES late (not the partner's); the brow
    follows the intonation estimated from the own microphone while speaking; the listener smile builds up
    while the partner speaks."""
    L = syn.SPEECH_LAG_FRAMES
    checked, brow, smile_gap = 0, [], []
    for parts, T in dialogs(hard):
        for i in (0, 1):
            _, flame, states, own_audio = parts[i]
            if not talks(states):
                continue
            checked += 1
            own, other = frame_rms(own_audio, T), frame_rms(parts[1 - i][3], T)
            jaw = flame["jaw_params"][:, 0, syn.JAW_DIM]
            c_own, c_other = corr(jaw[L:], own[:-L]), corr(jaw[L:], other[:-L])
            assert c_own > 0.85 and c_other < 0.3, (c_own, c_other)
            assert int(np.argmax([corr(jaw[k:], own[:T - k]) for k in range(6)])) == L
            exp = flame["expression_params"][:, 0].astype(np.float64)
            for d in syn.FAST_SPEECH_EXP_DIMS:
                assert abs(corr(np.diff(exp[L:, d]), np.diff(own[:-L]))) > 0.7
            # intonation from the waveform (the generator's estimator, run on the microphone)
            speak = np.flatnonzero(states == 2)
            frames = own_audio[:T * HOP].astype(np.float64).reshape(T, HOP)[speak]
            f0 = syn._autocorr_f0(frames.reshape(len(speak), HOP // 4, 4).mean(2), SR / 4)
            ok = f0 > 0
            st = 12 * np.log2(f0[ok] / np.median(f0[ok]))
            at = speak[ok]
            at, st = at[at + L < T], st[at + L < T]
            brow.append(corr(exp[at + L, syn.PITCH_EXP_DIM], st))
            smile = exp[:, list(syn.LISTENER_EXP_DIMS)] @ np.sign(syn.SMILE_PATTERN)
            smile_gap.append(smile[states == 1].mean() - smile[states == 2].mean())
    assert checked >= 3
    assert np.mean(brow) > 0.5 and min(brow) > 0.3, brow
    assert np.mean(smile_gap) > 0.2, smile_gap


def test_hard_same_args_same_bytes(tmp_path):
    """Same arguments, same bytes (each dialog synthesises in a fresh espeak-ng session, whatever ran before);
    dialog i does not depend on how many dialogs follow."""
    needs_espeak()
    kw = dict(seed=5, min_seconds=3.0, max_seconds=5.0, speech="tts")
    a, _, _ = hard_corpus_at(tmp_path / "a", num_dialogs=2, **kw)
    with syn.EspeakEngine() as engine:                              # unrelated speech in between
        engine.synth("Something else entirely.", "en+m3", 170, 60, 50)
    b, _, _ = hard_corpus_at(tmp_path / "b", num_dialogs=2, **kw)
    c, _, index_c = hard_corpus_at(tmp_path / "c", num_dialogs=1, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len(files) == 2 + 2 * 2 * 4                              # index, about, 4 files per participant
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    first = sorted(index_c)[0]
    for p in (c / "synthetic" / first).rglob("*"):
        if p.is_file():
            assert p.read_bytes() == (a / p.relative_to(c)).read_bytes(), p
    other, _, _ = hard_corpus_at(tmp_path / "d", num_dialogs=1, **{**kw, "seed": 6})
    assert sorted(json.loads((other / "dataset_jsons/synthetic.json").read_text())) != sorted(index_c)


def test_espeak_sessions_are_independent():
    needs_espeak()
    with syn.EspeakEngine() as engine:
        first = engine.synth("Well, my sister went to the market on Tuesday.", "en-us+f3", 175, 50, 50)
        again = engine.synth("Well, my sister went to the market on Tuesday.", "en-us+f3", 175, 50, 50)
        assert engine.sample_rate == 22050 and first.dtype == np.int16 and len(first) > 22050
    with syn.EspeakEngine() as engine:
        fresh = engine.synth("Well, my sister went to the market on Tuesday.", "en-us+f3", 175, 50, 50)
    np.testing.assert_array_equal(first, fresh)                     # a new session starts clean
    assert not np.array_equal(first, again)                         # inside a session the library keeps state


def test_hard_falls_back_loudly_without_the_engine(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)     # as if not installed
    with pytest.warns(syn.SpeechFallbackWarning, match="espeakng-loader"):
        root, index_path, index = hard_corpus_at(tmp_path, num_dialogs=1, min_seconds=3.0, max_seconds=4.0)
    about = json.loads(syn.about_path(index_path).read_text())
    assert about["speech"] == "harmonic-fallback" and about["speech_requested"] == "auto"
    assert "pip install espeakng-loader" in about["fallback_reason"]
    (did, recs), = index.items()
    for rec in recs.values():
        assert (root / rec["audio_path"]).is_file()
        assert not (root / rec["audio_path"]).with_name("transcript.json").exists()


def test_hard_speech_tts_without_the_engine_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    with pytest.raises(syn.SpeechEngineMissing, match="pip install espeakng-loader"):
        make_corpus(tmp_path, num_dialogs=1, preset="hard", min_seconds=3.0, max_seconds=4.0, speech="tts")
    assert not (tmp_path / "dataset_jsons").exists()


def test_hard_harmonic_on_request_is_not_a_fallback(hard_harmonic):
    about = json.loads(syn.about_path(hard_harmonic[1]).read_text())
    assert about["speech"] == "harmonic" and "fallback_reason" not in about


@pytest.mark.parametrize("kw", [
    {"preset": "hard", "seconds": 10.0},
    {"preset": "hard", "min_seconds": 10.0, "max_seconds": 5.0},
    {"preset": "hard", "min_seconds": 0.5, "max_seconds": 5.0},
    {"preset": "hard", "num_dialogs": syn.HARD_PERSON_SPAN},
    {"min_seconds": 3.0},
    {"speech": "tts"},
    {"preset": "harder"},
    {"preset": "hard", "speech": "loud"},
])
def test_bad_preset_arguments(tmp_path, kw):
    with pytest.raises(ValueError):
        make_corpus(tmp_path, **{"num_dialogs": 1, **kw})
    assert not (tmp_path / "dataset_jsons").exists()


def test_cli_hard_preset(tmp_path, capsys):
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "scripts" / "make_synthetic_corpus.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_corpus", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "cli"
    assert mod.main(["--out", str(out), "--dialogs", "2", "--preset", "hard", "--min-seconds", "3",
                     "--max-seconds", "4", "--speech", "harmonic", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "speech: harmonic" in printed and str(out / "dataset_jsons" / "synthetic.json") in printed
    assert json.loads((out / "dataset_jsons" / "synthetic.about.json").read_text())["preset"] == "hard"
    assert mod.main(["--out", str(tmp_path / "bad"), "--preset", "hard", "--seconds", "3"]) == 2


def test_espeak_session_warns_when_the_library_cannot_be_unloaded():
    """Another holder of libespeak-ng in the process keeps its state alive: the session says so."""
    needs_espeak()
    import ctypes
    import espeakng_loader
    held = ctypes.CDLL(espeakng_loader.get_library_path())
    try:
        with pytest.warns(RuntimeWarning, match="not reproducible"):
            with syn.EspeakEngine():
                pass
    finally:
        import _ctypes
        _ctypes.dlclose(held._handle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # unloaded cleanly: no warning
        with syn.EspeakEngine():
            pass


def test_person_base_gives_persons_never_seen_in_another_corpus(tmp_path):
    """Two default-preset corpora with person bases further apart than their pools share no person: a test set of
    unseen persons (the quality bench); the base is refused where it would reach the hard preset's persons."""
    a = json.loads(syn.make_corpus(tmp_path / "a", num_dialogs=6, seconds=2, seed=0).read_text())
    b = json.loads(syn.make_corpus(tmp_path / "b", num_dialogs=6, seconds=2, seed=0, person_base=2000).read_text())
    persons = lambda index: {p for d in index.values() for p in d}
    assert not persons(a) & persons(b)
    assert all(2000 <= int(p[1:]) < 3000 for p in persons(b))
    with pytest.raises(ValueError, match="person_base"):
        syn.make_corpus(tmp_path / "c", num_dialogs=2, seconds=2, person_base=4500)


def test_enrollment_clips_show_the_person_from_another_conversation(tmp_path):
    """An enrollment clip (the quality bench's enrollment protocol) is a FLAME npz the corpus reader takes; its
    mean expression follows that person's own offset (not another person's), from fresh turns and drift; the
    same person gives the same bytes, and a bad id or preset is refused by name."""
    from common.data.config import DataConfig
    from common.data.corpus import read_flame
    pids = ["P5001", "P5002", "P5003"]
    paths = syn.write_enrollment_clips(tmp_path / "a", pids, "hard", seconds=20)
    assert sorted(paths) == pids and all(p.name == f"{pid}.npz" for pid, p in paths.items())
    cfg = DataConfig()
    means = {}
    for pid, path in paths.items():
        motion, shape = read_flame(path, cfg, "enrollment", pid)
        assert motion.shape == (600, 51) and np.isfinite(motion).all()
        np.testing.assert_allclose(shape, syn.style_of(pid, "hard").shape[:100], rtol=1e-6)
        means[pid] = motion[:, :50].mean(0)
    offsets = {pid: syn.style_of(pid, "hard").exp_offset[:50] for pid in pids}
    for pid in pids:       # squared distance of the clip's mean to each person's offset (and to the average face)
        dist = {other: float(((means[pid] - off) ** 2).sum()) for other, off in offsets.items()}
        assert dist[pid] < 0.5 * float((offsets[pid] ** 2).sum()), dist
        assert dist[pid] < 0.5 * min(v for o, v in dist.items() if o != pid), dist
    again = syn.write_enrollment_clips(tmp_path / "b", pids[:1], "hard", seconds=20)
    assert again[pids[0]].read_bytes() == paths[pids[0]].read_bytes()
    default = syn.write_enrollment_clips(tmp_path / "c", pids[:1], "default", seconds=20)   # the other preset's person
    assert default[pids[0]].read_bytes() != paths[pids[0]].read_bytes()
    kept = again[pids[0]].stat().st_mtime_ns                         # the right length: kept; another: written again
    assert syn.write_enrollment_clips(tmp_path / "b", pids[:1], "hard", seconds=20)[pids[0]].stat().st_mtime_ns == kept
    shorter = syn.write_enrollment_clips(tmp_path / "b", pids[:1], "hard", seconds=10)[pids[0]]
    assert read_flame(shorter, cfg, "enrollment", pids[0])[0].shape == (300, 51)
    with pytest.raises(ValueError, match="has no frame"):
        syn.write_enrollment_clips(tmp_path / "e", pids[:1], "hard", seconds=0.01)
    with pytest.raises(ValueError, match="'X12' is not a synthetic person id"):
        syn.write_enrollment_clips(tmp_path / "d", ["X12"], "hard")
    with pytest.raises(ValueError, match="preset must be one of"):
        syn.style_of("P0001", "easy")
