"""The dyadic corpus reader: index JSON -> validated dialogs of two participants, aligned at the motion rate.

Every problem with the input raises :class:`CorpusError` naming the dialog, participant, file and field.
The usable length of a dialog is the shortest of both participants' ``valid_frames_num``, motion, audio and
state lengths; disagreements larger than ``length_tolerance_s`` are errors, never silently cropped.
The index's ``split`` field is never read.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.data.audio import AudioError, hop_length, read_wav
from common.data.config import DataConfig
from common.io import READ_ERRORS, UnsafeNameError, check_name, check_npy_header, check_npz_member
from common.layout import NECK_DIMS, NUM_STATES, motion_from_flame

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("audio_path", "flame_coeff_save_path", "state_path", "valid_frames_num")


class CorpusError(ValueError):
    """Bad input, with where it is: dialog, participant, file, field."""

    def __init__(self, message: str, dialog: str | None = None, participant: str | None = None,
                 file: str | Path | None = None, field: str | None = None):
        self.dialog, self.participant, self.file, self.field = dialog, participant, file, field
        where = []
        if dialog is not None:
            where.append(f"dialog {dialog}")
        if participant is not None:
            where.append(f"participant {participant}")
        if field is not None:
            where.append(f"field {field}")
        if file is not None:
            where.append(f"file {file}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass
class Participant:
    id: str
    motion: np.ndarray      # (T, D) float32 raw FLAME coefficients
    shape: np.ndarray       # (shape_dims,) float32 identity
    audio: np.ndarray       # (T * hop,) float32 at cfg.sample_rate
    states: np.ndarray      # (T,) int8


@dataclass
class Dialog:
    id: str
    participants: list[Participant]
    num_frames: int
    fps: float
    sample_rate: int


def index_path(cfg: DataConfig) -> Path:
    p = Path(cfg.index)
    return p if p.is_absolute() else Path(cfg.data_root) / p


def check_id(value: Any, what: str, dialog: str | None = None, file: str | Path | None = None) -> str:
    """Dialog and participant ids become folder and file names (cache, predictions): refuse unsafe ones
    (:func:`common.io.check_name`: empty, a leading '.', a path separator, a control character, too long)."""
    try:
        return check_name(value, what)
    except UnsafeNameError as e:
        raise CorpusError(str(e), dialog=dialog, file=file) from None


class DuplicateKeyError(ValueError):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json object hook: a key given twice would silently keep the last value (a dialog or a participant lost)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"key {key[:100]!r} appears twice in one object (the JSON reader would keep "
                                    "only the last): make the ids unique")
        out[key] = value
    return out


def load_index(cfg: DataConfig) -> dict[str, dict[str, dict[str, Any]]]:
    path = index_path(cfg)
    if not path.is_file():
        raise CorpusError("index JSON not found (set data_root and index)", file=path)
    try:
        index = json.loads(path.read_bytes(), object_pairs_hook=_refuse_duplicate_keys)
    except OSError as e:
        raise CorpusError(f"cannot read the index: {e}", file=path) from e
    except DuplicateKeyError as e:
        raise CorpusError(f"index holds a duplicate: {e}", file=path) from e
    except (ValueError, RecursionError) as e:   # JSONDecodeError, UnicodeDecodeError, too many digits, nesting
        raise CorpusError(f"index is not valid JSON: {type(e).__name__}: {str(e)[:200]}", file=path) from e
    if not isinstance(index, dict):
        raise CorpusError("index must map dialog id -> {participant id -> record}", file=path)
    for did, parts in index.items():
        check_id(did, "dialog id", file=path)
        if not isinstance(parts, dict) or not all(isinstance(r, dict) for r in parts.values()):
            raise CorpusError("dialog entry must map participant id -> record object", dialog=did, file=path)
        for pid in parts:
            check_id(pid, "participant id", dialog=did, file=path)
    return index


def resolve(cfg: DataConfig, rel: Any, dialog: str, pid: str, field: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise CorpusError(f"expected a non-empty path string, got {rel!r}", dialog, pid, field=field)
    root = Path(cfg.data_root).resolve()
    try:
        p = Path(rel)
        full = (p if p.is_absolute() else root / p).resolve()
        is_file, exists = full.is_file(), full.exists()
    except (OSError, ValueError, RuntimeError) as e:   # NUL byte, name too long, symlink loop
        raise CorpusError(f"invalid path {rel[:300]!r}: {type(e).__name__}: {e}", dialog, pid, field=field) from e
    if not cfg.allow_outside_root and not full.is_relative_to(root):
        raise CorpusError(f"path {rel!r} escapes the data root {root} (set allow_outside_root=true to allow)",
                          dialog, pid, file=full, field=field)
    if not is_file:
        raise CorpusError("is not a regular file" if exists else "file is missing", dialog, pid, file=full,
                          field=field)
    return full


def _check_finite(arr: np.ndarray, dialog, pid, file, field):
    if not np.isfinite(arr).all():
        frame = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise CorpusError(f"holds NaN/Inf (first at frame {frame})", dialog, pid, file=file, field=field)


def _open_npz(path: Path, dialog: str, pid: str, field: str):
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise CorpusError(f"cannot read npz: {e}", dialog, pid, file=path, field=field) from e
    if not magic.startswith(b"PK\x03\x04") and magic != b"\x93NUMPY":
        raise CorpusError("is not an npz archive (no zip header)", dialog, pid, file=path, field=field)
    try:
        npz = np.load(path, allow_pickle=False)
    except READ_ERRORS as e:
        raise CorpusError(f"cannot read npz (truncated or not an npz): {e}", dialog, pid, file=path,
                          field=field) from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CorpusError(f"is not an npz archive (holds a single {type(npz).__name__})", dialog, pid, file=path,
                          field=field)
    return npz


def _npz_member(npz, key: str, path: Path, dialog: str, pid: str) -> np.ndarray:
    """One real-valued array of an open npz, its header checked before numpy allocates it."""
    if key not in npz.files:
        raise CorpusError(f"npz has no key {key!r} (keys: {sorted(npz.files)})", dialog, pid, file=path, field=key)
    try:
        member = f"{key}.npy" if f"{key}.npy" in npz.zip.namelist() else key
        check_npz_member(npz.zip, npz.zip.getinfo(member))
        a = npz[key]
    except READ_ERRORS as e:
        raise CorpusError(f"cannot read array: {e}", dialog, pid, file=path, field=key) from e
    if not isinstance(a, np.ndarray):
        raise CorpusError("npz member is not an .npy array", dialog, pid, file=path, field=key)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise CorpusError(f"dtype {a.dtype} is not a real number type", dialog, pid, file=path, field=key)
    return a


def read_identity(path: str | Path, what: str = "identity") -> np.ndarray:
    """A participant's identity, ``shape_params[0, 0, :]`` of a FLAME npz (``(T, 1, K)``, ``(1, K)`` or ``(K,)``),
    through the same guards as :func:`read_flame`: :class:`CorpusError` naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError("file is missing" if not path.exists() else "is not a regular file", participant=what,
                          file=path, field="shape_params")
    with _open_npz(path, None, what, "shape_params") as npz:
        a = _npz_member(npz, "shape_params", path, None, what)
    if a.ndim < 1 or a.size == 0 or a.shape[-1] < 1:
        raise CorpusError(f"shape {a.shape}, expected (T, 1, K) with K >= 1", participant=what, file=path,
                          field="shape_params")
    shape = a.reshape(-1, a.shape[-1])[0].astype(np.float32)
    _check_finite(shape[None], None, what, path, "shape_params")
    return shape


def read_flame(path: Path, cfg: DataConfig, dialog: str, pid: str) -> tuple[np.ndarray, np.ndarray]:
    """(motion (T, D), identity shape (shape_dims,)) from an EMICA FLAME npz."""
    npz = _open_npz(path, dialog, pid, "flame_coeff_save_path")
    layout = cfg.layout
    need = {"expression_params": layout.expression_dims, "jaw_params": 1, "shape_params": cfg.shape_dims}
    if layout.pose is not None:
        need["pose_params"] = NECK_DIMS
    arrays = {}
    with npz:
        for key, min_dims in need.items():
            a = _npz_member(npz, key, path, dialog, pid)
            if a.ndim == 2:                       # tolerate (T, K) next to the documented (T, 1, K)
                a = a[:, None, :]
            if a.ndim != 3 or a.shape[1] < 1 or a.shape[2] < min_dims or a.shape[0] < 1:
                raise CorpusError(f"shape {a.shape}, expected (T, 1, >={min_dims})", dialog, pid, file=path, field=key)
            arrays[key] = a
    names = [k for k in ("expression_params", "jaw_params", "pose_params") if k in need]
    parts = [arrays[n][:, 0, :need[n]] for n in names]              # the dims the layout uses
    lengths = {n: p.shape[0] for n, p in zip(names, parts)}
    T = min(lengths.values())
    if max(lengths.values()) - T > cfg.length_tolerance_s * cfg.fps:
        raise CorpusError(f"arrays disagree in length: {lengths}", dialog, pid, file=path, field="expression_params")
    for n, p in zip(names, parts):
        _check_finite(p[:T], dialog, pid, path, n)
    shape = arrays["shape_params"][0, 0, :cfg.shape_dims]
    _check_finite(shape[None], dialog, pid, path, "shape_params")
    motion = motion_from_flame(*(p[:T] for p in parts), *([None] if len(parts) == 2 else []), layout)
    return motion, shape.astype(np.float32)


def read_states(path: Path, dialog: str, pid: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            check_npy_header(f, os.fstat(f.fileno()).st_size)
        s = np.load(path, allow_pickle=False)
    except READ_ERRORS as e:
        raise CorpusError(f"cannot read state array (not an .npy array, truncated or corrupt): {e}", dialog, pid,
                          file=path, field="state_path") from e
    if s.ndim == 2 and 1 in s.shape:
        s = s.reshape(-1)
    if s.ndim != 1 or len(s) == 0:
        raise CorpusError(f"state array has shape {s.shape}, expected (T,)", dialog, pid, file=path, field="state_path")
    if not (np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)):
        raise CorpusError(f"state array dtype {s.dtype} is not numeric", dialog, pid, file=path, field="state_path")
    if np.issubdtype(s.dtype, np.floating) and (not np.isfinite(s).all() or (s != np.round(s)).any()):
        raise CorpusError("state array holds non-integer values", dialog, pid, file=path, field="state_path")
    bad = (s < 0) | (s >= NUM_STATES)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CorpusError(f"state value {s[i]} at frame {i} outside 0..3", dialog, pid, file=path, field="state_path")
    return s.astype(np.int8)


def _int_field(rec: dict, key: str, dialog: str, pid: str) -> int:
    v = rec.get(key)
    if (isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v))
            or v != int(v) or v < 0):
        raise CorpusError(f"expected a non-negative integer, got {v!r}", dialog, pid, field=key)
    return int(v)


def read_dialog(dialog_id: str, records: dict[str, dict], cfg: DataConfig) -> Dialog:
    """Read, validate and align one dialog (both participants) at ``cfg.fps``."""
    check_id(dialog_id, "dialog id")
    if not isinstance(records, dict) or len(records) != 2:
        n = len(records) if isinstance(records, dict) else "?"
        raise CorpusError(f"has {n} participants ({', '.join(map(str, records)) if isinstance(records, dict) else ''}); "
                          "a dialog needs exactly two", dialog=dialog_id)
    hop = hop_length(cfg.sample_rate, cfg.fps)
    raw, lengths = [], {}
    for pid in records:
        check_id(pid, "participant id", dialog=dialog_id)
        if not isinstance(records[pid], dict):
            raise CorpusError(f"record must be an object, got {type(records[pid]).__name__}", dialog_id, pid)
    for pid in sorted(records):
        rec = records[pid]
        for key in REQUIRED_FIELDS:
            if key not in rec:
                raise CorpusError("missing field in index record", dialog_id, pid, field=key)
        valid = _int_field(rec, "valid_frames_num", dialog_id, pid)
        flame_path = resolve(cfg, rec["flame_coeff_save_path"], dialog_id, pid, "flame_coeff_save_path")
        state_path = resolve(cfg, rec["state_path"], dialog_id, pid, "state_path")
        audio_path = resolve(cfg, rec["audio_path"], dialog_id, pid, "audio_path")
        motion, shape = read_flame(flame_path, cfg, dialog_id, pid)
        states = read_states(state_path, dialog_id, pid)
        try:
            audio = read_wav(audio_path, cfg.sample_rate, what=f"dialog {dialog_id}, participant {pid}: ")
        except AudioError as e:
            raise CorpusError(str(e).split(": ", 2)[-1], dialog_id, pid, file=audio_path, field="audio_path") from e
        audio_frames = len(audio) // hop
        lengths.update({(pid, "valid_frames_num"): valid, (pid, "motion"): len(motion),
                        (pid, "states"): len(states), (pid, "audio"): audio_frames})
        raw.append((pid, motion, shape, audio, states, valid))
    # Frames past valid_frames_num are invalid by definition: a longer array is not a disagreement.
    effective = {k: min(v, lengths[(k[0], "valid_frames_num")]) for k, v in lengths.items()}
    T = min(effective.values())
    longest = max(effective.values())
    if longest - T > cfg.length_tolerance_s * cfg.fps:
        short = min(effective, key=effective.get)
        long_ = max(effective, key=effective.get)
        listing = ", ".join(f"{p}.{k}={v}" for (p, k), v in lengths.items())
        raise CorpusError(f"lengths disagree by {longest - T} frames (> {cfg.length_tolerance_s} s at {cfg.fps} fps): "
                          f"shortest {short[0]}.{short[1]}, longest {long_[0]}.{long_[1]} ({listing})",
                          dialog=dialog_id, field=short[1])
    if T < 1:
        raise CorpusError("has no usable frames", dialog=dialog_id)
    parts = [Participant(pid, motion[:T], shape, audio[:T * hop], states[:T])
             for pid, motion, shape, audio, states, _ in raw]
    return Dialog(dialog_id, parts, T, cfg.fps, cfg.sample_rate)
