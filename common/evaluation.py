"""Score directories of predictions (any method) against the cache's ground truth; compare methods with CIs.

Prediction layout: ``P/<dialog>/<participant>.npz`` (key ``motion`` (T, D), or FLAME keys ``expression_params``
(T, 1, >=50) and ``jaw_params`` (T, 1, >=1) [+ ``pose_params`` in 54-dim mode], or DualTalk's ``exp`` (T, 50) and
``pose`` (T, 6)) or ``P/<dialog>/<participant>.npy`` (T, D); DualTalk's flat ``P/<dialog>_speaker{1,2}.npy`` too.
Baselines' layouts (DualTalk (T, 56), DIM (T, 54), ...; ``common.layouts``) and frame rates (25 or 30 fps) are
read with ``layout`` / ``pred_fps`` and mapped onto the ground truth's frames (docs/BASELINES.md).
Missing and malformed files are reported by name.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import layouts as L
from . import metrics as M
from .cache import Cache

# the columns of the comparison table, in order
TABLE_KEYS = ["fid_exp", "p_fid_exp", "mse_exp", "sid_exp", "rpcc_exp", "fid_jaw", "p_fid_jaw", "mse_jaw",
              "rpcc_jaw", "p_fid_exp@listen", "mse_exp@listen", "mse_jaw@speak", "jaw_speech_r"]


# columns where higher is better (SID: diversity of the truth under the prediction's clusters, DualTalk's ↑)
HIGHER_IS_BETTER = ("sid_", "jaw_speech_r")


class PredictionError(ValueError):
    pass


FRAME_TOLERANCE_S = 0.25    # a prediction's duration may differ from the ground truth's by this much


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


def _load_array(path: Path, motion_dim: int) -> tuple[np.ndarray, str]:
    """The file's motion array and its kind: 'array' (layout given by its width), 'flame' (already ours),
    'dualtalk-npz' (DualTalk's exp + pose keys, returned in the dualtalk layout)."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), "array"
    with np.load(path, allow_pickle=False) as z:
        if "motion" in z.files:
            return z["motion"], "array"
        if "expression_params" in z.files and "jaw_params" in z.files:
            exp, jaw = z["expression_params"], z["jaw_params"]
            exp = exp.reshape(len(exp), -1)
            jaw = jaw.reshape(len(jaw), -1)
            parts = [exp[:, :50], jaw[:, :1]]
            if motion_dim == 54:
                if "pose_params" not in z.files:
                    raise PredictionError(f"{path}: 54-dim evaluation needs pose_params")
                parts.append(z["pose_params"].reshape(len(exp), -1)[:, :3])
            if exp.shape[1] < 50 or jaw.shape[1] < 1:
                raise PredictionError(f"{path}: expression_params needs >= 50 dims, has {exp.shape[1]}")
            return np.concatenate(parts, 1), "flame"
        if "exp" in z.files and "pose" in z.files:      # DualTalk's data files (dataset_train.py, metric.py)
            exp, pose = z["exp"], z["pose"]
            if exp.ndim != 2 or pose.ndim != 2 or exp.shape[1] < 50 or pose.shape[1] != 6 or len(exp) != len(pose):
                raise PredictionError(f"{path}: DualTalk npz needs exp (T, 50) and pose (T, 6) "
                                      f"(neck 3 ++ jaw 3), has exp {exp.shape}, pose {pose.shape}")
            return np.concatenate([exp[:, :50], pose[:, 3:6], pose[:, 0:3]], 1), "dualtalk-npz"
        raise PredictionError(f"{path}: no 'motion' key, nor 'expression_params'+'jaw_params', nor 'exp'+'pose' "
                              f"(keys: {sorted(z.files)})")


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


def read_prediction(path: Path, motion_dim: int, layout: str = "ours", pred_fps=None,
                    target_frames: int | None = None, target_fps: float = 30.0,
                    frame_tolerance_s: float = FRAME_TOLERANCE_S, exp_dims: int = 50,
                    return_info: bool = False):
    """(T, motion_dim) float64 in this system's layout at ``target_fps``, with errors naming the file.

    ``layout``: 'ours' (default: a (T, motion_dim) array), 'dualtalk' (T, 56), 'dim' (T, 54), 'dim56' (T, 56),
    or 'auto' (by width: motion_dim -> ours, 56 -> dualtalk, 54 -> dim); files with FLAME keys or DualTalk's
    exp + pose keys describe themselves. ``pred_fps``: None (default: the file is at ``target_fps``, length
    unchecked), a number (checked against ``target_frames`` within ``frame_tolerance_s``), or 'auto' (the
    ground truth's rate or DualTalk's 25 fps, whichever the frame count fits). Predictions at another rate are
    mapped onto the ground truth's frames by :func:`common.layouts.resample_motion` (linear interpolation).
    With ``return_info`` returns ``(x, ReadInfo)``.
    """
    path = Path(path)
    try:
        raw, kind = _load_array(path, motion_dim)
    except PredictionError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise PredictionError(f"{path}: unreadable prediction ({e})") from e
    if raw.ndim != 2:
        raise PredictionError(f"{path}: motion has shape {raw.shape}, expected (T, D)")
    if not np.issubdtype(raw.dtype, np.number) or not np.isfinite(raw).all():
        raise PredictionError(f"{path}: motion holds non-numeric or NaN/Inf values")
    try:
        dst = L.ours(motion_dim, exp_dims)
    except L.LayoutError as e:
        raise PredictionError(f"{path}: {e}") from e
    width = raw.shape[1]
    if kind == "flame":
        src, name = dst, "flame"
    elif kind == "dualtalk-npz":
        src, name = L.DUALTALK, "dualtalk-npz"
    elif layout == "auto":
        try:
            src = L.detect_layout(width, motion_dim, exp_dims)
        except L.LayoutError as e:
            raise PredictionError(f"{path}: motion has shape {raw.shape}: {e}") from e
        name = src.name
    else:
        try:
            src = L.get_layout(layout, motion_dim, exp_dims)
        except L.LayoutError as e:
            raise PredictionError(f"{path}: {e}") from e
        if width != src.width:
            fits = L.layouts_with_width(width, motion_dim, exp_dims)
            hint = (f"; width {width} is the {' / '.join(fits)} layout: declare that or 'auto'" if fits
                    else f"; width {width} is no known layout")
            raise PredictionError(f"{path}: motion has shape {raw.shape}, expected (T, {src.width}) for layout "
                                  f"{layout!r}{hint}")
        name = src.name
    try:
        x = L.convert(raw.astype(np.float64), src, dst)
    except L.LayoutError as e:
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


@dataclass
class MethodResult:
    name: str
    metrics: dict[str, float]
    ci: dict[str, list[float]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    n_sequences: int = 0
    layout: str = "ours"            # the layout every file was read as ("mixed" when they differ)
    pred_fps: float | None = None   # their frame rate (None when mixed)
    read_as: dict[str, int] = field(default_factory=dict)   # "<layout>@<fps>fps" -> number of files

    def describe_reading(self) -> str:
        return ", ".join(f"{n} as {k}" for k, n in sorted(self.read_as.items()))


def evaluate_method(cache: Cache, pred_dir: str | Path, split: str = "test", name: str | None = None,
                    n_boot: int = 1000, allow_missing: bool = False, layout: str = "ours", pred_fps=None,
                    frame_tolerance_s: float = FRAME_TOLERANCE_S) -> MethodResult:
    """Score one method's prediction folder. ``layout`` / ``pred_fps`` / ``frame_tolerance_s``: see
    :func:`read_prediction` (defaults: this system's layout at the cache's rate, lengths unchecked)."""
    pred_dir = Path(pred_dir)
    exp_dims = _exp_dims(cache)
    read_as: dict[str, int] = {}
    name = name or pred_dir.name
    preds, gts, partners, states, energies, dialog_of = [], [], [], [], [], []
    missing, errors = [], []
    for d in cache.dialogs(split):
        a = cache.load(d["id"])
        for i, pid in enumerate(d["participants"]):
            path = find_prediction(pred_dir, d["id"], pid, side=i)
            if path is None:
                missing.append(f"{d['id']}/{pid}")
                continue
            try:
                x, info = read_prediction(path, cache.motion_dim, layout=layout, pred_fps=pred_fps,
                                          target_frames=int(a.motion.shape[1]), target_fps=cache.fps,
                                          frame_tolerance_s=frame_tolerance_s, exp_dims=exp_dims,
                                          return_info=True)
            except PredictionError as e:
                errors.append(str(e))
                continue
            read_as[info.key] = read_as.get(info.key, 0) + 1
            preds.append(x)
            gts.append(np.asarray(a.motion[i], np.float64))
            partners.append(np.asarray(a.motion[1 - i], np.float64))
            states.append(np.asarray(a.states[i]))
            energies.append(np.asarray(a.audio[i], np.float64).mean(1))
            dialog_of.append(d["id"])
    if errors or (missing and not allow_missing):
        problems = [f"malformed: {e}" for e in errors] + [f"missing: {pred_dir}/{m}.npz" for m in missing]
        raise PredictionError(f"method {name}: {len(errors)} malformed and {len(missing)} missing predictions:\n  "
                              + "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else ""))
    if not preds:
        raise PredictionError(f"method {name}: no prediction found in {pred_dir} for split {split!r}")
    result = M.evaluate_sequences(preds, gts, partners, states=states)
    per = M.per_sequence_metrics(preds, gts, partners)
    jaw = cache.manifest.get("motion_layout", {}).get("jaw", [50, 51])[0]
    jr = [M.jaw_speech_correlation(p[:len(e), jaw], e) for p, e in zip(preds, energies)]
    jr_gt = [M.jaw_speech_correlation(g[:len(e), jaw], e) for g, e in zip(gts, energies)]
    result["jaw_speech_r"] = float(np.mean(jr))
    result["jaw_speech_r_gt"] = float(np.mean(jr_gt))
    for s, v in zip(per, jr):
        s["jaw_speech_r"] = v
    # CIs over dialogs: average the sequences of each dialog, bootstrap the dialog means
    ci = {}
    dialogs = sorted(set(dialog_of))
    for k in per[0]:
        by_dialog = [np.mean([s[k] for s, dd in zip(per, dialog_of) if dd == d]) for d in dialogs]
        ci[k] = list(M.bootstrap_ci(by_dialog, n_boot=n_boot))
    layouts = {k.split("@")[0] for k in read_as}
    rates = {float(k.split("@")[1][:-3]) for k in read_as}
    return MethodResult(name, result, ci, missing, errors, len(preds),
                        layout=layouts.pop() if len(layouts) == 1 else "mixed",
                        pred_fps=rates.pop() if len(rates) == 1 else None, read_as=read_as)


def _exp_dims(cache: Cache) -> int:
    lay = cache.manifest.get("motion_layout", {}).get("exp")
    return int(lay[1] - lay[0]) if lay else 50


def markdown_table(results: list[MethodResult], keys: list[str] = TABLE_KEYS) -> str:
    keys = [k for k in keys if any(k in r.metrics for r in results)]
    head = "| method | " + " | ".join(keys) + " |"
    lines = [head, "|" + " --- |" * (len(keys) + 1)]
    best = {}
    for k in keys:
        vals = [r.metrics[k] for r in results if k in r.metrics]
        vals = [v for v in vals if np.isfinite(v)]
        best[k] = (max(vals) if k.startswith(HIGHER_IS_BETTER) else min(vals)) if vals else None
    for r in results:
        cells = []
        for k in keys:
            if k not in r.metrics:
                cells.append("—")
                continue
            v = r.metrics[k]
            s = f"{v:.4g}"
            if k in r.ci:
                s += f" [{r.ci[k][1]:.3g}, {r.ci[k][2]:.3g}]"
            cells.append(f"**{s}**" if v == best[k] and len(results) > 1 else s)
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    gt = [r.metrics.get("jaw_speech_r_gt") for r in results if "jaw_speech_r_gt" in r.metrics]
    if gt:
        lines.append("")
        lines.append(f"Ground truth jaw-speech correlation: {gt[0]:.3g}. Lower is better for every column but "
                     "sid and jaw_speech_r (higher is better; best in bold). `@listen` / `@speak`: frames where the generated person "
                     "listens / speaks. Brackets: bootstrap 95% CI over dialogs.")
    return "\n".join(lines)
