"""Synthetic dyadic corpus in the users' layout (see ``docs/SYNTHETIC.md`` for every process and parameter).

``make_corpus(out_dir, ...)`` writes ``out_dir/dataset_jsons/<index_name>`` and, per dialog and participant,
``synthetic/<dialog>/<pid>/{audio.wav, state.npy, features/emica_flame.npz}`` exactly like the corpus described
in ``DATA_FORMAT.md``. The content has learnable, documented structure:

* turn-taking: a semi-Markov process of turns made of phrases, pauses, overlaps and backchannels; the
  per-frame states (0 idle, 1 listen, 2 speak, 3 crosstalk) are derived from the resulting voice activity;
* audio: each person's microphone carries a harmonic "voice" (per-person pitch and timbre, phrase
  declination, stressed syllables) modulated by a syllable envelope, a near-silent noise floor, and a 3 %
  bleed of the partner;
* motion (30 fps): the jaw and ``SPEECH_EXP_DIMS`` follow one's own syllable envelope ``SPEECH_LAG_FRAMES``
  late, ``PITCH_EXP_DIM`` follows one's own intonation, ``LISTENER_EXP_DIMS`` integrate the partner's voice
  activity, ``BACKCHANNEL_EXP_DIMS`` and neck-pose nods fire after the partner's phrase ends,
  ``SPEECH_SECONDARY_DIMS`` / ``LISTENER_SECONDARY_DIMS`` carry smaller loadings of the speech envelope and
  the listener integrator, and every expression dim carries a smooth idle drift and a per-person offset
  (``DRIFT_ONLY_EXP_DIMS`` carry nothing else).

Everything is a function of ``seed`` (byte-identical files for the same arguments); a person's style is a
function of the person number only, so the same ``P....`` id behaves alike in every dialog and corpus.
numpy / scipy / soundfile only.

``make_corpus(..., preset="hard")`` is the harder corpus: real speech (espeak-ng text-to-speech from the
``espeakng-loader`` wheel, imported lazily; a fresh sentence per utterance) driving the same motion processes
through the waveform's envelope and intonation, generator v1's full-rank person offsets, two persons per dialog
who appear in no other dialog, dialog lengths log-uniform in 30 s - 5 min, and a metadata file beside the index
(``about_path``) that says which speech the corpus holds (``harmonic-fallback`` when the engine is missing).
"""
from __future__ import annotations

import json
import logging
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, medfilt, resample_poly

# ---------------------------------------------------------------------------------------------------------
# The structured dims (indices into expression_params[:, 0, :], jaw_params[:, 0, :], pose_params[:, 0, :]).
# ---------------------------------------------------------------------------------------------------------
EXPRESSION_DIMS = 100
SHAPE_DIMS = 300
SPEECH_LAG_FRAMES = 2                 # jaw / speech dims at frame t follow the envelope of frame t - 2
JAW_DIM = 0                           # jaw_params[:, 0, JAW_DIM]: opening, follows own syllable envelope
JAW_MAX = 0.35                        # rad
FAST_SPEECH_EXP_DIMS = (0, 1)         # follow the lagged envelope directly
SLOW_SPEECH_EXP_DIMS = (2, 3)         # follow it through a one-pole low-pass (SPEECH_SMOOTH_TAU_S)
SPEECH_EXP_DIMS = FAST_SPEECH_EXP_DIMS + SLOW_SPEECH_EXP_DIMS
SPEECH_SMOOTH_TAU_S = 0.15
PITCH_EXP_DIM = 4                     # brow: follows own intonation (semitones) while speaking, lagged
LISTENER_EXP_DIMS = (5, 6, 7)         # smile: leaky integrator of the partner's voice activity
LISTENER_TAU_S = 1.5
BACKCHANNEL_EXP_DIMS = (8, 9)         # bump after the partner's phrase ends (with a nod)
SPEECH_SECONDARY_DIMS = tuple(range(10, 30))    # smaller loadings of the smoothed speech envelope
LISTENER_SECONDARY_DIMS = tuple(range(30, 40))  # smaller loadings of the listener integrator
STRUCTURED_EXP_DIMS = (SPEECH_EXP_DIMS + (PITCH_EXP_DIM,) + LISTENER_EXP_DIMS + BACKCHANNEL_EXP_DIMS
                       + SPEECH_SECONDARY_DIMS + LISTENER_SECONDARY_DIMS)
DRIFT_ONLY_EXP_DIMS = tuple(range(40, EXPRESSION_DIMS))   # idle drift + person offset only
NOD_POSE_DIM = 0                      # pose_params[:, 0, 0] (neck pitch): damped oscillation bursts
NOD_DELAY_FRAMES = (3, 8)             # a nod starts 3..8 frames after the partner's phrase end
EXPRESSION_CLIP = 3.0
BLEED = 0.03                          # partner's voice leaking into each microphone
NOISE_FLOOR = 3e-4                    # std of the microphone noise floor
SPEECH_FLOOR = 0.12                   # envelope level between syllables while speaking (voicing continues)
TICKS_PER_FRAME = 40                  # control rate of the audio processes: fps * 40 (1200 Hz at 30 fps)
PERSON_SEED = 0x5EED_FACE             # person styles depend on the person number only

IDLE, LISTEN, SPEAK, CROSSTALK = 0, 1, 2, 3
SPLIT_DECOYS = ("train", "val", "test", "seamless_mini")   # the index's split field is random on purpose

_DIM = np.arange(EXPRESSION_DIMS)
DRIFT_STD = (0.22 * (1.0 + _DIM / 6.0) ** -0.75).astype(np.float64)     # idle drift std per expression dim
OFFSET_STD = (0.25 * (1.0 + _DIM / 6.0) ** -0.75).astype(np.float64)    # person offset std per dim
# Tracked FLAME expressions vary along few directions at a time, not as 100 independent processes: the idle
# drift is IDLE_FACTORS shared smooth processes seen through a fixed loading (plus IDLE_UNIQUE_VAR of each
# dim's drift variance of its own), and a person's resting offset lies in an OFFSET_FACTORS-dim subspace.
IDLE_FACTORS = 6
IDLE_UNIQUE_VAR = 0.05
OFFSET_FACTORS = 4
# Shared affect (mimicry): MIMIC_RHO (in std) of each person's idle-drift factors follows the partner's own
# factors MIMIC_LAG_S earlier, so a listener's face echoes the speaker's; only the partner's motion reveals it.
MIMIC_RHO = 0.6
MIMIC_LAG_S = 0.5
SPEECH_PATTERN = np.array([1.2, -0.9, 0.8, -0.6])      # signs and sizes of the speech couplings (dims 0-3)
SMILE_PATTERN = np.array([1.0, 0.7, -0.5])              # listener couplings (dims 5-7)
BACKCHANNEL_PATTERN = np.array([0.8, 0.6])              # backchannel bump (dims 8-9)
_LOADINGS = np.random.default_rng(PERSON_SEED - 1)
# signed loadings, shrinking with the dim index like the rest of the spectrum
SPEECH_SECONDARY_LOADING = (_LOADINGS.choice([-1.0, 1.0], len(SPEECH_SECONDARY_DIMS))
                            * _LOADINGS.uniform(0.6, 1.0, len(SPEECH_SECONDARY_DIMS))
                            * 0.5 * (1.0 + (np.arange(len(SPEECH_SECONDARY_DIMS)) / 10.0)) ** -1.0)
LISTENER_SECONDARY_LOADING = (_LOADINGS.choice([-1.0, 1.0], len(LISTENER_SECONDARY_DIMS))
                              * _LOADINGS.uniform(0.6, 1.0, len(LISTENER_SECONDARY_DIMS)) * 0.25)


def _unit_rows(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# (100, k) loadings with unit-norm rows: a dim's variance is its std^2 times the factors' (unit) variance
IDLE_LOADING = _unit_rows(_LOADINGS.standard_normal((EXPRESSION_DIMS, IDLE_FACTORS)))
OFFSET_LOADING = _unit_rows(_LOADINGS.standard_normal((EXPRESSION_DIMS, OFFSET_FACTORS)))
VOWEL_FORMANTS = np.array([[730.0, 1090.0], [270.0, 2290.0], [300.0, 870.0]])   # /a/, /i/, /u/
_TABLE_N = 2048


@dataclass(frozen=True)
class PersonStyle:
    """Everything about a person that stays the same across dialogs."""
    person: int
    f0: float                  # Hz, base pitch
    syllable_rate: float       # Hz
    tilt: float                # spectral tilt of the voice
    formant_scale: float
    talk_scale: float          # multiplies turn lengths
    backchannel_prob: float    # chance to vocalise a backchannel at a partner's phrase end
    nod_prob: float            # chance to nod at a partner's phrase end
    nod_amp: float             # rad
    nod_freq: float            # Hz
    jaw_gain: float
    speech_gain: np.ndarray    # (4,) multiplies SPEECH_PATTERN
    brow_gain: float           # per semitone
    smile_gain: np.ndarray     # (3,) multiplies SMILE_PATTERN
    bc_gain: np.ndarray        # (2,) multiplies BACKCHANNEL_PATTERN
    head_gain: float           # speaking head bob
    exp_offset: np.ndarray     # (100,)
    pose_offset: np.ndarray    # (3,)
    shape: np.ndarray          # (300,)
    cam_scale: float
    voice: TtsVoice | None = None   # hard preset: how espeak-ng speaks for this person

    @property
    def pid(self) -> str:
        return f"P{self.person:04d}"


def person_style(person: int) -> PersonStyle:
    """The style of person number ``person`` (independent of the corpus seed)."""
    rng = np.random.default_rng([PERSON_SEED, int(person)])
    high = rng.random() < 0.5
    return PersonStyle(
        person=int(person),
        f0=float(rng.uniform(165.0, 250.0) if high else rng.uniform(90.0, 150.0)),
        syllable_rate=float(rng.uniform(4.0, 6.0)),
        tilt=float(rng.uniform(0.8, 1.4)),
        formant_scale=float(rng.uniform(1.05, 1.2) if high else rng.uniform(0.9, 1.05)),
        talk_scale=float(rng.uniform(0.7, 1.4)),
        backchannel_prob=float(rng.uniform(0.15, 0.45)),
        nod_prob=float(rng.uniform(0.5, 0.9)),
        nod_amp=float(rng.uniform(0.04, 0.09)),
        nod_freq=float(rng.uniform(2.0, 3.0)),
        jaw_gain=float(rng.uniform(0.75, 1.15)),
        speech_gain=rng.uniform(0.7, 1.3, 4),
        brow_gain=float(rng.uniform(0.15, 0.3)),
        smile_gain=rng.uniform(0.6, 1.4) * rng.uniform(0.85, 1.15, 3),
        bc_gain=rng.uniform(0.6, 1.4) * rng.uniform(0.85, 1.15, 2),
        head_gain=float(rng.uniform(0.5, 1.5)),
        exp_offset=(OFFSET_LOADING @ rng.standard_normal(OFFSET_FACTORS)) * OFFSET_STD,
        pose_offset=rng.standard_normal(3) * np.array([0.04, 0.04, 0.02]),
        shape=rng.standard_normal(SHAPE_DIMS) * 0.8 / (1.0 + np.arange(SHAPE_DIMS) / 20.0),
        cam_scale=float(rng.uniform(7.5, 9.5)),
    )


# ---------------------------------------------------------------------------------------------------------
# Turn-taking
# ---------------------------------------------------------------------------------------------------------
P_OVERLAP = 0.2        # next turn starts before the current one ends (crosstalk 0.15-0.6 s)
P_SAME = 0.15          # the same person takes the next turn after a pause
TURN_GAMMA = (2.0, 1.6)            # shape, scale (s): mean turn 3.2 s before talk_scale
TURN_RANGE = (0.6, 10.0)
PHRASE_RANGE = (0.5, 2.2)          # s
PHRASE_PAUSE = (0.2, 0.5)          # s, within a turn
TURN_PAUSE = (0.2, 1.5)            # s, between turns
SAME_SPEAKER_PAUSE = (0.5, 1.5)
OVERLAP_RANGE = (0.15, 0.6)
BACKCHANNEL_LEN = (0.2, 0.45)      # s, starts 0.25 s before .. 0.05 s after the speaker's phrase end


def _first_turn(rng: np.random.Generator) -> tuple[int, float]:
    """Who speaks first, and when (after 0.1-1.0 s of silence)."""
    spk = int(rng.integers(2))
    return spk, float(rng.uniform(0.1, 1.0))


def _turn_length(rng: np.random.Generator, style: PersonStyle) -> float:
    return float(np.clip(rng.gamma(*TURN_GAMMA) * style.talk_scale, *TURN_RANGE))


def _backchannel_onset(rng: np.random.Generator, listener: PersonStyle, phrase_end: float) -> float | None:
    """When the listener vocalises a backchannel at a phrase end (0.25 s before .. 0.05 s after), or None."""
    if rng.random() < listener.backchannel_prob:
        return phrase_end + float(rng.uniform(-0.25, 0.05))
    return None


def _next_turn(rng: np.random.Generator, spk: int, turn_end: float) -> tuple[int, float]:
    """Who takes the next turn and when: overlap (crosstalk), the same speaker again, or the partner."""
    r = rng.random()
    if r < P_OVERLAP:
        return 1 - spk, turn_end - float(rng.uniform(*OVERLAP_RANGE))
    if r < P_OVERLAP + P_SAME:
        return spk, turn_end + float(rng.uniform(*SAME_SPEAKER_PAUSE))
    return 1 - spk, turn_end + float(rng.uniform(*TURN_PAUSE))


def turn_timeline(rng: np.random.Generator, duration: float, styles: tuple[PersonStyle, PersonStyle]
                  ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Voiced segments (start, end) in seconds for both persons: a semi-Markov process over turns."""
    segs: tuple[list, list] = ([], [])
    spk, t = _first_turn(rng)
    while t < duration:
        lst = 1 - spk
        turn_end = t + _turn_length(rng, styles[spk])
        while True:
            end = min(t + float(rng.uniform(*PHRASE_RANGE)), turn_end)
            if turn_end - end < PHRASE_RANGE[0]:            # no room for another phrase: end the turn here
                end = turn_end
            segs[spk].append((t, end))
            if end >= turn_end:
                break
            b0 = _backchannel_onset(rng, styles[lst], end)
            if b0 is not None:
                segs[lst].append((b0, b0 + float(rng.uniform(*BACKCHANNEL_LEN))))
            t = end + float(rng.uniform(*PHRASE_PAUSE))
        spk, t = _next_turn(rng, spk, turn_end)
    return segs


def states_from_activity(va_self: np.ndarray, va_partner: np.ndarray) -> np.ndarray:
    """0 idle, 1 listen (self silent, partner speaking), 2 speak, 3 crosstalk, per frame."""
    return (2 * va_self.astype(np.int64) + va_partner.astype(np.int64)).choose([IDLE, LISTEN, SPEAK, CROSSTALK])


# ---------------------------------------------------------------------------------------------------------
# Small signal helpers
# ---------------------------------------------------------------------------------------------------------
def _one_pole(x: np.ndarray, tau_frames: float, axis: int = 0) -> np.ndarray:
    a = float(np.exp(-1.0 / max(tau_frames, 1e-6)))
    return lfilter([1.0 - a], [1.0, -a], x, axis=axis)


def _lag(x: np.ndarray, n: int) -> np.ndarray:
    """``y[t] = x[t - n]`` (zeros before the start)."""
    y = np.zeros_like(x)
    y[n:] = x[:len(x) - n] if n > 0 else x
    return y


def _smooth_noise(rng: np.random.Generator, n: int, std: np.ndarray, tau_frames: np.ndarray) -> np.ndarray:
    """(n, D) stationary smooth noise: white noise through two one-pole low-passes (time constant per dim),
    scaled to ``std`` per dim. A burn-in of 4 time constants starts it in its stationary distribution."""
    std = np.asarray(std, np.float64)
    tau_frames = np.broadcast_to(np.asarray(tau_frames, np.float64), std.shape)
    burn = int(np.ceil(4 * tau_frames.max()))
    eps = rng.standard_normal((n + burn, len(std)))
    out = np.empty((n, len(std)))
    for d in range(len(std)):
        a = float(np.exp(-1.0 / tau_frames[d]))
        b, den = [1.0 - a], [1.0, -a]
        y = lfilter(b, den, lfilter(b, den, eps[:, d]))
        # stationary std of the cascade for unit white input: sum of the squared impulse response
        h = lfilter(b, den, lfilter(b, den, np.r_[1.0, np.zeros(int(12 * tau_frames[d]) + 8)]))
        out[:, d] = y[burn:] * (std[d] / np.sqrt(np.sum(h * h)))
    return out


def _voice_tables(style: PersonStyle, sample_rate: int) -> np.ndarray:
    """(3 vowels, _TABLE_N) one period of the person's voice per vowel, peak-normalised."""
    fmax = min(8000.0, 0.45 * sample_rate)
    k = np.arange(1, max(2, int(fmax / (style.f0 * 1.45))) + 1)
    freqs = k * style.f0
    x = np.arange(_TABLE_N) / _TABLE_N
    tables = np.empty((len(VOWEL_FORMANTS), _TABLE_N))
    basis = np.sin(2 * np.pi * np.outer(k, x) + (k[:, None] * 0.7) % (2 * np.pi))
    for v, formants in enumerate(VOWEL_FORMANTS * style.formant_scale):
        gain = 0.3 + sum(np.exp(-0.5 * ((freqs - f) / (80.0 + 0.08 * f)) ** 2) for f in formants)
        amp = k ** -style.tilt * gain
        w = amp @ basis
        tables[v] = w / np.abs(w).max()
    return tables


# ---------------------------------------------------------------------------------------------------------
# One dialog
# ---------------------------------------------------------------------------------------------------------
def _tick_mask(segs: list[tuple[float, float]], n_ticks: int, cr: float) -> np.ndarray:
    """(n_ticks,) bool: inside a voiced segment, at the control rate ``cr`` (ticks / s)."""
    mask = np.zeros(n_ticks, bool)
    for s, e in segs:
        i0, i1 = max(0, int(round(s * cr))), min(n_ticks, int(round(e * cr)))
        if i1 > i0:
            mask[i0:i1] = True
    return mask


def _frame_activity(mask: np.ndarray, n_frames: int) -> np.ndarray:
    """Voice activity per frame: at least half of the frame's ticks voiced."""
    return mask[:n_frames * TICKS_PER_FRAME].reshape(n_frames, TICKS_PER_FRAME).mean(1) >= 0.5


@dataclass
class _Track:
    audio_voice: np.ndarray     # (n_samples,) float64, own voice only
    env: np.ndarray             # (T,) syllable envelope per frame, 0..1
    va: np.ndarray              # (T,) bool voice activity per frame
    pitch: np.ndarray           # (T,) semitones vs the person's f0 while voiced, 0 elsewhere


def _speaker_track(rng: np.random.Generator, style: PersonStyle, segs: list[tuple[float, float]],
                   n_frames: int, n_samples: int, fps: float, sample_rate: int) -> _Track:
    cr = fps * TICKS_PER_FRAME                                   # control rate (ticks / s)
    n_ticks = n_frames * TICKS_PER_FRAME
    duration = n_ticks / cr
    tick_t = (np.arange(n_ticks) + 0.5) / cr

    mask = _tick_mask(segs, n_ticks, cr)
    ramp = max(3, int(round(0.02 * cr)))
    win = np.hanning(ramp + 2)[1:-1]
    soft_mask = np.convolve(mask.astype(np.float64), win / win.sum(), mode="same")

    # syllables: a renewal process at the person's rate; louder syllables are stressed (higher pitch)
    n_syl = int(duration * style.syllable_rate * 1.6) + 16
    period = rng.uniform(0.65, 1.35, n_syl) / style.syllable_rate
    onset = np.cumsum(period) - period[0] * rng.random()
    dur = period * rng.uniform(0.55, 0.85, n_syl)
    amp = rng.uniform(0.45, 1.0, n_syl)
    vowel = rng.integers(0, len(VOWEL_FORMANTS), n_syl)
    accent = (amp - 0.45) * 4.0                                  # semitones, 0..2.2
    si = np.clip(np.searchsorted(onset, tick_t, side="right") - 1, 0, n_syl - 1)
    ph = (tick_t - onset[si]) / dur[si]
    inside = (ph >= 0) & (ph < 1)
    bump = np.where(inside, np.sin(np.pi * np.clip(ph, 0, 1)), 0.0)
    env = (SPEECH_FLOOR + (1.0 - SPEECH_FLOOR) * amp[si] * bump ** 2) * soft_mask

    # intonation: phrase declination (+1.5 -> -1.5 st), accents on stressed syllables, slow wander
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    if len(starts):
        ri = np.clip(np.searchsorted(starts, np.arange(n_ticks), side="right") - 1, 0, len(starts) - 1)
        rel = np.clip((np.arange(n_ticks) - starts[ri]) / np.maximum(ends[ri] - starts[ri], 1), 0, 1)
    else:
        rel = np.zeros(n_ticks)
    wander = np.repeat(_smooth_noise(rng, n_frames, np.array([1.0]), np.array([0.5 * fps]))[:, 0], TICKS_PER_FRAME)
    pitch_st = 3.0 * (0.5 - rel) + accent[si] * bump + wander
    f0 = style.f0 * 2.0 ** (pitch_st / 12.0)

    # audio at the sample rate: wavetable voice (vowel per syllable) + a little breath noise
    t_s = np.arange(n_samples) / sample_rate
    f0_s = np.interp(t_s, tick_t, f0)
    env_s = np.interp(t_s, tick_t, env)
    tick_of_s = np.minimum((t_s * cr).astype(np.int64), n_ticks - 1)
    vowel_s = vowel[si][tick_of_s]
    phase = np.cumsum(f0_s / sample_rate)
    idx = ((phase - np.floor(phase)) * _TABLE_N).astype(np.int64) & (_TABLE_N - 1)
    tables = _voice_tables(style, sample_rate)
    voice = tables.ravel()[vowel_s * _TABLE_N + idx] + 0.05 * rng.standard_normal(n_samples, dtype=np.float32)
    voice *= env_s

    frames = slice(0, n_frames * TICKS_PER_FRAME)
    env_f = env[frames].reshape(n_frames, TICKS_PER_FRAME).mean(1)
    mask_f = mask[frames].reshape(n_frames, TICKS_PER_FRAME)
    va = _frame_activity(mask, n_frames)
    pitch_f = (pitch_st * mask).reshape(n_frames, TICKS_PER_FRAME).sum(1) / np.maximum(mask_f.sum(1), 1)
    return _Track(voice, env_f, va, np.where(va, pitch_f, 0.0))


def _motion(rng: np.random.Generator, style: PersonStyle, own: _Track, partner: _Track, fps: float,
            factors: np.ndarray) -> dict[str, np.ndarray]:
    """FLAME coefficient tracks (T, K) of one participant from both tracks and its idle-drift factors (T, 6)."""
    T = len(own.env)
    L = SPEECH_LAG_FRAMES
    env_lag = _lag(own.env, L)
    va_lag = _lag(own.va.astype(np.float64), L)
    pitch_lag = _lag(own.pitch, L)

    # expression: person offset + idle drift (shared factors + a little of each dim's own) + couplings
    unique = _smooth_noise(rng, T, DRIFT_STD * np.sqrt(IDLE_UNIQUE_VAR), rng.uniform(1.0, 3.0, EXPRESSION_DIMS) * fps)
    drift = factors @ (IDLE_LOADING * (DRIFT_STD * np.sqrt(1.0 - IDLE_UNIQUE_VAR))[:, None]).T + unique
    exp = style.exp_offset[None, :] + drift
    gains = SPEECH_PATTERN * style.speech_gain
    slow_env = _one_pole(env_lag, SPEECH_SMOOTH_TAU_S * fps) * 1.5
    for j, d in enumerate(SPEECH_EXP_DIMS):
        exp[:, d] += gains[j] * (env_lag if d in FAST_SPEECH_EXP_DIMS else slow_env)
    exp[:, PITCH_EXP_DIM] += style.brow_gain * pitch_lag * va_lag
    exp[:, list(SPEECH_SECONDARY_DIMS)] += (slow_env * style.speech_gain.mean())[:, None] * SPEECH_SECONDARY_LOADING

    listen = _one_pole(partner.va.astype(np.float64), LISTENER_TAU_S * fps)
    exp[:, list(LISTENER_EXP_DIMS)] += listen[:, None] * (SMILE_PATTERN * style.smile_gain)[None, :]
    exp[:, list(LISTENER_SECONDARY_DIMS)] += (listen * style.smile_gain.mean())[:, None] * LISTENER_SECONDARY_LOADING

    # nods + backchannel expression after the partner's phrase ends (while not speaking oneself)
    pv = partner.va
    ends = np.flatnonzero(pv[:-1] & ~pv[1:]) + 1
    ends = ends[~own.va[ends]]
    keep = rng.random(len(ends)) < style.nod_prob
    delay = rng.integers(NOD_DELAY_FRAMES[0], NOD_DELAY_FRAMES[1] + 1, len(ends))
    strength = rng.uniform(0.6, 1.0, len(ends))
    impulses = np.zeros(T)
    onsets = ends + delay
    ok = keep & (onsets < T)
    np.add.at(impulses, onsets[ok], strength[ok])
    n = np.arange(int(1.2 * fps))
    nod_kernel = np.sin(2 * np.pi * style.nod_freq * n / fps) * np.exp(-n / (0.35 * fps))
    bc_kernel = np.hanning(int(0.6 * fps) + 2)[1:-1]
    nods = np.convolve(impulses, nod_kernel)[:T] * style.nod_amp
    bc = np.convolve(impulses, bc_kernel)[:T]
    exp[:, list(BACKCHANNEL_EXP_DIMS)] += bc[:, None] * (BACKCHANNEL_PATTERN * style.bc_gain)[None, :]
    np.clip(exp, -EXPRESSION_CLIP, EXPRESSION_CLIP, out=exp)

    jaw = _smooth_noise(rng, T, np.array([0.004, 0.005, 0.005]), np.array([0.2, 0.3, 0.3]) * fps)
    jaw[:, JAW_DIM] = np.clip(0.015 + style.jaw_gain * 0.3 * env_lag + jaw[:, JAW_DIM], 0.0, JAW_MAX)

    pose = style.pose_offset[None, :] + _smooth_noise(rng, T, np.array([0.02, 0.03, 0.015]),
                                                      np.array([1.0, 1.5, 2.0]) * fps)
    pose[:, NOD_POSE_DIM] += nods + 0.02 * style.head_gain * slow_env

    cam0 = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), style.cam_scale * rng.uniform(0.97, 1.03)])
    cam = cam0[None, :] + _smooth_noise(rng, T, np.array([0.003, 0.003, 0.02]), np.array([2.0, 2.0, 3.0]) * fps)
    return {"expression": exp, "jaw": jaw, "pose": pose, "cam": cam}


@dataclass
class _Participant:
    style: PersonStyle
    audio: np.ndarray           # (n_samples,) float32 microphone
    states: np.ndarray          # (T,) int64
    expression: np.ndarray      # (T, 100)
    jaw: np.ndarray
    pose: np.ndarray
    cam: np.ndarray


def generate_dialog(rng: np.random.Generator, styles: tuple[PersonStyle, PersonStyle], n_frames: int,
                    fps: float = 30.0, sample_rate: int = 48000) -> list[_Participant]:
    """Both participants of one dialog, time-aligned, ``n_frames`` frames and the matching audio."""
    n_samples = _num_samples(n_frames, fps, sample_rate)
    segs = turn_timeline(rng, n_frames / fps, styles)
    tracks = [_speaker_track(rng, styles[i], segs[i], n_frames, n_samples, fps, sample_rate) for i in (0, 1)]
    return _participants(rng, styles, tracks, fps, sample_rate)


def _num_samples(n_frames: int, fps: float, sample_rate: int) -> int:
    return int(np.ceil(n_frames * sample_rate / fps))


def _drift_factors(rng: np.random.Generator, n_frames: int, fps: float) -> list[np.ndarray]:
    """Both persons' idle-drift factors (T, IDLE_FACTORS): each person's own, plus the partner's MIMIC_LAG_S
    earlier (shared affect)."""
    lag = int(round(MIMIC_LAG_S * fps))
    base = [_smooth_noise(rng, n_frames + lag, np.ones(IDLE_FACTORS), rng.uniform(1.0, 3.0, IDLE_FACTORS) * fps)
            for _ in (0, 1)]
    return [np.sqrt(1.0 - MIMIC_RHO ** 2) * base[i][lag:] + MIMIC_RHO * base[1 - i][:n_frames] for i in (0, 1)]


def _participants(rng: np.random.Generator, styles: tuple[PersonStyle, PersonStyle], tracks: list[_Track],
                  fps: float, sample_rate: int) -> list[_Participant]:
    """Microphones (own voice + partner bleed + noise floor), states and motion of both persons from their tracks."""
    n_frames, n_samples = len(tracks[0].env), len(tracks[0].audio_voice)
    delay = max(1, int(round(0.004 * sample_rate)))
    factors = _drift_factors(rng, n_frames, fps)
    out = []
    for i in (0, 1):
        own, partner = tracks[i], tracks[1 - i]
        level = 0.5 * rng.uniform(0.7, 1.3)                              # microphone gain
        mic = own.audio_voice + BLEED * _lag(partner.audio_voice, delay)
        mic = level * mic + NOISE_FLOOR * rng.standard_normal(n_samples)
        m = _motion(rng, styles[i], own, partner, fps, factors[i])
        out.append(_Participant(styles[i], mic.astype(np.float32), states_from_activity(own.va, partner.va),
                                m["expression"], m["jaw"], m["pose"], m["cam"]))
    return out


# ---------------------------------------------------------------------------------------------------------
# Hard preset: real speech, identity in the expressions, a fresh pair of persons per dialog, varied lengths
# ---------------------------------------------------------------------------------------------------------
PRESETS = ("default", "hard")
SPEECH_MODES = ("auto", "tts", "harmonic")   # hard preset: TTS if installed / TTS or error / harmonic voice
HARD_STREAM = 0x4A2D                         # separates the hard preset's random streams from the default's
HARD_SECONDS = (30.0, 300.0)                 # default (min_seconds, max_seconds); log-uniform per dialog
HARD_PERSON_FIRST = 5000                     # hard-preset persons are P5000..P9999, each in one dialog only
HARD_PERSON_SPAN = 5000
# generator v1's person offsets: independent per dim (full rank), twice the default preset's std
HARD_OFFSET_STD = (0.50 * (1.0 + _DIM / 6.0) ** -0.75).astype(np.float64)

# espeak-ng voices: an accent and a voice variant per person, rate and pitch per person, jittered per utterance
TTS_ACCENTS = ("en-us", "en", "en-GB-scotland", "en-GB-x-rp", "en-029", "en-US-nyc", "en-GB-x-gbclan",
               "en-GB-x-gbcwmd")
TTS_LOW_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
TTS_HIGH_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
TTS_RATE_WPM = (145, 195)         # espeak words per minute, per person
TTS_PITCH = (30, 70)              # espeak pitch 0..100, per person
TTS_PITCH_RANGE = (30, 80)        # espeak intonation range 0..100, per person
TTS_RATE_JITTER = 0.07            # per utterance: rate x U(1 -/+ 0.07)
TTS_PITCH_JITTER = 6              # per utterance: pitch + U{-6..6}
TTS_GAIN = 1.0                    # int16 full scale -> voice amplitude (the microphone level comes on top)
TTS_TRIM = 0.01                   # leading / trailing samples below this fraction of full scale are cut
TTS_FADE_S = 0.005
TTS_ENV_REF = 0.25                # frame RMS of the own voice that counts as a fully open envelope (1.0)
F0_RANGE = (60.0, 450.0)          # Hz, intonation estimate from the waveform
F0_ANALYSIS_RATE = 12000          # Hz, the voice is averaged down to about this rate for the f0 estimate
PITCH_ST_CLIP = 8.0               # semitones around the person's median pitch
BACKCHANNEL_WORDS = ("mm-hmm", "uh-huh", "yeah", "right", "okay", "yes", "I see", "sure", "oh", "wow",
                     "really", "true", "exactly", "hmm", "oh yeah", "got it", "no way", "totally")


@dataclass(frozen=True)
class TtsVoice:
    """How espeak-ng speaks for a person."""
    name: str                  # espeak voice name with variant, e.g. "en-GB-x-rp+f3"
    rate: int                  # words per minute
    pitch: int                 # 0..100
    pitch_range: int           # 0..100


def hard_person_style(person: int) -> PersonStyle:
    """Person ``person`` of the hard preset: the default style's gains and timing, generator v1's full-rank
    expression offset, and an espeak-ng voice (low variants for low-pitched persons, high ones otherwise)."""
    base = person_style(person)
    rng = np.random.default_rng([PERSON_SEED, HARD_STREAM, int(person)])
    variants = TTS_HIGH_VARIANTS if base.f0 >= 160.0 else TTS_LOW_VARIANTS
    voice = TtsVoice(name=f"{_pick(rng, TTS_ACCENTS)}+{_pick(rng, variants)}",
                     rate=int(rng.integers(TTS_RATE_WPM[0], TTS_RATE_WPM[1] + 1)),
                     pitch=int(rng.integers(TTS_PITCH[0], TTS_PITCH[1] + 1)),
                     pitch_range=int(rng.integers(TTS_PITCH_RANGE[0], TTS_PITCH_RANGE[1] + 1)))
    return replace(base, exp_offset=rng.standard_normal(EXPRESSION_DIMS) * HARD_OFFSET_STD, voice=voice)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


# ---- sentences: a small seeded grammar of conversational English ----------------------------------------
_SUBJECTS = ("I", "we", "you", "she", "he", "they", "my sister", "my brother", "my neighbour", "our teacher",
             "the kids", "my friend", "your cousin", "the manager", "my parents", "his uncle", "her boss",
             "the old man", "our landlord", "the doctor", "my grandmother", "the new guy", "my roommate",
             "the driver", "our coach", "the baker", "my colleague", "the twins", "her husband", "his wife")
_VERBS = (("buy", "bought", "bought"), ("find", "found", "found"), ("see", "saw", "seen"),
          ("fix", "fixed", "fixed"), ("paint", "painted", "painted"), ("sell", "sold", "sold"),
          ("borrow", "borrowed", "borrowed"), ("lose", "lost", "lost"), ("carry", "carried", "carried"),
          ("cook", "cooked", "cooked"), ("build", "built", "built"), ("bring", "brought", "brought"),
          ("order", "ordered", "ordered"), ("clean", "cleaned", "cleaned"), ("break", "broke", "broken"),
          ("move", "moved", "moved"), ("watch", "watched", "watched"), ("draw", "drew", "drawn"),
          ("wash", "washed", "washed"), ("keep", "kept", "kept"), ("rent", "rented", "rented"),
          ("try", "tried", "tried"), ("return", "returned", "returned"), ("photograph", "photographed",
          "photographed"), ("recommend", "recommended", "recommended"), ("forget", "forgot", "forgotten"),
          ("choose", "chose", "chosen"), ("hide", "hid", "hidden"), ("deliver", "delivered", "delivered"),
          ("measure", "measured", "measured"))
_DETERMINERS = ("a", "the", "that", "this", "my", "our", "their", "his", "her", "your")
_ADJECTIVES = ("red", "small", "huge", "cheap", "broken", "shiny", "wooden", "strange", "lovely", "heavy",
               "green", "tiny", "noisy", "quiet", "fancy", "second-hand", "brand new", "dusty", "little",
               "beautiful", "funny", "ugly", "warm", "yellow", "plastic", "old", "famous", "terrible",
               "perfect", "enormous")
_NOUNS = ("bicycle", "car", "painting", "guitar", "sofa", "camera", "jacket", "lamp", "boat", "laptop", "table",
          "umbrella", "kettle", "book", "piano", "tent", "watch", "mirror", "ladder", "suitcase", "radio",
          "carpet", "bucket", "helmet", "blanket", "teapot", "clock", "scooter", "printer", "garden chair",
          "fridge", "drum", "vase", "map", "fishing rod", "backpack", "sweater", "oven", "rug", "motorbike",
          "phone", "poster", "basket", "sandwich", "cake", "pizza", "puppy", "kitten", "plant", "statue")
_PREPOSITIONS = ("near", "behind", "next to", "in front of", "at", "outside", "inside", "across from",
                 "down by", "up at")
_PLACES = ("the station", "the market", "the school", "the harbour", "the bakery", "the library", "the park",
           "the church", "the bridge", "the post office", "the hospital", "the stadium", "the beach",
           "the museum", "the garage", "the cinema", "the office", "the river", "the airport", "the mall",
           "the farm", "the hotel", "the bank", "the gym", "the corner shop")
_TIMES = ("yesterday", "last week", "this morning", "on Monday", "on Tuesday", "on Friday night",
          "at the weekend", "two days ago", "last summer", "in January", "after lunch", "before dinner",
          "last night", "a while ago", "this afternoon", "on Sunday", "last month", "the other day",
          "in the spring", "at Christmas")
_OPENERS = ("well, ", "so, ", "you know, ", "honestly, ", "actually, ", "anyway, ", "oh, ", "okay, so ",
            "and then ", "but ", "I mean, ", "to be fair, ", "apparently ", "funny thing, ")
_MODALS = ("will", "might", "could", "should", "would", "wants to", "has to", "is going to", "tried to",
           "forgot to")
_DEGREES = ("really", "quite", "so", "pretty", "very", "a bit", "totally", "kind of", "rather", "incredibly")
_TAGS = (", you know", ", I guess", ", or something", ", right", ", honestly", ", to be honest", " again",
         ", apparently", ", I think", ", believe it or not")
_EXCLAIMS = ("oh", "wow", "well", "hey", "ah", "gosh", "yeah", "no")
_QUESTION_WORDS = ("why", "where", "when", "how")


def _maybe(rng: np.random.Generator, p: float, text: str) -> str:
    return text if rng.random() < p else ""


def _object(rng: np.random.Generator, definite: bool = False) -> str:
    det = _pick(rng, _DETERMINERS[1:] if definite else _DETERMINERS)
    adj = _maybe(rng, 0.6, _pick(rng, _ADJECTIVES) + " ")
    words = f"{adj}{_pick(rng, _NOUNS)}"
    if det == "a" and words[0] in "aeiou":
        det = "an"
    return f"{det} {words}"


def _where(rng: np.random.Generator, p: float) -> str:
    return _maybe(rng, p, f" {_pick(rng, _PREPOSITIONS)} {_pick(rng, _PLACES)}")


def _when(rng: np.random.Generator, p: float) -> str:
    return _maybe(rng, p, f" {_pick(rng, _TIMES)}")


def _sentence_told(rng):          # "Well, my sister bought a red bicycle near the station last week."
    verb = _pick(rng, _VERBS)
    return (f"{_maybe(rng, 0.35, _pick(rng, _OPENERS))}{_pick(rng, _SUBJECTS)} {verb[1]} {_object(rng)}"
            f"{_where(rng, 0.4)}{_when(rng, 0.4)}.")


def _sentence_guess(rng):         # "I think the twins might rent a tent at the weekend."
    verb = _pick(rng, _VERBS)
    return (f"{_maybe(rng, 0.3, _pick(rng, _OPENERS))}I think {_pick(rng, _SUBJECTS)} {_pick(rng, _MODALS)} "
            f"{verb[0]} {_object(rng)}{_when(rng, 0.4)}.")


def _sentence_opinion(rng):       # "That old lamp was pretty ugly, to be honest."
    return (f"{_maybe(rng, 0.3, _pick(rng, _OPENERS))}{_object(rng, definite=True)} {_pick(rng, ('was', 'is'))} "
            f"{_pick(rng, _DEGREES)} {_pick(rng, _ADJECTIVES)}{_maybe(rng, 0.4, _pick(rng, _TAGS))}.")


def _sentence_did(rng):           # "Did your cousin sell that piano last month?"
    verb = _pick(rng, _VERBS)
    return f"did {_pick(rng, _SUBJECTS)} {verb[0]} {_object(rng)}{_where(rng, 0.35)}{_when(rng, 0.35)}?"


def _sentence_ever(rng):          # "Have you ever painted a boat?"
    verb = _pick(rng, _VERBS)
    return f"have you ever {verb[2]} {_object(rng)}{_where(rng, 0.4)}?"


def _sentence_about(rng):         # "What do you think about their noisy scooter?"
    return f"what do you think about {_object(rng, definite=True)}{_where(rng, 0.4)}?"


def _sentence_exclaim(rng):       # "Oh, that was so strange!"
    return (f"{_pick(rng, _EXCLAIMS)}, {_pick(rng, ('that', 'it'))} {_pick(rng, ('was', 'is', 'sounds'))} "
            f"{_pick(rng, _DEGREES)} {_pick(rng, _ADJECTIVES)}!")


def _sentence_short(rng):         # "Oh, she sold the sofa."
    verb = _pick(rng, _VERBS)
    return f"{_pick(rng, _EXCLAIMS)}, {_pick(rng, _SUBJECTS)} {verb[1]} {_object(rng)}."


def _sentence_why(rng):           # "Why did the kids hide it?"
    verb = _pick(rng, _VERBS)
    return f"{_pick(rng, _QUESTION_WORDS)} did {_pick(rng, _SUBJECTS)} {verb[0]} {_pick(rng, ('it', 'that', 'them'))}?"


_SENTENCE_FORMS = (_sentence_told, _sentence_guess, _sentence_opinion, _sentence_did, _sentence_ever,
                   _sentence_about, _sentence_exclaim, _sentence_short, _sentence_why)
_SENTENCE_WEIGHTS = np.array([0.22, 0.08, 0.12, 0.1, 0.06, 0.06, 0.14, 0.14, 0.08])


def random_sentence(rng: np.random.Generator) -> str:
    """One sentence of the hard preset's grammar (4-17 words)."""
    form = _SENTENCE_FORMS[int(rng.choice(len(_SENTENCE_FORMS), p=_SENTENCE_WEIGHTS))]
    text = form(rng)
    return text[0].upper() + text[1:]


def fresh_sentence(rng: np.random.Generator, used: set[str]) -> str:
    """A sentence not in ``used`` (then added to it): no sentence is spoken twice in a corpus."""
    while True:
        text = random_sentence(rng)
        if text not in used:
            used.add(text)
            return text


# ---- espeak-ng through ctypes --------------------------------------------------------------------------
SPEECH_INSTALL_HINT = "pip install espeakng-loader  (or: pip install 'dyadic-face[speech]')"


class SpeechEngineMissing(RuntimeError):
    """espeak-ng (the ``espeakng-loader`` wheel) is not installed or does not load."""


class SpeechFallbackWarning(RuntimeWarning):
    """The hard preset fell back to the harmonic voice because espeak-ng is missing."""


_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 3, 4
_POS_CHARACTER = 1
_ESPEAK_SEED = 1                  # espeak-ng seeds its noise generator from the clock: fixed instead


class EspeakEngine:
    """A session of libespeak-ng from the ``espeakng-loader`` wheel, used through ctypes in synchronous mode:
    ``synth`` returns the int16 samples (at ``sample_rate``, 22050 Hz) that the synth callback collected.

    The library keeps state between utterances (a pitch-flutter phase, echo and breath filters, a noise
    generator seeded from the clock), so each session loads it afresh, seeds its noise, and ``close()``
    unloads it: the same calls in a session give the same samples. One session per dialog::

        with EspeakEngine() as engine:
            pcm = engine.synth("Hello there.", "en-us+f3", rate=175, pitch=50, pitch_range=50)
    """

    def __init__(self):
        import ctypes
        try:
            import espeakng_loader
        except ImportError as e:
            raise SpeechEngineMissing(f"the espeakng-loader package is not installed: {SPEECH_INSTALL_HINT}") from e
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as e:
            raise SpeechEngineMissing(f"libespeak-ng from espeakng-loader does not load ({e}); {SPEECH_INSTALL_HINT}"
                                      ) from e
        self._lib = lib
        self._path = espeakng_loader.get_library_path()
        self.sample_rate = 0
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0))
        if rate <= 0:
            self.close()
            raise SpeechEngineMissing(f"espeak_Initialize failed (data at {data_path}); {SPEECH_INSTALL_HINT}")
        self.sample_rate = rate
        self.version = lib.espeak_Info(None).decode()
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed(_ESPEAK_SEED)
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = callback_type(self._collect)          # keep a reference: the library calls it
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, _events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0                                                 # 0: continue synthesis

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        """int16 samples of ``text`` spoken by ``voice`` (e.g. "en-us+f3")."""
        if self._lib is None:
            raise RuntimeError("this EspeakEngine session is closed")
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_ESPEAK_RATE, rate), (_ESPEAK_PITCH, pitch), (_ESPEAK_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        data = text.encode()
        err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        self._lib.espeak_Synchronize()
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) on {text!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

    def close(self) -> None:
        """Terminate espeak-ng and unload the library, so that the next session starts from a clean state."""
        if self._lib is None:
            return
        import _ctypes
        lib, self._lib = self._lib, None
        if self.sample_rate > 0:
            lib.espeak_Terminate()
        unload = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
        if unload is not None:
            unload(lib._handle)
        if unload is None or _still_loaded(self._path):
            warnings.warn("libespeak-ng stays loaded after its session (something else in this process holds it): "
                          "its state carries over to the next session, so speech is not reproducible byte for "
                          "byte", RuntimeWarning, stacklevel=2)

    def __enter__(self) -> "EspeakEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _still_loaded(path: str) -> bool:
    """Whether the shared library at ``path`` is still mapped into this process (POSIX; False elsewhere)."""
    import ctypes
    import _ctypes
    if not hasattr(os, "RTLD_NOLOAD") or not hasattr(_ctypes, "dlclose"):
        return False
    try:
        probe = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return False
    _ctypes.dlclose(probe._handle)                               # drop the reference the probe took
    return True


def _resolve_speech(speech: str) -> tuple[bool, str, str | None]:
    """(use TTS, the corpus's speech label, why it fell back) for ``speech`` = auto / tts / harmonic."""
    if speech == "harmonic":
        return False, "harmonic", None
    try:
        with EspeakEngine() as engine:
            version = engine.version
    except SpeechEngineMissing as e:
        if speech == "tts":
            raise SpeechEngineMissing(f"speech='tts' needs espeak-ng: {e}") from e
        message = (f"SYNTHETIC HARD PRESET WITHOUT REAL SPEECH: {e}. Falling back to the harmonic voice; the "
                   f"corpus's metadata says speech='harmonic-fallback'.")
        warnings.warn(message, SpeechFallbackWarning, stacklevel=4)
        logging.getLogger(__name__).warning(message)
        return False, "harmonic-fallback", str(e)
    return True, f"espeak-ng {version}", None


# ---- one TTS dialog ------------------------------------------------------------------------------------
@dataclass
class _Utterance:
    start: float                # s
    audio: np.ndarray           # own voice at the corpus sample rate
    text: str
    kind: str                   # "phrase" or "backchannel"
    sample_rate: int

    @property
    def end(self) -> float:
        return self.start + len(self.audio) / self.sample_rate


def _trim_silence(x: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) >= TTS_TRIM)
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


def _fade_edges(x: np.ndarray, sample_rate: int) -> np.ndarray:
    n = min(len(x) // 2, int(round(TTS_FADE_S * sample_rate)))
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        x[:n] *= ramp
        x[len(x) - n:] *= ramp[::-1]
    return x


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return x
    g = math.gcd(rate_in, rate_out)
    return resample_poly(x, rate_out // g, rate_in // g)


def _speak(engine: EspeakEngine, text: str, voice: TtsVoice, rate: int, pitch: int, sample_rate: int) -> np.ndarray:
    """The utterance's audio at ``sample_rate``: synthesised, silence trimmed, resampled, edges faded."""
    pcm = engine.synth(text, voice.name, rate, pitch, voice.pitch_range)
    x = _resample(_trim_silence(pcm.astype(np.float64) / 32768.0), engine.sample_rate, sample_rate)
    if len(x) < 2:
        raise RuntimeError(f"espeak-ng produced no audio for {text!r} with voice {voice.name!r}")
    return _fade_edges(x * TTS_GAIN, sample_rate)


def _tts_speaker(engine: EspeakEngine, styles: tuple[PersonStyle, PersonStyle], sentences: Callable[[], str],
                 rng: np.random.Generator, sample_rate: int) -> Callable[[int, str, float], _Utterance]:
    """``say(who, kind, start)``: person ``who`` speaks a fresh sentence from ``sentences()`` (kind "phrase")
    or a backchannel word at ``start`` seconds, with the person's voice and a little per-utterance rate and
    pitch jitter."""

    def say(who: int, kind: str, start: float) -> _Utterance:
        text = sentences() if kind == "phrase" else _pick(rng, BACKCHANNEL_WORDS)
        voice = styles[who].voice
        rate = int(round(voice.rate * rng.uniform(1.0 - TTS_RATE_JITTER, 1.0 + TTS_RATE_JITTER)))
        pitch = int(np.clip(voice.pitch + rng.integers(-TTS_PITCH_JITTER, TTS_PITCH_JITTER + 1), 0, 100))
        return _Utterance(start, _speak(engine, text, voice, rate, pitch, sample_rate), text, kind, sample_rate)

    return say


def tts_turn_timeline(rng: np.random.Generator, duration: float, styles: tuple[PersonStyle, PersonStyle],
                      say: Callable[[int, str, float], _Utterance]) -> tuple[list[_Utterance], list[_Utterance]]:
    """The default preset's turn-taking with real utterances: a turn is a run of spoken sentences, each taking
    its synthesised duration, until the drawn turn length is used up; backchannels are short spoken words."""
    utts: tuple[list, list] = ([], [])
    spk, t = _first_turn(rng)
    while t < duration:
        lst = 1 - spk
        turn_end = t + _turn_length(rng, styles[spk])
        while True:
            u = say(spk, "phrase", t)
            utts[spk].append(u)
            if turn_end - u.end < PHRASE_RANGE[0] or u.end >= duration:
                break
            b0 = _backchannel_onset(rng, styles[lst], u.end)
            if b0 is not None:
                utts[lst].append(say(lst, "backchannel", b0))
            t = u.end + float(rng.uniform(*PHRASE_PAUSE))
            if t >= duration:
                break
        spk, t = _next_turn(rng, spk, u.end)
    return utts


def _frame_bounds(n_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """(n_frames + 1,) first sample of each frame (and the end of the last)."""
    return np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(np.int64)


def _frame_rms(x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    return np.sqrt(np.add.reduceat(x * x, bounds[:-1]) / np.diff(bounds))


def _autocorr_f0(frames: np.ndarray, sample_rate: float) -> np.ndarray:
    """(n,) f0 in Hz per row of ``frames`` (n, W) from the normalised (unbiased) autocorrelation: the first
    strong peak in the F0_RANGE lags; 0 where no lag correlates well (unvoiced)."""
    n, W = frames.shape
    lo, hi = int(sample_rate / F0_RANGE[1]), min(W - 2, int(np.ceil(sample_rate / F0_RANGE[0])))
    x = frames - frames.mean(1, keepdims=True)
    spec = np.fft.rfft(x, 2 * W)
    ac = np.fft.irfft(spec.real ** 2 + spec.imag ** 2, 2 * W)[:, :hi + 2]
    lags = np.arange(hi + 2)
    r = ac / np.maximum(ac[:, :1], 1e-12) * (W / (W - lags))[None, :]
    seg = r[:, lo - 1:hi + 2]                                       # one lag of context either side
    mid = seg[:, 1:-1]
    peak = mid.max(1)
    local = (mid > seg[:, :-2]) & (mid >= seg[:, 2:]) & (mid >= 0.85 * peak[:, None])
    first = np.argmax(local, axis=1)
    rows = np.arange(n)
    a, b, c = seg[rows, first], seg[rows, first + 1], seg[rows, first + 2]
    den = a - 2 * b + c
    shift = np.where(np.abs(den) > 1e-12, 0.5 * (a - c) / np.where(den == 0, 1.0, den), 0.0)
    lag = lo + first + np.clip(shift, -0.5, 0.5)
    voiced = local.any(1) & (peak > 0.45)
    return np.where(voiced, sample_rate / lag, 0.0)


def _intonation(voice: np.ndarray, bounds: np.ndarray, va: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T,) the person's pitch in semitones around their median, estimated from their own voice per frame
    while speaking (unvoiced frames of a phrase interpolated), 0 while silent."""
    T = len(bounds) - 1
    q = max(1, sample_rate // F0_ANALYSIS_RATE)                      # analyse at ~12 kHz: plenty for f0
    W = int(bounds[1] - bounds[0]) // q * q
    padded = np.concatenate([voice, np.zeros(W)])
    f0 = np.zeros(T)
    speaking = np.flatnonzero(va)
    for chunk in np.array_split(speaking, max(1, len(speaking) // 512)):
        if len(chunk):
            frames = padded[bounds[chunk][:, None] + np.arange(W)[None, :]]
            f0[chunk] = _autocorr_f0(frames.reshape(len(chunk), W // q, q).mean(2), sample_rate / q)
    voiced = np.flatnonzero(f0 > 0)
    if len(voiced) < 3:
        return np.zeros(T)
    st = 12.0 * np.log2(f0[voiced] / np.median(f0[voiced]))
    st = medfilt(st, 3)                                             # isolated octave errors
    pitch = np.interp(np.arange(T), voiced, np.clip(st, -PITCH_ST_CLIP, PITCH_ST_CLIP))
    return np.where(va, pitch, 0.0)


def _tts_track(utts: list[_Utterance], n_frames: int, n_samples: int, fps: float, sample_rate: int) -> _Track:
    """A person's voice track from their utterances; envelope, voice activity and intonation from it."""
    voice = np.zeros(n_samples)
    for u in utts:
        s0 = max(0, int(round(u.start * sample_rate)))
        n = min(len(u.audio), n_samples - s0)
        if n > 0:
            voice[s0:s0 + n] += u.audio[:n]
    mask = _tick_mask([(u.start, u.end) for u in utts], n_frames * TICKS_PER_FRAME, fps * TICKS_PER_FRAME)
    va = _frame_activity(mask, n_frames)
    bounds = _frame_bounds(n_frames, fps, sample_rate)
    env = np.clip(_frame_rms(voice, bounds) / TTS_ENV_REF, 0.0, 1.0)
    return _Track(voice, env, va, _intonation(voice, bounds, va, sample_rate))


def generate_tts_dialog(rng: np.random.Generator, styles: tuple[PersonStyle, PersonStyle], n_frames: int,
                        fps: float, sample_rate: int, sentences: Callable[[], str], engine: EspeakEngine
                        ) -> tuple[list[_Participant], tuple[list[_Utterance], list[_Utterance]]]:
    """Both participants of a hard-preset dialog with real speech, and each person's utterances."""
    n_samples = _num_samples(n_frames, fps, sample_rate)
    say = _tts_speaker(engine, styles, sentences, rng, sample_rate)
    utts = tts_turn_timeline(rng, n_frames / fps, styles, say)
    tracks = [_tts_track(utts[i], n_frames, n_samples, fps, sample_rate) for i in (0, 1)]
    return _participants(rng, styles, tracks, fps, sample_rate), utts


# ---- the hard corpus -----------------------------------------------------------------------------------
def _hard_dialog(out: Path, did: str, seed: int, i: int, persons: tuple[int, int], nominal: int, fps: int,
                 sample_rate: int, tts: bool, used: set[str]) -> dict:
    """Generate and write one hard-preset dialog; returns its index entry. ``used`` holds the sentences of the
    dialogs before it (and receives this dialog's)."""
    drng = np.random.default_rng([seed, HARD_STREAM, 1, i])
    styles = (hard_person_style(persons[0]), hard_person_style(persons[1]))
    n_frames = nominal + _MARGIN_FRAMES
    if tts:
        srng = np.random.default_rng([seed, HARD_STREAM, 2, i])
        with EspeakEngine() as engine:                       # a fresh session per dialog: same bytes every time
            parts, utts = generate_tts_dialog(drng, styles, n_frames, fps, sample_rate,
                                              lambda: fresh_sentence(srng, used), engine)
    else:
        parts, utts = generate_dialog(drng, styles, n_frames, fps, sample_rate), None
    recs = {p.style.pid: _write_participant(out, did, p, drng, nominal, fps, sample_rate) for p in parts}
    if utts is not None:
        for p, spoken in zip(parts, utts):
            _write_transcript(out / Path(recs[p.style.pid]["audio_path"]).parent / "transcript.json", spoken)
    return recs


def _write_transcript(path: Path, utts: list[_Utterance]) -> None:
    rows = [{"start": round(u.start, 4), "end": round(u.end, 4), "kind": u.kind, "text": u.text}
            for u in sorted(utts, key=lambda u: u.start)]
    path.write_text('{"utterances": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n]}\n")


def _hard_plan(num_dialogs: int, seed: int, min_seconds: float, max_seconds: float, fps: int
               ) -> list[tuple[tuple[int, int], int]]:
    """Per dialog: its two persons (used in no other dialog) and its nominal length in frames (log-uniform
    in [min_seconds, max_seconds]). Dialog i's persons and length do not depend on ``num_dialogs``."""
    persons = HARD_PERSON_FIRST + np.random.default_rng([int(seed), HARD_STREAM, 0]).permutation(HARD_PERSON_SPAN)
    plan = []
    for i in range(num_dialogs):
        lrng = np.random.default_rng([int(seed), HARD_STREAM, 3, i])
        seconds = float(np.exp(lrng.uniform(np.log(min_seconds), np.log(max_seconds))))
        plan.append(((int(persons[2 * i]), int(persons[2 * i + 1])), int(round(seconds * fps))))
    return plan


def _hard_lengths(seconds, min_seconds, max_seconds, num_dialogs) -> tuple[float, float]:
    if seconds is not None:
        raise ValueError("preset='hard' draws each dialog's length between min_seconds and max_seconds; "
                         "seconds is the default preset's")
    lo = HARD_SECONDS[0] if min_seconds is None else float(min_seconds)
    hi = HARD_SECONDS[1] if max_seconds is None else float(max_seconds)
    if not 1.0 <= lo <= hi:
        raise ValueError(f"need 1 <= min_seconds <= max_seconds, got {lo}, {hi}")
    if 2 * num_dialogs > HARD_PERSON_SPAN:
        raise ValueError(f"preset='hard' has {HARD_PERSON_SPAN} persons: at most {HARD_PERSON_SPAN // 2} dialogs")
    return lo, hi


def _make_hard_corpus(out: Path, num_dialogs: int, seed: int, fps: int, sample_rate: int, index_name: str,
                      progress, min_seconds: float, max_seconds: float, speech: str) -> Path:
    tts, speech_label, fallback_reason = _resolve_speech(speech)
    plan = _hard_plan(num_dialogs, seed, min_seconds, max_seconds, fps)
    used: set[str] = set()
    index: dict[str, dict] = {}
    for i, (persons, nominal) in enumerate(plan):
        did = f"V00_S{int(seed):04d}_I{i:08d}"
        index[did] = _hard_dialog(out, did, int(seed), i, persons, nominal, fps, sample_rate, tts, used)
        if progress is not None:
            progress(did)
    index_path = out / "dataset_jsons" / index_name
    about = _hard_about(seed, fps, sample_rate, min_seconds, max_seconds, speech, speech_label, fallback_reason,
                        list(index), plan)
    _write_json_atomic(about_path(index_path), about)
    return _write_json_atomic(index_path, index)


def about_path(index_path: str | Path) -> Path:
    """The metadata file written beside a hard-preset index: ``dataset_jsons/<index stem>.about.json``."""
    index_path = Path(index_path)
    return index_path.with_name(f"{index_path.stem}.about.json")


def _hard_about(seed, fps, sample_rate, min_seconds, max_seconds, speech, speech_label, fallback_reason,
                dialog_ids: list[str], plan: list[tuple[tuple[int, int], int]]) -> dict:
    total = sum(nominal for _, nominal in plan) / fps
    about = {
        "preset": "hard",
        "seed": int(seed),
        "num_dialogs": len(plan),
        "fps": int(fps),
        "sample_rate": int(sample_rate),
        "speech": speech_label,
        "speech_requested": speech,
        "min_seconds": float(min_seconds),
        "max_seconds": float(max_seconds),
        "total_seconds": round(total, 3),
        "persons": 2 * len(plan),
        "persons_per_dialog": "2, used in no other dialog: whatever split is made by dialog, test persons are unseen",
        "expression_offsets": "full rank, per dim N(0, (0.5 * (1 + d/6)^-0.75)^2) (generator v1's size)",
        "dialogs": {did: {"seconds": round(nominal / fps, 4), "persons": [f"P{p:04d}" for p in persons]}
                    for did, (persons, nominal) in zip(dialog_ids, plan)},
    }
    if fallback_reason is not None:
        about["fallback_reason"] = fallback_reason
    return about


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------
def _savez_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` without its wall-clock zip timestamps (same arrays -> same bytes); no pickles."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Mono 32-bit float WAV; the PEAK chunk's wall-clock timestamp is zeroed so the bytes are reproducible."""
    sf.write(str(path), audio, sample_rate, subtype="FLOAT", format="WAV")
    with open(path, "r+b") as f:
        head = f.read(4096)
        pos = 12
        while pos + 8 <= len(head):
            cid, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
            if cid == b"PEAK":
                f.seek(pos + 12)                     # PEAK: id, size, version (4), timestamp (4), ...
                f.write(b"\0\0\0\0")
                break
            if cid == b"data":
                break
            pos += 8 + size + (size & 1)


def _record(dialog: str, pid: str, frames_num: int, valid: int, split: str) -> dict:
    base = f"synthetic/{dialog}/{pid}"
    return {
        "video_path": f"{base}/video.mp4",
        "frame_dir": f"{base}/frames",
        "frames_num": int(frames_num),
        "audio_path": f"{base}/audio.wav",
        "valid_frames_num": int(valid),
        "fan_crop_frames_dir": f"{base}/frames",
        "pixelai_kp": f"{base}/features/pixelai_bbox.npy",
        "flame_coeff_save_path": f"{base}/features/emica_flame.npz",
        "speaker_id": [pid],
        "state_path": f"{base}/state.npy",
        "motion_feature_path": "",
        "split": split,
    }


# length messiness (per participant), all far inside the readers' 1 s tolerance (at most ~0.27 s in total)
MESS_FRAMES_SHORTER = (0, 4)        # npz length = nominal - U{0..4} frames (partners differ by a few frames)
MESS_VALID_PROB = 0.15              # valid_frames_num = npz length - U{1..3} with this probability
MESS_AUDIO_MS = (-20, 40)           # audio length = npz length / fps + U[-20, 40] ms
MESS_STATE_PROB = 0.2               # state.npy one frame longer than the npz with this probability
_MARGIN_FRAMES = 4                  # generated beyond the nominal length so the longer files hold real data


def _pair_persons(rng: np.random.Generator, pool: np.ndarray, num_dialogs: int) -> list[tuple[int, int]]:
    """Two distinct persons per dialog, every person used about equally often (shuffled rounds of the pool)."""
    slots: list[int] = []
    while len(slots) < 2 * num_dialogs:
        slots += [int(p) for p in rng.permutation(pool)]
    slots = slots[:2 * num_dialogs]
    for i in range(0, len(slots), 2):
        if slots[i] == slots[i + 1]:
            j = next((j for j in range(i + 2, len(slots)) if slots[j] != slots[i]), None)
            if j is None:
                slots[i + 1] = int(rng.choice([int(p) for p in pool if p != slots[i]]))
            else:
                slots[i + 1], slots[j] = slots[j], slots[i + 1]
    return [(slots[i], slots[i + 1]) for i in range(0, len(slots), 2)]


def make_corpus(out_dir: str | Path, num_dialogs: int = 10, seconds: float | None = None, seed: int = 0,
                fps: int = 30, sample_rate: int = 48000, index_name: str = "synthetic.json",
                progress: Callable[[str], None] | None = None, *, preset: str = "default",
                min_seconds: float | None = None, max_seconds: float | None = None, speech: str = "auto",
                person_base: int = 0) -> Path:
    """Write a synthetic corpus under ``out_dir`` in the users' layout; returns the index JSON path.

    ``preset="default"``: the demo corpus (harmonic voices, persons recurring across dialogs); every dialog is
    ``seconds`` long (default 60). ``preset="hard"``: real speech (espeak-ng), generator v1's full-rank person
    offsets, two persons per dialog who appear in no other dialog, and dialog lengths drawn log-uniformly in
    [``min_seconds``, ``max_seconds``] (default 30-300 s; ``seconds`` is not used); ``speech`` is "auto" (TTS
    if espeak-ng is installed, else the harmonic voice with a loud warning), "tts" (error if missing) or
    "harmonic". The hard preset also writes ``dataset_jsons/<index stem>.about.json`` (preset, seed, speech
    engine, lengths, persons) and a ``transcript.json`` beside each participant's WAV. See docs/SYNTHETIC.md.

    ``person_base`` (default preset): person numbers start there, so two corpora with bases further apart than
    ``4 * num_dialogs`` share no person (e.g. a test set of persons never seen in training; the hard preset's
    persons are unique anyway).

    ``progress``, if given, is called with each dialog id once its files are written. The index is written
    last (atomically), so a corpus with an index is complete.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if speech not in SPEECH_MODES:
        raise ValueError(f"speech must be one of {SPEECH_MODES}, got {speech!r}")
    if num_dialogs < 1:
        raise ValueError(f"num_dialogs must be >= 1, got {num_dialogs}")
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive, got {fps}, {sample_rate}")
    if preset == "hard":
        min_seconds, max_seconds = _hard_lengths(seconds, min_seconds, max_seconds, num_dialogs)
        return _make_hard_corpus(Path(out_dir), num_dialogs, seed, fps, sample_rate, index_name, progress,
                                 min_seconds, max_seconds, speech)
    if min_seconds is not None or max_seconds is not None:
        raise ValueError("min_seconds / max_seconds belong to preset='hard'; the default preset takes seconds")
    if speech == "tts":
        raise ValueError("speech='tts' needs preset='hard' (the default preset always uses the harmonic voice)")
    if person_base < 0 or person_base + max(1000, 4 * num_dialogs) > HARD_PERSON_FIRST:
        raise ValueError(f"person_base must be in 0..{HARD_PERSON_FIRST - max(1000, 4 * num_dialogs)} "
                         f"(persons from P{HARD_PERSON_FIRST} on belong to the hard preset)")
    seconds = 60.0 if seconds is None else seconds
    if not seconds >= 1.0:
        raise ValueError(f"seconds must be >= 1, got {seconds}")
    out = Path(out_dir)
    rng = np.random.default_rng([int(seed), 0])
    n_persons = max(4, int(round(num_dialogs * 2 / 3)))
    pool = int(person_base) + np.sort(rng.choice(max(1000, 4 * n_persons), n_persons, replace=False))
    styles = {int(p): person_style(int(p)) for p in pool}
    pairs = _pair_persons(rng, pool, num_dialogs)
    nominal = int(round(seconds * fps))

    index: dict[str, dict] = {}
    for i in range(num_dialogs):
        did = f"V00_S{int(seed):04d}_I{i:08d}"
        pa, pb = pairs[i]
        drng = np.random.default_rng([int(seed), 1, i])
        parts = generate_dialog(drng, (styles[int(pa)], styles[int(pb)]), nominal + _MARGIN_FRAMES, fps, sample_rate)
        index[did] = {p.style.pid: _write_participant(out, did, p, drng, nominal, fps, sample_rate) for p in parts}
        if progress is not None:
            progress(did)
    return _write_json_atomic(out / "dataset_jsons" / index_name, index)


def _write_participant(out: Path, did: str, p: _Participant, drng: np.random.Generator, nominal: int, fps: float,
                       sample_rate: int) -> dict:
    """Cut one participant's files from the generated dialog with the length messiness, write them, and return
    its index record."""
    T = nominal - int(drng.integers(MESS_FRAMES_SHORTER[0], MESS_FRAMES_SHORTER[1] + 1))
    valid = T - int(drng.integers(1, 4)) if drng.random() < MESS_VALID_PROB else T
    n_audio = int(round(T * sample_rate / fps)) + int(round(
        drng.integers(MESS_AUDIO_MS[0], MESS_AUDIO_MS[1] + 1) * sample_rate / 1000))
    n_states = T + 1 if drng.random() < MESS_STATE_PROB else T
    split = str(SPLIT_DECOYS[int(drng.integers(len(SPLIT_DECOYS)))])
    rec = _record(did, p.style.pid, T, valid, split)
    (out / rec["flame_coeff_save_path"]).parent.mkdir(parents=True, exist_ok=True)
    _write_wav(out / rec["audio_path"], p.audio[:n_audio], sample_rate)
    np.save(out / rec["state_path"], p.states[:n_states])
    _write_flame(out / rec["flame_coeff_save_path"], p, T)
    return rec


def _write_flame(path: Path, p: _Participant, T: int) -> None:
    """The EMICA FLAME npz of a participant's first ``T`` frames (the users' keys and (T, 1, K) shapes)."""
    shape = np.broadcast_to(p.style.shape.astype(np.float32)[None, None, :], (T, 1, SHAPE_DIMS))
    _savez_deterministic(
        path,
        shape_params=shape,
        expression_params=p.expression[:T, None, :].astype(np.float32),
        pose_params=p.pose[:T, None, :].astype(np.float32),
        jaw_params=p.jaw[:T, None, :].astype(np.float32),
        cam=p.cam[:T, None, :].astype(np.float32),
    )


def _write_json_atomic(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------------
# Enrollment clips: another conversation of a corpus person (the enrollment protocol of the quality bench)
# ---------------------------------------------------------------------------------------------------------
ENROLL_STREAM = 0xE4011              # separates enrollment clips' random streams from every corpus'
ENROLL_PARTNER_BASE = 100_000        # enrollment partners' person numbers: no corpus person has them


def style_of(pid: str, preset: str = "default") -> PersonStyle:
    """The style of corpus person ``pid`` ("P2034") of ``preset`` (styles depend on the person alone)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if not (isinstance(pid, str) and len(pid) > 1 and pid[0] == "P" and pid[1:].isdigit()):
        raise ValueError(f"{pid!r} is not a synthetic person id (P followed by digits, e.g. P2034)")
    return hard_person_style(int(pid[1:])) if preset == "hard" else person_style(int(pid[1:]))


def write_enrollment_clips(out_dir: str | Path, pids, preset: str = "default", seconds: float = 30.0,
                           fps: int = 30, sample_rate: int = 48000) -> dict[str, Path]:
    """An enrollment clip of each person in ``pids``: ``seconds`` of that person's face in another conversation
    (fresh turns and drift, a partner of their own, harmonic voices), written as ``out_dir/<pid>.npz`` in the
    corpus' FLAME layout (what ``scripts/sample.py --enroll-a`` reads); returns ``{pid: path}``. Its mean
    expression is the person's offset plus that clip's own idle drift and speech: a real enrollment's estimate,
    not the offset itself. Deterministic per person; an existing file of the right length is kept (a rerun
    resumes), one of another length written again."""
    n_frames = int(round(seconds * fps)) if seconds > 0 and fps > 0 else 0
    if n_frames < 1:
        raise ValueError(f"an enrollment clip of {seconds} s at {fps} fps has no frame: give seconds * fps >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for pid in dict.fromkeys(pids):
        style = style_of(pid, preset)
        path = paths[pid] = out_dir / f"{pid}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if z["expression_params"].shape[0] == n_frames:
                    continue
        partner = style_of(f"P{ENROLL_PARTNER_BASE + style.person}", preset)
        rng = np.random.default_rng([ENROLL_STREAM, PRESETS.index(preset), style.person])
        person = generate_dialog(rng, (style, partner), n_frames, fps, sample_rate)[0]
        tmp = path.with_name(f".{path.name}.tmp")
        _write_flame(tmp, person, n_frames)
        os.replace(tmp, path)
    return paths
