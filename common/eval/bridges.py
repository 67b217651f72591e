"""Baseline bridges: write this system's exact train/val/test splits in the layouts external baselines read.

Formats (field meanings, rates and sources: docs/BASELINES.md):

* ``dualtalk`` -- ``OUT/<split>/<dialog>_speaker{1,2}.npz`` with ``exp`` (T25, 50) and ``pose`` (T25, 6) =
  neck (3) ++ jaw (3) at 25 fps, and ``OUT/<split>/<dialog>_speaker{1,2}.wav`` (16 kHz mono): the layout of
  DualTalk's ``data/{train,test}`` folders (its dataset_train.py / dataset_test.py / metric/metric.py).
  speaker1 is the cache's first participant of the dialog, speaker2 the second.
* ``dim`` -- ``OUT/<split>/<dialog>/<participant>.npz`` with ``motion`` (T, 54) = exp 50 ++ jaw 1 ++ neck 3 and
  ``pose_exp`` (T, 56) = neck 3 ++ jaw 3 ++ exp 50 (the order of DIM's released code), 30 fps, a 16 kHz WAV per
  side, and directed (speaker, listener) pairs over whole dialogs, both directions, in ``export.json``.
* ``manifest`` -- ``OUT/<split>/<dialog>/<participant>.npz`` (``motion`` as in the cache, plus the FLAME parts,
  states and identity) and WAVs, listed per split in ``export.json`` and ``manifest.csv``.

Every format writes ``OUT/export.json`` last (so an export with one is complete): format, rates, layouts, the
splits with their files, and what could not be read from the corpus. The cache holds exp[:50] ++ jaw[:1]
(+ neck in 54-dim mode); the full jaw (3) and neck (3) and the audio come from the corpus the cache was built
from (manifest ``data_config``). If the corpus is unreachable, the missing jaw/neck dims are zeros, no WAV is
written, and ``export.json`` says so (``strict=True`` makes it an error).
"""
from __future__ import annotations

import csv
import io as _io
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from common import config as config_lib
from common.eval import external as L
from common.data.audio import AudioError, read_wav
from common.data.cache import Cache
from common.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

FORMATS = ("dualtalk", "dim", "manifest")
EXPORT_MANIFEST = "export.json"
EXPORT_VERSION = 1
CONSISTENCY_ATOL = 1e-5     # corpus npz vs cache: the same float32 numbers unless the corpus changed


class ExportError(ValueError):
    pass


@dataclass
class Side:
    """One participant of one dialog, at the cache's rate, with what the corpus adds."""
    participant: str
    motion: np.ndarray          # (T, D) the cache's raw motion
    exp: np.ndarray             # (T, 50)
    jaw: np.ndarray             # (T, 3)
    neck: np.ndarray            # (T, 3)
    states: np.ndarray          # (T,)
    shape: np.ndarray           # (shape_dims,)
    audio: np.ndarray | None    # (round(T / fps * sample_rate),) or None when the corpus is unreachable
    notes: list[str] = field(default_factory=list)


class CorpusAccess:
    """The corpus behind a cache (its manifest's data_config), or the reason it cannot be read."""

    def __init__(self, cache: Cache):
        from common.data.corpus import CorpusError, load_index
        from common.data.config import DataConfig
        self.cfg = self.index = None
        self.reason = ""
        try:
            self.cfg = config_lib.from_dict(DataConfig, cache.manifest["data_config"])
            self.index = load_index(self.cfg)
        except (KeyError, CorpusError, config_lib.ConfigError, OSError, TypeError, ValueError) as e:
            self.reason = f"corpus unreachable ({type(e).__name__}: {e})"
            self.index = None

    @property
    def reachable(self) -> bool:
        return self.index is not None

    def _path(self, dialog: str, pid: str, key: str) -> Path:
        from common.data.corpus import resolve
        rec = self.index.get(dialog, {}).get(pid)
        if rec is None:
            raise ExportError(f"dialog {dialog}, participant {pid}: not in the corpus index {self.cfg.index}")
        return resolve(self.cfg, rec.get(key), dialog, pid, key)

    def flame(self, dialog: str, pid: str) -> tuple[dict[str, np.ndarray], Path]:
        path = self._path(dialog, pid, "flame_coeff_save_path")
        out = {}
        try:
            with np.load(path, allow_pickle=False) as z:
                for key in ("expression_params", "jaw_params", "pose_params"):
                    if key in z.files:
                        a = z[key]
                        out[key] = a.reshape(len(a), -1).astype(np.float32)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ExportError(f"dialog {dialog}, participant {pid}: cannot read {path}: {e}") from e
        return out, path

    def audio(self, dialog: str, pid: str, sample_rate: int) -> np.ndarray:
        path = self._path(dialog, pid, "audio_path")
        try:
            return read_wav(path, sample_rate, what=f"dialog {dialog}, participant {pid}: ")
        except AudioError as e:
            raise ExportError(str(e)) from e


def load_sides(cache: Cache, corpus: CorpusAccess, dialog: dict, sample_rate: int,
               strict: bool = False) -> list[Side]:
    """Both participants of ``dialog`` (a cache manifest entry) with full jaw / neck and audio."""
    did, T = dialog["id"], int(dialog["num_frames"])
    arrays = cache.load(did, mmap=False)
    lay = cache.layout
    E = lay.expression_dims
    if E < L.BASELINE_EXP_DIMS:
        raise ExportError(f"the cache holds {E} expression dims; the baselines' layouts carry "
                          f"{L.BASELINE_EXP_DIMS}")
    neck_in_cache = lay.pose is not None
    sides = []
    for i, pid in enumerate(dialog["participants"]):
        motion = np.asarray(arrays.motion[i], np.float32)
        exp = motion[:, :L.BASELINE_EXP_DIMS]
        jaw = np.zeros((T, 3), np.float32)
        jaw[:, 0] = motion[:, lay.jaw[0]]
        neck = motion[:, lay.pose[0]:lay.pose[1]].copy() if neck_in_cache else np.zeros((T, 3), np.float32)
        notes, audio = [], None
        if corpus.reachable:
            try:
                fl, fpath = corpus.flame(did, pid)
            except Exception as e:      # a missing / unreadable file: the same fallback as an unreachable corpus
                if strict:
                    raise
                fl, fpath = {}, None
                notes.append(f"FLAME npz unreadable ({e}): jaw[1:3] and neck filled with zeros")
            if fpath is not None:
                ce, cj = fl.get("expression_params"), fl.get("jaw_params")
                if ce is None or cj is None or len(ce) < T or len(cj) < T:
                    raise ExportError(f"dialog {did}, participant {pid}: {fpath} lacks expression_params/jaw_params "
                                      f"for the cache's {T} frames")
                diff = max(float(np.abs(ce[:T, :E] - motion[:, :E]).max()),
                           float(np.abs(cj[:T, 0] - motion[:, E]).max()))
                if diff > CONSISTENCY_ATOL:
                    raise ExportError(f"dialog {did}, participant {pid}: {fpath} differs from the cache by {diff:.3g} "
                                      "(the corpus changed since preprocessing: rebuild the cache)")
                k = min(cj.shape[1], 3)
                jaw[:, 1:k] = cj[:T, 1:k]
                if k < 3:
                    notes.append(f"jaw_params has {cj.shape[1]} dims: jaw[{k}:3] filled with zeros")
                if not neck_in_cache:
                    pose = fl.get("pose_params")
                    if pose is None or len(pose) < T or pose.shape[1] < 3:
                        if strict:
                            raise ExportError(f"dialog {did}, participant {pid}: {fpath} has no usable pose_params")
                        notes.append("no usable pose_params: neck filled with zeros")
                    else:
                        neck = pose[:T, :3].copy()
            try:
                audio = corpus.audio(did, pid, sample_rate)
            except Exception as e:
                if strict:
                    raise
                notes.append(f"audio unreadable ({e}): no WAV written")
        else:
            if strict:
                raise ExportError(f"{corpus.reason}; the export needs the corpus for jaw[1:3], neck and audio")
            zeros = ["jaw[1:3]"] + ([] if neck_in_cache else ["neck"])
            notes.append(f"{corpus.reason}: {' and '.join(zeros)} filled with zeros, no WAV written")
        if audio is not None:
            n = int(round(T / cache.fps * sample_rate))
            if len(audio) < n:
                notes.append(f"audio {n - len(audio)} samples short of {T} frames: padded with zeros")
                audio = np.pad(audio, (0, n - len(audio)))
            audio = audio[:n]
        sides.append(Side(pid, motion, exp, jaw, neck, np.asarray(arrays.states[i]),
                          np.asarray(arrays.shape[i], np.float32), audio, notes))
    return sides


# --- writers ---------------------------------------------------------------------------------------------
def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _save_wav(path: Path, audio: np.ndarray, sample_rate: int) -> str:
    subtype = "PCM_16" if float(np.abs(audio).max(initial=0.0)) <= 1.0 else "FLOAT"
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), np.asarray(audio, np.float32), sample_rate, subtype=subtype, format="WAV")
    return subtype


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _write_dualtalk(out: Path, split: str, d: dict, sides: list[Side], fps: float, sr: int, dt_fps: float) -> list[dict]:
    entries = []
    for i, s in enumerate(sides):
        name = f"{d['id']}_speaker{i + 1}"
        m56 = np.concatenate([s.exp, s.jaw, s.neck], 1)                     # DualTalk's order
        m = L.resample_motion(m56, fps, dt_fps).astype(np.float32)
        npz = out / split / f"{name}.npz"
        _save_npz(npz, exp=m[:, 0:50], pose=np.concatenate([m[:, 53:56], m[:, 50:53]], 1))
        wav = out / split / f"{name}.wav"
        e = {"split": split, "dialog": d["id"], "participant": s.participant, "partner": sides[1 - i].participant,
             "name": name, "npz": _rel(npz, out), "frames": int(len(m)), "fps": dt_fps,
             "source_frames": int(d["num_frames"]), "source_fps": fps, "notes": s.notes}
        if s.audio is not None:
            _save_wav(wav, s.audio, sr)
            e.update(wav=_rel(wav, out), samples=int(len(s.audio)), sample_rate=sr)
        else:
            e.update(wav=None)
        entries.append(e)
    return entries


def _side_files(out: Path, split: str, d: dict, s: Side, sr: int, arrays: dict) -> dict:
    base = out / split / d["id"]
    npz = base / f"{s.participant}.npz"
    _save_npz(npz, **arrays)
    files = {"npz": _rel(npz, out), "wav": None}
    if s.audio is not None:
        wav = base / f"{s.participant}.wav"
        _save_wav(wav, s.audio, sr)
        files.update(wav=_rel(wav, out), samples=int(len(s.audio)), sample_rate=sr)
    return files


def _write_dim(out: Path, split: str, d: dict, sides: list[Side], fps: float, sr: int) -> tuple[list[dict], list[dict]]:
    files = []
    for s in sides:
        m54 = np.concatenate([s.exp, s.jaw[:, :1], s.neck], 1).astype(np.float32)
        pose_exp = np.concatenate([s.neck, s.jaw, s.exp], 1).astype(np.float32)
        files.append(_side_files(out, split, d, s, sr, {"motion": m54, "pose_exp": pose_exp}))
    entries = [{"split": split, "dialog": d["id"], "participant": s.participant, "partner": sides[1 - i].participant,
                "frames": int(d["num_frames"]), "fps": fps, "notes": s.notes, **files[i]}
               for i, s in enumerate(sides)]
    pairs = []
    for a, b in ((0, 1), (1, 0)):
        pairs.append({"split": split, "dialog": d["id"], "speaker": sides[a].participant,
                      "listener": sides[b].participant, "num_frames": int(d["num_frames"]), "fps": fps,
                      "speaker_motion": files[a]["npz"], "listener_motion": files[b]["npz"],
                      "speaker_audio": files[a]["wav"], "listener_audio": files[b]["wav"]})
    return entries, pairs


def _write_manifest(out: Path, split: str, d: dict, sides: list[Side], fps: float, sr: int) -> list[dict]:
    entries = []
    for i, s in enumerate(sides):
        f = _side_files(out, split, d, s, sr, {
            "motion": s.motion.astype(np.float32), "expression_params": s.exp.astype(np.float32),
            "jaw_params": s.jaw.astype(np.float32), "pose_params": s.neck.astype(np.float32),
            "states": s.states.astype(np.int8), "shape": s.shape})
        entries.append({"split": split, "dialog": d["id"], "participant": s.participant, "side": i,
                        "partner": sides[1 - i].participant, "frames": int(d["num_frames"]), "fps": fps,
                        "duration_s": round(int(d["num_frames"]) / fps, 6), "notes": s.notes, **f})
    return entries


CSV_COLUMNS = ["split", "dialog", "participant", "side", "partner", "frames", "fps", "duration_s", "npz", "wav",
               "samples", "sample_rate"]


def _csv(rows: list[dict]) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


FIELDS = {
    "dualtalk": {
        "exp": "(T25, 50) FLAME expression_params[:, 0, :50], 25 fps",
        "pose": "(T25, 6) neck (pose_params[:, 0, :3]) ++ jaw (jaw_params[:, 0, :3]), axis-angle rad, 25 fps",
        "wav": "16 kHz mono, the participant's own microphone, T / 30 s long",
        "naming": "<dialog>_speaker1 = the cache's first participant, <dialog>_speaker2 = the second",
        "resampling": "30 -> 25 fps by common.eval.external.resample_motion (linear interpolation, frame i at i / fps)",
    },
    "dim": {
        "motion": "(T, 54) exp[:50] ++ jaw[:1] ++ neck[:3], 30 fps (layout 'dim' of common.eval.external)",
        "pose_exp": "(T, 56) neck[:3] ++ jaw[:3] ++ exp[:50], 30 fps: the per-frame order of DIM's code "
                    "(EMOCA pose ++ exp; layout 'dim56')",
        "wav": "16 kHz mono, the participant's own microphone",
        "pairs": "directed (speaker, listener) pairs over whole dialogs, both directions per dialog",
    },
    "manifest": {
        "motion": "(T, D) raw motion as in the cache (exp[:50] ++ jaw[:1] (++ neck[:3])), 30 fps",
        "expression_params": "(T, 50)", "jaw_params": "(T, 3) axis-angle rad", "pose_params": "(T, 3) neck",
        "states": "(T,) int8 0 idle 1 listen 2 speak 3 crosstalk", "shape": "(100,) identity",
        "wav": "mono at sample_rate (default 16 kHz)",
    },
}


def export(cache_dir: str | Path, fmt: str, out: str | Path, splits: str | list[str] = "train,val,test",
           sample_rate: int = L.EXPORT_SAMPLE_RATE, dualtalk_fps: float = L.DUALTALK_FPS,
           strict: bool = False, progress: bool = False) -> dict:
    """Write ``splits`` of the cache in format ``fmt`` under ``out``; returns the export manifest."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    cache = Cache(cache_dir)
    out = Path(out)
    wanted = [s for s in (splits.split(",") if isinstance(splits, str) else splits) if s]
    known = sorted({d["split"] for d in cache.manifest["dialogs"]} | {"train", "val", "test"})
    bad = [s for s in wanted if s not in known]
    if bad or not wanted:
        raise ExportError(f"unknown split(s) {bad or wanted}; the cache has {known}")
    prev = out / EXPORT_MANIFEST
    if prev.is_file():
        old = read_json(prev).get("format")
        if old != fmt:
            raise ExportError(f"{out} holds a {old!r} export; write the {fmt!r} export to another folder")
        prev.unlink()                       # an export without export.json is incomplete
    corpus = CorpusAccess(cache)
    if not corpus.reachable:
        if strict:
            raise ExportError(f"{corpus.reason}; the export needs the corpus for jaw[1:3], neck and audio")
        log.warning("%s: jaw[1:3]%s are zeros and no WAV is written", corpus.reason,
                    "" if cache.layout.pose is not None else " and neck")
    fps = float(cache.fps)
    result = {"format": fmt, "version": EXPORT_VERSION, "cache": str(Path(cache_dir).resolve()),
              "fps": dualtalk_fps if fmt == "dualtalk" else fps, "source_fps": fps, "sample_rate": sample_rate,
              "fields": FIELDS[fmt],
              "corpus": {"reachable": corpus.reachable, "reason": corpus.reason,
                         "data_root": cache.manifest.get("data_config", {}).get("data_root"),
                         "index": cache.manifest.get("data_config", {}).get("index")},
              "splits": {}, "notes": [],
              "skipped_by_preprocessing": [x["id"] for x in cache.manifest.get("skipped", [])]}
    if fmt == "dim":
        result["pairs"] = {}
    n_dialogs = 0
    for split in wanted:
        entries, pairs = [], []
        for d in cache.dialogs(split):
            sides = load_sides(cache, corpus, d, sample_rate, strict=strict)
            if fmt == "dualtalk":
                if "." in d["id"]:
                    result["notes"].append(f"dialog id {d['id']!r} holds a '.': DualTalk's dataset_test.py cuts "
                                           "file names at the first '.'")
                entries += _write_dualtalk(out, split, d, sides, fps, sample_rate, dualtalk_fps)
            elif fmt == "dim":
                e, p = _write_dim(out, split, d, sides, fps, sample_rate)
                entries += e
                pairs += p
            else:
                entries += _write_manifest(out, split, d, sides, fps, sample_rate)
            n_dialogs += 1
            if progress:
                log.info("%s: %s done", split, d["id"])
        result["splits"][split] = entries
        if fmt == "dim":
            result["pairs"][split] = pairs
    zero_filled = sorted({n for es in result["splits"].values() for e in es for n in e["notes"]})
    result["corpus"]["notes"] = zero_filled
    result["counts"] = {s: len({e["dialog"] for e in es}) for s, es in result["splits"].items()}
    if fmt == "manifest":
        rows = [e for es in result["splits"].values() for e in es]
        with atomic_path(out / "manifest.csv", suffix=".csv") as tmp:
            tmp.write_text(_csv(rows))
    write_json(out / EXPORT_MANIFEST, result)
    log.info("exported %d dialogs (%s) in the %s format to %s", n_dialogs, ", ".join(wanted), fmt, out)
    return result
