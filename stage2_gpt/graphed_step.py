"""Every generation step as one replay of a captured CUDA graph (``Generator(..., cuda_graph=True)``,
``scripts/sample.py --cuda-graph``).

On a GPU a plain step is host-bound: about 3,500 torch operator calls, each launched from Python, cost 14-17 ms
whatever the batch (docs/BENCHMARKS.md, "GPU check"). Here the step's work (:meth:`Generator.step_rows`: embed,
decoder, heads, sampling) is recorded once into a CUDA graph over fixed buffers and replayed: per step the host
copies the step's audio (and a given participant's codes) in, draws the sampling noise and launches one graph.

What makes the step capturable:

- the KV cache is a :class:`~stage2_gpt.decode_step.RingKVCache` (fixed shape; the newest position written over
  the oldest; keys rotated once, at their absolute position: the same relative positions as the trimmed cache);
- the sampling noise is drawn before the replay from each dialog's own generator, exactly the draws the plain
  step makes (:func:`~stage2_gpt.generate.draw_noise`), into a buffer the graph reads;
- the previous codes, the audio context and the cache are updated in place inside the graph.

The codes are those of the plain step up to float rounding: the ring sums the attention over its slots in ring
order, empty ones masked, so a near tie in a draw can go the other way (tests/test_stage2.py compares the two).
The first ``WARMUP`` steps run uncaptured (on a side stream, as CUDA graphs need), then the step is captured and
replayed; a batch whose dialogs end (``StepState.keep``) or a new ``Sampling`` is captured again. Every new state
(each offline call, each streaming session) pays those uncaptured steps and one capture (which synchronises the
device) at its start. On a CPU the same fixed-shape step runs uncaptured.
"""
from __future__ import annotations

import weakref

import torch

from .decode_step import RingKVCache
from .generate import decode_newest, draw_noise

WARMUP = 2          # uncaptured steps (side stream) before the capture


def use_cuda_graph(choice: str, device) -> bool:
    """A command line's ``--cuda-graph auto|on|off``: whether generation runs the fixed-shape step (captured as a
    CUDA graph on CUDA devices, uncaptured elsewhere) instead of the plain one. auto = on for CUDA devices (the
    plain step is host-bound there) and for the CPU (the fixed-shape step rotates each cached key once instead of
    the whole cache at every step: 1.3x faster with 8 samples, 2.6x with 8 dialogs x 8 samples, the same with one;
    docs/BENCHMARKS.md, "Fifth session"), off elsewhere (MPS has no float64 for the ring's rotary angles)."""
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"cuda_graph must be auto, on or off, got {choice!r}")
    return choice == "on" or (choice == "auto" and torch.device(device).type in ("cuda", "cpu"))


def graphed_step(gen, st, sampling) -> "GraphedStep":
    """The captured step of state ``st`` (made at its first step, again after its shapes or sampling change)."""
    if st.graph is None or st.graph.sampling != sampling:
        st.graph = GraphedStep(gen, st, sampling)
    return st.graph


class CapturedCall:
    """A function of no arguments (it reads fixed buffers its owner fills) replayed from a captured CUDA graph:
    the first ``WARMUP`` calls run it uncaptured on a side stream (as CUDA graphs need), the next one captures it
    (on its own stream, under ``device``), every call after replays it; returns the function's outputs (buffers
    the replay overwrites: copy what must outlive the next call). A failed capture raises and is tried again at
    the next call, never replayed empty. The function is passed at each call, not kept: an owner that passes its
    own method makes no reference cycle, so its graph and the graph's memory go when the owner does. On a device
    other than CUDA it just calls the function (the same buffers, uncaptured)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.capturing = self.device.type == "cuda"
        self.graph, self.out, self.calls = None, None, 0

    def __call__(self, fn):
        if not self.capturing:
            return fn()
        dev = self.device
        with torch.cuda.device(dev):                                # cuda:1 captures on cuda:1, not the current one
            if self.calls < WARMUP:
                main, side = torch.cuda.current_stream(dev), torch.cuda.Stream(device=dev)
                side.wait_stream(main)
                with torch.cuda.stream(side):
                    out = fn()
                main.wait_stream(side)
            else:
                if self.graph is None:
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, stream=torch.cuda.Stream(device=dev)):
                        out = fn()
                    self.graph, self.out = graph, out
                self.graph.replay()
                out = self.out
        self.calls += 1
        return out

    def capture(self, fn) -> None:
        """Run until captured (the warm-up calls and the capture), so no later call pays for them."""
        while self.capturing and self.graph is None:
            self(fn)


class GraphedStep:
    """:meth:`Generator.step` of one :class:`StepState` as a CUDA graph replay (see the module docstring)."""

    def __init__(self, gen, st, sampling):
        self.gen, self.sampling = gen, sampling
        self._st = weakref.ref(st)                  # the state holds its step: no cycle, freed with the state
        D, N, A, Q = st.dialogs, st.samples, len(st.active), gen.Q
        rows = D * N * A
        passes = gen.guided_passes(sampling)
        cached = rows * passes                                      # with guidance: the rows without audio too
        if not isinstance(st.cache, RingKVCache):
            st.cache = gen.model.new_ring_cache(cached, st.cache)
        if st.cache.batch != cached:
            raise ValueError(f"the state's cache holds {st.cache.batch} rows, its step computes {cached}")
        dev = gen.device
        st.perspectives(gen.cfg.inputs), st.identity_rows(passes)  # made now: no host-to-device copy in the capture
        if passes == 2:
            st.no_audio_rows()
        self.audio = torch.zeros((D, 2, gen.d, gen.cfg.audio_dim), device=dev)
        self.given = torch.full((D, 2, Q), -1, dtype=torch.long, device=dev) if A < 2 else None
        draws, r, V = gen.noise_shape(rows, sampling)
        self.levels = [q for q in range(draws) if sampling.level(q).temperature > 0]   # greedy levels draw nothing
        self.noise = torch.ones((draws, r, V), device=dev) if self.levels else None
        self.captured = CapturedCall(dev)

    @property
    def st(self):
        st = self._st()
        if st is None:
            raise RuntimeError("this captured step's StepState is gone: step through the state (Generator.step)")
        return st

    def _body(self):
        return self.gen.advance(self.st, self.audio, self.given, self.sampling, self.st.cache, self.noise)

    def __call__(self, audio_step: torch.Tensor, given: torch.Tensor | None):
        """audio_step (D, 2, d, F) normalised, given (D, 2, Q) / (2, Q) or None -> what :meth:`Generator.step` returns."""
        self.audio.copy_(audio_step)
        if self.given is not None:
            self.given.copy_(given.reshape(self.given.shape))
        for q in self.levels:
            draw_noise(self.noise[q], self.st.generators)
        out = self.captured(self._body)
        self.st.steps += 1
        return tuple(None if o is None else o.clone() for o in out)


class GraphedDecode:
    """A streaming session's decode of its newest token once the decoder window is full (``decoder_context``
    codes, a fixed shape from then on) as a CUDA graph replay: the tokenizer's decode is about 90 operator calls
    launched from Python, more host time than the GPT step's replay (on an H200 the session's median step took
    3.1-3.2 ms instead of 4.5-4.6: docs/BENCHMARKS.md, "Fifth session"). The same ops on the same shapes: the
    frames of the uncaptured decode. Captured when made (:meth:`CapturedCall.capture`, on zeros), at the
    session's creation, not during its steps; on a CPU it runs uncaptured (the same buffers).

    ``rows`` (2 x samples), ``frames`` (the newest token's, ``downsample``), ``referenced``: decoded around a
    per-row reference (a "person" tokenizer) or the train mean."""

    def __init__(self, tok, rows: int, frames: int, referenced: bool, device):
        self.tok, self.frames = tok, int(frames)
        self.codes = torch.zeros((rows, int(tok.decoder_context), tok.num_quantizers), dtype=torch.long, device=device)
        self.reference = torch.zeros((rows, self.frames, tok.motion_dim), device=device) if referenced else None
        self.captured = CapturedCall(device)
        self.captured.capture(self._body)

    def _body(self):
        return decode_newest(self.tok, self.codes, self.frames, self.reference)

    def __call__(self, codes: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """codes (rows, decoder_context, Q), reference (rows, frames, D) or None -> (rows, frames, D) raw motion."""
        if (reference is None) != (self.reference is None):
            raise ValueError("a captured decode keeps to the reference it was made with (given or None)")
        self.codes.copy_(codes)
        if self.reference is not None:
            self.reference.copy_(reference)
        return self.captured(self._body).clone()
