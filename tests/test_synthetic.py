"""The synthetic corpus generator: layout, file formats, and the documented structure in the data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common import synthetic as syn
from common.synthetic import make_corpus

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
    import hashlib
    dialogs_, seconds, seed, fps, rate = args
    make_corpus(tmp_path, num_dialogs=dialogs_, seconds=seconds, seed=seed, fps=fps, sample_rate=rate)
    digests = {str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert digests == DEFAULT_PRESET_DIGESTS[args]
