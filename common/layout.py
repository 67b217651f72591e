"""The motion layout and the conversational states: the one definition every room reads.

Motion is a per-frame vector of FLAME coefficients (``../shared/DATA_FORMAT.md``)::

    expression_params[:, 0, :E] ++ jaw_params[:, 0, :1]                      51 dims (E = 50, the default)
    expression_params[:, 0, :E] ++ jaw_params[:, 0, :1] ++ pose_params[:, 0, :3]   54 dims (neck pose on)

Its groups, scored and weighted apart, are ``exp``, ``jaw`` and ``pose`` (the neck pose: FLAME's
``pose_params``; DualTalk's metric calls it pose). A :class:`Layout` says where each group sits; the
preprocessing writes it into the cache manifest (``motion_layout``), the stages copy it into their artifacts,
and every reader takes it from there (:func:`layout_from_json`) instead of guessing from a width. External
baselines' layouts (DualTalk, DIM) are the same class, in :mod:`common.eval.external`.

States (``state.npy``, one int per frame): 0 idle, 1 listen, 2 speak, 3 crosstalk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

# --- conversational states ---------------------------------------------------------------------------------
IDLE, LISTEN, SPEAK, CROSSTALK = 0, 1, 2, 3
STATE_NAMES = {IDLE: "idle", LISTEN: "listen", SPEAK: "speak", CROSSTALK: "crosstalk"}
NUM_STATES = 4


def partner_state(state):
    """The partner's state for the same frame (listen <-> speak; idle and crosstalk coincide)."""
    return {IDLE: IDLE, LISTEN: SPEAK, SPEAK: LISTEN, CROSSTALK: CROSSTALK}[int(state)]


# --- the motion layout -------------------------------------------------------------------------------------
EXPRESSION_DIMS = 50        # expression coefficients modelled (of FLAME's 100)
NECK_DIMS = 3               # neck pose (pose_params) in 54-dim mode
SHAPE_DIMS = 100            # identity coefficients kept (of FLAME's 300)
FLAME_WIDTHS = {"expression_params": 100, "jaw_params": 3, "pose_params": 3, "shape_params": 300}
GROUPS = ("exp", "jaw", "pose")


class LayoutError(ValueError):
    pass


@dataclass(frozen=True)
class Layout:
    """Where expression, jaw and neck-pose dims sit in a (T, width) motion array (ranges ``[start, stop)``)."""
    name: str
    width: int
    exp: tuple[int, int]
    jaw: tuple[int, int]
    pose: tuple[int, int] | None = None
    description: str = ""

    @property
    def expression_dims(self) -> int:
        return self.exp[1] - self.exp[0]

    def groups(self) -> dict[str, tuple[int, int]]:
        """``{"exp": (a, b), "jaw": (a, b)[, "pose": (a, b)]}``."""
        out = {"exp": self.exp, "jaw": self.jaw}
        if self.pose is not None:
            out["pose"] = self.pose
        return out

    def slices(self) -> dict[str, slice]:
        return {k: slice(a, b) for k, (a, b) in self.groups().items()}

    def to_json(self) -> dict[str, list[int]]:
        """What the manifest and artifacts store as ``motion_layout``."""
        return {k: [int(a), int(b)] for k, (a, b) in self.groups().items()}

    def parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(exp, jaw, pose or None) views of a (T, width) array."""
        if x.ndim != 2 or x.shape[1] != self.width:
            raise LayoutError(f"layout {self.name!r} needs (T, {self.width}), got {x.shape}")
        exp = x[:, self.exp[0]:self.exp[1]]
        jaw = x[:, self.jaw[0]:self.jaw[1]]
        pose = None if self.pose is None else x[:, self.pose[0]:self.pose[1]]
        return exp, jaw, pose


def motion_layout(expression_dims: int = EXPRESSION_DIMS, neck_pose: bool = False) -> Layout:
    """This system's layout: ``exp[:E] ++ jaw[:1]`` (``++ neck[:3]`` with ``neck_pose``)."""
    e = int(expression_dims)
    if e < 1:
        raise LayoutError(f"expression_dims must be >= 1, got {e}")
    pose = (e + 1, e + 1 + NECK_DIMS) if neck_pose else None
    return Layout("ours", e + 1 + (NECK_DIMS if neck_pose else 0), (0, e), (e, e + 1), pose,
                  f"this system: exp[:{e}] ++ jaw[:1]" + (" ++ neck[:3]" if neck_pose else ""))


def layout_for_dim(motion_dim: int, expression_dims: int = EXPRESSION_DIMS) -> Layout:
    """This system's layout of ``motion_dim`` dims (E + 1, or E + 4 with the neck pose)."""
    e = int(expression_dims)
    if motion_dim not in (e + 1, e + 1 + NECK_DIMS):
        raise LayoutError(f"this system's motion is exp[:{e}] ++ jaw[:1] (++ neck[:3]): {e + 1} or "
                          f"{e + 1 + NECK_DIMS} dims, not {motion_dim}")
    return motion_layout(e, neck_pose=motion_dim == e + 1 + NECK_DIMS)


def layout_from_json(stored: Mapping | None, motion_dim: int | None = None) -> Layout:
    """The layout stored as ``motion_layout`` in a manifest or an artifact (older files without it: the
    default layout of ``motion_dim``)."""
    if stored:
        exp, jaw = stored["exp"], stored["jaw"]
        if int(exp[0]) != 0 or int(jaw[0]) != int(exp[1]) or int(jaw[1]) != int(jaw[0]) + 1:
            raise LayoutError(f"motion_layout {dict(stored)} is not exp[:E] ++ jaw[:1] (++ neck[:3])")
        pose = stored.get("pose") or stored.get("neck")
        lay = motion_layout(int(exp[1]), neck_pose=bool(pose))
        if motion_dim is not None and lay.width != int(motion_dim):
            raise LayoutError(f"motion_layout {dict(stored)} has {lay.width} dims, the data has {motion_dim}")
        return lay
    if motion_dim is None:
        raise LayoutError("no motion_layout stored and no motion_dim to fall back on")
    return layout_for_dim(int(motion_dim))


def motion_from_flame(expression: np.ndarray, jaw: np.ndarray, pose: np.ndarray | None, layout: Layout) -> np.ndarray:
    """(T, K) arrays of the FLAME keys (frame axis first, the ``1`` axis removed) -> (T, layout.width) float32."""
    parts = [expression[:, :layout.expression_dims], jaw[:, :1]]
    if layout.pose is not None:
        if pose is None:
            raise LayoutError("the 54-dim layout needs pose_params (the neck pose)")
        parts.append(pose[:, :NECK_DIMS])
    return np.concatenate(parts, axis=1).astype(np.float32)


def flame_arrays(motion: np.ndarray, layout: Layout, shape: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(T, D) motion -> the prediction-file keys: ``motion``, ``expression_params`` (T, 1, 100) zero-padded,
    ``jaw_params`` (T, 1, 3), ``pose_params`` (T, 1, 3) (neck; zeros when the layout has none), and
    ``shape_params`` (1, 1, 300) when the identity is known."""
    motion = np.asarray(motion, np.float32)
    exp_, jaw_, pose_ = layout.parts(motion)
    T = motion.shape[0]
    out = {"motion": motion}
    for key, part in (("expression_params", exp_), ("jaw_params", jaw_), ("pose_params", pose_)):
        full = np.zeros((T, 1, FLAME_WIDTHS[key]), np.float32)
        if part is not None:
            full[:, 0, :part.shape[1]] = part
        out[key] = full
    if shape is not None:
        sp = np.zeros((1, 1, FLAME_WIDTHS["shape_params"]), np.float32)
        s = np.asarray(shape, np.float32).reshape(-1)[:FLAME_WIDTHS["shape_params"]]
        sp[0, 0, :len(s)] = s
        out["shape_params"] = sp
    return out
