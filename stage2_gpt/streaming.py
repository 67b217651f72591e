"""Streaming generation: frame in, frame out, with a KV cache, from audio features or raw microphone samples.

    from stage2_gpt.generate import Generator, Sampling
    gen = Generator.load("runs/stage2/gpt.pt", "runs/stage1/tokenizer.pt")
    session = gen.stream(Sampling(seed=0), given=None)                             # or given=1: listener mode
    frames = session.push(audio_feats_chunk (2, n, F), given_motion_chunk (n, D) | None)   # -> (2, m, D)
    frames = session.push_wav(samples_a, samples_b)                               # raw audio (causal features)
    tail = session.flush()                                                        # the last partial token step

A session runs :meth:`Generator.step` (the same step function as offline generation) once per complete token
step, so for the same seed its codes equal the offline codes exactly, and its frames equal the offline
decode up to float rounding of the windowed decode (the causal tokenizer decodes the newest token from its
last ``decoder_context`` codes).
"""
from __future__ import annotations

import numpy as np
import torch

from .generate import Generator, RunningMean, SampleMix, Sampling, decode_newest, pad_to


class StreamingFeatures:
    """Causal audio features from raw samples pushed in chunks, identical to the offline extractor's frames."""

    def __init__(self, gen: Generator):
        from common.data.audio import hop_length
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
    ``num_samples`` > 1 draws that many samples in one batch and combines them (generate.SampleMix), as offline.
    ``warm`` (default): at creation, run the tokenizer once on every window length the session will meet
    (:func:`warm_tokenizer`), so its first seconds run at the speed of the rest. With the captured step
    (``Generator(cuda_graph=True)``) the newest token's decode is captured too once the decoder window is full
    (graphed_step.GraphedDecode).
    """

    def __init__(self, gen: Generator, sampling: Sampling, given: int | None = None, identity=None, reference=None,
                 num_samples: int = 1, warm: bool = True):
        tok = gen.tok
        if getattr(tok, "lookahead_frames", 0):
            raise ValueError("streaming needs a causal tokenizer (lookahead_frames == 0)")
        if given not in (None, 0, 1):
            raise ValueError(f"given must be None, 0 or 1, got {given!r}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.gen, self.sampling, self.given = gen, sampling, given
        self.d, self.D = gen.d, tok.motion_dim
        self.state = gen.new_state(sampling.seed, int(num_samples), identity, given)
        self.dec_ctx = int(tok.decoder_context)
        self.enc_ctx = int(getattr(tok, "encoder_context", 0)) or None
        self.audio_buf = torch.zeros((2, 0, gen.cfg.audio_dim), device=gen.device)
        self.motion_buf = torch.zeros((0, self.D), device=gen.device)       # the given partner's recent frames
        self.motion_start = 0                                                # absolute frame of motion_buf[0]
        # a "person" tokenizer: generated rows decoded around their reference, the given partner around the running
        # mean of their observed frames (generate.RunningMean: the numbers of generate.running_reference)
        self.rows = gen.reference_rows(reference)
        self.ref_mean = RunningMean()                                        # as generate.running_reference
        self.ref_buf = torch.zeros((0, self.D), device=gen.device)          # running reference of motion_buf
        self.given_ref = None                                                # the given row's reference this step
        self.anchor = gen.mean_anchor(self.rows, given, sampling)           # generate.MeanAnchor, as offline
        self.mix = SampleMix(sampling, tok.fps, gen.bundle.layout.exp, given)   # the samples combined, as offline
        self.codes_hist = torch.zeros((2 * self.state.samples, 0, gen.Q), dtype=torch.long, device=gen.device)   # sample-major
        self.frames_out = 0
        self.features = None
        self.last_states = None
        if warm:
            warm_tokenizer(gen, 2 * self.state.samples, given is not None)
        self.decode = None              # with the captured step, the decode of a full window captured too, now
        if gen.cuda_graph:
            from .graphed_step import GraphedDecode
            self.decode = GraphedDecode(tok, 2 * self.state.samples, self.d, self.rows is not None, gen.device)

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
            self._observe(gm)
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
        audio = pad_to(self.audio_buf.transpose(0, 1), self.d).transpose(0, 1)
        if self.given is not None:
            self._observe(self.motion_buf[-1:].expand(self.d - n, self.D))
        self.audio_buf = self.audio_buf[:, :0]
        return self._one_step(audio)[:, :n]

    def _observe(self, frames: torch.Tensor) -> None:
        """Append the given partner's frames (and, for a "person" tokenizer, their running reference)."""
        self.motion_buf = torch.cat([self.motion_buf, frames], 0)
        if self.rows is not None:
            refs = self.ref_mean.push(frames.detach()).to(torch.float32)
            self.ref_buf = torch.cat([self.ref_buf, refs], 0)

    def _given_code(self) -> torch.Tensor:
        """Code of the newest complete token of the observed participant (causal encoder: its last frames)."""
        d, ctx = self.d, self.enc_ctx
        end = (self.state.steps + 1) * d                                     # frames [0, end) are observed
        start = 0 if ctx is None else max(0, ((end - ctx) // d) * d)        # token-aligned, >= ctx frames
        window = self.motion_buf[start - self.motion_start:end - self.motion_start]
        ref = None if self.rows is None else self.ref_buf[start - self.motion_start:end - self.motion_start][None]
        code = self.gen.tok.encode(window[None], ref)[0, -1].to(self.gen.device)   # (Q,)
        if self.rows is not None:                                            # the given row's frames decode around it
            self.given_ref = self.ref_buf[end - d - self.motion_start:end - self.motion_start]
        if ctx is not None:                                                  # keep what the next step needs
            nxt = max(0, ((end + d - ctx) // d) * d)
            self.motion_buf = self.motion_buf[nxt - self.motion_start:]
            self.ref_buf = self.ref_buf[nxt - self.motion_start:]
            self.motion_start = nxt
        given = torch.full((2, self.gen.Q), -1, dtype=torch.long, device=self.gen.device)
        given[self.given] = code
        return given

    def _one_step(self, audio_step: torch.Tensor) -> np.ndarray:
        given = self._given_code() if self.given is not None else None
        codes, probs, jaw = self.gen.step(self.state, audio_step, given, self.sampling)      # codes (N, 2, Q)
        N = self.state.samples
        states = None if probs is None else probs.mean(0).nan_to_num(-1).argmax(-1)   # to the host after the decode
        self.codes_hist = torch.cat([self.codes_hist, codes.reshape(2 * N, 1, -1)], 1)[:, -self.dec_ctx:]
        tok = self.gen.tok
        ref = self.gen._chunk_reference(self.rows, self.given, self.given_ref, 0, self.d, N)
        if self.decode is not None and self.codes_hist.shape[1] == self.dec_ctx:   # the newest token's frames
            frames = self.decode(self.codes_hist, ref)
        else:
            frames = decode_newest(tok, self.codes_hist, self.d, ref)
        frames = frames.reshape(N, 2, self.d, -1)
        if jaw is not None:                                                  # a jaw head: its jaw, as offline
            frames = self.gen.with_jaw(frames, jaw, self.given)
        self.frames_out += self.d
        frames = frames.to(torch.float32).cpu()                              # a few frames: the host's work
        self.last_states = None if states is None else states.cpu().numpy()
        if self.anchor is not None:                                          # each sample anchored, as offline
            frames = self.anchor(frames)
        return self.mix(frames.numpy())


@torch.no_grad()
def warm_tokenizer(gen: Generator, rows: int, encode: bool = False) -> bool:
    """Decode (and with ``encode``, encode) zeros of every window length a session meets while its windows fill:
    the newest token is decoded from the last ``decoder_context`` codes (1, 2, ... of them at a session's start),
    an observed participant's from the last ``encoder_context`` frames. Each new length meets its convolution
    kernels once per process (on this CPU the first session's first 64 steps took 24.8 ms on average instead of
    10 ms, p99 40 ms: past the 100 ms latency budget; docs/BENCHMARKS.md), so a live session pays that here
    instead, once per tokenizer and row count. Returns whether anything ran."""
    tok, d = gen.tok, gen.d
    done = tok.__dict__.setdefault("_warm_windows", set())
    key = (rows, bool(encode), str(gen.device))
    if key in done:
        return False
    for n in range(1, int(tok.decoder_context) + 1):
        tok.decode_normalized(torch.zeros((rows, n, gen.Q), dtype=torch.long, device=gen.device))
    ctx = int(getattr(tok, "encoder_context", 0))
    if encode and ctx:
        for n in range(d, ctx + 2 * d, d):
            window = torch.zeros((1, n, tok.motion_dim), device=gen.device)
            tok.encode(window, window if gen.person_reference else None)
    done.add(key)
    return True
