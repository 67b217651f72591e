"""Shared code of dyadic-face, in rooms: ``layout`` (motion layout, states), ``config``, ``io``, ``data/``
(corpus to training windows), ``train/`` (the one training loop), ``eval/`` (judging any method), ``viz/``
(rendering, plots). Imports neither stage. Map: docs/ARCHITECTURE.md."""
