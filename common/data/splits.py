"""Deterministic train/val/test splits by dialog (never from the index's ``split`` field).

Dialog ids are ordered by a keyed hash (``sha256(f"{seed}:{id}")``), then cut by the ratios. The order of a
dialog depends only on its id and the seed, so the assignment does not depend on file order, on sharding,
or on which dialogs were skipped. With three or more dialogs, val and test each get at least one.
"""
from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def _key(dialog_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{dialog_id}".encode()).hexdigest()


def assign_splits(dialog_ids, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, str]:
    ids = sorted(set(dialog_ids), key=lambda d: _key(d, seed))
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split_ratios must be three non-negative numbers, got {ratios}")
    total = float(sum(ratios))
    n = len(ids)
    n_val = round(n * ratios[1] / total)
    n_test = round(n * ratios[2] / total)
    if n >= 3:
        n_val = max(n_val, 1) if ratios[1] > 0 else 0
        n_test = max(n_test, 1) if ratios[2] > 0 else 0
    n_train = max(n - n_val - n_test, 0)
    out = {}
    for i, d in enumerate(ids):
        out[d] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return out
