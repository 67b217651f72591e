"""Corpus -> cache: aligned motion, states and audio features of both participants, per dialog.

Resumable (a dialog folder appears only when complete, by rename; complete ones are skipped), shardable
(``shard=(i, n)`` processes every n-th dialog of the sorted index; :func:`merge` combines the shards into one
manifest and one set of statistics, byte-identical to an unsharded run), parallel (``workers``).
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import config as config_lib
from common.data.audio import describe_features, make_feature_extractor
from common.data.cache import MANIFEST, STATS
from common.data.corpus import CorpusError, load_index, read_dialog
from common.data.config import DataConfig
from common.io import atomic_dir, atomic_path, read_json, remove_stale_temps, write_json
from common.data.splits import dialog_splits

log = logging.getLogger(__name__)
CACHE_VERSION = 1

_extractors: dict = {}  # one per audio config, per process (a speech encoder is costly to build)


def _get_extractor(cfg: DataConfig):
    key = json.dumps([config_lib.to_dict(cfg.audio), cfg.sample_rate, cfg.fps], sort_keys=True)
    if key not in _extractors:
        _extractors[key] = make_feature_extractor(cfg.audio, cfg.sample_rate, cfg.fps)
    return _extractors[key]


def _sums(x: np.ndarray) -> dict:
    x = x.reshape(-1, x.shape[-1]).astype(np.float64)
    return {"count": int(x.shape[0]), "sum": x.sum(0).tolist(), "sumsq": (x * x).sum(0).tolist()}


def process_dialog(dialog_id: str, records: dict, cfg: DataConfig, out: Path) -> dict:
    """Read one dialog, compute features, write its folder atomically; returns its meta."""
    dialog = read_dialog(dialog_id, records, cfg)
    extractor = _get_extractor(cfg)
    feats = []
    for p in dialog.participants:
        try:
            feats.append(extractor(p.audio, dialog.num_frames))
        except Exception as e:
            raise CorpusError(f"audio features failed: {e}", dialog_id, p.id, field="audio_path") from e
    motion = np.stack([p.motion for p in dialog.participants]).astype(np.float32)
    audio = np.stack(feats).astype(np.float32)
    meta = {
        "id": dialog_id,
        "participants": [p.id for p in dialog.participants],
        "num_frames": int(dialog.num_frames),
        "sums": {"motion": _sums(motion), "audio": _sums(audio)},
    }
    with atomic_dir(out / "dialogs" / dialog_id) as tmp:
        np.save(tmp / "motion.npy", motion, allow_pickle=False)
        np.save(tmp / "states.npy", np.stack([p.states for p in dialog.participants]).astype(np.int8), allow_pickle=False)
        np.save(tmp / "audio.npy", audio, allow_pickle=False)
        np.save(tmp / "shape.npy", np.stack([p.shape for p in dialog.participants]).astype(np.float32), allow_pickle=False)
        write_json(tmp / "meta.json", meta)
    return meta


def _worker_init():
    import torch
    torch.set_num_threads(1)


def _work(args):
    dialog_id, records, cfg_dict, out = args
    cfg = config_lib.from_dict(DataConfig, cfg_dict)
    try:
        process_dialog(dialog_id, records, cfg, Path(out))
        return dialog_id, None
    except CorpusError as e:
        return dialog_id, str(e)


def _remove_debris(dialogs_dir: Path, ids: set[str]) -> None:
    """Temp folders of a killed run (only this shard's dialogs: other shards may be writing theirs)."""
    if not dialogs_dir.is_dir():
        return
    import shutil
    for p in dialogs_dir.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.name[1:].rsplit(".", 2)[0] in ids:
            log.info("removing %s left by an interrupted run", p)
            shutil.rmtree(p, ignore_errors=True)


def shard_ids(ids: list[str], shard: tuple[int, int]) -> list[str]:
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
    return sorted(ids)[i::n]


def shard_record_path(out: Path, shard: tuple[int, int]) -> Path:
    return out / "shards" / f"shard-{shard[0]}-of-{shard[1]}.json"


def preprocess(cfg: DataConfig, out: str | Path, workers: int = 1, shard: tuple[int, int] = (0, 1),
               skip_bad: bool = False, progress: bool = True) -> dict:
    """Process this shard's dialogs (skipping complete ones); merge when unsharded. Returns the shard record."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = load_index(cfg)
    ids = shard_ids(list(index), shard)
    done = {d for d in ids if (out / "dialogs" / d / "meta.json").is_file()}
    _remove_debris(out / "dialogs", set(ids))          # this shard's temp folders, whether or not redone
    remove_stale_temps(shard_record_path(out, shard))
    todo = [d for d in ids if d not in done]
    log.info("shard %d/%d: %d dialogs, %d already cached, %d to process", shard[0], shard[1], len(ids), len(done), len(todo))
    skipped = []
    cfg_dict = config_lib.to_dict(cfg)
    jobs = [(d, index[d], cfg_dict, str(out)) for d in todo]
    bar = tqdm(total=len(jobs), desc=f"preprocess {shard[0]}/{shard[1]}", unit="dialog", disable=not progress)

    def handle(dialog_id, error):
        bar.update(1)
        if error is None:
            done.add(dialog_id)
            return
        if not skip_bad:
            raise CorpusError(f"{error}\n(rerun with --skip-bad to skip bad dialogs and record why)")
        log.warning("skipping %s", error)
        skipped.append({"id": dialog_id, "reason": error})

    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                handle(*_work(job))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init) as ex:
                for result in ex.map(_work, jobs, chunksize=1):
                    handle(*result)
    finally:
        bar.close()
    record = {"shard": list(shard), "dialogs": sorted(done), "skipped": sorted(skipped, key=lambda s: s["id"]),
              "data_config": cfg_dict}
    write_json(shard_record_path(out, shard), record)
    if shard[1] == 1:
        merge(cfg, out, num_shards=1)
    else:
        log.info("shard %d/%d done; run the merge step once every shard has finished", *shard)
    return record


def merge(cfg: DataConfig, out: str | Path, num_shards: int) -> dict:
    """Combine shard records into manifest.json and stats.npz (train split only)."""
    out = Path(out)
    for name in (MANIFEST, STATS):                 # temp files of a merge that was killed while writing
        remove_stale_temps(out / name)
    records = []
    missing = []
    for i in range(num_shards):
        p = shard_record_path(out, (i, num_shards))
        if p.is_file():
            records.append(read_json(p))
        else:
            missing.append(str(p))
    if missing:
        raise FileNotFoundError(f"cannot merge: shard records missing: {', '.join(missing)}")
    mine = {k: v for k, v in config_lib.to_dict(cfg).items() if k not in ("data_root", "index")}
    for r in records:
        theirs = {k: v for k, v in r["data_config"].items() if k not in ("data_root", "index")}
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"cannot merge: shard {r['shard']} was made with another data config (differs in {diff})")
    index = load_index(cfg)
    splits = dialog_splits(cfg, index.keys())
    done = sorted({d for r in records for d in r["dialogs"]})
    skipped = sorted((s for r in records for s in r["skipped"]), key=lambda s: s["id"])
    metas = [read_json(out / "dialogs" / d / "meta.json") for d in done]
    train = [m for m in metas if splits[m["id"]] == "train"]
    if not train:
        raise ValueError("no dialog in the train split: cannot compute normalization statistics "
                         f"({len(metas)} dialogs processed, {len(skipped)} skipped)")
    stats = {}
    for key in ("motion", "audio"):
        count = sum(m["sums"][key]["count"] for m in train)
        s = np.zeros(len(train[0]["sums"][key]["sum"]), np.float64)
        ss = np.zeros_like(s)
        for m in train:                          # sorted dialog order: identical sums however it was sharded
            s += np.asarray(m["sums"][key]["sum"], np.float64)
            ss += np.asarray(m["sums"][key]["sumsq"], np.float64)
        mean = s / count
        var = np.maximum(ss / count - mean ** 2, 0.0)
        stats[f"{key}_mean"] = mean
        stats[f"{key}_std"] = np.maximum(np.sqrt(var), cfg.std_floor)
    extractor = _get_extractor(cfg)
    manifest = {
        "version": CACHE_VERSION,
        "fps": cfg.fps,
        "sample_rate": cfg.sample_rate,
        "motion_dim": cfg.motion_dim,
        "motion_layout": cfg.layout.to_json(),
        "audio_features": describe_features(cfg.audio, extractor),
        "dialogs": [{"id": m["id"], "participants": m["participants"], "num_frames": m["num_frames"],
                     "split": splits[m["id"]]} for m in metas],
        "skipped": skipped,
        "data_config": config_lib.to_dict(cfg),
    }
    with atomic_path(out / STATS, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **stats)
    write_json(out / MANIFEST, manifest)
    n = {s: sum(1 for d in manifest["dialogs"] if d["split"] == s) for s in ("train", "val", "test")}
    log.info("cache %s: %d dialogs (train %d, val %d, test %d), %d skipped", out, len(metas), n["train"], n["val"],
             n["test"], len(skipped))
    return manifest


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))
