"""Audio: WAV reading (soundfile), resampling, and per-motion-frame features (log-mel or a speech encoder).

Feature frame ``t`` summarises the audio window that *ends* at the end of motion frame ``t``
(``[(t + 1) * hop - win, (t + 1) * hop)`` samples, ``hop = sample_rate / fps``), so features are causal:
a streaming system has frame ``t``'s feature as soon as frame ``t``'s audio has arrived.
"""
from __future__ import annotations

import contextvars
import logging
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.data.config import AudioConfig

log = logging.getLogger(__name__)


class AudioError(ValueError):
    pass


# Sample rates a WAV may declare (libsndfile reads any header value; absurd ones are refused, not resampled).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000


def read_wav(path: str | Path, target_rate: int, what: str = "") -> np.ndarray:
    """Mono float32 audio at ``target_rate``; averages channels and resamples, each with a log line."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{what}audio file {path} {'is not a regular file' if path.exists() else 'does not exist'}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError on truncated or foreign files
        raise AudioError(f"{what}cannot read audio file {path}: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{what}audio file {path} holds no samples")
    if data.shape[1] > 1:
        log.info("%s%s has %d channels: averaging to mono", what, path, data.shape[1])
        data = data.mean(axis=1, keepdims=True)
    audio = data[:, 0]
    if not np.isfinite(audio).all():
        bad = int(np.flatnonzero(~np.isfinite(audio))[0])
        raise AudioError(f"{what}audio file {path} holds NaN/Inf (first at sample {bad})")
    if rate != target_rate:
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise AudioError(f"{what}audio file {path} declares a sample rate of {rate} Hz, outside "
                             f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
        log.info("%s%s is at %d Hz: resampling to %d Hz", what, path, rate, target_rate)
        try:
            audio = resample(audio, rate, target_rate)
        except (RuntimeError, MemoryError, ValueError) as e:
            raise AudioError(f"{what}cannot resample audio file {path} from {rate} Hz to {target_rate} Hz: {e}") from e
    return np.ascontiguousarray(audio, dtype=np.float32)


def resample(audio: np.ndarray, orig: int, new: int) -> np.ndarray:
    orig, new = int(orig), int(new)
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    if up * down <= 1_000_000:
        import torchaudio.functional as AF
        return AF.resample(torch.from_numpy(np.asarray(audio, np.float32)), orig, new).numpy()
    # torchaudio's sinc kernel holds about up * down floats: tens of GB for a rate such as 44101 Hz.
    # A polyphase filter needs memory linear in max(up, down).
    from scipy.signal import resample_poly
    return resample_poly(np.asarray(audio, np.float64), up, down).astype(np.float32)


def hop_length(sample_rate: int, fps: float) -> int:
    hop = sample_rate / fps
    if abs(hop - round(hop)) > 1e-6:
        raise AudioError(f"sample_rate {sample_rate} / fps {fps} is not an integer number of samples per frame")
    return int(round(hop))


class LogMel:
    """Causal log-mel features at the motion rate (one feature frame per motion frame)."""

    def __init__(self, cfg: AudioConfig, sample_rate: int, fps: float):
        import torchaudio.transforms as T
        self.hop = hop_length(sample_rate, fps)
        self.win = int(round(cfg.window_frames * self.hop))
        self.dim = cfg.n_mels
        self.mel = T.MelSpectrogram(sample_rate=sample_rate, n_fft=self.win, win_length=self.win,
                                    hop_length=self.hop, f_min=cfg.f_min, f_max=min(cfg.f_max, sample_rate / 2),
                                    n_mels=cfg.n_mels, center=False, power=2.0)

    @torch.no_grad()
    def __call__(self, audio: np.ndarray, num_frames: int) -> np.ndarray:
        need = num_frames * self.hop
        if len(audio) < need:
            raise AudioError(f"audio has {len(audio)} samples, fewer than {need} for {num_frames} frames")
        x = torch.from_numpy(np.ascontiguousarray(audio[:need], np.float32))
        x = torch.nn.functional.pad(x, (self.win - self.hop, 0))
        mel = self.mel(x)                              # (n_mels, num_frames)
        feats = torch.log(mel + 1e-6).T.contiguous()
        assert feats.shape[0] == num_frames, (feats.shape, num_frames)
        return check_features(feats.numpy().astype(np.float32), audio)


def check_features(feats: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Refuse features that are not finite: finite but absurd samples (a float WAV holding 1e30) overflow the
    power spectrum, and Inf features would poison the cache's statistics and every model trained on them."""
    bad = ~np.isfinite(feats)
    if bad.any():
        frame = int(np.argwhere(bad)[0][0])
        peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
        raise AudioError(f"audio features hold NaN/Inf (first at frame {frame}): the samples reach {peak:.3g} "
                         "(audio is expected within about -1..1; is the file scaled?)")
    return feats


class PretrainedEncoder:
    """A transformers speech encoder (wav2vec2 / HuBERT) resampled to the motion rate.

    Loaded from ``cfg.pretrained`` (local path or hub name) or built with random weights from
    ``cfg.pretrained_config`` (tests). The encoder sees whole chunks (it is not causal); its features are
    linearly interpolated from its own rate to ``fps``.
    """

    def __init__(self, cfg: AudioConfig, sample_rate: int, fps: float, allow_download: bool = False):
        try:
            import transformers
        except ImportError as e:  # optional extra
            raise ImportError("audio.kind=pretrained needs transformers: pip install 'dyadic-face[audio-encoders]'") from e
        self.cfg, self.sample_rate, self.fps = cfg, sample_rate, fps
        if cfg.pretrained:
            local = Path(cfg.pretrained).expanduser().exists()
            try:
                self.model = transformers.AutoModel.from_pretrained(cfg.pretrained,
                                                                    local_files_only=not (allow_download or local))
            except OSError as e:
                if allow_download or local:
                    raise
                raise AudioError(f"audio.pretrained {cfg.pretrained!r} is neither a local folder nor a model already "
                                 "in the local hub cache, and downloading is off here: pass --allow-download to "
                                 "fetch it, or point audio.pretrained at a local copy") from e
        elif cfg.pretrained_config:
            kinds = {"wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
                     "hubert": (transformers.HubertConfig, transformers.HubertModel)}
            if cfg.pretrained_kind not in kinds:
                raise ValueError(f"audio.pretrained_kind must be one of {sorted(kinds)}, got {cfg.pretrained_kind!r}")
            conf_cls, model_cls = kinds[cfg.pretrained_kind]
            torch.manual_seed(0)
            self.model = model_cls(conf_cls(**cfg.pretrained_config))
        else:
            raise ValueError("audio.kind=pretrained needs audio.pretrained (path or hub name) or audio.pretrained_config")
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, audio: np.ndarray, num_frames: int) -> np.ndarray:
        sr_in = self.cfg.encoder_sample_rate
        hop = hop_length(self.sample_rate, self.fps)
        x = audio[: num_frames * hop]
        if self.sample_rate != sr_in:
            x = resample(x, self.sample_rate, sr_in)
        chunk = int(self.cfg.chunk_seconds * sr_in)
        pieces = []
        for start in range(0, len(x), chunk):
            seg = torch.from_numpy(np.ascontiguousarray(x[start:start + chunk]))[None]
            if seg.shape[1] < 400:          # shorter than the conv receptive field: pad
                seg = torch.nn.functional.pad(seg, (0, 400 - seg.shape[1]))
            out = self.model(seg, output_hidden_states=True)
            pieces.append(out.hidden_states[self.cfg.layer][0])
        h = torch.cat(pieces, 0)                     # (n_enc, dim) at the encoder's rate
        enc_rate = h.shape[0] / (len(x) / sr_in)
        t_motion = (np.arange(num_frames) + 0.5) / self.fps
        pos = np.clip(t_motion * enc_rate - 0.5, 0, h.shape[0] - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, h.shape[0] - 1)
        w = torch.from_numpy((pos - lo).astype(np.float32))[:, None]
        feats = h[lo] * (1 - w) + h[hi] * w
        return check_features(feats.numpy().astype(np.float32), audio)


class WavFeatures:
    """The features of WAV files (one per participant) as a lazy array ``(len(paths), T, F)``: frames are
    computed when sliced (``feats[:, a:b]``), from the blocks of samples they need, so a long recording never
    sits in memory as samples (48 kHz float32: 11.5 MB per minute per file) nor as a whole spectrogram.

    Causal log-mel frames are computed exactly as :class:`LogMel` computes them from the whole file: each slice
    starts ``context`` frames early (the window's history, then dropped), the way
    :class:`stage2_gpt.streaming.StreamingFeatures` does. A file at another rate is resampled block by block,
    each block with ``RESAMPLE_MARGIN`` samples of context on both sides, aligned to the rate ratio, so its
    samples are the whole-file resampling's to float rounding. Non-causal extractors (a pretrained encoder
    sees whole chunks) are computed once, whole, at the first slice. ``T`` = the shortest file's frame count.
    Errors (unreadable, empty, NaN/Inf, absurd rates) are :class:`AudioError` naming the file, as in :func:`read_wav`.
    """

    RESAMPLE_MARGIN = 1024      # input samples of context on each side of a resampled block

    def __init__(self, paths, extractor, sample_rate: int, fps: float):
        self.paths = [Path(p) for p in paths]
        self.ex, self.rate = extractor, int(sample_rate)
        self.hop = hop_length(sample_rate, fps)
        self.files = [_wav_info(p, self.rate) for p in self.paths]
        frames = [n_target // self.hop for _, _, n_target in self.files]
        if min(frames) < 1:
            raise AudioError(f"audio shorter than one motion frame ({self.hop} samples at {self.rate} Hz)")
        self.shape = (len(self.paths), min(frames), int(extractor.dim))
        self.length_spread = max(frames) - min(frames)            # frames: how much longer the longest file is
        # frames of history a causal log-mel frame needs (its window), None: not causal, computed whole
        self.context = int(math.ceil(extractor.win / self.hop)) + 1 if isinstance(extractor, LogMel) else None
        self._whole = None

    @property
    def ndim(self) -> int:
        return 3

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        x = self[:, :self.shape[1]]
        return x if dtype is None else x.astype(dtype)

    def __getitem__(self, key):
        files, frames = (key, slice(None)) if not isinstance(key, tuple) else (key + (slice(None),))[:2]
        if not isinstance(frames, slice) or frames.step not in (None, 1):
            raise IndexError("WavFeatures slices frames with a contiguous slice, e.g. feats[:, a:b]")
        a, b, _ = frames.indices(self.shape[1])
        b = max(a, b)
        which = range(self.shape[0])[files] if isinstance(files, slice) else [files]
        if self.context is None:                                   # not causal: computed whole, once
            if self._whole is None:
                self._whole = np.stack([self.ex(read_wav(p, self.rate, what=f"{p}: "), self.shape[1])
                                        for p in self.paths]).astype(np.float32)
            out = self._whole[list(which), a:b]
        else:
            out = np.stack([self._frames(i, a, b) for i in which]) if b > a else \
                np.zeros((len(which), 0, self.shape[2]), np.float32)
        return out if isinstance(files, slice) else out[0]

    def _frames(self, i: int, a: int, b: int) -> np.ndarray:
        """Frames [a, b) of file i: computed from frame a - context on (the window's history), then cut."""
        start = max(0, a - self.context)
        samples = self._samples(i, start * self.hop, b * self.hop)
        return self.ex(samples, b - start)[a - start:].astype(np.float32)

    def _samples(self, i: int, s0: int, s1: int) -> np.ndarray:
        """Mono samples [s0, s1) of file i at the target rate."""
        path, rate, _ = self.files[i]
        if rate == self.rate:
            return _read_block(path, s0, s1)
        g = math.gcd(rate, self.rate)
        up, down = self.rate // g, rate // g                     # target samples per `up`, input per `down`
        q0 = s0 // up                                            # block aligned to the rate ratio
        i0 = max(0, q0 - -(-self.RESAMPLE_MARGIN // down)) * down
        i1 = (-(-s1 // up) + -(-self.RESAMPLE_MARGIN // down)) * down
        block = _read_block(path, i0, i1)
        try:
            out = resample(block, rate, self.rate)
        except (RuntimeError, MemoryError, ValueError) as e:
            raise AudioError(f"{path}: cannot resample audio file {path} from {rate} Hz to {self.rate} Hz: {e}") from e
        o0 = i0 // down * up
        return out[s0 - o0:s1 - o0]


def _wav_info(path: Path, target_rate: int) -> tuple[Path, int, int]:
    """(path, sample rate, samples at ``target_rate``), with read_wav's checks of the header."""
    if not path.is_file():
        raise AudioError(f"{path}: audio file {path} {'is not a regular file' if path.exists() else 'does not exist'}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError on truncated or foreign files
        raise AudioError(f"{path}: cannot read audio file {path}: {e}") from e
    if info.frames <= 0:
        raise AudioError(f"{path}: audio file {path} holds no samples")
    rate = int(info.samplerate)
    if rate != target_rate and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: audio file {path} declares a sample rate of {rate} Hz, outside "
                         f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    if rate != target_rate:
        log.info("%s is at %d Hz: resampling to %d Hz (block by block)", path, rate, target_rate)
    if info.channels > 1:
        log.info("%s has %d channels: averaging to mono", path, info.channels)
    return path, rate, -(-int(info.frames) * target_rate // rate)


def _read_block(path: Path, s0: int, s1: int) -> np.ndarray:
    """Mono float32 samples [s0, s1) of a WAV at its own rate (channels averaged as read_wav does), zeros past
    its end; NaN/Inf refused with the sample's index in the file."""
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(min(s0, f.frames))
            data = f.read(max(0, min(s1, f.frames) - s0), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio file {path}: {e}") from e
    audio = data.mean(axis=1, keepdims=True)[:, 0] if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(audio).all():
        bad = s0 + int(np.flatnonzero(~np.isfinite(audio))[0])
        raise AudioError(f"{path}: audio file {path} holds NaN/Inf (first at sample {bad})")
    if len(audio) < s1 - s0:
        audio = np.concatenate([audio, np.zeros(s1 - s0 - len(audio), np.float32)])
    return np.ascontiguousarray(audio, dtype=np.float32)


_downloads = contextvars.ContextVar("audio_downloads_allowed", default=False)


@contextmanager
def downloads_allowed(allowed: bool = True):
    """Inside this block, feature extractors built without an explicit ``allow_download`` may download a
    pretrained encoder named by a hub name (sampling opts in with ``--allow-download``; off by default)."""
    token = _downloads.set(bool(allowed))
    try:
        yield
    finally:
        _downloads.reset(token)


def make_feature_extractor(cfg: AudioConfig, sample_rate: int, fps: float, allow_download: bool | None = None):
    """The feature extractor of ``cfg``. A pretrained encoder named by a hub name is downloaded only when
    ``allow_download`` (default: inside :func:`downloads_allowed`); otherwise only local copies are used."""
    if allow_download is None:
        allow_download = _downloads.get()
    if cfg.kind == "logmel":
        return LogMel(cfg, sample_rate, fps)
    if cfg.kind == "pretrained":
        return PretrainedEncoder(cfg, sample_rate, fps, allow_download=allow_download)
    raise ValueError(f"audio.kind must be 'logmel' or 'pretrained', got {cfg.kind!r}")


def describe_features(cfg: AudioConfig, extractor) -> dict:
    d = {"kind": cfg.kind, "dim": int(extractor.dim)}
    if cfg.kind == "logmel":
        d.update(n_mels=cfg.n_mels, window_frames=cfg.window_frames, f_min=cfg.f_min, f_max=cfg.f_max, causal=True)
    else:
        d.update(pretrained=cfg.pretrained or f"random:{cfg.pretrained_kind}", layer=cfg.layer, causal=False)
    return d
