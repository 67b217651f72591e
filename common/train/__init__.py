"""One training loop, its checkpoints and the self-describing artifacts."""
