"""Stage 2: a causal GPT over both participants' motion tokens, conditioned on both audio tracks.

- :mod:`stage2_gpt.model`: ``GPTConfig``, ``DyadGPT`` (``forward(...) -> (outputs, losses)``).
- :mod:`stage2_gpt.config`: ``Stage2Config`` (model, train, cache, tokenizer, window...).
- :mod:`stage2_gpt.train`: the loss and validation, trained by ``common.train.loop.fit``; exports ``OUT/gpt.pt``.
- :mod:`stage2_gpt.artifact`: ``gpt.pt`` written and loaded (``export_gpt``, ``load_gpt``).
- :mod:`stage2_gpt.generate`: ``Generator`` (the step function, sampling, offline generation), prediction files.
- :mod:`stage2_gpt.streaming`: ``StreamSession`` (frame in, frame out).
- :mod:`stage2_gpt.speed`: generation timings for ``scripts/benchmark.py``.
"""
