"""Motion layouts of this system and of external baselines, and the frame-rate resampler between them.

Every layout is a per-frame vector of FLAME coefficients; only the order and the number of dims differ
(docs/BASELINES.md gives each one's source in the baseline's code):

========== ===== ======================================================= ==========================================
name       width order                                                   source
========== ===== ======================================================= ==========================================
ours       51/54 exp[:50] ++ jaw[:1] (++ neck[:3] in 54-dim mode)        docs/ARCHITECTURE.md, DATA_FORMAT.md
dualtalk   56    exp[:50] ++ jaw[:3] ++ neck[:3]                         DualTalk metric/metric.py: ``pre[:, :50]``
                                                                         exp, ``pre[:, 50:53]`` jaw, ``pre[:, 53:]``
                                                                         pose; main.py ``cat(exp, jawpose, neck)``
dim        54    exp[:50] ++ jaw[:1] ++ neck[:3]                         this system's 54-dim mode, the layout the
                                                                         DIM bridge exports (docs/BASELINES.md)
dim56      56    neck[:3] ++ jaw[:3] ++ exp[:50]                         DIM's released code (vico_preprocessing.py
                                                                         ``concatenate([pose, exp])`` of EMOCA,
                                                                         emoca2flame.py ``pred[:, :6]`` pose,
                                                                         ``pred[:, -50:]`` exp); never auto-detected
========== ===== ======================================================= ==========================================

"neck" is FLAME's global/neck rotation (``pose_params``, EMOCA's ``pose[:3]``), "jaw" the jaw rotation
(``jaw_params``, EMOCA's ``pose[3:6]``); both axis-angle, radians. DualTalk's npz files store
``pose = neck(3) ++ jaw(3)`` (dataset_train.py: ``jawpose = pose[:, 3:]``, ``neck = pose[:, :3]``).

Resampling (:func:`resample_motion`) is linear interpolation in time, per dim: destination frame ``j`` sits at
time ``j / dst_fps`` (frame ``i`` of a sequence starts at ``i / fps``, the convention DualTalk uses when it
slices audio at ``int(i * frames / 25 * 16000)``), i.e. at source position ``p = j * src_fps / dst_fps``, and
takes ``x[floor(p)] * (1 - w) + x[floor(p) + 1] * w`` with ``w = p - floor(p)``. A destination frame that lies
past the last source frame (by less than one source frame: it happens at the end because
``round(T * dst / src)`` frames cover the same duration) continues the last segment's line (linear
extrapolation), so affine motion is reproduced exactly everywhere.

Error bound. Both interpolation and the end extrapolation reproduce affine sequences, so the error of any
composition ``R`` of them (e.g. the round trip 30 -> 25 -> 30 fps) is a linear function of the second
differences ``d2[c] = x[c+1] - 2 x[c] + x[c-1]``: ``(R x - x)[k] = sum_c G[k, c] d2[c]`` with
``G = (R - I) ramp_c``, ``ramp_c[t] = max(0, t - c)``. Hence, per frame and dim,

    |R x - x|[k] <= sum_c |G[k, c]| |d2[c]|        (:func:`roundtrip_error_bound`, exact kernel)
                 <= C * max_{|c - k| <= 1} |d2[c]|,     C = max_k sum_c |G[k, c]|

with C = 0.30 for 30 -> 25 -> 30 fps (:func:`roundtrip_constant`). For that round trip the kernel is in fact
diagonal (away from the last frame): ``roundtrip(x)[k] - x[k] = g[k mod 6] * d2[k]`` exactly, with
``g = (0, 1/6, 4/15, 3/10, 4/15, 1/6)`` (every 6th frame, where both grids meet, is reproduced exactly), so
the bound is attained and the round trip's mean squared error is ``mean(g^2) * mean(d2^2) = 0.048 * mean(d2^2)``
(at most ``C^2 = 0.09`` times it): a light smoothing of the frame-to-frame acceleration.
For a smooth signal f sampled at the source rate, one-way interpolation errs by at most h^2 / 8 * max|f''|
(h = one source frame), i.e. about max|d2| / 8 in frame units. Axis-angle dims (jaw, neck) are interpolated
linearly like every other dim: exact for rotations about a fixed axis and close to geodesic (slerp)
interpolation for small angles; on the synthetic corpus (angles up to 0.29 rad, steps up to 0.25 rad per
frame) linear and slerp interpolation between consecutive frames differ by at most 1.6e-5 rad.
"""
from __future__ import annotations

import numpy as np

from common.layout import EXPRESSION_DIMS, Layout, LayoutError, layout_for_dim

BASELINE_EXP_DIMS = 50             # DualTalk and DIM model expression[:50]
DUALTALK_FPS = 25.0
DIM_FPS = 30.0
EXPORT_SAMPLE_RATE = 16000
LAYOUT_NAMES = ("ours", "dualtalk", "dim", "dim56")
AUTO_LAYOUTS = ("ours", "dualtalk", "dim")        # dim56 has DualTalk's width: only taken when declared


class ResampleError(ValueError):
    pass


DUALTALK = Layout("dualtalk", 56, (0, 50), (50, 53), (53, 56),
                  "DualTalk: exp[:50] ++ jaw[:3] ++ neck[:3] (metric/metric.py)")
DIM = Layout("dim", 54, (0, 50), (50, 51), (51, 54), "DIM bridge: exp[:50] ++ jaw[:1] ++ neck[:3]")
DIM56 = Layout("dim56", 56, (6, 56), (3, 6), (0, 3),
               "DIM code: EMOCA pose (neck[:3] ++ jaw[:3]) ++ exp[:50] (vico_preprocessing.py)")


def get_layout(name: str, motion_dim: int = 51, exp_dims: int = EXPRESSION_DIMS) -> Layout:
    """The layout called ``name``; ``ours`` depends on the cache's motion_dim / expression dims."""
    if name == "ours":
        return layout_for_dim(motion_dim, exp_dims)
    table = {"dualtalk": DUALTALK, "dim": DIM, "dim56": DIM56}
    if name not in table:
        raise LayoutError(f"unknown layout {name!r}; known: {', '.join(LAYOUT_NAMES)} (or auto)")
    return table[name]


def detect_layout(width: int, motion_dim: int = 51, exp_dims: int = EXPRESSION_DIMS) -> Layout:
    """Layout of a (T, width) array by its width: motion_dim -> ours, 56 -> dualtalk, 54 -> dim."""
    if width == motion_dim:
        return layout_for_dim(motion_dim, exp_dims)
    for name in ("dualtalk", "dim"):
        lay = get_layout(name)
        if lay.width == width:
            return lay
    known = sorted({motion_dim, DUALTALK.width, DIM.width})
    raise LayoutError(f"width {width} matches no known layout (ours {motion_dim}, dualtalk 56, dim 54; "
                      f"accepted widths {known})")


def layouts_with_width(width: int, motion_dim: int = 51, exp_dims: int = EXPRESSION_DIMS) -> list[str]:
    out = []
    for name in LAYOUT_NAMES:
        try:
            if get_layout(name, motion_dim, exp_dims).width == width:
                out.append(name)
        except LayoutError:
            pass
    return out


def convert(x: np.ndarray, src: Layout, dst: Layout, fill_missing: bool = False) -> np.ndarray:
    """Re-order ``x`` (T, src.width) into ``dst``; extra jaw/neck dims are dropped, missing ones are an error
    (or zeros with ``fill_missing``)."""
    exp, jaw, pose = src.parts(np.asarray(x))
    T = len(exp)
    dexp = dst.exp[1] - dst.exp[0]
    djaw = dst.jaw[1] - dst.jaw[0]
    if exp.shape[1] < dexp:
        raise LayoutError(f"layout {src.name!r} has {exp.shape[1]} expression dims, {dst.name!r} needs {dexp}")
    out = np.zeros((T, dst.width), dtype=np.result_type(x.dtype, np.float32))
    out[:, dst.exp[0]:dst.exp[1]] = exp[:, :dexp]
    if jaw.shape[1] >= djaw:
        out[:, dst.jaw[0]:dst.jaw[1]] = jaw[:, :djaw]
    elif fill_missing:
        out[:, dst.jaw[0]:dst.jaw[0] + jaw.shape[1]] = jaw
    else:
        raise LayoutError(f"layout {src.name!r} has {jaw.shape[1]} jaw dims, {dst.name!r} needs {djaw}")
    if dst.pose is not None:
        if pose is not None:
            out[:, dst.pose[0]:dst.pose[1]] = pose
        elif not fill_missing:
            raise LayoutError(f"layout {src.name!r} has no neck pose, {dst.name!r} needs it "
                              "(a 54-dim cache scores the neck)")
    return out


# --- resampling --------------------------------------------------------------------------------------------
def resampled_length(num_frames: int, src_fps: float, dst_fps: float) -> int:
    """Frames at ``dst_fps`` covering the duration of ``num_frames`` at ``src_fps`` (round half up)."""
    return int(np.floor(num_frames * float(dst_fps) / float(src_fps) + 0.5))


def resample_motion(x: np.ndarray, src_fps: float, dst_fps: float, num_frames: int | None = None) -> np.ndarray:
    """Linear interpolation in time of (T, D) ``x`` from ``src_fps`` to ``dst_fps`` (see the module docstring).

    ``num_frames`` defaults to :func:`resampled_length`; destination frames may lie at most one source frame
    past the last one (linear extrapolation of the last segment), further is a :class:`ResampleError`.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ResampleError(f"resample_motion needs (T, D), got {x.shape}")
    src_fps, dst_fps = float(src_fps), float(dst_fps)
    if not (src_fps > 0 and dst_fps > 0):
        raise ResampleError(f"frame rates must be positive, got {src_fps} -> {dst_fps}")
    T = len(x)
    n = resampled_length(T, src_fps, dst_fps) if num_frames is None else int(num_frames)
    if n < 0:
        raise ResampleError(f"num_frames must be >= 0, got {n}")
    if n == 0:
        return x[:0].copy()
    if T == 0:
        raise ResampleError("cannot resample an empty sequence")
    pos = np.arange(n, dtype=np.float64) * src_fps / dst_fps
    over = pos[-1] - (T - 1)
    if over > 1.0 + 1e-9:
        raise ResampleError(f"{n} frames at {dst_fps:g} fps need {pos[-1] + 1:.2f} source frames at {src_fps:g} "
                            f"fps, the sequence has {T} (more than one frame of extrapolation)")
    if T == 1:
        return np.repeat(x, n, axis=0)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, T - 2)
    w = (pos - lo)[:, None]                 # in [0, 1] inside, up to 2 on the extrapolated last segment
    out = x[lo].astype(np.float64) * (1.0 - w) + x[lo + 1].astype(np.float64) * w
    return out.astype(np.result_type(x.dtype, np.float32), copy=False)


def _second_differences(x: np.ndarray) -> np.ndarray:
    d2 = np.zeros_like(x, dtype=np.float64)
    if len(x) >= 3:
        d2[1:-1] = x[2:] - 2.0 * x[1:-1] + x[:-2]
    return d2


def roundtrip_kernel(num_frames: int, fps: float, via_fps: float) -> np.ndarray:
    """(T, T) kernel G with ``roundtrip(x) - x = G @ d2(x)`` for ``fps -> via_fps -> fps`` on T frames.

    Dense: O(T^2) memory (meant for checks and tests on sequences up to a few thousand frames).
    """
    T = int(num_frames)
    t = np.arange(T, dtype=np.float64)[:, None]
    c = np.arange(T, dtype=np.float64)[None, :]
    ramps = np.maximum(0.0, t - c)          # column c: ramp starting at frame c (d2 = 1 at c, 0 elsewhere)
    ramps[:, 0] = 0.0
    if T > 1:
        ramps[:, T - 1] = 0.0
    back = resample_motion(resample_motion(ramps, fps, via_fps), via_fps, fps, num_frames=T)
    return back - ramps


def roundtrip_error_bound(x: np.ndarray, fps: float, via_fps: float) -> np.ndarray:
    """Per-frame, per-dim bound on ``|roundtrip(x) - x|`` for ``fps -> via_fps -> fps`` (module docstring)."""
    x = np.asarray(x, np.float64)
    G = roundtrip_kernel(len(x), fps, via_fps)
    return np.abs(G) @ np.abs(_second_differences(x))


def roundtrip_constant(fps: float = 30.0, via_fps: float = DUALTALK_FPS, num_frames: int = 120) -> float:
    """C = max_k sum_c |G[k, c]|: the round trip errs by at most C times the largest nearby |second difference|."""
    return float(np.abs(roundtrip_kernel(num_frames, fps, via_fps)).sum(1).max())


def roundtrip(x: np.ndarray, fps: float, via_fps: float) -> np.ndarray:
    """``fps -> via_fps -> fps`` on the same number of frames (what a baseline bridge does to ground truth)."""
    x = np.asarray(x)
    return resample_motion(resample_motion(x, fps, via_fps), via_fps, fps, num_frames=len(x))
