"""Deterministic train/val/test splits by dialog (never from the index's ``split`` field).

Dialog ids are ordered by a keyed hash (``sha256(f"{seed}:{id}")``), then cut by the ratios. The order of a
dialog depends only on its id and the seed, so the assignment does not depend on file order, on sharding,
or on which dialogs were skipped. With three or more dialogs, val and test each get at least one.

A split file (``DataConfig.split_file``: JSON ``{dialog id: "train" | "val" | "test"}``) fixes the split instead:
a published one, or one that keeps persons apart (every dialog of the index must be listed).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

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


def read_split_file(path: str | Path, dialog_ids) -> dict[str, str]:
    """The split of every dialog in ``dialog_ids`` from a JSON file ``{dialog id: split}``; errors name the file."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"split file {path} is unreadable ({e})") from e
    if not isinstance(table, dict):
        raise ValueError(f"split file {path} must hold an object {{dialog id: train|val|test}}")
    bad = sorted(f"{d}: {v!r}" for d, v in table.items() if v not in SPLITS)
    if bad:
        raise ValueError(f"split file {path}: splits must be one of {SPLITS}, got {', '.join(bad[:5])}")
    missing = sorted(set(dialog_ids) - set(table))
    if missing:
        raise ValueError(f"split file {path} does not list {len(missing)} dialog(s) of the index, e.g. "
                         f"{', '.join(missing[:5])}")
    return {d: table[d] for d in dialog_ids}


def dialog_splits(cfg, dialog_ids) -> dict[str, str]:
    """The split of every dialog: ``cfg.split_file`` when set (relative to ``cfg.data_root``), else the hash."""
    if cfg.split_file:
        path = Path(cfg.split_file)
        return read_split_file(path if path.is_absolute() else Path(cfg.data_root) / path, list(dialog_ids))
    return assign_splits(dialog_ids, cfg.split_ratios, cfg.split_seed)
