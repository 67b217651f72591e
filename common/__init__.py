"""Shared code of dyadic-face: corpus reading, audio features, cache, datasets, metrics, config, I/O."""
