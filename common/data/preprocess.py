"""Corpus -> cache: aligned motion, states and audio features of both participants, per dialog.

Resumable (a dialog folder appears only when complete, by rename; complete ones are skipped), shardable
(``shard=(i, n)`` processes every n-th dialog of the sorted index; :func:`merge` combines the shards into one
manifest and one set of statistics, byte-identical to an unsharded run), parallel (``workers``).

A cache knows the data config that made it (``data_config`` in the manifest, in each shard record and in each
dialog's ``meta.json``): a rerun, a shard or a merge with a config that would change what is cached
(:func:`content_config`) is refused with the differing keys (:class:`StaleCacheError`) instead of keeping
features of the old config under a manifest describing the new one; ``overwrite=True`` rebuilds.
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
from common.config import ConfigError
from common.data.audio import describe_features, make_feature_extractor
from common.data.cache import MANIFEST, STATS
from common.data.corpus import CorpusError, index_path, load_index, read_dialog
from common.data.config import DataConfig
from common.io import atomic_dir, atomic_path, read_json, remove_stale_temps, write_json
from common.data.splits import dialog_splits

log = logging.getLogger(__name__)
CACHE_VERSION = 1

_extractors: dict = {}  # one per audio config, per process (a speech encoder is costly to build)

# Data-config keys that do not change what is cached for a dialog: where the corpus lives and how its paths and
# lengths are checked (they decide whether a dialog is read, not what it becomes), and what merge recomputes
# from the per-dialog sums every time (splits, statistics). Which corpus a dialog came from is checked apart
# (check_same_corpus): shards may read one corpus mounted at different places.
NON_CONTENT_KEYS = ("data_root", "index", "allow_outside_root", "length_tolerance_s", "split_ratios", "split_seed",
                    "split_file", "std_floor")
# What overwrite=True removes (nothing else: the folder may hold other files); the manifest first, so a cache
# whose removal was killed half-way is never taken for a complete one (its dialogs still record their config).
CACHE_PARTS = (MANIFEST, STATS, "tokens", "shards", "dialogs")


class StaleCacheError(ConfigError):
    """The cache (or a shard of it) was made with a data config that changes what is cached."""


def _get_extractor(cfg: DataConfig):
    key = json.dumps([config_lib.to_dict(cfg.audio), cfg.sample_rate, cfg.fps], sort_keys=True)
    if key not in _extractors:
        # the data config naming a hub model is the user asking for it: preprocessing may download it
        _extractors[key] = make_feature_extractor(cfg.audio, cfg.sample_rate, cfg.fps, allow_download=True)
    return _extractors[key]


def content_config(cfg) -> dict:
    """The keys of a data config that decide what is cached for a dialog (all but :data:`NON_CONTENT_KEYS`);
    ``cfg``: a DataConfig, its dict, or a cache manifest (its ``data_config``)."""
    if isinstance(cfg, DataConfig):
        cfg = config_lib.to_dict(cfg)
    elif isinstance(cfg, dict) and "dialogs" in cfg:
        cfg = cfg.get("data_config")
    return {k: v for k, v in dict(cfg or {}).items() if k not in NON_CONTENT_KEYS}


def _recorded_configs(out: Path, dialog_ids) -> list[tuple[Path, dict | None]]:
    """(file, the data config it records) for the manifest, every shard record and the given dialogs' meta.json."""
    found = []
    for path in [out / MANIFEST, *sorted((out / "shards").glob("shard-*-of-*.json"))]:
        if path.is_file():
            found.append((path, _read_record(path).get("data_config")))
    for d in sorted(dialog_ids):
        path = out / "dialogs" / d / "meta.json"
        found.append((path, _read_record(path).get("data_config")))
    return found


def _read_record(path: Path) -> dict:
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        raise StaleCacheError(f"{path} is unreadable ({type(e).__name__}: {e}): rerun with --overwrite to rebuild "
                              "the cache, or use another --out") from e
    return record if isinstance(record, dict) else {}


def corpus_source(cfg: DataConfig) -> dict:
    """Which corpus a dialog was read from: the resolved data root and index (recorded in each ``meta.json``)."""
    return {"data_root": str(Path(cfg.data_root).resolve()), "index": str(index_path(cfg).resolve())}


def check_same_corpus(cfg: DataConfig, out: Path, dialog_ids) -> None:
    """Refuse to reuse cached dialogs read from another corpus (another data root or index: two corpora may share
    dialog ids). Only a rerun that would reuse dialogs checks this; shards and merges may run where the corpus is
    mounted elsewhere."""
    mine = corpus_source(cfg)
    for d in sorted(dialog_ids):
        path = out / "dialogs" / d / "meta.json"
        theirs = _read_record(path).get("source")
        if isinstance(theirs, dict) and theirs != mine:
            raise StaleCacheError(
                f"the cache {out} holds dialogs read from another corpus ({path}: data_root {theirs.get('data_root')}, "
                f"index {theirs.get('index')}; this run: data_root {mine['data_root']}, index {mine['index']}): "
                "rerun with --overwrite to rebuild it (a moved corpus too), or use another --out")


def check_cache_config(cfg: DataConfig, out: Path, dialog_ids) -> None:
    """Refuse to add to (or merge) a cache made with a data config whose content keys differ from ``cfg``'s."""
    mine = content_config(cfg)
    recorded = _recorded_configs(out, dialog_ids)
    known = [c for _, c in recorded if c is not None]
    for path, theirs in recorded:
        if theirs is None:
            if known:              # a dialog of an older version: its manifest / shard record says the config
                theirs = known[0]
            else:
                raise StaleCacheError(f"{path} does not record the data config that made it (an older version?): "
                                      f"rerun with --overwrite to rebuild the cache {out}, or use another --out")
        diff = config_lib.config_differences(mine, content_config(theirs))
        if diff:
            raise StaleCacheError(
                f"the cache {out} was made with another data config ({path} differs in {'; '.join(diff)}): its "
                "features would not match this config. Rerun with --overwrite to rebuild it, or use another --out")


def remove_cache(out: Path) -> None:
    """Delete what preprocessing and tokenizing wrote in ``out`` (only :data:`CACHE_PARTS`: ``out`` may hold
    other files)."""
    import shutil
    for name in CACHE_PARTS:
        p = out / name
        if p.is_dir():
            log.info("overwrite: removing %s", p)
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


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
        "data_config": content_config(cfg),
        "source": corpus_source(cfg),
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
               skip_bad: bool = False, progress: bool = True, overwrite: bool = False) -> dict:
    """Process this shard's dialogs (skipping complete ones); merge when unsharded. Returns the shard record.

    A cache made with another data config (content keys) is refused (:class:`StaleCacheError`), or with
    ``overwrite`` rebuilt from scratch (unsharded runs only: shards would delete each other's work)."""
    out = Path(out)
    index = load_index(cfg)
    ids = shard_ids(list(index), shard)
    if overwrite:
        if shard[1] > 1:
            raise ConfigError("--overwrite cannot be combined with --shard (each shard would delete the others' "
                              f"work): delete {out} first, then run the shards")
        remove_cache(out)
    out.mkdir(parents=True, exist_ok=True)
    done = {d for d in ids if (out / "dialogs" / d / "meta.json").is_file()}
    check_cache_config(cfg, out, done)
    check_same_corpus(cfg, out, done)
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
    done = sorted({d for r in records for d in r["dialogs"]})
    check_cache_config(cfg, out, done)          # every shard record and every dialog it lists, against cfg
    index = load_index(cfg)
    splits = dialog_splits(cfg, index.keys())
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
    _check_stats(stats, train)
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


def _check_stats(stats: dict, train_metas: list[dict]) -> None:
    """Statistics must be finite in float32 (the dtype every reader uses): name the dialogs whose sums are not."""
    for name, value in stats.items():
        if not np.isfinite(value.astype(np.float32)).all():
            key = name.split("_")[0]
            bad = [m["id"] for m in train_metas
                   if not np.isfinite(np.asarray(m["sums"][key]["sumsq"], np.float64).astype(np.float32)).all()]
            raise ValueError(f"the {name} statistics are not finite in float32 (values beyond 1e19 in the {key} "
                             f"data of dialogs {', '.join(bad[:10]) or '(the sum of all)'}): check those dialogs' "
                             "files, then rerun with --overwrite")


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))
