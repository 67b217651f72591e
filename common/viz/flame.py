"""FLAME head model: a restricted model-file loader and the forward pass (numpy, vectorised over frames).

The FLAME model (https://flame.is.tue.mpg.de) is licensed and not shipped with this project. Users bring the
file they downloaded: ``generic_model.pkl`` (FLAME 2020) / ``flame2023.pkl``-style pickles, whose arrays may be
chumpy objects and whose ``J_regressor`` may be a scipy sparse matrix, or an ``.npz`` conversion holding the
same keys as plain arrays.

Pickles are read by :class:`RestrictedUnpickler`, which can rebuild numpy arrays, dtypes and scalars, plain
containers, and stand-ins for chumpy / scipy-sparse objects that only keep their array state. Every other
global a pickle names (``os.system``, ``builtins.eval``, any class) is refused with :class:`FlameModelError`
before anything runs: a model file cannot execute code. Neither chumpy nor scipy is imported.

Forward pass (as in the FLAME paper and its reference code)::

    v_shaped = template + shapedirs[..., :300] @ shape + shapedirs[..., 300:] @ expression
    J        = J_regressor @ v_shaped                                  (5 joints: global, neck, jaw, eye L, eye R)
    v_posed  = v_shaped + posedirs @ (R[1:] - I).ravel()              (pose-corrective blendshapes)
    vertices = sum_k weights[:, k] * G_k @ v_posed                   (linear blend skinning along kintree_table)
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from common.io import READ_ERRORS, read_npz_checked

FLAME_URL = "https://flame.is.tue.mpg.de"
NUM_SHAPE_DIRS = 300          # FLAME packs 300 identity + 100 expression directions in shapedirs (V, 3, 400)
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")


class FlameModelError(ValueError):
    """The FLAME model file is missing, unreadable, unsafe or not FLAME-shaped."""


# --------------------------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------------------------
class ArrayStandIn:
    """Stands in for a chumpy object (``chumpy.ch.Ch`` ...): keeps the pickled state, no behaviour."""

    _cls_name = "chumpy object"

    def __setstate__(self, state):
        self.state = state

    def to_array(self, key: str, depth: int = 0) -> np.ndarray:
        state = getattr(self, "state", None)
        if not isinstance(state, dict) or depth > 8:
            state = {}
        x = state.get("x")
        if isinstance(x, ArrayStandIn):
            return x.to_array(key, depth + 1)
        if isinstance(x, np.ndarray):
            return x
        if "a" in state and "idxs" in state:           # chumpy.reordering.Select: a.ravel()[idxs].reshape(...)
            a = state["a"]
            a = a.to_array(key, depth + 1) if isinstance(a, ArrayStandIn) else np.asarray(a)
            try:
                out = np.asarray(a).ravel()[np.asarray(state["idxs"], np.int64)]
                shape = state.get("preferred_shape")
                return out.reshape(tuple(shape)) if shape is not None else out
            except (IndexError, ValueError, TypeError) as e:
                raise FlameModelError(f"model key {key!r}: inconsistent chumpy Select ({e})") from e
        raise FlameModelError(f"model key {key!r} is a {self._cls_name} without an array value "
                              "(a derived chumpy expression); export the model with plain arrays (.npz)")


MAX_DENSE_ELEMENTS = 1 << 28          # a densified sparse matrix (its shape comes from the file): 2 GB of float64


class SparseStandIn:
    """Stands in for a scipy sparse CSC/CSR matrix: keeps data/indices/indptr/shape, densifies with numpy."""

    _format = "csc"

    def __setstate__(self, state):
        self.state = state

    def to_array(self, key: str) -> np.ndarray:
        s = getattr(self, "state", None)
        if not isinstance(s, dict):
            raise FlameModelError(f"model key {key!r}: sparse matrix without state")
        try:
            shape = tuple(int(n) for n in (s.get("_shape") or s.get("shape")))
            data, indices, indptr = (np.asarray(s[k]) for k in ("data", "indices", "indptr"))
        except (KeyError, TypeError, ValueError) as e:
            raise FlameModelError(f"model key {key!r}: sparse matrix state is incomplete ({e})") from e
        if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > MAX_DENSE_ELEMENTS:
            raise FlameModelError(f"model key {key!r}: sparse matrix shape {shape} is not 2-D of at most "
                                  f"{MAX_DENSE_ELEMENTS} elements (FLAME's J_regressor has 5 x 5023)")
        major = shape[1] if self._format == "csc" else shape[0]
        if len(indptr) != major + 1 or len(data) != len(indices) or (len(indptr) and indptr[-1] != len(data)):
            raise FlameModelError(f"model key {key!r}: inconsistent sparse {self._format} matrix")
        dense = np.zeros(shape, np.float64)
        counts = np.diff(indptr)
        if (counts < 0).any():
            raise FlameModelError(f"model key {key!r}: inconsistent sparse {self._format} matrix")
        major_idx = np.repeat(np.arange(major), counts)
        minor_bound = shape[0] if self._format == "csc" else shape[1]
        if len(indices) and (indices.min() < 0 or indices.max() >= minor_bound):
            raise FlameModelError(f"model key {key!r}: sparse indices out of range")
        if self._format == "csc":
            np.add.at(dense, (indices, major_idx), data)
        else:
            np.add.at(dense, (major_idx, indices), data)
        return dense


class CsrStandIn(SparseStandIn):
    _format = "csr"


def _safe_reconstructor(cls, base, state):
    """``copy_reg._reconstructor`` (protocol 0/1 pickles of plain objects), limited to the stand-ins."""
    if cls not in (ArrayStandIn, SparseStandIn, CsrStandIn) or base is not object or state is not None:
        raise FlameModelError(f"model pickle asks to rebuild {getattr(cls, '__name__', cls)!r} from "
                              f"{getattr(base, '__name__', base)!r}: refused (arrays only)")
    return object.__new__(cls)


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: only an argument of ``_reconstruct``, never constructible itself
    (the real ndarray constructor takes raw buffers, offsets and strides straight from the file)."""

    def __new__(cls, *args, **kwargs):
        raise FlameModelError("model pickle calls numpy.ndarray directly: refused (arrays only)")


def _safe_numpy_reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: an empty array that BUILD then fills from the file."""
    if subtype is not _NdarrayToken:
        raise FlameModelError(f"model pickle asks numpy to rebuild a {subtype!r}: refused (plain arrays only)")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _safe_codecs_encode(obj, encoding="utf-8", errors="strict"):
    """Python 3 pickles (protocol < 3) store bytes as ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(obj, str) or str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "utf8"):
        raise FlameModelError(f"model pickle asks for a {encoding!r} codec call: refused")
    return obj.encode(encoding, errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray as _ma, numeric as _num
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as _ma, numeric as _num  # type: ignore
    allowed = {
        ("numpy", "ndarray"): _NdarrayToken,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _safe_numpy_reconstruct
        allowed[(mod, "scalar")] = _ma.scalar
    if hasattr(_num, "_frombuffer"):
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(mod, "_frombuffer")] = _num._frombuffer
    return allowed


_CONTAINERS = {"object": object, "set": set, "frozenset": frozenset, "list": list, "tuple": tuple, "dict": dict,
               "bytearray": bytearray, "complex": complex}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds arrays and nothing else (see the module docstring)."""

    _allowed = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _numpy_globals()
        hit = self._allowed.get((module, name))
        if hit is not None:
            return hit
        if module in ("__builtin__", "builtins") and name in _CONTAINERS:
            return _CONTAINERS[name]
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        if module == "chumpy" or module.startswith("chumpy."):
            return ArrayStandIn
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csc_array"):
            return SparseStandIn
        if module.startswith("scipy.sparse") and name in ("csr_matrix", "csr_array"):
            return CsrStandIn
        raise FlameModelError(
            f"refusing to load {module}.{name} from the model pickle: FLAME model files hold arrays only, and this "
            "one names other code (possibly malicious). Use the FLAME file from " + FLAME_URL + " or an .npz "
            "conversion of it")


def restricted_pickle_load(data: bytes) -> Any:
    """Unpickle ``data`` allowing arrays only (Python 2 pickles are read with latin-1 strings)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except FlameModelError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError, KeyError,
            MemoryError) as e:
        raise FlameModelError(f"cannot unpickle the model ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------
def rodrigues(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3)."""
    aa = np.asarray(aa, np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)                    # (..., 1)
    safe = np.where(angle < 1e-12, 1.0, angle)
    k = aa / safe
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(aa.shape[:-1] + (3, 3))
    s = np.sin(angle)[..., None]
    c = np.cos(angle)[..., None]
    return np.eye(3) + s * K + (1.0 - c) * (K @ K)


class FlameModel:
    """FLAME arrays plus the forward pass. Build with :func:`load_flame_model` (or directly from arrays)."""

    def __init__(self, v_template, shapedirs, posedirs, J_regressor, kintree_table, weights, faces, source=""):
        self.source = str(source)
        self.v_template = _as_float(v_template, "v_template")
        V = self.v_template.shape[0]
        if self.v_template.ndim != 2 or self.v_template.shape[1] != 3 or V < 3:
            raise FlameModelError(f"v_template has shape {self.v_template.shape}, expected (V, 3)")
        self.shapedirs = _as_float(shapedirs, "shapedirs")
        if self.shapedirs.ndim != 3 or self.shapedirs.shape[:2] != (V, 3) or self.shapedirs.shape[2] <= NUM_SHAPE_DIRS:
            raise FlameModelError(f"shapedirs has shape {self.shapedirs.shape}, expected ({V}, 3, {NUM_SHAPE_DIRS} "
                                  "shape + expression directions), e.g. (V, 3, 400)")
        self.J_regressor = _as_float(J_regressor, "J_regressor")
        if self.J_regressor.ndim != 2 or self.J_regressor.shape[1] != V:
            raise FlameModelError(f"J_regressor has shape {self.J_regressor.shape}, expected (J, {V})")
        J = self.J_regressor.shape[0]
        kt = np.asarray(kintree_table)
        if kt.ndim != 2 or kt.shape != (2, J) or not np.issubdtype(kt.dtype, np.integer):
            raise FlameModelError(f"kintree_table has shape {kt.shape} dtype {kt.dtype}, expected integer (2, {J})")
        parents = kt[0].astype(np.int64)
        parents[0] = -1
        if J < 3 or any(not (0 <= parents[i] < i) for i in range(1, J)):
            raise FlameModelError(f"kintree_table parents {kt[0].tolist()} are not a tree rooted at joint 0 "
                                  "(parents before children); FLAME has 5 joints: global, neck, jaw, eyes")
        self.parents = parents
        self.weights = _as_float(weights, "weights")
        if self.weights.shape != (V, J):
            raise FlameModelError(f"weights has shape {self.weights.shape}, expected ({V}, {J})")
        pd = _as_float(posedirs, "posedirs")
        P = 9 * (J - 1)
        if pd.shape == (V, 3, P):
            pd = pd.reshape(V * 3, P)
        elif pd.shape == (P, V * 3):      # the smplx / PyTorch-FLAME layout
            pd = pd.T
        else:
            raise FlameModelError(f"posedirs has shape {pd.shape}, expected ({V}, 3, {P})")
        self.posedirs = np.ascontiguousarray(pd)                                  # (V*3, P)
        f = np.asarray(faces)
        if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer) or len(f) == 0:
            raise FlameModelError(f"f (faces) has shape {f.shape} dtype {f.dtype}, expected integer (F, 3)")
        if f.min() < 0 or f.max() >= V:
            raise FlameModelError(f"f (faces) index vertices outside 0..{V - 1}")
        self.faces = f.astype(np.int64)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return self.J_regressor.shape[0]

    @property
    def num_expression(self) -> int:
        return self.shapedirs.shape[2] - NUM_SHAPE_DIRS

    def vertices(self, shape, expression, jaw, neck=None, eyes=None, global_rot=None) -> np.ndarray:
        """Posed vertices (T, V, 3) float32.

        shape: (S,) identity coefficients (S <= 300, zero-padded); expression: (T, E) (E <= num_expression);
        jaw, neck, global_rot: (T, 3) axis-angle (None = zeros); eyes: (T, 6) (left, right) or None.
        """
        expression = np.asarray(expression, np.float64)
        if expression.ndim != 2:
            raise ValueError(f"expression must be (T, E), got {expression.shape}")
        T, E = expression.shape
        if E > self.num_expression:
            raise ValueError(f"expression has {E} coefficients; the model has {self.num_expression}")
        shape = np.asarray(shape, np.float64).reshape(-1)[:NUM_SHAPE_DIRS]
        V, J = self.num_vertices, self.num_joints

        def pose(x, width):
            if x is None:
                return np.zeros((T, width))
            x = np.asarray(x, np.float64).reshape(T, -1)
            if x.shape[1] != width:
                raise ValueError(f"pose parameter has {x.shape[1]} values per frame, expected {width}")
            return x

        v_id = self.v_template + np.einsum("vck,k->vc", self.shapedirs[:, :, :len(shape)], shape)
        exp_dirs = self.shapedirs[:, :, NUM_SHAPE_DIRS:NUM_SHAPE_DIRS + E].reshape(V * 3, E)
        v_shaped = v_id[None] + (expression @ exp_dirs.T).reshape(T, V, 3)              # (T, V, 3)
        joints = self.J_regressor @ v_shaped                                              # (T, J, 3)

        aa = np.zeros((T, J, 3))
        aa[:, 0] = pose(global_rot, 3)
        aa[:, 1] = pose(neck, 3)
        aa[:, 2] = pose(jaw, 3)
        if J >= 5:
            aa[:, 3:5] = pose(eyes, 6).reshape(T, 2, 3)
        R = rodrigues(aa)                                                                 # (T, J, 3, 3)
        pose_feature = (R[:, 1:] - np.eye(3)).reshape(T, -1)                              # (T, 9 (J-1))
        v_posed = v_shaped + (pose_feature @ self.posedirs.T).reshape(T, V, 3)

        # forward kinematics: world transforms G_k, then remove the rest-pose joint location
        G = np.zeros((T, J, 3, 4))
        G[:, 0, :, :3] = R[:, 0]
        G[:, 0, :, 3] = joints[:, 0]
        for k in range(1, J):
            p = self.parents[k]
            rel = joints[:, k] - joints[:, p]
            G[:, k, :, :3] = G[:, p, :, :3] @ R[:, k]
            G[:, k, :, 3] = (G[:, p, :, :3] @ rel[..., None])[..., 0] + G[:, p, :, 3]
        G[:, :, :, 3] -= (G[:, :, :, :3] @ joints[..., None])[..., 0]
        A = (self.weights @ G.reshape(T, J, 12)).reshape(T, V, 3, 4)                     # skinning transforms
        out = (A[..., 0] * v_posed[..., 0:1] + A[..., 1] * v_posed[..., 1:2] + A[..., 2] * v_posed[..., 2:3]
               + A[..., 3])
        return out.astype(np.float32)

    def neutral(self, shape=None) -> np.ndarray:
        """Rest-pose vertices (V, 3) of an identity (mean identity if None), no expression."""
        shape = np.zeros(0) if shape is None else np.asarray(shape)
        return self.vertices(shape, np.zeros((1, 0)), None)[0]


def _as_float(x, key: str) -> np.ndarray:
    if isinstance(x, (ArrayStandIn, SparseStandIn)):
        x = x.to_array(key)
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise FlameModelError(f"model key {key!r} is not an array of real numbers (dtype {a.dtype})")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise FlameModelError(f"model key {key!r} holds NaN/Inf")
    return a


def _resolve(value, key: str):
    if isinstance(value, (ArrayStandIn, SparseStandIn)):
        return value.to_array(key)
    return value


def load_flame_model(path: str | Path) -> FlameModel:
    """Read a FLAME model: ``.pkl`` (chumpy or plain, via :class:`RestrictedUnpickler`) or ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise FlameModelError(f"FLAME model file {path} not found (download FLAME from {FLAME_URL}, e.g. "
                              "FLAME2020/generic_model.pkl)")
    raw = path.read_bytes()
    if raw[:4] == b"PK\x03\x04":                                   # npz (a zip archive)
        try:
            data = read_npz_checked(path)           # every member's header checked before numpy allocates it
        except READ_ERRORS as e:
            raise FlameModelError(f"{path}: cannot read the .npz model ({type(e).__name__}: {str(e)[:300]}); "
                                  "object arrays are not accepted, store plain numeric arrays") from e
    else:
        data = restricted_pickle_load(raw)
        if not isinstance(data, dict):
            raise FlameModelError(f"{path}: the model pickle holds a {type(data).__name__}, expected a dict of arrays")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise FlameModelError(f"{path}: not a FLAME model, missing keys {missing} (has {sorted(map(str, data))})")
    try:
        return FlameModel(*(_resolve(data[k], k) for k in REQUIRED_KEYS), source=path)
    except FlameModelError as e:
        raise FlameModelError(f"{path}: {e}") from e


def save_flame_npz(model: FlameModel, path: str | Path) -> None:
    """Write ``model`` as a plain-array ``.npz`` (loads without any pickle)."""
    from common.io import atomic_path
    V = model.num_vertices
    kt = np.stack([model.parents, np.arange(model.num_joints)]).astype(np.int64)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, v_template=model.v_template, shapedirs=model.shapedirs,
                     posedirs=model.posedirs.reshape(V, 3, -1), J_regressor=model.J_regressor, kintree_table=kt,
                     weights=model.weights, f=model.faces)


def synthetic_flame_arrays(n_lat: int = 16, n_lon: int = 24, num_expression: int = 100, seed: int = 0,
                           ) -> dict[str, np.ndarray]:
    """Arrays of a FLAME-*structured* stand-in model (not a face): a head-sized ellipsoid with a mouth slit and a
    neck opening, whose lower front ("chin") hangs on the jaw joint, with smooth random shape/expression
    directions and small pose correctives.

    Same keys, shapes and conventions as FLAME (5 joints: global, neck, jaw, eye L, eye R; shapedirs (V, 3,
    300 + num_expression); posedirs (V, 3, 36); counter-clockwise outward faces), so tests and benchmarks can
    exercise the loader, the forward pass and the renderer without the licensed model. ``n_lat=72, n_lon=70``
    gives FLAME's size (about 5,000 vertices, 10,000 faces).
    """
    rng = np.random.default_rng(seed)
    theta = np.linspace(0.0, np.pi, n_lat)[1:-1]                # rings, top to bottom (poles added apart)
    phi = np.linspace(0.0, 2 * np.pi, n_lon, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    unit = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    unit = np.concatenate([[[0, 1, 0]], unit, [[0, -1, 0]]])   # +z faces the viewer, y up
    radii = np.array([0.075, 0.105, 0.09])
    v = unit * radii
    top, rings = 0, len(theta)

    def idx(i, j):
        return 1 + i * n_lon + j % n_lon
    # holes like FLAME's: a mouth slit between head and jaw (one ring of quads at the front, y ~ -0.035) and
    # the neck opening (the bottom cap)
    mouth_y = -0.035
    mouth_ring = int(np.argmin(np.abs(np.cos(theta) * radii[1] - mouth_y)))
    faces = []
    for j in range(n_lon):
        faces.append([top, idx(0, j), idx(0, j + 1)])
        for i in range(rings - 1):
            mid = (phi[j] + np.pi / n_lon + np.pi) % (2 * np.pi) - np.pi        # quad's longitude, 0 = front
            if i == mouth_ring and abs(np.sin(mid)) < 0.3 and np.cos(mid) > 0:
                continue
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    f = np.array(faces, np.int64)
    # orient counter-clockwise outward, like FLAME (the open surface still encloses a positive volume)
    if np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() < 0:
        f = f[:, ::-1].copy()
    v, unit = v[:-1], unit[:-1]                  # the bottom pole is unused (neck opening)
    V = len(v)

    def smooth_dirs(k: int, amp: float) -> np.ndarray:
        w = rng.normal(size=(k, 3)) * 3.0
        phase = rng.uniform(0, 2 * np.pi, size=k)
        s = np.sin(unit @ w.T + phase) * amp / (1.0 + 0.05 * np.arange(k))    # (V, k)
        return unit[:, :, None] * s[:, None, :]                                # along the normal
    shapedirs = np.concatenate([smooth_dirs(NUM_SHAPE_DIRS, 0.0015), smooth_dirs(num_expression, 0.002)], 2)
    posedirs = rng.normal(size=(V, 3, 36)) * 2e-5
    targets = np.array([[0, 0, 0], [0, -0.07, -0.01], [0, -0.02, 0.01], [0.03, 0.03, 0.07], [-0.03, 0.03, 0.07]])
    # regressor rows: vertex weights summing to 1 whose weighted mean is the target joint (linear in vertices)
    mean = v.mean(0)
    cov = (v - mean).T @ (v - mean) / V
    J_regressor = np.stack([(1 + (v - mean) @ np.linalg.solve(cov, t - mean)) / V for t in targets])
    jaw = 1 / (1 + np.exp((v[:, 1] - mouth_y) / 0.003)) * 1 / (1 + np.exp(-(v[:, 2] - 0.01) / 0.01))
    weights = np.zeros((V, 5))
    weights[:, 2] = jaw
    weights[:, 1] = 1 - jaw
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64)
    return {"v_template": v, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": J_regressor,
            "kintree_table": kintree, "weights": weights, "f": f.astype(np.uint32)}
