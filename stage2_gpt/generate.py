"""All stage-2 generation: offline and streaming, dyad / listener (partner given) / speaker-only, any length.

    from stage2_gpt.generate import Generator, Sampling
    gen = Generator.load("runs/stage2/gpt.pt", "runs/stage1/tokenizer.pt")        # the GPT file + the tokenizer
    res = gen.generate(audio_feats, sampling=Sampling(temperature=1.0, top_k=0, top_p=1.0, seed=0))
    res.motion            # (2, T, D) raw FLAME motion at the motion rate (both participants)
    res = gen.generate(audio_feats, given=1, given_motion=gt_motion_of_1)        # listener / partner-given mode

    session = gen.stream(sampling, given=None)                                    # streaming, KV cache
    frames = session.push(audio_feats_chunk (2, n, F), given_motion_chunk (n, D) | None)   # -> (2, m, D)
    frames = session.push_wav(samples_a, samples_b)                               # raw audio (causal features)
    tail = session.flush()                                                        # the last partial token step

One token step (``downsample`` motion frames) of both participants per model step: the step function
(:meth:`Generator.step`) embeds the previous codes of both and the audio of the new step, runs the decoder with
its KV cache (trimmed to ``attn_window - 1`` steps: memory is flat and every step sees what training showed),
and samples every RVQ level of both participants (coarse to fine with the depth head); a given participant's
codes are not sampled but taken from the tokenizer's encoding of their observed motion, teacher-forced as the
dialog unfolds. Offline generation is the same step function in a loop, so streaming output == offline output
for the same seed (codes exactly; motion up to float rounding of the windowed decode).

Audio features: ``audio_feats`` are the cache's per-frame features (``common.audio`` path: any WAV goes through
``read_wav`` + ``make_feature_extractor`` with the configuration stored in the GPT file, see :meth:`Generator.features_from_wav`),
normalised here with the training statistics stored in the GPT file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import CheckpointError, load_artifact
from common.config import from_dict

from .model import DyadGPT, GPTConfig

log = logging.getLogger(__name__)
ARTIFACT_KIND = "stage2_gpt"


# ----------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------
@dataclass
class GPTBundle:
    """An exported GPT file: the model (eval mode) and what it needs to run (tokenizer and audio description)."""
    model: DyadGPT
    config: dict          # the Stage2Config it was trained with (plain dict)
    tokenizer: dict       # fps, motion_dim, downsample, num_quantizers, codebook_size, sha256, path
    audio: dict           # features, audio_config, sample_rate, fps, audio_mean, audio_std, motion_layout
    meta: dict
    path: str = ""


def load_gpt(path: str | Path, device: str | torch.device = "cpu") -> GPTBundle:
    payload = load_artifact(path, kind=ARTIFACT_KIND)
    meta = payload["meta"]
    cfg = from_dict(GPTConfig, meta["gpt_config"], where="model.")
    model = DyadGPT(cfg)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this version of stage2_gpt/model.py (written by an older one? "
                              f"retrain, or use the code it was trained with): {' '.join(str(e).split())[:300]}") from e
    return GPTBundle(model.to(device).eval(), payload["config"], meta["tokenizer"], meta["audio"], meta, str(path))


def check_compatible(bundle: GPTBundle, tok) -> None:
    t = bundle.tokenizer
    for key in ("downsample", "num_quantizers", "codebook_size", "motion_dim"):
        if int(getattr(tok, key)) != int(t[key]):
            raise CheckpointError(f"the GPT {bundle.path} was trained on tokens with {key}={t[key]}, the tokenizer "
                                  f"{getattr(tok, 'artifact_path', '')} has {getattr(tok, key)}")
    if abs(float(tok.fps) - float(t["fps"])) > 1e-6:
        raise CheckpointError(f"the GPT was trained at {t['fps']} fps, the tokenizer runs at {tok.fps} fps")
    path = getattr(tok, "artifact_path", None)
    if path and t.get("sha256"):
        from common.checkpoint import file_sha256
        if file_sha256(path) != t["sha256"]:
            log.warning("tokenizer %s is not the file the GPT was trained with (%s): same geometry, but the codes "
                        "may mean something else", path, t.get("path"))


# ----------------------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Sampling:
    temperature: float = 1.0    # 0: greedy (argmax)
    top_k: int = 0              # 0: off
    top_p: float = 1.0          # 1: off (nucleus sampling otherwise)
    seed: int = 0


def sample_logits(logits: torch.Tensor, s: Sampling, generator: torch.Generator) -> torch.Tensor:
    """logits (..., V) -> codes (...) long, with temperature / top-k / top-p, drawn from ``generator``."""
    shape = logits.shape[:-1]
    logits = logits.reshape(-1, logits.shape[-1]).float()
    if s.temperature <= 0:
        return logits.argmax(-1).reshape(shape)
    logits = logits / s.temperature
    if s.top_k and s.top_k < logits.shape[-1]:
        kth = torch.topk(logits, s.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > s.top_p        # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# results and state
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Generation:
    motion: np.ndarray          # (2, T, D) raw motion; a given participant's row is the tokenizer's reconstruction
    codes: np.ndarray           # (2, K, Q) int64
    states: np.ndarray          # (2, T) int64 predicted conversational states (-1 when the model has no state head)
    generated: list[int]        # which participants were generated (0, 1 or both)
    samples: np.ndarray | None = None   # (N, 2, T, D) every sample when num_samples > 1 (motion is their mean)


@dataclass
class StepState:
    """Everything one dialog's generation carries from step to step (bounded: the KV cache is trimmed)."""
    prev: torch.Tensor                      # (N, 2, Q) codes of the last step (N parallel samples), -1 before the first
    generator: torch.Generator
    cache: object = None
    steps: int = 0
    identity: torch.Tensor | None = None    # (2, I) identities (zeros: unknown), for models with use_identity
    active: list = field(default_factory=lambda: [0, 1])   # the generated participants (perspectives computed)
    history: list | None = None             # no-KV-cache mode (benchmarks): the window's input embeddings


class Generator:
    """A GPT + its tokenizer, ready to generate (see the module docstring)."""

    def __init__(self, bundle: GPTBundle, tokenizer, device: str | torch.device = "cpu"):
        check_compatible(bundle, tokenizer)
        self.bundle, self.tok, self.device = bundle, tokenizer, torch.device(device)
        self.model = bundle.model.to(self.device).eval()
        self.cfg = self.model.cfg
        self.d, self.Q = self.cfg.downsample, self.cfg.num_quantizers
        a = bundle.audio
        self.audio_mean = torch.as_tensor(np.asarray(a["audio_mean"], np.float32), device=self.device)
        self.audio_std = torch.as_tensor(np.asarray(a["audio_std"], np.float32), device=self.device)
        self.sample_rate, self.fps = int(a["sample_rate"]), float(a["fps"])
        self._extractor = None

    @classmethod
    def load(cls, gpt_path, tokenizer_path, device="cpu") -> "Generator":
        from stage1_vq import load_tokenizer
        return cls(load_gpt(gpt_path, device), load_tokenizer(tokenizer_path, device=device), device)

    # --- audio -------------------------------------------------------------------------------------------
    @property
    def extractor(self):
        if self._extractor is None:
            from common.audio import make_feature_extractor
            from common.data_config import AudioConfig
            cfg = from_dict(AudioConfig, self.bundle.audio.get("audio_config") or {}, where="audio.")
            self._extractor = make_feature_extractor(cfg, self.sample_rate, self.fps)
        return self._extractor

    def features_from_wav(self, paths: list[str | Path]) -> np.ndarray:
        """Audio features (len(paths), T, F) from WAV files of any rate / channel count (common/audio.py's path);
        T = the shortest file's frame count."""
        from common.audio import hop_length, read_wav
        hop = hop_length(self.sample_rate, self.fps)
        waves = [read_wav(p, self.sample_rate, what=f"{p}: ") for p in paths]
        T = min(len(w) // hop for w in waves)
        if T < 1:
            raise ValueError(f"audio shorter than one motion frame ({hop} samples at {self.sample_rate} Hz)")
        longest = max(len(w) // hop for w in waves)
        if longest - T > self.fps:
            log.warning("the audio files differ in length by %.1f s: using the shortest (%d frames)",
                        (longest - T) / self.fps, T)
        return np.stack([self.extractor(w, T) for w in waves]).astype(np.float32)

    def normalize_audio(self, feats) -> torch.Tensor:
        x = torch.as_tensor(np.array(feats, np.float32), device=self.device)
        if x.shape[-1] != self.cfg.audio_dim:
            raise ValueError(f"audio features have {x.shape[-1]} dims, the GPT expects {self.cfg.audio_dim}")
        return (x - self.audio_mean) / self.audio_std

    # --- the step function ----------------------------------------------------------------------------------
    def new_state(self, seed: int = 0, num_samples: int = 1, identity=None, given: int | None = None,
                  use_cache: bool = True) -> StepState:
        """A fresh dialog: ``num_samples`` parallel samples; ``given`` (0/1): that participant is observed, not
        generated (its perspective is not computed at all)."""
        if given not in (None, 0, 1):
            raise ValueError(f"given must be None, 0 or 1, got {given!r}")
        return StepState(prev=torch.full((num_samples, 2, self.Q), -1, dtype=torch.long, device=self.device),
                         generator=torch.Generator(device=self.device).manual_seed(int(seed)),
                         identity=self._identity(identity), active=[p for p in (0, 1) if p != given],
                         history=None if use_cache else [])

    def _identity(self, identity) -> torch.Tensor | None:
        """(2, >= I) identities (FLAME shape of each participant; a None row or None: unknown) -> (2, I)."""
        if not self.cfg.use_identity:
            return None
        I = self.cfg.identity_dim
        out = torch.zeros((2, I), device=self.device)
        if identity is not None:
            for p in (0, 1):
                if identity[p] is not None:
                    v = torch.as_tensor(np.array(identity[p], np.float32).reshape(-1)[:I], device=self.device)
                    out[p, :len(v)] = v
        return out

    @torch.no_grad()
    def step(self, st: StepState, audio_step: torch.Tensor, given: torch.Tensor | None, sampling: Sampling):
        """One token step of both participants (for each of the state's ``N`` parallel samples).

        audio_step (2, d, F) normalised features of this step's frames; given (2, Q) long: the codes of the
        observed participant this step (its row; the other row is ignored), required when the state has one.
        Returns (codes (N, 2, Q), state probabilities (N, 2, d, C), NaN for an observed participant, or None);
        updates ``st`` (the codes are the next step's input; the KV cache stays within the attention window).
        """
        m, Q, P = self.model, self.Q, self.cfg.inputs
        N, act = st.prev.shape[0], st.active
        A = len(act)
        partner = [1 - p for p in act]
        prev = torch.stack([st.prev[:, act], st.prev[:, partner]], 2)[:, :, :P]          # (N, A, P, Q)
        audio = torch.stack([audio_step[act], audio_step[partner]], 1)[:, :P]          # (A, P, d, F)
        audio = audio.unsqueeze(0).expand(N, *audio.shape)
        ident = None if st.identity is None else st.identity[act].unsqueeze(0).expand(N, A, -1).reshape(N * A, -1)
        prev, audio = prev.reshape(N * A, P, Q), audio.reshape(N * A, *audio.shape[2:])
        if st.history is None:
            h, st.cache = m.step_hidden(prev, audio, st.cache, ident)
        else:
            h, st.history = m.step_hidden_no_cache(prev, audio, st.history, ident)
        sampled = self._sample_heads(h, sampling, st.generator).reshape(N, A, Q)
        if A == 2:
            codes = sampled
        else:
            if given is None:
                raise ValueError("this dialog observes a participant: pass its codes (given) at every step")
            codes = given.to(self.device).unsqueeze(0).expand(N, 2, Q).clone()
            codes[:, act] = sampled
        st.prev, st.steps = codes, st.steps + 1
        probs = m.state_probs(h)
        if probs is None:
            return codes, None
        out = torch.full((N, 2, *probs.shape[1:]), float("nan"), device=probs.device)
        out[:, act] = probs.reshape(N, A, *probs.shape[1:])
        return codes, out

    def _sample_heads(self, h, sampling, generator):
        """h (B, dim) -> codes (B, Q): every RVQ level of self (coarse to fine with the depth head)."""
        m = self.model
        if self.cfg.rvq_head == "parallel":
            return sample_logits(m.head(h)[:, 0], sampling, generator)
        head = m.head
        z = head.base(h)                                                     # (B, 1, H)
        out = []
        for q in range(self.Q):
            c = sample_logits(head.level_logits(z, q), sampling, generator)  # (B, 1)
            out.append(c[:, 0])
            if q + 1 < self.Q:
                z = z + head.embed_level(c, q)
        return torch.stack(out, -1)

    # --- offline -----------------------------------------------------------------------------------------------
    def _given_codes(self, given, given_motion, K: int) -> torch.Tensor | None:
        if given is None:
            return None
        if given not in (0, 1):
            raise ValueError(f"given must be 0 or 1 (the participant whose motion is observed), got {given!r}")
        if given_motion is None:
            raise ValueError("listener mode needs the given participant's motion (given_motion)")
        motion = torch.as_tensor(np.array(given_motion, np.float32), device=self.device)
        if motion.ndim != 2 or motion.shape[1] != self.tok.motion_dim:
            raise ValueError(f"given_motion must be (T, {self.tok.motion_dim}), got {tuple(motion.shape)}")
        motion = _pad_to(motion, K * self.d)
        codes = self.tok.encode(motion[None])[0].to(self.device)             # (K, Q)
        full = torch.full((K, 2, self.Q), -1, dtype=torch.long, device=self.device)
        full[:, given] = codes
        return full

    @torch.no_grad()
    def generate(self, audio_feats, *, given: int | None = None, given_motion=None,
                 sampling: Sampling | None = None, num_samples: int = 1, identity=None,
                 progress: bool = False, use_cache: bool = True) -> Generation:
        """Whole-sequence generation from both participants' audio features (2, T, F) (un-normalised, as cached).

        ``given`` (0 / 1) with ``given_motion`` (T, D) raw: listener mode, that participant's codes come from
        the tokenizer's encoding of their motion. Any length: the KV cache stays within the attention window.
        ``identity`` (2, I): each participant's FLAME shape (None / a None row: unknown), used by models trained
        with ``use_identity``. ``num_samples`` > 1 draws that many samples in one batch and returns their average motion (an estimate
        of the conditional mean: lower MSE, less lively motion); the samples are in ``Generation.samples``.
        ``use_cache=False`` reruns the decoder over the attention window at every step (the same model; benchmarks).
        """
        sampling = sampling or Sampling()
        audio = self.normalize_audio(audio_feats)
        if audio.ndim != 3 or audio.shape[0] != 2:
            raise ValueError(f"audio features must be (2, T, F), got {tuple(audio.shape)}")
        T, N = audio.shape[1], int(num_samples)
        K = -(-T // self.d)
        audio = _pad_to(audio.transpose(0, 1), K * self.d).transpose(0, 1)  # (2, K*d, F), last frame repeated
        giv = self._given_codes(given, given_motion, K)
        st = self.new_state(sampling.seed, N, identity, given, use_cache=use_cache)
        codes = torch.empty((K, N, 2, self.Q), dtype=torch.long, device=self.device)
        states = torch.full((K, 2, self.d), -1, dtype=torch.long, device=self.device)   # no host sync per step
        steps = range(K)
        if progress:
            from tqdm import tqdm
            steps = tqdm(steps, desc="generate", unit="step", leave=False)
        for k in steps:
            c, probs = self.step(st, audio[:, k * self.d:(k + 1) * self.d], None if giv is None else giv[k], sampling)
            codes[k] = c
            if probs is not None:
                for p in st.active:
                    states[k, p] = probs[:, p].mean(0).argmax(-1)
        codes = codes.permute(1, 2, 0, 3)                                      # (N, 2, K, Q)
        motion = self.tok.decode(codes.reshape(2 * N, K, self.Q)).reshape(N, 2, K * self.d, -1)
        motion = motion.cpu().numpy()[:, :, :T].astype(np.float32)
        return Generation(motion.mean(0) if N > 1 else motion[0], codes[0].cpu().numpy(),
                          states.permute(1, 0, 2).reshape(2, -1)[:, :T].cpu().numpy(), [p for p in (0, 1) if p != given],
                          motion if N > 1 else None)

    # --- streaming ---------------------------------------------------------------------------------------------
    def stream(self, sampling: Sampling | None = None, given: int | None = None, identity=None) -> "StreamSession":
        return StreamSession(self, sampling or Sampling(), given, identity)


def _pad_to(x: torch.Tensor, n: int) -> torch.Tensor:
    """Repeat the last row of x (T, ...) up to n rows."""
    if x.shape[0] >= n:
        return x[:n]
    return torch.cat([x, x[-1:].expand(n - x.shape[0], *x.shape[1:])], 0)


class StreamingFeatures:
    """Causal audio features from raw samples pushed in chunks, identical to the offline extractor's frames."""

    def __init__(self, gen: Generator):
        from common.audio import hop_length
        feats = gen.bundle.audio.get("features", {})
        if not feats.get("causal", False):
            raise ValueError(f"streaming from raw audio needs causal features; the GPT uses {feats.get('kind')} "
                             "(not causal): push features instead")
        self.ex, self.hop = gen.extractor, hop_length(gen.sample_rate, gen.fps)
        self.ctx = int(np.ceil(float(feats.get("window_frames", 2.0)))) + 1          # frames of history needed
        self.buf = [np.zeros(self.ctx * self.hop, np.float32) for _ in range(2)]      # offline pads with zeros too

    def push(self, samples: list[np.ndarray]) -> np.ndarray:
        """samples: two 1-D float arrays (the new audio of each participant, at the GPT's sample rate) ->
        features (2, n, F) of the frames completed by both."""
        for i in range(2):
            self.buf[i] = np.concatenate([self.buf[i], np.asarray(samples[i], np.float32).reshape(-1)])
        n = min(len(b) // self.hop for b in self.buf) - self.ctx
        if n <= 0:
            return np.zeros((2, 0, self.ex.dim), np.float32)
        out = []
        for i in range(2):
            seg = self.buf[i][:(self.ctx + n) * self.hop]
            out.append(self.ex(seg, self.ctx + n)[self.ctx:])
            self.buf[i] = self.buf[i][n * self.hop:]
        return np.stack(out).astype(np.float32)


class StreamSession:
    """Frame-in, frame-out generation with a KV cache; causal (nothing later than the pushed audio is used).

    ``push(audio_feats (2, n, F), given_motion (n, D) | None) -> motion (2, m, D)``: buffers frames until a token
    step (``downsample`` frames) is complete, then generates it; ``m`` is a multiple of ``downsample``.
    ``flush()`` generates the last partial step (audio repeated like the offline path) and returns its frames.
    """

    def __init__(self, gen: Generator, sampling: Sampling, given: int | None = None, identity=None):
        tok = gen.tok
        if getattr(tok, "lookahead_frames", 0):
            raise ValueError("streaming needs a causal tokenizer (lookahead_frames == 0)")
        if given not in (None, 0, 1):
            raise ValueError(f"given must be None, 0 or 1, got {given!r}")
        self.gen, self.sampling, self.given = gen, sampling, given
        self.d, self.D = gen.d, tok.motion_dim
        self.state = gen.new_state(sampling.seed, 1, identity, given)
        self.dec_ctx = int(tok.decoder_context)
        self.enc_ctx = int(getattr(tok, "encoder_context", 0)) or None
        self.audio_buf = torch.zeros((2, 0, gen.cfg.audio_dim), device=gen.device)
        self.motion_buf = torch.zeros((0, self.D), device=gen.device)       # the given partner's recent frames
        self.motion_start = 0                                                # absolute frame of motion_buf[0]
        self.codes_hist = torch.zeros((2, 0, gen.Q), dtype=torch.long, device=gen.device)
        self.frames_out = 0
        self.features = None
        self.last_states = None

    def push_wav(self, samples_a, samples_b, given_motion=None) -> np.ndarray:
        """Raw audio of both participants at the GPT's sample rate (``gen.sample_rate``), any chunk size."""
        if self.features is None:
            self.features = StreamingFeatures(self.gen)
        return self.push(self.features.push([samples_a, samples_b]), given_motion)

    @torch.no_grad()
    def push(self, audio_feats, given_motion=None) -> np.ndarray:
        gen, d = self.gen, self.d
        a = gen.normalize_audio(audio_feats)
        if a.ndim != 3 or a.shape[0] != 2:
            raise ValueError(f"audio features must be (2, n, F), got {tuple(a.shape)}")
        self.audio_buf = torch.cat([self.audio_buf, a], 1)
        if self.given is not None:
            if given_motion is None:
                raise ValueError("this session observes a participant: push their motion with the audio")
            gm = torch.as_tensor(np.array(given_motion, np.float32), device=gen.device).reshape(-1, self.D)
            if gm.shape[0] != a.shape[1]:
                raise ValueError(f"push {a.shape[1]} audio frames with as many motion frames, got {gm.shape[0]}")
            self.motion_buf = torch.cat([self.motion_buf, gm], 0)
        outs = []
        while self.audio_buf.shape[1] >= d:
            outs.append(self._one_step(self.audio_buf[:, :d]))
            self.audio_buf = self.audio_buf[:, d:]
        if not outs:
            return np.zeros((2, 0, self.D), np.float32)
        return np.concatenate(outs, 1)

    @torch.no_grad()
    def flush(self) -> np.ndarray:
        """Generate the last partial token step (if any) and return its frames (fewer than ``downsample``)."""
        n = self.audio_buf.shape[1]
        if n == 0:
            return np.zeros((2, 0, self.D), np.float32)
        audio = _pad_to(self.audio_buf.transpose(0, 1), self.d).transpose(0, 1)
        if self.given is not None:
            pad = self.d - n
            self.motion_buf = torch.cat([self.motion_buf, self.motion_buf[-1:].expand(pad, self.D)], 0)
        self.audio_buf = self.audio_buf[:, :0]
        return self._one_step(audio)[:, :n]

    def _given_code(self) -> torch.Tensor:
        """Code of the newest complete token of the observed participant (causal encoder: its last frames)."""
        d, ctx = self.d, self.enc_ctx
        end = (self.state.steps + 1) * d                                     # frames [0, end) are observed
        start = 0 if ctx is None else max(0, ((end - ctx) // d) * d)        # token-aligned, >= ctx frames
        window = self.motion_buf[start - self.motion_start:end - self.motion_start]
        code = self.gen.tok.encode(window[None])[0, -1].to(self.gen.device)  # (Q,)
        if ctx is not None:                                                  # keep what the next step needs
            nxt = max(0, ((end + d - ctx) // d) * d)
            self.motion_buf = self.motion_buf[nxt - self.motion_start:]
            self.motion_start = nxt
        given = torch.full((2, self.gen.Q), -1, dtype=torch.long, device=self.gen.device)
        given[self.given] = code
        return given

    def _one_step(self, audio_step: torch.Tensor) -> np.ndarray:
        given = self._given_code() if self.given is not None else None
        codes, probs = self.gen.step(self.state, audio_step, given, self.sampling)
        codes = codes[0]
        self.last_states = None if probs is None else probs[0].nan_to_num(-1).argmax(-1).cpu().numpy()
        self.codes_hist = torch.cat([self.codes_hist, codes[:, None]], 1)[:, -self.dec_ctx:]
        frames = self.gen.tok.decode(self.codes_hist)[:, -self.d:]          # causal decoder: newest token's frames
        self.frames_out += self.d
        return frames.cpu().numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# dialogs and prediction files (what scripts/sample.py runs; the plot is common/plots.py's timeline)
# ----------------------------------------------------------------------------------------------------------
def motion_layout(bundle: GPTBundle, motion_dim: int) -> dict[str, list[int]]:
    layout = bundle.audio.get("motion_layout") or {}
    if layout:
        return {k: [int(v[0]), int(v[1])] for k, v in layout.items()}
    exp = motion_dim - 1 - (3 if motion_dim == 54 else 0)
    out = {"exp": [0, exp], "jaw": [exp, exp + 1]}
    if motion_dim > exp + 1:
        out["pose"] = [exp + 1, motion_dim]
    return out


def flame_arrays(motion: np.ndarray, layout: dict, shape: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``motion`` (T, D) -> the prediction-file keys: motion, expression_params (T, 1, 100) zero-padded,
    jaw_params (T, 1, 3), pose_params (T, 1, 3) (neck, zeros in 51-dim mode), shape_params (1, 1, 300) if known."""
    motion = np.asarray(motion, np.float32)
    T = motion.shape[0]
    e0, e1 = layout["exp"]
    j0, j1 = layout["jaw"]
    exp = np.zeros((T, 1, 100), np.float32)
    exp[:, 0, :e1 - e0] = motion[:, e0:e1]
    jaw = np.zeros((T, 1, 3), np.float32)
    jaw[:, 0, :j1 - j0] = motion[:, j0:j1]
    pose = np.zeros((T, 1, 3), np.float32)
    if "pose" in layout:
        p0, p1 = layout["pose"]
        pose[:, 0, :p1 - p0] = motion[:, p0:p1]
    out = {"motion": motion, "expression_params": exp, "jaw_params": jaw, "pose_params": pose}
    if shape is not None:
        sp = np.zeros((1, 1, 300), np.float32)
        sp[0, 0, :min(300, len(shape))] = np.asarray(shape, np.float32)[:300]
        out["shape_params"] = sp
    return out


def save_prediction(path: str | Path, motion: np.ndarray, layout: dict, shape: np.ndarray | None = None,
                    extra: dict | None = None) -> Path:
    """Write one participant's prediction file (docs/ARCHITECTURE.md, "Prediction files") atomically."""
    from common.io import atomic_path
    path = Path(path)
    arrays = flame_arrays(motion, layout, shape)
    arrays.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def read_given_motion(bundle: GPTBundle, npz_path: str | Path) -> np.ndarray:
    """The observed partner's motion (T, D) from an EMICA FLAME npz (common/corpus.py's reader and layout)."""
    from common.corpus import read_flame
    from common.data_config import DataConfig
    cfg = from_dict(DataConfig, bundle.audio.get("data_config") or {})
    motion, _ = read_flame(Path(npz_path), cfg, "given", Path(npz_path).stem)
    return motion


def read_shape(npz_path: str | Path) -> np.ndarray:
    """A participant's identity: ``shape_params[0, 0, :]`` of a FLAME npz."""
    with np.load(npz_path, allow_pickle=False) as z:
        if "shape_params" not in z.files:
            raise ValueError(f"{npz_path} has no shape_params")
        return np.asarray(z["shape_params"], np.float32).reshape(-1, z["shape_params"].shape[-1])[0]


@dataclass
class DialogOutput:
    dialog: str
    participants: list[str]
    files: list[Path] = field(default_factory=list)
    plot: Path | None = None
    motion: dict = field(default_factory=dict)          # participant -> generated (T, D)


def resolve_given(given, participants: list[str]) -> int | None:
    """Participant id, index (0/1) or A/B -> index; None stays None."""
    if given is None:
        return None
    if isinstance(given, int):
        return given
    if given in participants:
        return participants.index(given)
    if str(given) in ("0", "1"):
        return int(given)
    if str(given).upper() in ("A", "B"):
        return "AB".index(str(given).upper())
    raise ValueError(f"--given {given!r} is not a participant of this dialog ({', '.join(participants)}), 0/1 or A/B")


def generate_dialog(gen: Generator, dialog: str, participants: list[str], audio_feats: np.ndarray, out_dir,
                    *, mode: str = "dyad", given=None, gt_motion: np.ndarray | None = None,
                    true_states: np.ndarray | None = None, shape=None,
                    sampling: Sampling | None = None, num_samples: int = 1, plot: bool = True,
                    progress: bool = False) -> DialogOutput:
    """Generate one dialog and write ``out_dir/<dialog>/<participant>.npz`` for every generated participant.

    mode ``dyad``: both from both audios. ``listener``: one participant generated while the other's motion
    (``gt_motion``) is given; ``given`` names the given participant, or None for both roles in turn (two runs,
    each participant predicted with the partner given: the DualTalk protocol). ``num_samples`` > 1 writes the
    average of that many samples (see :meth:`Generator.generate`).
    """
    sampling = sampling or Sampling()
    layout = motion_layout(gen.bundle, gen.tok.motion_dim)
    out = DialogOutput(dialog, list(participants))
    runs: list[tuple[int | None, list[int]]]
    if mode == "dyad":
        if given is not None:
            raise ValueError("--given is for --mode listener")
        runs = [(None, [0, 1])]
    elif mode == "listener":
        if gt_motion is None:
            raise ValueError("listener mode needs the given participant's motion (a cached dialog, or --given-motion)")
        g = resolve_given(given, participants)
        runs = [(g, [1 - g])] if g is not None else [(1, [0]), (0, [1])]
    else:
        raise ValueError(f"mode must be dyad or listener, got {mode!r}")
    pred_states = {}
    for g, gen_slots in runs:
        res = gen.generate(audio_feats, given=g, given_motion=None if g is None else gt_motion[g],
                           sampling=sampling, num_samples=num_samples, identity=shape, progress=progress)
        for p in gen_slots:
            name = participants[p]
            out.motion[name] = res.motion[p]
            pred_states[name] = res.states[p]
            extra = {"pred_states": res.states[p].astype(np.int8), "codes": res.codes[p].astype(np.int32)}
            out.files.append(save_prediction(Path(out_dir) / dialog / f"{name}.npz", res.motion[p], layout,
                                             None if shape is None or shape[p] is None else shape[p], extra))
    if plot:       # common/plots.py's timeline: audio energy, jaw and the first expression dims over state bands
        from common.plots import timeline
        shown = [p for p in (0, 1) if participants[p] in out.motion]
        if true_states is not None:
            states, source = true_states, "true"
        else:
            states, source = [pred_states.get(participants[p]) for p in (0, 1)], "predicted"
        title = f"{dialog}: {mode}" + ("" if mode == "dyad" else " (partner given)") + f"  (bands: {source} states)"
        e0 = layout["exp"][0]
        out.plot = timeline(Path(out_dir) / dialog / "trajectories.png", title, gen.fps, participants, states,
                            np.asarray(audio_feats, np.float32).mean(-1), gt_motion,
                            {"generated": [out.motion.get(participants[p]) for p in (0, 1)]},
                            jaw_dim=layout["jaw"][0], exp_dims=(e0, e0 + 1), max_seconds=60.0, show=shown, dpi=90)
    return out
