"""Stage-2 generation: the step function, sampling, offline generation of whole dialogs, prediction files.

    from stage2_gpt.generate import Generator, Sampling
    gen = Generator.load("runs/stage2/gpt.pt", "runs/stage1/tokenizer.pt")        # the GPT file + the tokenizer
    res = gen.generate(audio_feats, sampling=Sampling(temperature=1.0, top_k=0, top_p=1.0, seed=0))
    res.motion            # (2, T, D) raw FLAME motion at the motion rate (both participants)
    res = gen.generate(audio_feats, given=1, given_motion=gt_motion_of_1)        # listener / partner-given mode
    session = gen.stream(sampling)       # frame-in, frame-out: stage2_gpt/streaming.py

Dyad (both generated), listener (one participant's motion given) and the speaker-only ablation (a model that
never sees the partner) all run through here, for any length.

One token step (``downsample`` motion frames) of both participants per model step: the step function
(:meth:`Generator.step`) embeds the previous codes of both and the audio of the new step, runs the decoder with
its KV cache (trimmed to ``attn_window - 1`` steps: memory is flat and every step sees what training showed),
and samples every RVQ level of both participants (coarse to fine with the depth head); a given participant's
codes are not sampled but taken from the tokenizer's encoding of their observed motion, teacher-forced as the
dialog unfolds. Offline generation is the same step function in a loop, so streaming output == offline output
for the same seed (codes exactly; motion up to float rounding of the windowed decode). The decoder runs through
stage2_gpt/decode_step.py (bit-identical to x-transformers' cached forward, without its per-layer Python); with
``cuda_graph`` every step is one replay of a captured CUDA graph (stage2_gpt/graphed_step.py: the same codes up to
float rounding, several times faster on a GPU, where the plain step waits on the host).

Offline generation (:meth:`Generator.iter_generate`) runs a batch of dialogs of any lengths with one KV cache
(each dialog exactly as alone on the CPU: its own generator, its rows multiplied on their own) in bounded memory:
audio features are read and motion decoded ``CHUNK_STEPS`` token steps at a time (the causal tokenizer's window);
:meth:`Generator.wav_features` computes WAV features block by block and :func:`generate_dialogs` streams the frames
into the prediction files, so nothing grows with the length of a dialog.

Audio features: ``audio_feats`` are the cache's per-frame features (``common.data.audio`` path: any WAV goes through
``read_wav`` + ``make_feature_extractor`` with the configuration stored in the GPT file, see :meth:`Generator.features_from_wav`),
normalised here with the training statistics stored in the GPT file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from x_transformers.autoregressive_wrapper import top_k

from common.config import from_dict
from common.eval.predictions import PredictionWriter, check_participants, prediction_path

from .artifact import GPTBundle, check_tokenizer, load_gpt
from .decode_step import KVCache, group_linear

log = logging.getLogger(__name__)
CHUNK_STEPS = 256       # token steps (17 s at 15 steps/s) generated, then decoded, at a time offline
MEAN_ANCHOR_S = 5.0     # default prior of the mean anchor, seconds (docs/STAGE2.md, "Mean anchor")
SLOW_S = 0.2            # default time constant of :class:`SampleMix`, seconds (docs/STAGE2.md, "Quality levers")
SMOOTH_S = 0.0145       # default time constant of the output's expression low-pass, seconds (:class:`LowPass`; same section)
DRIFT_S = 5.0           # default time constant of the drift removed from :class:`SampleMix`'s deviation, seconds (same section)
GUIDED_SMOOTH_S = 0.025 # scripts/sample.py's output low-pass time constant when guidance on audio is on, seconds (same section)
DYAD_TEMPERATURE = 1.35 # scripts/sample.py's sampling temperature in dyad mode without guidance (same section)
DYAD_SMOOTH_S = 0.020   # scripts/sample.py's output low-pass time constant in dyad mode without guidance, seconds (same section)


def default_slow_s(mode: str) -> float | None:
    """How several samples are combined by default in ``mode`` (scripts/sample.py, the benchmark): dyad mode
    :class:`SampleMix` with :data:`SLOW_S`, listener mode (the partner given) their plain mean (None), measured
    best there (docs/STAGE2.md, "Quality levers"). The library's :class:`Sampling` default is ``SLOW_S`` in any mode."""
    return None if mode == "listener" else SLOW_S


def default_temperature(mode: str, guided: bool) -> float:
    """scripts/sample.py's sampling temperature (and the benchmark's): :data:`DYAD_TEMPERATURE` in dyad mode, 1 in
    listener mode and with guidance on audio (``Sampling.guided``). Why hotter in dyad mode: at temperature 1 the
    GPT's sampled sequences are under-dispersed, one sample keeping 0.6 of the truth's within-sequence variance of
    expression (a perfect sampler of the synthetic process keeps 0.96-0.98), most of the shortfall in motion slower
    than 2 s; at 1.35 the dyad output has FD-exp -3 %, FD-jaw -25 % on the bench's `default` corpus
    (docs/STAGE2.md, "Quality levers"). The library's :class:`Sampling` default stays 1 (the model's own
    distribution)."""
    return 1.0 if guided or mode == "listener" else DYAD_TEMPERATURE


def default_smooth_s(guided: bool, mode: str) -> float:
    """scripts/sample.py's output low-pass time constant: :data:`GUIDED_SMOOTH_S` with guidance on audio
    (``Sampling.guided``; guided draws are sharper: expression acceleration 1.30x the ground truth's at 14.5 ms with
    guidance 2, 1.05x at 25 ms), else :data:`DYAD_SMOOTH_S` in dyad mode (the draws at :data:`DYAD_TEMPERATURE` are
    sharper too: 1.16x at 14.5 ms, 1.04x at 20 ms) and :data:`SMOOTH_S` in listener mode (docs/STAGE2.md, "Quality
    levers"). The library's :class:`Sampling` default is ``SMOOTH_S``."""
    return GUIDED_SMOOTH_S if guided else (SMOOTH_S if mode == "listener" else DYAD_SMOOTH_S)


def mode_defaults(mode: str, guided: bool = False) -> dict:
    """scripts/sample.py's sampling defaults in ``mode`` (the benchmark's quality section uses the same), as
    :class:`Sampling` fields: ``temperature``, ``slow_s`` and ``smooth_s`` from the three rules above."""
    return {"temperature": default_temperature(mode, guided), "slow_s": default_slow_s(mode),
            "smooth_s": default_smooth_s(guided, mode)}


# ----------------------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Sampling:
    temperature: float = 1.0    # 0: greedy (argmax)
    top_k: int = 0              # 0: off
    top_p: float = 1.0          # 1: off (nucleus sampling otherwise)
    seed: int = 0
    fine_temperature: float | None = None   # temperature of the RVQ levels after the first (None: ``temperature``)
    mean_anchor_s: float | None = MEAN_ANCHOR_S   # :class:`MeanAnchor`'s prior in seconds; None: no anchor
    slow_s: float | None = SLOW_S   # several samples: :class:`SampleMix`'s time constant (s); None: their plain mean
    smooth_s: float | None = SMOOTH_S   # the output's expression dims low-passed, causally (:class:`LowPass`'s time
                                        # constant, s); None: off
    drift_s: float | None = DRIFT_S     # :class:`SampleMix` (slow_s set): the deviation's running mean over this time
                                        # constant (s) removed; None: kept
    guidance: float = 1.0       # classifier-free guidance on audio: logits uncond + guidance * (cond - uncond), the
                                # unconditional pass seeing no audio (models trained with audio_dropout); 1: off
    fine_guidance: float | None = None      # the guidance of the RVQ levels after the first (None: ``guidance``)

    @property
    def guided(self) -> bool:
        """Whether a step runs the pass without audio too (some level's guidance is not 1)."""
        return self.guidance != 1.0 or (self.fine_guidance is not None and self.fine_guidance != 1.0)

    def level(self, q: int) -> "Sampling":
        """The sampling of RVQ level ``q``."""
        if q == 0 or (self.fine_temperature is None and self.fine_guidance is None):
            return self
        return replace(self, temperature=self.temperature if self.fine_temperature is None else self.fine_temperature,
                       guidance=self.guidance if self.fine_guidance is None else self.fine_guidance)


def top_p(logits, thres: float = 0.9):
    """x-transformers' ``top_p`` (nucleus filter), the same values, without its boolean-mask assignment (which
    waits for the device: not capturable in a CUDA graph)."""
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cum_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    sorted_logits = sorted_logits.masked_fill(F.pad(cum_probs > thres, (1, -1), value=False), float("-inf"))
    return sorted_logits.scatter(1, sorted_indices, sorted_logits)


def guided_logits(logits: torch.Tensor, guidance: float, dialogs: int) -> torch.Tensor:
    """Classifier-free guidance: logits (D * 2 * R, ..., V), each dialog's R conditional rows then its R rows
    without audio -> (D * R, ..., V) ``uncond + guidance * (cond - uncond)``."""
    x = logits.reshape(dialogs, 2, -1, *logits.shape[1:])
    cond, uncond = x[:, 0], x[:, 1]
    return (uncond + guidance * (cond - uncond)).reshape(-1, *logits.shape[1:])


def draw_noise(noise: torch.Tensor, generators) -> torch.Tensor:
    """Fill ``noise`` (rows, V) with Exp(1) draws, one equal block of rows per generator, each block exactly the
    draw :func:`sample_logits` makes from that generator (for the captured step: stage2_gpt/graphed_step.py)."""
    block = noise.shape[0] // len(generators)
    for i, g in enumerate(generators):
        noise[i * block:(i + 1) * block].exponential_(1, generator=g)
    return noise


def sample_logits(logits: torch.Tensor, s: Sampling, generator, noise: torch.Tensor | None = None) -> torch.Tensor:
    """logits (..., V) -> codes (...) long, with temperature / top-k / top-p (x-transformers' filters), drawn
    from ``generator``: one ``torch.Generator``, or a list of them, one per equal block of rows (the dialogs of
    a batch), each block drawn exactly as ``torch.multinomial`` draws it alone (its draw for one sample:
    ``argmax(p / E)``, ``E`` ~ Exp(1) of the shape of the block, from that block's generator). ``noise``: those
    draws made beforehand (:func:`draw_noise`; the generators are then not used)."""
    shape = logits.shape[:-1]
    logits = logits.reshape(-1, logits.shape[-1]).float()
    if s.temperature <= 0:
        return logits.argmax(-1).reshape(shape)
    if s.temperature != 1.0:
        logits = logits / s.temperature
    if s.top_k and s.top_k < logits.shape[-1]:
        logits = top_k(logits, k=s.top_k)
    if s.top_p < 1.0:
        logits = top_p(logits, thres=s.top_p)
    probs = logits.softmax(-1)
    if noise is None:
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        noise = draw_noise(torch.empty_like(probs), gens)
    return (probs / noise).argmax(-1).reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# results and state
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Generation:
    motion: np.ndarray          # (2, T, D) raw motion; a given participant's row is the tokenizer's reconstruction
    codes: np.ndarray           # (2, K, Q) int64
    states: np.ndarray          # (2, T) int64 predicted conversational states (-1 when the model has no state head)
    generated: list[int]        # which participants were generated (0, 1 or both)
    samples: np.ndarray | None = None   # (N, 2, T, D) every sample when num_samples > 1 (motion combines them)


@dataclass
class GenerationChunk:
    """Consecutive frames of one dialog of an offline run (:meth:`Generator.iter_generate`)."""
    dialog: int                 # index of the dialog in the batch
    start: int                  # first frame
    motion: np.ndarray          # (N, 2, m, D) raw motion of every sample
    codes: np.ndarray           # (N, 2, k, Q) int64 (k token steps; the last chunk may hold a partial step)
    states: np.ndarray          # (2, m) int64 predicted states (-1: not predicted)
    last: bool                  # the dialog's final chunk
    output: np.ndarray          # (2, m, D) the generation's output: the samples combined (:class:`SampleMix`)


@dataclass
class StepState:
    """Everything a generation carries from step to step (bounded: the KV cache is trimmed). One or several
    dialogs (a batch: one KV cache, one generator per dialog), ``N`` parallel samples each."""
    prev: torch.Tensor                      # (D * N, 2, Q) codes of the last step (dialog-major rows), -1 before the first
    generators: list                        # one torch.Generator per dialog
    cache: KVCache
    steps: int = 0
    identity: torch.Tensor | None = None    # (D, 2, I) identities (zeros: unknown), for models with use_identity
    active: list = field(default_factory=lambda: [0, 1])   # the generated participants (perspectives computed)
    audio_before: torch.Tensor | None = None   # (D, 2, audio_context - 1, F) the audio frames before this step
    graph: object = None                    # the captured step (stage2_gpt/graphed_step.py), with cuda_graph

    @property
    def dialogs(self) -> int:
        return len(self.generators)

    def identity_rows(self, passes: int = 1) -> torch.Tensor | None:
        """(D * passes * N * A, I) the identity of every row of the step (:meth:`Generator.step_rows`; ``passes`` 2:
        with guidance; made once per batch of dialogs)."""
        if self.identity is None:
            return None
        D, N, A = self.identity.shape[0], self.samples, len(self.active)
        if getattr(self, "_ident_rows", None) is None or self._ident_rows.shape[0] != D * passes * N * A:
            rows = self.identity[:, self.active].reshape(D, 1, 1, A, -1).expand(D, passes, N, A, -1)
            self._ident_rows = rows.reshape(D * passes * N * A, -1)
        return self._ident_rows

    def no_audio_rows(self) -> torch.Tensor:
        """(D * 2 * N * A,) bool: the rows of a guided step (:meth:`Generator.step_rows`) that see no audio (the
        unconditional pass; made once: no host-to-device copy per step)."""
        D, NA = self.dialogs, self.samples * len(self.active)
        if getattr(self, "_no_audio", None) is None or self._no_audio.shape[0] != D * 2 * NA:
            flag = torch.tensor([False, True], device=self.prev.device)
            self._no_audio = flag[None, :, None].expand(D, 2, NA).reshape(-1)
        return self._no_audio

    def perspectives(self, inputs: int) -> torch.Tensor:
        """(A, inputs) participant indices of each generated perspective: [self, partner][:inputs] (made once: no
        host-to-device copy per step)."""
        if getattr(self, "_persp", None) is None:
            self._persp = torch.tensor([[p, 1 - p][:inputs] for p in self.active], device=self.prev.device)
        return self._persp

    @property
    def samples(self) -> int:
        return self.prev.shape[0] // self.dialogs

    def keep(self, n: int) -> None:
        """Keep the first ``n`` dialogs (the others have ended): their rows, generators, identities, cache."""
        if n == self.dialogs:
            return
        per = self.cache.batch // self.dialogs          # the cache's rows per dialog (x2 with guidance)
        N = self.samples
        self.prev, self.generators = self.prev[:n * N], self.generators[:n]
        self.identity = None if self.identity is None else self.identity[:n]
        self.audio_before = None if self.audio_before is None else self.audio_before[:n]
        self.cache.select(slice(0, n * per))
        self.graph = None                       # shapes changed: captured again at the next step


class Generator:
    """A GPT + its tokenizer, ready to generate (see the module docstring)."""

    def __init__(self, bundle: GPTBundle, tokenizer, device: str | torch.device = "cpu", cuda_graph: bool = False):
        check_tokenizer(bundle, tokenizer)
        self.bundle, self.tok, self.device = bundle, tokenizer, torch.device(device)
        self.model = bundle.model.to(self.device).eval()
        self.cfg = self.model.cfg
        self.d, self.Q = self.cfg.downsample, self.cfg.num_quantizers
        a = bundle.audio
        self.person_reference = getattr(tokenizer, "reference", "global") == "person"
        self.audio_mean = torch.as_tensor(np.asarray(a["audio_mean"], np.float32), device=self.device)
        self.audio_std = torch.as_tensor(np.asarray(a["audio_std"], np.float32), device=self.device)
        self.sample_rate, self.fps = int(a["sample_rate"]), float(a["fps"])
        self._extractor = None
        # a batch of dialogs multiplies each dialog's rows on its own (stage2_gpt/decode_step.py, "Row groups"):
        # on the CPU every dialog then gets exactly the bits it gets alone; an accelerator picks its kernels by
        # shape anyway, so there the batch runs as one product per layer (faster; equal to alone to float rounding)
        self.row_groups = self.device.type == "cpu"
        # every step one replay of a captured CUDA graph (stage2_gpt/graphed_step.py: the host's per-op cost gone);
        # on a CPU the same fixed-shape step runs uncaptured (what the tests compare with the plain step)
        self.cuda_graph = bool(cuda_graph)

    @classmethod
    def load(cls, gpt_path, tokenizer_path, device="cpu", cuda_graph: bool = False) -> "Generator":
        from stage1_vq import load_tokenizer
        return cls(load_gpt(gpt_path, device), load_tokenizer(tokenizer_path, device=device), device, cuda_graph)

    # --- audio -------------------------------------------------------------------------------------------
    @property
    def extractor(self):
        if self._extractor is None:
            from common.data.audio import make_feature_extractor
            from common.data.config import AudioConfig
            cfg = from_dict(AudioConfig, self.bundle.audio.get("audio_config") or {}, where="audio.")
            self._extractor = make_feature_extractor(cfg, self.sample_rate, self.fps)
        return self._extractor

    def features_from_wav(self, paths: list[str | Path]) -> np.ndarray:
        """Audio features (len(paths), T, F) from WAV files of any rate / channel count (common/data/audio.py's path);
        T = the shortest file's frame count. Computed in chunks (:meth:`wav_features`): memory beyond the result
        does not grow with the files' length."""
        feats = self.wav_features(paths)
        return feats[:, :feats.shape[1]]

    def wav_features(self, paths: list[str | Path]):
        """The audio features of WAV files as a lazy array (len(paths), T, F) (common.data.audio.WavFeatures):
        frames are computed when sliced, in order, from blocks of the files, so offline generation of any length
        runs in bounded memory (:meth:`iter_generate` reads it chunk by chunk)."""
        from common.data.audio import WavFeatures
        feats = WavFeatures(paths, self.extractor, self.sample_rate, self.fps)
        if feats.length_spread > self.fps:
            log.warning("the audio files differ in length by %.1f s: using the shortest (%d frames)",
                        feats.length_spread / self.fps, feats.shape[1])
        return feats

    def normalize_audio(self, feats) -> torch.Tensor:
        x = torch.as_tensor(np.array(feats, np.float32), device=self.device)
        if x.shape[-1] != self.cfg.audio_dim:
            raise ValueError(f"audio features have {x.shape[-1]} dims, the GPT expects {self.cfg.audio_dim}")
        return (x - self.audio_mean) / self.audio_std

    # --- the step function ----------------------------------------------------------------------------------
    def new_state(self, seed: int = 0, num_samples: int = 1, identity=None, given: int | None = None) -> StepState:
        """A fresh dialog: ``num_samples`` parallel samples; ``given`` (0/1): that participant is observed, not
        generated (its perspective is not computed at all)."""
        return self.new_batch_state([seed], num_samples, [identity], given)

    def new_batch_state(self, seeds: list[int], num_samples: int = 1, identities=None,
                        given: int | None = None) -> StepState:
        """Fresh dialogs generated together (one KV cache), one seed (generator) and identity each; every dialog of
        the batch generates exactly what it generates alone with its seed."""
        if given not in (None, 0, 1):
            raise ValueError(f"given must be None, 0 or 1, got {given!r}")
        D, N = len(seeds), int(num_samples)
        identities = [None] * D if identities is None else list(identities)
        ident = [self._identity(i) for i in identities]
        return StepState(prev=torch.full((D * N, 2, self.Q), -1, dtype=torch.long, device=self.device),
                         generators=[torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds],
                         cache=self.model.new_cache(),
                         identity=None if ident[0] is None else torch.stack(ident),
                         active=[p for p in (0, 1) if p != given],
                         audio_before=torch.zeros((D, 2, self.cfg.audio_context - 1, self.cfg.audio_dim),
                                                  device=self.device) if self.cfg.audio_context > 1 else None)

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
        """One token step of both participants (for each of the state's dialogs and ``N`` parallel samples).

        audio_step (2, d, F) normalised features of this step's frames, or (D, 2, d, F) for a batch of D dialogs;
        given (2, Q) / (D, 2, Q) long: the codes of the observed participant this step (its row; the other row is
        ignored), required when the state has one. Returns (codes (D * N, 2, Q), state probabilities
        (D * N, 2, d, C), NaN for an observed participant, or None; a jaw head's raw jaw (D * N, 2, d, J), NaN for
        an observed participant, or None); updates ``st`` (the codes are the next step's input; the KV cache stays
        within the attention window). With ``cuda_graph`` the step replays a captured graph
        (stage2_gpt/graphed_step.py).
        """
        if audio_step.ndim == 3:
            audio_step = audio_step.unsqueeze(0)
        if given is None and len(st.active) < 2:
            raise ValueError("this dialog observes a participant: pass its codes (given) at every step")
        rows = st.dialogs * st.samples * len(st.active) * self.guided_passes(sampling)
        if st.cache.batch not in (0, rows):                 # the cache's rows were set by the first step
            raise ValueError("classifier-free guidance cannot be turned on or off during a dialog (its KV cache "
                             "holds the rows without audio only when it is on): keep Sampling.guided (guidance, "
                             "fine_guidance) as it was at the first step")
        if self.cuda_graph:
            from .graphed_step import graphed_step
            return graphed_step(self, st, sampling)(audio_step, given)
        codes, probs, jaw = self.advance(st, audio_step, given, sampling, st.cache)
        st.steps += 1
        return codes, probs, jaw

    def advance(self, st: StepState, audio_step, given, sampling: Sampling, cache, noise=None):
        """:meth:`step`'s work and its state update, in place: audio_step (D, 2, d, F) joins the audio context
        (``st.audio_before``), the step runs (:meth:`step_rows`) and its codes are written into ``st.prev``. What
        the captured step records and replays (stage2_gpt/graphed_step.py); ``st.steps`` is the caller's."""
        if st.audio_before is not None:          # the step's frames with the audio_context - 1 before them
            audio_step = torch.cat([st.audio_before, audio_step.to(st.audio_before.dtype)], dim=-2)
            st.audio_before.copy_(audio_step[..., -st.audio_before.shape[-2]:, :])
        codes, probs, jaw = self.step_rows(st, audio_step, given, sampling, cache, noise)
        st.prev.copy_(codes)
        return codes, probs, jaw

    def step_rows(self, st: StepState, audio_step, given, sampling: Sampling, cache, noise=None):
        """The computation of :meth:`step` from ``st.prev`` and audio_step (D, 2, audio_context - 1 + d, F) (the
        frames before the step's first), the state left as it is but for the ``cache``; ``noise``: the step's
        sampling draws made beforehand (:meth:`noise_shape`, :func:`draw_noise`), else drawn from
        ``st.generators``. Every op keeps its shapes from step to step and waits for nothing on the host, so a
        CUDA graph can capture it (stage2_gpt/graphed_step.py)."""
        m, Q, P = self.model, self.Q, self.cfg.inputs
        D, N, act = st.dialogs, st.samples, st.active
        A = len(act)
        G = self.guided_passes(sampling)                                                 # 2: with and without audio
        persp = st.perspectives(P)                                                       # (A, P): self, partner
        prev = st.prev[:, persp].reshape(D, 1, N, A, P, Q)                               # (D, 1, N, A, P, Q)
        fr = audio_step.shape[-2:]
        audio = audio_step[:, persp].reshape(D, 1, 1, A, P, *fr)                         # (D, 1, 1, A, P, d, F)
        prev = prev.expand(D, G, N, A, P, Q).reshape(D * G * N * A, P, Q)
        audio = audio.expand(D, G, N, A, P, *fr).reshape(D * G * N * A, P, *fr)
        groups = D if self.row_groups else 1
        h = m.step_hidden(prev, audio, cache, st.identity_rows(G), groups=groups,
                          no_audio=st.no_audio_rows() if G == 2 else None)
        sampled = self._sample_heads(h, sampling, st.generators, groups, noise).reshape(D * N, A, Q)
        if G == 2:
            h = h.reshape(D, 2, N * A, -1)[:, 0].reshape(D * N * A, -1)                   # the conditional rows
        if A == 2:
            codes = sampled
        else:                                 # one generated participant (an int index: no host-to-device copy)
            given = given.to(self.device).reshape(D, 1, 2, Q)
            codes = given.expand(D, N, 2, Q).reshape(D * N, 2, Q).clone()
            codes[:, act[0]] = sampled[:, 0]

        def both(x):                          # (D*N*A, ...) per perspective -> (D*N, 2, ...), NaN for the observed
            if x is None or A == 2:
                return None if x is None else x.reshape(D * N, 2, *x.shape[1:])
            out = torch.full((D * N, 2, *x.shape[1:]), float("nan"), device=x.device)
            out[:, act[0]] = x
            return out
        return codes, both(m.state_probs(h, groups=groups)), both(m.jaw_values(h, groups=groups))

    def guided_passes(self, sampling: Sampling) -> int:
        """Rows of the step per generated row: 2 with classifier-free guidance (with and without audio), else 1."""
        if not sampling.guided:
            return 1
        if self.model.null_audio is None:
            raise ValueError(f"guidance (guidance {sampling.guidance}, fine_guidance {sampling.fine_guidance}) needs a "
                             "GPT trained with model.audio_dropout > 0 (this one has no 'no audio' input); use 1")
        return 2

    def noise_shape(self, rows: int, sampling: Sampling) -> tuple[int, int, int]:
        """(draws, rows', V) of a step's sampling noise for ``rows`` generated rows (:meth:`step_rows`): one draw
        per RVQ level, or one of every level at once (the parallel head at one temperature)."""
        V = self.cfg.codebook_size
        if self.cfg.rvq_head == "parallel" and sampling.fine_temperature is None:
            return 1, rows * self.Q, V
        return self.Q, rows, V

    def _sample_heads(self, h, sampling, generators, groups: int = 1, noise=None):
        """h (B, dim) -> codes (B, Q): every RVQ level of self (coarse to fine with the depth head); the B rows are
        one equal block per generator (dialog), each drawn from its own; ``groups``: row groups of the products;
        ``noise`` (:meth:`noise_shape`): the draws made beforehand."""
        head = self.model.head
        at = (lambda q: None) if noise is None else (lambda q: noise[q])     # noqa: E731
        guided = sampling.guided
        D = len(generators) if isinstance(generators, (list, tuple)) else 1    # dialogs: one generator each
        if self.cfg.rvq_head == "parallel":
            mlp = head.proj
            logits = group_linear(mlp[2], mlp[1](group_linear(mlp[0], h, groups)), groups).unflatten(-1, (head.Q, head.V))
            if guided:                                   # the coarse level's guidance, then the finer levels' (floats:
                g0, gf = sampling.guidance, sampling.level(1).guidance       # no host-to-device copy in a capture)
                logits = guided_logits(logits, g0, D) if g0 == gf or self.Q == 1 else torch.cat(
                    [guided_logits(logits[:, :1], g0, D), guided_logits(logits[:, 1:], gf, D)], 1)
            if sampling.fine_temperature is None:
                return sample_logits(logits, sampling, generators, at(0))
            return torch.stack([sample_logits(logits[:, q], sampling.level(q), generators, at(q))
                                for q in range(self.Q)], -1)
        z = head.base(h, groups)                                             # (B, H)
        out = []
        for q in range(self.Q):
            s, logits = sampling.level(q), head.level_logits(z, q, groups)
            if guided:                                                   # (D*2*R, V) -> (D*R, V)
                logits = guided_logits(logits, s.guidance, D)
            c = sample_logits(logits, s, generators, at(q))                                                # (B,)
            out.append(c)
            if q + 1 < self.Q:
                if guided:                                                   # both passes continue from the draw
                    c = c.reshape(D, 1, -1).expand(D, 2, c.shape[0] // D).reshape(-1)
                z = z + head.embed_level(c, q)
        return torch.stack(out, -1)

    # --- offline -----------------------------------------------------------------------------------------------
    def _given_motion(self, given_motion, K: int) -> torch.Tensor:
        motion = torch.as_tensor(np.array(given_motion, np.float32), device=self.device)
        if motion.ndim != 2 or motion.shape[1] != self.tok.motion_dim:
            raise ValueError(f"given_motion must be (T, {self.tok.motion_dim}), got {tuple(motion.shape)}")
        return pad_to(motion, K * self.d)

    def _given_codes(self, given, given_motion, K: int) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[None, None]:
        """((K, 2, Q) codes with the observed participant's row, -1 elsewhere; its per-frame reference (K * d, D)
        or None for a global tokenizer). The row is exactly ``tokenizer.encode(motion, running_reference(motion))``
        (streaming computes the same, frame by frame); (None, None) without a given participant."""
        if given is None:
            return None, None
        if given not in (0, 1):
            raise ValueError(f"given must be 0 or 1 (the participant whose motion is observed), got {given!r}")
        if given_motion is None:
            raise ValueError("listener mode needs the given participant's motion (given_motion)")
        motion = self._given_motion(given_motion, K)
        ref = running_reference(motion).to(self.device) if self.person_reference else None
        codes = self.tok.encode(motion[None], None if ref is None else ref[None])[0].to(self.device)   # (K, Q)
        full = torch.full((K, 2, self.Q), -1, dtype=torch.long, device=self.device)
        full[:, given] = codes
        return full, ref

    def reference_rows(self, reference) -> torch.Tensor | None:
        """(2, D) what each participant's motion is decoded around: its ``reference`` (an enrollment clip's mean
        motion) or, unknown (None / a None row), the train mean; None for a global tokenizer."""
        if not self.person_reference:
            return None
        out = self.tok.motion_mean.detach().clone().to(self.device).expand(2, -1).clone()
        if reference is not None:
            for p in (0, 1):
                if reference[p] is not None:
                    out[p] = torch.as_tensor(np.asarray(reference[p], np.float32).reshape(-1), device=self.device)
        return out

    def with_jaw(self, motion: torch.Tensor, jaw: torch.Tensor, given: int | None) -> torch.Tensor:
        """motion (N, 2, m, D) decoded frames with the generated participants' jaw dims replaced by the jaw head's
        (N, 2, m, J) (a given participant keeps its reconstruction)."""
        j0, j1 = self.tok.groups["jaw"]
        out = motion.clone()
        for p in (0, 1):
            if p != given:
                out[:, p, :, j0:j1] = jaw[:, p, :motion.shape[2]].to(out.dtype)
        return out

    def mean_anchor(self, rows, given: int | None, sampling: Sampling) -> "MeanAnchor | None":
        """The :class:`MeanAnchor` of one dialog's generated participants (around ``rows``, :meth:`reference_rows`),
        or None: a "global" tokenizer (nothing is coded around a person's mean) or ``sampling.mean_anchor_s`` None."""
        if rows is None or sampling.mean_anchor_s is None:
            return None
        return MeanAnchor(rows, self.tok.reference_mask, [p for p in (0, 1) if p != given],
                          sampling.mean_anchor_s * self.tok.fps)

    def _check_audio(self, audio) -> int:
        """Frames of one dialog's audio features (2, T, F) (any array that slices: numpy, memmap, WavFeatures)."""
        shape = tuple(audio.shape)
        if len(shape) != 3 or shape[0] != 2:
            raise ValueError(f"audio features must be (2, T, F), got {shape}")
        if shape[2] != self.cfg.audio_dim:
            raise ValueError(f"audio features have {shape[2]} dims, the GPT expects {self.cfg.audio_dim}")
        if shape[1] < 1:
            raise ValueError("audio features hold no frame")
        return shape[1]

    @torch.no_grad()
    def iter_generate(self, audios: list, *, given: int | None = None, given_motions: list | None = None,
                      sampling: Sampling | None = None, num_samples: int = 1, identities: list | None = None,
                      references: list | None = None, chunk_steps: int = CHUNK_STEPS, progress: bool = False):
        """Offline generation of a batch of dialogs (one KV cache) in bounded memory: yields
        :class:`GenerationChunk` s of every dialog, ``chunk_steps`` token steps at a time, in time order per dialog.

        ``audios``: each dialog's audio features (2, T_i, F) (un-normalised, as cached; any array that slices:
        numpy, memmap, :meth:`wav_features`); the dialogs may differ in length (a dialog's rows leave the batch
        when it ends). Each dialog is generated exactly as alone (codes; motion to float rounding): the same
        seed (``sampling.seed``), its own generator, its rows computed on their own (decode_step.py, "Row
        groups"). Motion is decoded chunk by chunk with the causal tokenizer's window (``decoder_context``), as
        streaming does. ``given`` / ``given_motions`` / ``identities`` / ``references``: see :meth:`generate`,
        one per dialog.
        """
        sampling = sampling or Sampling()
        D, N, d = len(audios), int(num_samples), self.d
        lengths = [self._check_audio(a) for a in audios]
        steps = [-(-T // d) for T in lengths]
        if getattr(self.tok, "decoder_lookahead", 0):
            chunk_steps = max(steps)                # a non-causal decoder reads ahead: one chunk, decoded whole
        order = sorted(range(D), key=lambda i: -steps[i])       # longest first: dialogs that end are the last rows
        given_motions = [None] * D if given_motions is None else list(given_motions)
        identities = [None] * D if identities is None else list(identities)
        references = [None] * D if references is None else list(references)
        givens, given_refs = zip(*[self._given_codes(given, given_motions[i], steps[i]) for i in order])
        rows = [self.reference_rows(references[i]) for i in order]
        st = self.new_batch_state([sampling.seed] * D, N, [identities[i] for i in order], given)
        decoders = [WindowDecoder(self.tok) for _ in order]
        anchors = [self.mean_anchor(rows[j], given, sampling) for j in range(D)]
        mixes = [SampleMix(sampling, self.tok.fps, self.bundle.layout.exp, given) for _ in range(D)]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps[order[0]], desc="generate", unit="step", leave=False)
        k0, live = 0, D
        while live:
            k1 = min(k0 + chunk_steps, min(steps[order[j]] for j in range(live)))
            audio = torch.stack([self._audio_chunk(audios[order[j]], k0, k1) for j in range(live)])   # (live, 2, n*d, F)
            codes, states, jaw = self._steps(st, audio, None if given is None else givens[:live], k0, k1, sampling)
            if bar is not None:
                bar.update(k1 - k0)
            for j in range(live):
                i, T = order[j], lengths[order[j]]
                cj = codes[:, j * N:(j + 1) * N].permute(1, 2, 0, 3)                     # (N, 2, n, Q)
                ref = self._chunk_reference(rows[j], given, given_refs[j], k0 * d, (k1 - k0) * d, N)
                motion = decoders[j].push(cj.reshape(2 * N, k1 - k0, self.Q), ref).reshape(N, 2, (k1 - k0) * d, -1)
                if jaw is not None:
                    motion = self.with_jaw(motion, jaw[j * N:(j + 1) * N], given)
                m = min((k1 - k0) * d, T - k0 * d)
                motion = motion[:, :, :m]
                if anchors[j] is not None:                      # on the device, before the copy to the host
                    motion = anchors[j](motion)
                motion = motion.to(torch.float32).cpu().numpy()
                yield GenerationChunk(i, k0 * d, motion, cj.cpu().numpy(),
                                      states[:, j].permute(1, 0, 2).reshape(2, -1)[:, :m].cpu().numpy(), k1 == steps[i],
                                      mixes[j](motion))
            live = sum(steps[order[j]] > k1 for j in range(live))
            st.keep(live)
            k0 = k1
        if bar is not None:
            bar.close()

    def _chunk_reference(self, rows, given, given_ref, f0: int, n: int, N: int) -> torch.Tensor | None:
        """(2 N, n, D) what frames [f0, f0 + n) of every sample's two rows are decoded around (None: global)."""
        if rows is None:
            return None
        ref = rows[:, None].expand(2, n, -1).clone()
        if given is not None:
            ref[given] = given_ref[f0:f0 + n]
        return ref.repeat(N, 1, 1)

    def _steps(self, st: StepState, audio, givens, k0: int, k1: int, sampling: Sampling):
        """Token steps [k0, k1) of the state's D dialogs from their audio (D, 2, (k1 - k0) * d, F): codes
        (n, D * N, 2, Q), predicted states (n, D, 2, d) (each sample's probabilities averaged; -1: not
        predicted) and a jaw head's raw jaw (D * N, 2, n * d, J) or None. ``givens``: each dialog's (K, 2, Q)
        observed codes, or None."""
        n, d, N = k1 - k0, self.d, st.samples
        codes = torch.empty((n, st.prev.shape[0], 2, self.Q), dtype=torch.long, device=self.device)
        probs = jaw = None
        for k in range(k0, k1):
            g = None if givens is None else torch.stack([gv[k] for gv in givens])
            c, pr, jw = self.step(st, audio[:, :, (k - k0) * d:(k - k0 + 1) * d], g, sampling)
            codes[k - k0] = c
            if pr is not None:
                probs = pr.new_empty((n, *pr.shape)) if probs is None else probs
                probs[k - k0] = pr
            if jw is not None:
                jaw = jw.new_empty((n, *jw.shape)) if jaw is None else jaw
                jaw[k - k0] = jw
        states = torch.full((n, st.dialogs, 2, d), -1, dtype=torch.long, device=self.device)
        if probs is not None:
            pr = probs.reshape(n, st.dialogs, N, 2, d, -1)
            for p in st.active:
                states[:, :, p] = pr[:, :, :, p].mean(2).argmax(-1)
        if jaw is not None:                                     # (n, D*N, 2, d, J) -> (D*N, 2, n*d, J)
            jaw = jaw.permute(1, 2, 0, 3, 4).flatten(2, 3)
        return codes, states, jaw

    def _audio_chunk(self, audio, k0: int, k1: int) -> torch.Tensor:
        """Normalised features of token steps [k0, k1) of one dialog (2, (k1 - k0) * d, F), the last frame
        repeated past the end (as the whole-dialog path pads)."""
        x = self.normalize_audio(audio[:, k0 * self.d:k1 * self.d])
        return pad_to(x.transpose(0, 1), (k1 - k0) * self.d).transpose(0, 1)

    def generate_many(self, audios: list, *, given: int | None = None, given_motions: list | None = None,
                      sampling: Sampling | None = None, num_samples: int = 1, identities: list | None = None,
                      references: list | None = None, progress: bool = False) -> list[Generation]:
        """:meth:`generate` of several dialogs in one batch (one KV cache; each result exactly what
        :meth:`generate` gives for that dialog alone: codes; motion to float rounding)."""
        parts: list[list[GenerationChunk]] = [[] for _ in audios]
        for ch in self.iter_generate(audios, given=given, given_motions=given_motions, sampling=sampling,
                                     num_samples=num_samples, identities=identities, references=references,
                                     progress=progress):
            parts[ch.dialog].append(ch)
        return [self._collect(p, given, num_samples) for p in parts]

    @staticmethod
    def _collect(chunks: list[GenerationChunk], given, num_samples: int) -> Generation:
        codes = np.concatenate([c.codes for c in chunks], 2)
        states = np.concatenate([c.states for c in chunks], 1)
        samples = np.concatenate([c.motion for c in chunks], 2) if num_samples > 1 else None   # (N, 2, T, D)
        return Generation(np.concatenate([c.output for c in chunks], 1), codes[0], states,
                          [p for p in (0, 1) if p != given], samples)

    @torch.no_grad()
    def generate(self, audio_feats, *, given: int | None = None, given_motion=None,
                 sampling: Sampling | None = None, num_samples: int = 1, identity=None, reference=None,
                 progress: bool = False) -> Generation:
        """Whole-sequence generation from both participants' audio features (2, T, F) (un-normalised, as cached).

        ``given`` (0 / 1) with ``given_motion`` (T, D) raw: listener mode, that participant's codes come from
        the tokenizer's encoding of their motion. Any length: the KV cache stays within the attention window and
        motion is decoded chunk by chunk (:meth:`iter_generate`; memory beyond the inputs and the result does not
        grow with the length). ``identity`` (2, I): each participant's FLAME shape (None / a None row: unknown),
        used by models trained with ``use_identity``. ``num_samples`` > 1 draws that many samples in one batch
        and combines them (:class:`SampleMix`: their mean plus sample 0's deviation from it between ``slow_s`` and
        ``drift_s``, or with ``sampling.slow_s`` None their plain mean, the conditional-mean estimate); the samples are in
        ``Generation.samples``.

        With a tokenizer that codes motion around each person's own mean (``model.reference=person``): a generated
        participant is decoded around ``reference[p]`` (2, D) (e.g. the mean motion of an enrollment clip of that
        person) or, unknown (None), the train mean; a given participant is encoded and decoded around the running
        mean of their observed motion (:func:`running_reference`: causal, as streaming does).
        """
        return self.generate_many([audio_feats], given=given, given_motions=[given_motion], sampling=sampling,
                                  num_samples=num_samples, identities=[identity], references=[reference],
                                  progress=progress)[0]

    # --- streaming ---------------------------------------------------------------------------------------------
    def stream(self, sampling: Sampling | None = None, given: int | None = None, identity=None, reference=None,
               num_samples: int = 1, warm: bool = True):
        """A :class:`stage2_gpt.streaming.StreamSession` (frame in, frame out; the same step function);
        ``num_samples`` > 1: that many samples combined (:class:`SampleMix`), as :meth:`generate`; ``warm``: the
        tokenizer's window lengths met once at creation (:func:`stage2_gpt.streaming.warm_tokenizer`)."""
        from .streaming import StreamSession
        sampling = sampling or Sampling()
        self.guided_passes(sampling)                        # guidance without the "no audio" input: refused now
        return StreamSession(self, sampling, given, identity, reference, num_samples, warm)


class MeanAnchor:
    """Holds each generated participant's long-term mean expression at its reference, causally.

    A "person" tokenizer codes expression as the deviation from the person's own mean, so in training the decoded
    deviations of a whole sequence average to zero. Sampled sequences need not: measured on the quality bench
    (docs/STAGE2.md, "Mean anchor"), the GPT's sequences wander off the reference by a per-dialog shift that
    repeated samples share (it is the model's, not the sampling's), which costs FD and MSE. The anchor removes
    the running mean of the deviations so far, shrunk toward zero by a prior of ``prior_frames`` frames:

        out_t = x_t - S_t / (t + 1 + prior_frames),    S_t = sum_{s <= t} (x_s - reference)

    on the referenced (expression) dims of the generated participants only (jaw and a given partner untouched).
    Causal and stateful (float64 running sums), so frames pushed in any chunks give the numbers of one call over
    the whole sequence: streaming == offline. Short-term motion is untouched (the shift changes by at most
    ``|x_t - mean| / (t + prior)`` per frame)."""

    def __init__(self, center, mask, participants: list[int], prior_frames: float):
        if prior_frames < 0:
            raise ValueError(f"the mean anchor's prior must be >= 0 frames, got {prior_frames}")
        self.parts = list(participants)
        mask = torch.as_tensor(mask).detach().cpu().to(torch.bool)
        self.dims = mask.nonzero().reshape(-1)                               # the anchored dims, as indices
        center = torch.as_tensor(center).detach().cpu().to(torch.float64)[:, self.dims][self.parts]   # (P, Dm)
        self.index = {torch.device("cpu"): (torch.tensor(self.parts), self.dims, center[None, :, None])}
        self.mean = RunningMean(prior_frames)

    def _index(self, device):
        """(participants, dims, center) on ``device``, copied there once (a copy from the host waits for it)."""
        device = torch.device(device)
        if device not in self.index:
            self.index[device] = tuple(t.to(device) for t in self.index[torch.device("cpu")])
        return self.index[device]

    def __call__(self, motion) -> torch.Tensor:
        """motion (N, 2, m, D) raw frames (N samples; a tensor on any device, or an array) -> the same, anchored
        (a new tensor on motion's device: offline runs it where the tokenizer decoded, before the copy to the
        host; on the host 512 samples' float64 sums took longer than the GPU's whole step). Index ops only: no
        boolean indexing, nothing waits for the device."""
        motion = torch.as_tensor(motion)
        if not self.parts or not len(self.dims) or motion.shape[2] == 0:
            return motion
        parts, dims, center = self._index(motion.device)
        x = motion.index_select(1, parts).index_select(-1, dims).to(torch.float64) - center
        shift = self.mean.push(x)                                            # (N, parts, m, Dm)
        out = motion.clone()
        for i, p in enumerate(self.parts):
            out[:, p].index_add_(-1, dims, shift[:, i].to(out.dtype), alpha=-1)
        return out


class SampleMix:
    """Combines the ``N`` samples of one dialog into the output, causally: their mean, plus sample 0's deviation
    from it low-passed (one pole, time constant ``sampling.slow_s`` seconds), less that deviation's drift (its
    running mean, one pole, ``sampling.drift_s`` seconds):

        out_t = mean_t + L_t - S_t,    L_t = a L_{t-1} + (1 - a) (x0_t - mean_t),    S_t = b S_{t-1} + (1 - b) L_t,
        a = exp(-1 / (slow_s * fps)),  b = exp(-1 / (drift_s * fps))

    so the output moves as one sample does between ``slow_s`` and ``drift_s`` (its own expressions, their spread)
    while the fast part, where independently sampled fine RVQ levels flicker, is the samples' average, and the slow
    part, where sample 0 drifts to a level of its own (a guess of the person's offset the samples' mean and the mean
    anchor already make better), is theirs too (measured: docs/STAGE2.md, "Quality levers"). One sample: that sample;
    ``slow_s`` None: the plain mean (the conditional-mean estimate, lowest MSE). Then, with ``sampling.smooth_s``,
    the expression dims ``smooth_dims`` (a layout's ``exp`` range) of the generated participants (not ``given``:
    their row stays the tokenizer's reconstruction of what was observed) go through :class:`LowPass`. Stateful
    (float64 state), so chunks of any size give the numbers of one call: streaming == offline."""

    def __init__(self, sampling: "Sampling", fps: float, smooth_dims: tuple[int, int] | None = None,
                 given: int | None = None):
        s, d = sampling.slow_s, sampling.drift_s
        if s is not None and not s > 0:
            raise ValueError(f"slow_s must be > 0 seconds (or None: the plain mean), got {s}")
        if d is not None and not d > 0:
            raise ValueError(f"drift_s must be > 0 seconds (or None: the deviation's drift kept), got {d}")
        self.slow = None if s is None else OnePole(s, fps)              # sample 0's deviation, from zero
        self.drift = None if s is None or d is None else OnePole(d, fps)   # its running mean, from zero
        self.smooth, self.rows = None, [p for p in (0, 1) if p != given]
        if sampling.smooth_s is not None and smooth_dims is not None:
            self.smooth = LowPass(sampling.smooth_s, fps, smooth_dims)

    def __call__(self, motion: np.ndarray) -> np.ndarray:
        """motion (N, 2, m, D) every sample's frames -> (2, m, D)."""
        out = self._combine(motion)
        if self.smooth is None:
            return out
        out = out.copy()
        out[self.rows] = self.smooth(out[self.rows])
        return out

    def _combine(self, motion: np.ndarray) -> np.ndarray:
        if motion.shape[0] == 1:
            return motion[0]
        mean = motion.mean(0)
        if self.slow is None:
            return mean
        dev = self.slow(motion[0] - mean)
        if self.drift is not None:
            dev = dev - self.drift(dev)
        return mean + dev.astype(mean.dtype)                           # (2, m, D)


class OnePole:
    """The causal one-pole low-pass both output filters use, along axis -2 of frames pushed in chunks:

        y_t = a y_{t-1} + (1 - a) x_t,    a = exp(-1 / (tau_s * fps)),    y_{-1} = 0 (or x_0: ``start_at_first``)

    float64 state (scipy's ``lfilter``), so chunks of any size, empty ones included, give the numbers of one call."""

    def __init__(self, tau_s: float, fps: float, start_at_first: bool = False):
        from scipy.signal import lfilter      # imported when made (a session's creation), not in its first step:
        self.lfilter = lfilter                # the first import costs about a second on a small CPU
        self.a, self.start_at_first, self.zi = float(np.exp(-1.0 / (tau_s * fps))), start_at_first, None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (..., m, D) -> (..., m, D) float64."""
        x = np.asarray(x, np.float64)
        if x.shape[-2] == 0:                                    # nothing to filter; lfilter's state would be junk
            return x
        if self.zi is None:
            self.zi = self.a * x[..., :1, :] if self.start_at_first else np.zeros(x.shape[:-2] + (1, x.shape[-1]))
        y, self.zi = self.lfilter([1.0 - self.a], [1.0, -self.a], x, axis=-2, zi=self.zi)
        return y


class LowPass:
    """A causal one-pole low-pass on the dims ``[d0, d1)`` of frames pushed in chunks (time constant ``tau_s``):

        y_t = y_{t-1} + c (x_t - y_{t-1}),    c = 1 - exp(-1 / (tau_s * fps)),    y_0 = x_0

    The output's expression after the samples are combined: 8 samples averaged leave some of the fine RVQ levels'
    flicker (expression acceleration 1.14-1.18x the ground truth's on the bench's `default` corpus); 14.5 ms (c = 0.90
    at 30 fps, a lag of about 4 ms) brings it to 0.98-1.06x on both corpora at FD-exp +0.0..+0.2 % (docs/STAGE2.md,
    "Quality levers"). Stateful (float64), so chunks of any size give the numbers of one call: streaming == offline."""

    def __init__(self, tau_s: float, fps: float, dims: tuple[int, int]):
        if not tau_s > 0:
            raise ValueError(f"smooth_s must be > 0 seconds (or None: off), got {tau_s}")
        self.filter = OnePole(tau_s, fps, start_at_first=True)          # y_0 = x_0: no ramp from zero
        self.d0, self.d1 = int(dims[0]), int(dims[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (..., m, D) -> the same shape, dims [d0, d1) filtered along m."""
        out = x.copy()
        out[..., self.d0:self.d1] = self.filter(x[..., self.d0:self.d1]).astype(x.dtype)
        return out


class WindowDecoder:
    """Decodes codes pushed in chunks with the causal tokenizer's window: each chunk with the last
    ``decoder_context - 1`` codes before it, so its frames are those of one whole decode (to float rounding)
    while memory stays bounded. A non-causal tokenizer (it reads ahead) takes one push: the whole dialog."""

    def __init__(self, tok):
        self.tok, self.tail = tok, None
        self.keep = int(tok.decoder_context) - 1

    def push(self, codes: torch.Tensor, reference=None) -> torch.Tensor:
        """codes (B, n, Q) -> motion (B, n * downsample, D) raw (around ``reference`` (B, n * downsample, D) of
        a "person" tokenizer; None: the train mean)."""
        if self.tail is not None and getattr(self.tok, "decoder_lookahead", 0):
            raise ValueError("a non-causal tokenizer reads ahead: decode the whole dialog in one push")
        buf = codes if self.tail is None else torch.cat([self.tail, codes], 1)
        n = codes.shape[1] * self.tok.downsample
        out = self.tok.denormalize(self.tok.decode_normalized(buf)[:, buf.shape[1] * self.tok.downsample - n:],
                                   reference)
        self.tail = buf[:, max(0, buf.shape[1] - self.keep):]
        return out


def decode_newest(tok, codes: torch.Tensor, frames: int, reference=None) -> torch.Tensor:
    """The last ``frames`` raw frames of codes (B, n, Q) made by a model (no codebook check, which waits for the
    device), around ``reference`` (B, frames, D) or the train mean: a streaming session's newest token."""
    return tok.denormalize(tok.decode_normalized(codes, check=False)[:, -frames:], reference)


class RunningMean:
    """The causal mean of frames pushed in chunks: ``push(x (..., m, D))`` returns, for each new frame,
    ``S_t / (t + prior)`` (``S_t`` the float64 sum of the frames so far, ``t`` their count), so chunks of any size
    give the numbers of one call over the whole sequence. ``prior`` (frames of zeros) shrinks early means to 0."""

    def __init__(self, prior: float = 0.0):
        self.prior, self.sum, self.count = float(prior), None, 0

    def push(self, x) -> torch.Tensor:
        """x (..., m, D) (a tensor on any device, or an array) -> (..., m, D) float64 on x's device."""
        x = torch.as_tensor(x).to(torch.float64)
        if self.sum is None:
            self.sum = x.new_zeros(x.shape[:-2] + (1, x.shape[-1]))
        if x.shape[-2] == 0:                                   # an empty chunk: no frame, the state unchanged
            return x.clone()
        cs = torch.cat([self.sum.to(x.device), x], -2).cumsum(-2)[..., 1:, :]   # sequential sums, as frame by frame
        t = self.count + torch.arange(1, x.shape[-2] + 1, dtype=torch.float64, device=x.device)
        self.sum, self.count = cs[..., -1:, :], self.count + x.shape[-2]
        return cs / (t + self.prior)[:, None]


def running_reference(motion) -> torch.Tensor:
    """(T, D) observed motion -> (T, D) float32 on motion's device: at each frame the mean of the frames so far,
    the causal estimate of an observed person's reference (:class:`RunningMean`: streaming computes the same
    numbers)."""
    return RunningMean().push(torch.as_tensor(motion).detach()).to(torch.float32)


def pad_to(x: torch.Tensor, n: int) -> torch.Tensor:
    """Repeat the last row of x (T, ...) up to n rows."""
    if x.shape[0] >= n:
        return x[:n]
    return torch.cat([x, x[-1:].expand(n - x.shape[0], *x.shape[1:])], 0)


# ----------------------------------------------------------------------------------------------------------
# dialogs and prediction files (what scripts/sample.py runs; the plot is common/viz/plots.py's timeline)
# ----------------------------------------------------------------------------------------------------------
def read_given_motion(bundle: GPTBundle, npz_path: str | Path) -> np.ndarray:
    """The observed partner's motion (T, D) from an EMICA FLAME npz (common/data/corpus.py's reader and layout)."""
    from common.data.corpus import read_flame
    from common.data.config import DataConfig
    cfg = from_dict(DataConfig, bundle.audio.get("data_config") or {})
    motion, _ = read_flame(Path(npz_path), cfg, "given", Path(npz_path).stem)
    return motion


def read_shape(npz_path: str | Path) -> np.ndarray:
    """A participant's identity: ``shape_params[0, 0, :]`` of a FLAME npz (the corpus reader's guards)."""
    from common.data.corpus import read_identity
    return read_identity(npz_path)


@dataclass
class DialogOutput:
    dialog: str
    participants: list[str]
    files: list[Path] = field(default_factory=list)
    plot: Path | None = None
    motion: dict = field(default_factory=dict)          # participant -> generated (T', D): the first PLOT_SECONDS
                                                        # (the whole motion is in the files)


@dataclass
class DialogInput:
    """One dialog to generate (:func:`generate_dialogs`): its audio features (2, T, F) (any array that slices:
    numpy, memmap, :meth:`Generator.wav_features`), and when known each participant's motion (2, T, D) (the
    given partner in listener mode; the plot's ground truth), true states (2, T), identity (FLAME shape) and
    reference (each participant's mean motion from an enrollment clip, None rows unknown; see
    :meth:`Generator.generate`)."""
    dialog: str
    participants: list[str]
    audio: object
    gt_motion: object = None
    true_states: object = None
    shape: object = None
    reference: object = None


PLOT_SECONDS = 60.0


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


def generate_dialog(gen: Generator, dialog: str, participants: list[str], audio_feats, out_dir,
                    *, mode: str = "dyad", given=None, gt_motion: np.ndarray | None = None,
                    true_states: np.ndarray | None = None, shape=None, reference=None,
                    sampling: Sampling | None = None, num_samples: int = 1, plot: bool = True,
                    progress: bool = False) -> DialogOutput:
    """Generate one dialog and write ``out_dir/<dialog>/<participant>.npz`` for every generated participant.

    mode ``dyad``: both from both audios. ``listener``: one participant generated while the other's motion
    (``gt_motion``) is given; ``given`` names the given participant, or None for both roles in turn (two runs,
    each participant predicted with the partner given: the DualTalk protocol). ``num_samples`` > 1 writes that
    many samples combined (see :meth:`Generator.generate`). Any length in bounded memory: audio features
    are read chunk by chunk and frames are written to the files as they are decoded (``audio_feats`` may be
    :meth:`Generator.wav_features`); listener mode encodes the given motion whole.
    """
    item = DialogInput(dialog, list(participants), audio_feats, gt_motion, true_states, shape, reference)
    return generate_dialogs(gen, [item], out_dir, mode=mode, given=given, sampling=sampling,
                            num_samples=num_samples, plot=plot, progress=progress)[0]


def generate_dialogs(gen: Generator, items: list[DialogInput], out_dir, *, mode: str = "dyad", given=None,
                     sampling: Sampling | None = None, num_samples: int = 1, batch: int = 1, plot: bool = True,
                     progress: bool = False) -> list[DialogOutput]:
    """:func:`generate_dialog` of several dialogs, ``batch`` at a time in one batch of the GPT
    (:meth:`Generator.iter_generate`: one KV cache; every dialog's files are what it gets alone)."""
    sampling = sampling or Sampling()
    runs: dict[int | None, list[tuple[int, list[int]]]] = {}     # given participant -> [(dialog, generated slots)]
    for it in items:                                   # names become paths: safe and distinct
        it.participants = check_participants(it.dialog, it.participants)
    for i, it in enumerate(items):
        if mode == "dyad":
            if given is not None:
                raise ValueError("--given is for --mode listener")
            runs.setdefault(None, []).append((i, [0, 1]))
        elif mode == "listener":
            if it.gt_motion is None:
                raise ValueError("listener mode needs the given participant's motion (a cached dialog, or --given-motion)")
            g = resolve_given(given, it.participants)
            for gg in ([g] if g is not None else [1, 0]):
                runs.setdefault(gg, []).append((i, [1 - gg]))
        else:
            raise ValueError(f"mode must be dyad or listener, got {mode!r}")
    outs = [DialogOutput(it.dialog, list(it.participants)) for it in items]
    heads: list[dict] = [{} for _ in items]             # participant -> (motion, predicted states) of the first seconds
    for g, todo in runs.items():
        todo = sorted(todo, key=lambda r: -items[r[0]].audio.shape[1])      # similar lengths share a batch
        for b in range(0, len(todo), max(1, int(batch))):
            _generate_batch(gen, items, todo[b:b + max(1, int(batch))], g, out_dir, sampling, num_samples, outs,
                            heads, progress)
    if plot:
        for it, out, head in zip(items, outs, heads):
            out.plot = _plot_dialog(gen, it, out, head, mode, out_dir)
    return outs


def _generate_batch(gen, items, todo, g, out_dir, sampling, num_samples, outs, heads, progress) -> None:
    """One batch of dialogs with the same given participant (or none): chunks streamed into their files."""
    layout, d, keep = gen.bundle.layout, gen.d, int(PLOT_SECONDS * gen.fps)
    writers, parts = {}, {}
    try:
        for j, (i, slots) in enumerate(todo):
            it = items[i]
            T = it.audio.shape[1]
            for p in slots:
                shp = None if it.shape is None or it.shape[p] is None else it.shape[p]
                writers[j, p] = PredictionWriter(prediction_path(out_dir, it.dialog, it.participants[p]), T, layout, shp,
                                                 {"pred_states": ((T,), np.int8), "codes": ((-(-T // d), gen.Q), np.int32)})
                parts[j, p] = ([], [])
        chunks = gen.iter_generate([items[i].audio for i, _ in todo], given=g, sampling=sampling,
                                   given_motions=None if g is None else [items[i].gt_motion[g] for i, _ in todo],
                                   num_samples=num_samples, identities=[items[i].shape for i, _ in todo],
                                   references=[items[i].reference for i, _ in todo], progress=progress)
        for ch in chunks:
            motion = ch.output                                                       # (2, m, D)
            for p in todo[ch.dialog][1]:
                writers[ch.dialog, p].append(motion=motion[p], pred_states=ch.states[p].astype(np.int8),
                                             codes=ch.codes[0, p].astype(np.int32))
                if ch.start < keep:
                    parts[ch.dialog, p][0].append(motion[p, :keep - ch.start])
                    parts[ch.dialog, p][1].append(ch.states[p, :keep - ch.start])
        for (j, p), w in writers.items():
            i = todo[j][0]
            outs[i].files.append(w.close())
            name = items[i].participants[p]
            outs[i].motion[name] = np.concatenate(parts[j, p][0])
            heads[i][name] = np.concatenate(parts[j, p][1])
    finally:
        for w in writers.values():
            w.abort()


def _plot_dialog(gen, it: DialogInput, out: DialogOutput, pred_states: dict, mode: str, out_dir) -> Path:
    """common/viz/plots.py's timeline of the first PLOT_SECONDS: audio energy, jaw and the first expression dims
    over state bands (the true states when known, else the predicted ones)."""
    from common.viz.plots import timeline
    layout, n = gen.bundle.layout, int(PLOT_SECONDS * gen.fps)
    shown = [p for p in (0, 1) if it.participants[p] in out.motion]
    if it.true_states is not None:
        states, source = np.asarray(it.true_states[:, :n]), "true"
    else:
        states, source = [pred_states.get(it.participants[p]) for p in (0, 1)], "predicted"
    title = f"{it.dialog}: {mode}" + ("" if mode == "dyad" else " (partner given)") + f"  (bands: {source} states)"
    motion = [out.motion.get(it.participants[p]) for p in (0, 1)]
    truth = None if it.gt_motion is None else np.asarray(it.gt_motion[:, :n])
    e0 = layout.exp[0]
    return timeline(Path(out_dir) / it.dialog / "trajectories.png", title, gen.fps, it.participants, states,
                    np.asarray(it.audio[:, :n], np.float32).mean(-1), truth, {"generated": motion},
                    jaw_dim=layout.jaw[0], exp_dims=(e0, e0 + 1), max_seconds=PLOT_SECONDS, show=shown, dpi=90)
