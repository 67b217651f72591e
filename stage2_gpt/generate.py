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
for the same seed (codes exactly; motion up to float rounding of the windowed decode).

Audio features: ``audio_feats`` are the cache's per-frame features (``common.data.audio`` path: any WAV goes through
``read_wav`` + ``make_feature_extractor`` with the configuration stored in the GPT file, see :meth:`Generator.features_from_wav`),
normalised here with the training statistics stored in the GPT file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from x_transformers.autoregressive_wrapper import top_k, top_p

from common.config import from_dict
from common.eval.predictions import check_participants, prediction_path, write_prediction

from .artifact import GPTBundle, check_tokenizer, load_gpt

log = logging.getLogger(__name__)


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
    """logits (..., V) -> codes (...) long, with temperature / top-k / top-p (x-transformers' filters), drawn
    from ``generator``."""
    shape = logits.shape[:-1]
    logits = logits.reshape(-1, logits.shape[-1]).float()
    if s.temperature <= 0:
        return logits.argmax(-1).reshape(shape)
    logits = logits / s.temperature
    if s.top_k and s.top_k < logits.shape[-1]:
        logits = top_k(logits, k=s.top_k)
    if s.top_p < 1.0:
        logits = top_p(logits, thres=s.top_p)
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


class Generator:
    """A GPT + its tokenizer, ready to generate (see the module docstring)."""

    def __init__(self, bundle: GPTBundle, tokenizer, device: str | torch.device = "cpu"):
        check_tokenizer(bundle, tokenizer)
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
            from common.data.audio import make_feature_extractor
            from common.data.config import AudioConfig
            cfg = from_dict(AudioConfig, self.bundle.audio.get("audio_config") or {}, where="audio.")
            self._extractor = make_feature_extractor(cfg, self.sample_rate, self.fps)
        return self._extractor

    def features_from_wav(self, paths: list[str | Path]) -> np.ndarray:
        """Audio features (len(paths), T, F) from WAV files of any rate / channel count (common/data/audio.py's path);
        T = the shortest file's frame count."""
        from common.data.audio import hop_length, read_wav
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
    def new_state(self, seed: int = 0, num_samples: int = 1, identity=None, given: int | None = None) -> StepState:
        """A fresh dialog: ``num_samples`` parallel samples; ``given`` (0/1): that participant is observed, not
        generated (its perspective is not computed at all)."""
        if given not in (None, 0, 1):
            raise ValueError(f"given must be None, 0 or 1, got {given!r}")
        return StepState(prev=torch.full((num_samples, 2, self.Q), -1, dtype=torch.long, device=self.device),
                         generator=torch.Generator(device=self.device).manual_seed(int(seed)),
                         identity=self._identity(identity), active=[p for p in (0, 1) if p != given])

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
        h, st.cache = m.step_hidden(prev, audio, st.cache, ident)
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
        head = self.model.head
        if self.cfg.rvq_head == "parallel":
            return sample_logits(head(h), sampling, generator)
        z = head.base(h)                                                     # (B, H)
        out = []
        for q in range(self.Q):
            c = sample_logits(head.level_logits(z, q), sampling, generator)  # (B,)
            out.append(c)
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
        motion = pad_to(motion, K * self.d)
        codes = self.tok.encode(motion[None])[0].to(self.device)             # (K, Q)
        full = torch.full((K, 2, self.Q), -1, dtype=torch.long, device=self.device)
        full[:, given] = codes
        return full

    @torch.no_grad()
    def generate(self, audio_feats, *, given: int | None = None, given_motion=None,
                 sampling: Sampling | None = None, num_samples: int = 1, identity=None,
                 progress: bool = False) -> Generation:
        """Whole-sequence generation from both participants' audio features (2, T, F) (un-normalised, as cached).

        ``given`` (0 / 1) with ``given_motion`` (T, D) raw: listener mode, that participant's codes come from
        the tokenizer's encoding of their motion. Any length: the KV cache stays within the attention window.
        ``identity`` (2, I): each participant's FLAME shape (None / a None row: unknown), used by models trained
        with ``use_identity``. ``num_samples`` > 1 draws that many samples in one batch and returns their average motion (an estimate
        of the conditional mean: lower MSE, less lively motion); the samples are in ``Generation.samples``.
        """
        sampling = sampling or Sampling()
        audio = self.normalize_audio(audio_feats)
        if audio.ndim != 3 or audio.shape[0] != 2:
            raise ValueError(f"audio features must be (2, T, F), got {tuple(audio.shape)}")
        T, N = audio.shape[1], int(num_samples)
        K = -(-T // self.d)
        audio = pad_to(audio.transpose(0, 1), K * self.d).transpose(0, 1)  # (2, K*d, F), last frame repeated
        giv = self._given_codes(given, given_motion, K)
        st = self.new_state(sampling.seed, N, identity, given)
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
    def stream(self, sampling: Sampling | None = None, given: int | None = None, identity=None):
        """A :class:`stage2_gpt.streaming.StreamSession` (frame in, frame out; the same step function)."""
        from .streaming import StreamSession
        return StreamSession(self, sampling or Sampling(), given, identity)


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
    layout = gen.bundle.layout
    participants = check_participants(dialog, participants)   # names become paths: safe and distinct
    out = DialogOutput(dialog, participants)
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
            out.files.append(write_prediction(prediction_path(out_dir, dialog, name), res.motion[p], layout,
                                              None if shape is None or shape[p] is None else shape[p], extra))
    if plot:       # common/viz/plots.py's timeline: audio energy, jaw and the first expression dims over state bands
        from common.viz.plots import timeline
        shown = [p for p in (0, 1) if participants[p] in out.motion]
        if true_states is not None:
            states, source = true_states, "true"
        else:
            states, source = [pred_states.get(participants[p]) for p in (0, 1)], "predicted"
        title = f"{dialog}: {mode}" + ("" if mode == "dyad" else " (partner given)") + f"  (bands: {source} states)"
        e0 = layout.exp[0]
        out.plot = timeline(Path(out_dir) / dialog / "trajectories.png", title, gen.fps, participants, states,
                            np.asarray(audio_feats, np.float32).mean(-1), gt_motion,
                            {"generated": [out.motion.get(participants[p]) for p in (0, 1)]},
                            jaw_dim=layout.jaw[0], exp_dims=(e0, e0 + 1), max_seconds=60.0, show=shown, dpi=90)
    return out
