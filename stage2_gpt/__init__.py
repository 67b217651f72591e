"""Stage 2: a causal GPT over both participants' motion tokens, conditioned on both audio tracks.

- :mod:`stage2_gpt.model`: ``GPTConfig``, ``DyadGPT`` (``forward(...) -> (outputs, losses)``).
- :mod:`stage2_gpt.config`: ``Stage2Config`` (model, train, cache, tokenizer, window...).
- :mod:`stage2_gpt.train`: the training loop (accelerate), exports ``OUT/gpt.pt``.
- :mod:`stage2_gpt.generate`: all generation (offline, streaming, dyad / listener / speaker-only, any length).
"""
