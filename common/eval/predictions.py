"""Prediction files: the one writer and the one reader every method, scorer and renderer goes through.

Layout (docs/ARCHITECTURE.md, "Prediction files"): ``P/<dialog>/<participant>.npz`` with ``motion`` (T, D) at
the motion rate plus FLAME keys (``expression_params`` (T, 1, 100), ``jaw_params`` (T, 1, 3), ``pose_params``
(T, 1, 3), ``shape_params`` (1, 1, 300) when the identity is known) and optional extras (``pred_states``,
``codes``); or ``P/<dialog>/<participant>.npy`` (T, D). Other methods' files are read as they write them:
FLAME keys alone, DualTalk's ``exp`` (T, 50) + ``pose`` (T, 6) npz, DualTalk's flat
``P/<dialog>_speaker{1,2}.npy``, and the layouts / frame rates of :mod:`common.eval.external`
(docs/BASELINES.md). Errors name the file.
"""
from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.eval import external as L
from common.io import READ_ERRORS, UnsafeNameError, atomic_path, check_name, read_npy_checked, read_npz_checked
from common.layout import Layout, LayoutError, flame_arrays, layout_for_dim

FRAME_TOLERANCE_S = 0.25    # a prediction's duration may differ from the ground truth's by this much


class PredictionError(ValueError):
    pass


# --- writing -----------------------------------------------------------------------------------------------
def write_prediction(path: str | Path, motion: np.ndarray, layout: Layout, shape: np.ndarray | None = None,
                     extra: dict | None = None) -> Path:
    """Write one participant's prediction file atomically: ``motion`` (T, D) in ``layout``, its FLAME keys
    (:func:`common.layout.flame_arrays`), ``shape_params`` when ``shape`` is known, and ``extra`` arrays."""
    path = Path(path)
    arrays = flame_arrays(motion, layout, shape)
    arrays.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


class PredictionWriter:
    """:func:`write_prediction` for sequences of any length in bounded memory: the motion and each extra array
    arrive in chunks along their first axis (``append``); every key is streamed into its own ``.npy`` beside the
    target, and ``close()`` packs them into the ``.npz`` (stored, as ``np.savez`` does) and renames it into place.
    The file holds the arrays :func:`write_prediction` writes for the same data.

        w = PredictionWriter(path, frames=T, layout=layout, shape=shape, extra={"codes": ((K, Q), np.int32)})
        w.append(motion=chunk (m, D), codes=codes_chunk (k, Q))      # ... until every array is full
        w.close()
    """

    def __init__(self, path: str | Path, frames: int, layout: Layout, shape: np.ndarray | None = None,
                 extra: dict | None = None):
        self.path, self.layout, self.frames = Path(path), layout, int(frames)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.parts"
        self._tmp.mkdir(exist_ok=True)
        probe = flame_arrays(np.zeros((1, layout.width), np.float32), layout, shape)
        specs = {k: ((self.frames, *v.shape[1:]), v.dtype) for k, v in probe.items() if k != "shape_params"}
        specs.update({k: (tuple(shp), np.dtype(dt)) for k, (shp, dt) in (extra or {}).items()})
        self._files, self._left = {}, {}
        for key, (shp, dt) in specs.items():
            f = open(self._tmp / f"{key}.npy", "wb")
            np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dt)),
                                                     "fortran_order": False, "shape": tuple(shp)})
            self._files[key], self._left[key] = (f, np.dtype(dt), tuple(shp[1:])), int(shp[0])
        self._constant = {"shape_params": probe["shape_params"]} if "shape_params" in probe else {}

    def append(self, motion: np.ndarray | None = None, **extra) -> None:
        """The next rows of the motion (m, D) (its FLAME keys follow) and of any extra array."""
        rows = dict(extra)
        if motion is not None:
            arrays = flame_arrays(motion, self.layout)
            rows.update({k: v for k, v in arrays.items() if k in self._files})
        for key, value in rows.items():
            f, dt, tail = self._files[key]
            value = np.ascontiguousarray(value, dtype=dt)
            if value.shape[1:] != tail or len(value) > self._left[key]:
                raise PredictionError(f"{self.path}: {key} rows of shape {value.shape} do not fit "
                                      f"({self._left[key]} rows of {tail} left)")
            f.write(value.tobytes())
            self._left[key] -= len(value)

    def close(self) -> Path:
        """Pack the arrays into ``path`` (every array must be complete); returns the path."""
        short = {k: n for k, n in self._left.items() if n}
        if short:
            self.abort()
            raise PredictionError(f"{self.path}: arrays not complete ({short} rows missing)")
        for f, _, _ in self._files.values():
            f.close()
        with atomic_path(self.path, suffix=".npz") as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for key in self._files:
                    z.write(self._tmp / f"{key}.npy", f"{key}.npy")
                for key, value in self._constant.items():
                    with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, value, allow_pickle=False)
        self.abort()
        return self.path

    def abort(self) -> None:
        """Remove the parts (nothing is written to ``path``)."""
        for f, _, _ in self._files.values():
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


# --- reading -----------------------------------------------------------------------------------------------
def prediction_path(root: str | Path, dialog: str, participant: str, ext: str = ".npz") -> Path:
    """``root/<dialog>/<participant><ext>``, both names checked (:func:`common.io.check_name`): a name such as
    ``../../x`` from a command line or a manifest never writes outside ``root``."""
    try:
        check_name(dialog, "dialog name")
        check_name(participant, f"dialog {dialog}: participant name")
    except UnsafeNameError as e:
        raise PredictionError(str(e)) from None
    return Path(root) / dialog / f"{participant}{ext}"


def check_participants(dialog: str, participants) -> list[str]:
    """Two distinct, safe participant names (two predictions written under one name would lose one)."""
    participants = list(participants)
    if len(participants) != 2 or participants[0] == participants[1]:
        raise PredictionError(f"dialog {dialog}: needs two different participant names, got {participants}")
    for pid in participants:
        prediction_path(".", dialog, pid)
    return participants


def open_prediction(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a prediction file (an ``.npz``'s keys, or ``{"motion": array}`` for an ``.npy``), read
    without pickles and with each header checked before numpy allocates (:func:`common.io.check_npy_header`).
    Unreadable files (truncated, corrupt, bad compression, a lying header) and arrays that are not real numbers
    of at least one dimension (0-d, bool, complex, strings, objects) raise :class:`PredictionError` naming the
    file and the key."""
    path = Path(path)
    try:
        arrays = {"motion": read_npy_checked(path)} if path.suffix == ".npy" else read_npz_checked(path)
    except READ_ERRORS as e:
        raise PredictionError(f"{path}: unreadable prediction ({type(e).__name__}: {str(e)[:300]})") from e
    for key, a in arrays.items():
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise PredictionError(f"{path}: {key} has dtype {a.dtype}, expected real numbers")
        if a.ndim == 0:
            raise PredictionError(f"{path}: {key} is a 0-d array, expected (T, ...)")
    return arrays


def _flame_rows(path: Path, arrays: dict, key: str) -> np.ndarray:
    """A FLAME key (T, 1, K) or (T, K) as (T, K) rows; refuses empty and frame-less arrays."""
    a = arrays[key]
    if a.ndim < 2 or len(a) == 0 or a[0].size == 0:
        raise PredictionError(f"{path}: {key} has shape {a.shape}, expected (T, 1, K) with T, K >= 1")
    return a.reshape(len(a), -1)


def _motion_array(path: Path, arrays: dict, target: Layout) -> tuple[np.ndarray, str]:
    """The file's motion array and its kind: 'array' (layout given by its width), 'flame' (already in
    ``target``), 'dualtalk-npz' (DualTalk's exp + pose keys, returned in the dualtalk layout)."""
    if "motion" in arrays:
        return arrays["motion"], "array"
    if "expression_params" in arrays and "jaw_params" in arrays:
        exp, jaw = _flame_rows(path, arrays, "expression_params"), _flame_rows(path, arrays, "jaw_params")
        if exp.shape[1] < target.expression_dims or jaw.shape[1] < 1:
            raise PredictionError(f"{path}: expression_params needs >= {target.expression_dims} dims, has "
                                  f"{exp.shape[1]}")
        pose = None
        if target.pose is not None:
            if "pose_params" not in arrays:
                raise PredictionError(f"{path}: {target.width}-dim evaluation needs pose_params")
            pose = _flame_rows(path, arrays, "pose_params")
            if pose.shape[1] < 3:
                raise PredictionError(f"{path}: pose_params needs >= 3 dims (the neck), has {pose.shape[1]}")
        parts = [exp[:, :target.expression_dims], jaw[:, :1]] + ([] if pose is None else [pose[:, :3]])
        lengths = {len(x) for x in parts}
        if len(lengths) > 1:
            raise PredictionError(f"{path}: the FLAME keys disagree in length ({sorted(lengths)} frames)")
        return np.concatenate(parts, 1), "flame"
    if "exp" in arrays and "pose" in arrays:            # DualTalk's data files (dataset_train.py, metric.py)
        exp, pose = arrays["exp"], arrays["pose"]
        if exp.ndim != 2 or pose.ndim != 2 or exp.shape[1] < 50 or pose.shape[1] != 6 or len(exp) != len(pose):
            raise PredictionError(f"{path}: DualTalk npz needs exp (T, 50) and pose (T, 6) "
                                  f"(neck 3 ++ jaw 3), has exp {exp.shape}, pose {pose.shape}")
        return np.concatenate([exp[:, :50], pose[:, 3:6], pose[:, 0:3]], 1), "dualtalk-npz"
    raise PredictionError(f"{path}: no 'motion' key, nor 'expression_params'+'jaw_params', nor 'exp'+'pose' "
                          f"(keys: {sorted(arrays)})")


@dataclass
class ReadInfo:
    """How a prediction file was read: its layout, width, frame rate and frame counts."""
    layout: str                 # ours | dualtalk | dim | dim56 | flame (FLAME keys) | dualtalk-npz (exp + pose keys)
    width: int
    fps: float
    frames: int                 # in the file
    frames_out: int             # after resampling onto the ground truth's rate

    @property
    def key(self) -> str:
        return f"{self.layout}@{self.fps:g}fps"


def _decide_fps(path: Path, T: int, pred_fps, target_frames: int | None, target_fps: float,
                tolerance_s: float) -> float:
    """The prediction's frame rate: declared (checked against the ground truth's duration) or inferred."""
    if pred_fps is None:
        return target_fps
    auto = isinstance(pred_fps, str) and pred_fps == "auto"
    if not auto:
        try:
            pred_fps = float(pred_fps)
        except (TypeError, ValueError):
            raise PredictionError(f"pred_fps must be 'auto', None or a number, got {pred_fps!r}") from None
        if not pred_fps > 0:
            raise PredictionError(f"pred_fps must be positive, got {pred_fps}")
    if target_frames is None:
        if auto:
            raise PredictionError(f"{path}: pred_fps='auto' needs the ground truth's frame count")
        return pred_fps
    candidates = list(dict.fromkeys([float(target_fps), L.DUALTALK_FPS])) if auto else [pred_fps]
    fits, expect = [], []
    for f in candidates:
        n = L.resampled_length(target_frames, target_fps, f)
        tol = max(1, int(np.ceil(tolerance_s * f)))
        expect.append(f"{f:g} fps: {n} +- {tol}")
        if abs(T - n) <= tol:
            fits.append((abs(T - n) / f, f))
    duration = target_frames / target_fps
    if not fits:
        what = "fits neither rate" if auto else f"does not fit the declared {pred_fps:g} fps"
        raise PredictionError(f"{path}: frame count {T} {what} for the ground truth's {target_frames} frames "
                              f"at {target_fps:g} fps ({duration:.2f} s); expected {'; '.join(expect)} frames "
                              f"(tolerance {tolerance_s:g} s)")
    fits.sort()
    if len(fits) > 1 and fits[0][0] == fits[1][0]:
        raise PredictionError(f"{path}: frame count {T} fits {fits[0][1]:g} and {fits[1][1]:g} fps equally well; "
                              "declare the rate (pred_fps / --pred-fps)")
    return fits[0][1]


def read_prediction(path: str | Path, target: Layout | int, layout: str = "ours", pred_fps=None,
                    target_frames: int | None = None, target_fps: float = 30.0,
                    frame_tolerance_s: float = FRAME_TOLERANCE_S, return_info: bool = False):
    """(T, target.width) float64 in this system's layout ``target`` (or the default layout of that many dims)
    at ``target_fps``, with errors naming the file.

    ``layout``: the file's layout: 'ours' (default: a (T, target.width) array), 'dualtalk' (T, 56), 'dim'
    (T, 54), 'dim56' (T, 56), or 'auto' (by width: ours, 56 -> dualtalk, 54 -> dim); files with FLAME keys or
    DualTalk's exp + pose keys describe themselves. ``pred_fps``: None (default: the file is at ``target_fps``,
    length unchecked), a number (checked against ``target_frames`` within ``frame_tolerance_s``), or 'auto' (the
    ground truth's rate or DualTalk's 25 fps, whichever the frame count fits). Predictions at another rate are
    mapped onto the ground truth's frames by :func:`common.eval.external.resample_motion` (linear interpolation).
    With ``return_info`` returns ``(x, ReadInfo)``.
    """
    path = Path(path)
    try:
        dst = target if isinstance(target, Layout) else layout_for_dim(int(target))
    except LayoutError as e:
        raise PredictionError(f"{path}: {e}") from e
    raw, kind = _motion_array(path, open_prediction(path), dst)
    if raw.ndim != 2:
        raise PredictionError(f"{path}: motion has shape {raw.shape}, expected (T, D)")
    if not np.issubdtype(raw.dtype, np.number) or not np.isfinite(raw).all():
        raise PredictionError(f"{path}: motion holds non-numeric or NaN/Inf values")
    width = raw.shape[1]
    if kind == "flame":
        src, name = dst, "flame"
    elif kind == "dualtalk-npz":
        src, name = L.DUALTALK, "dualtalk-npz"
    elif layout == "auto":
        try:
            src = L.detect_layout(width, dst.width, dst.expression_dims)
        except LayoutError as e:
            raise PredictionError(f"{path}: motion has shape {raw.shape}: {e}") from e
        name = src.name
    else:
        try:
            src = L.get_layout(layout, dst.width, dst.expression_dims)
        except LayoutError as e:
            raise PredictionError(f"{path}: {e}") from e
        if width != src.width:
            fits = L.layouts_with_width(width, dst.width, dst.expression_dims)
            hint = (f"; width {width} is the {' / '.join(fits)} layout: declare that or 'auto'" if fits
                    else f"; width {width} is no known layout")
            raise PredictionError(f"{path}: motion has shape {raw.shape}, expected (T, {src.width}) for layout "
                                  f"{layout!r}{hint}")
        name = src.name
    try:
        x = L.convert(raw.astype(np.float64), src, dst)
    except LayoutError as e:
        raise PredictionError(f"{path}: {e}") from e
    T = len(x)
    fps = _decide_fps(path, T, pred_fps, target_frames, float(target_fps), frame_tolerance_s)
    if fps != float(target_fps):
        n = L.resampled_length(T, fps, target_fps)
        if target_frames is not None:
            n = min(n, int(target_frames))
        try:
            x = L.resample_motion(x, fps, target_fps, num_frames=n)
        except L.ResampleError as e:
            raise PredictionError(f"{path}: {e}") from e
    x = x.astype(np.float64)
    if return_info:
        return x, ReadInfo(name, width, float(fps), T, len(x))
    return x


def find_prediction(pred_dir: Path, dialog: str, participant: str, side: int | None = None) -> Path | None:
    """``P/<dialog>/<participant>.npz|.npy``, or (with ``side`` 0/1) DualTalk's flat naming
    ``P/<dialog>_speaker<side+1>.npy|.npz`` (speaker1 = the cache's first participant, as the DualTalk bridge
    exports them)."""
    pred_dir = Path(pred_dir)
    for ext in (".npz", ".npy"):
        p = pred_dir / dialog / f"{participant}{ext}"
        if p.is_file():
            return p
    if side is not None:
        for ext in (".npy", ".npz"):
            p = pred_dir / f"{dialog}_speaker{side + 1}{ext}"
            if p.is_file():
                return p
    return None
