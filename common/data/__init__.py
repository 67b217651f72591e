"""The corpus, audio features, preprocessing cache, splits, datasets and the synthetic corpus."""
