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

import torch

from .decode_step import RingKVCache
from .generate import draw_noise

WARMUP = 2          # uncaptured steps (side stream) before the capture


def use_cuda_graph(choice: str, device) -> bool:
    """A command line's ``--cuda-graph auto|on|off``: auto = on for CUDA devices (the plain step is host-bound
    there), off elsewhere."""
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"cuda_graph must be auto, on or off, got {choice!r}")
    return choice == "on" or (choice == "auto" and torch.device(device).type == "cuda")


def graphed_step(gen, st, sampling) -> "GraphedStep":
    """The captured step of state ``st`` (made at its first step, again after its shapes or sampling change)."""
    if st.graph is None or st.graph.sampling != sampling:
        st.graph = GraphedStep(gen, st, sampling)
    return st.graph


class GraphedStep:
    """:meth:`Generator.step` of one :class:`StepState` as a CUDA graph replay (see the module docstring)."""

    def __init__(self, gen, st, sampling):
        self.gen, self.st, self.sampling = gen, st, sampling
        D, N, A, Q = st.dialogs, st.samples, len(st.active), gen.Q
        rows = D * N * A
        if not isinstance(st.cache, RingKVCache):
            st.cache = gen.model.new_ring_cache(rows, st.cache)
        if st.cache.batch != rows:
            raise ValueError(f"the state's cache holds {st.cache.batch} rows, its step computes {rows}")
        dev = gen.device
        st.perspectives(gen.cfg.inputs), st.identity_rows()        # made now: no host-to-device copy in the capture
        self.audio = torch.zeros((D, 2, gen.d, gen.cfg.audio_dim), device=dev)
        self.given = torch.full((D, 2, Q), -1, dtype=torch.long, device=dev) if A < 2 else None
        draws, r, V = gen.noise_shape(rows, sampling)
        self.levels = [q for q in range(draws) if sampling.level(q).temperature > 0]   # greedy levels draw nothing
        self.noise = torch.ones((draws, r, V), device=dev) if self.levels else None
        self.capture = torch.device(dev).type == "cuda"
        self.graph, self.out, self.calls = None, None, 0

    def _body(self):
        return self.gen.advance(self.st, self.audio, self.given, self.sampling, self.st.cache, self.noise)

    def _captured(self):
        dev = self.gen.device
        if self.calls < WARMUP:                                     # uncaptured, on a side stream
            main, side = torch.cuda.current_stream(dev), torch.cuda.Stream(device=dev)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                out = self._body()
            main.wait_stream(side)
            return out
        if self.graph is None:                                      # kept only once captured (a failed capture
            graph = torch.cuda.CUDAGraph()                          # is tried again, not replayed empty)
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(device=dev)):
                out = self._body()
            self.graph, self.out = graph, out
        self.graph.replay()
        return self.out

    def __call__(self, audio_step: torch.Tensor, given: torch.Tensor | None):
        """audio_step (D, 2, d, F) normalised, given (D, 2, Q) / (2, Q) or None -> what :meth:`Generator.step` returns."""
        self.audio.copy_(audio_step)
        if self.given is not None:
            self.given.copy_(given.reshape(self.given.shape))
        for q in self.levels:
            draw_noise(self.noise[q], self.st.generators)
        if not self.capture:
            out = self._body()
        else:
            with torch.cuda.device(self.gen.device):                # cuda:1 captures on cuda:1, not the current one
                out = self._captured()
        self.calls += 1
        self.st.steps += 1
        return tuple(None if o is None else o.clone() for o in out)
