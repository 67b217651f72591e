"""One evaluation suite for every method: the DualTalk metrics, exact, plus dataset-level, per-state and CIs.

Per sequence (prediction, ground truth and the partner's ground truth, truncated to the shortest of the three),
for each dimension group g (``exp`` = 0..49, ``jaw`` = 50, ``pose`` = 51..53 in 54-dim mode; DualTalk's own
56-dim layout is known too), then the plain mean over sequences, as DualTalk's scorer ``metric/metric.py`` does:

- ``fid_g``   Frechet distance between Gaussian fits (mean, ``np.cov(rowvar=False)``) of prediction and truth;
- ``p_fid_g`` the same on ``[partner, truth]`` vs ``[partner, prediction]`` concatenated per frame;
- ``mse_g``   mean squared error;
- ``sid_g``   KMeans(k, random_state=0, n_init="auto") fitted on the *prediction*, the truth assigned to it,
              entropy in bits of the histogram (``+1e-6`` in the log); k = 40 for exp, 10 for jaw and pose;
- ``rpcc_g``  |pcc(truth, partner) - pcc(prediction, partner)|, one Pearson r over all flattened values;
- ``sts_g``   the reference's velocity-difference norm sqrt(sum((dpred - dgt)^2) / 0.1);
- ``var_pred_g`` / ``var_gt_g``: mean per-dim variance over time; ``div_pred_g`` / ``div_gt_g``: mean distance
  between 100 random frame pairs (seeded here).

Beside them, references a realistic method should match rather than minimise (each next to the ground truth's
own value): ``sid_gt_g`` (the truth's SID against its own clusters), smoothness ``vel_pred_g`` / ``vel_gt_g`` and
``acc_pred_g`` / ``acc_gt_g`` (mean absolute velocity and acceleration), and, given the person's own states,
``listen_effect_g`` / ``listen_effect_gt_g`` (:func:`listener_effect`; NaN-skipping mean over sequences).

:func:`evaluate_dataset` gives the ``ds_*`` variants (statistics over the concatenation of all sequences);
:func:`evaluate_by_state` the ``<key>@<state>`` breakdowns (frames where the generated person is in that state,
pooled over sequences, only where enough frames exist); :func:`evaluate_sequences` returns all of them and, with
``return_per_sequence=True``, the per-sequence values for :func:`bootstrap_ci`. See docs/METRICS.md.

Arrays are scored in their own floating dtype (float32 stays float32, as in the reference, which reads float32
files); integer input is converted to float64.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Mapping, Sequence

import numpy as np
from scipy import linalg

from common.eval.external import DUALTALK
from common.layout import LISTEN, SPEAK, STATE_NAMES, LayoutError, layout_for_dim

SID_CLUSTERS = {"exp": 40, "jaw": 10, "pose": 10}
DIVERSITY_PAIRS = 100          # the reference's diversity_times
STS_TIMESTEP = 0.1             # the reference's sts(..., timestep=0.1)
FD_EPS = 1e-6                  # pytorch-fid's fallback offset, as in the reference

Group = slice | Sequence[int]

# BLAS / OpenMP threads while scoring. The matrices are small (<= 112 x 112) and KMeans runs on a few thousand
# frames: one thread is as fast, and on busy or small machines OpenBLAS' thread pool was seen 100x slower
# (0.5 s per 100 x 100 sqrtm). None leaves the libraries' defaults. Results agree to rounding.
NUM_THREADS: int | None = 1


def _limited_threads(fn):
    """Run a public entry point under ``threadpool_limits(NUM_THREADS)`` (when threadpoolctl is installed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = contextlib.nullcontext()
        if NUM_THREADS is not None:
            try:
                from threadpoolctl import threadpool_limits
                ctx = threadpool_limits(NUM_THREADS)
            except ImportError:
                pass
        with ctx:
            return fn(*args, **kwargs)
    return wrapper


def default_groups(dim: int) -> dict[str, slice]:
    """The groups of this system's default layout of ``dim`` dims (``exp`` 0..49, ``jaw`` 50, + ``pose`` 51..53
    with the neck pose: :mod:`common.layout`), or of DualTalk's own (T, 56) layout."""
    if dim == DUALTALK.width:
        return DUALTALK.slices()
    try:
        return layout_for_dim(dim).slices()
    except LayoutError:
        raise ValueError(f"no default metric groups for {dim}-dim motion (51, 54 or DualTalk's 56); "
                         "pass groups=") from None


# --- the statistics (DualTalk's formulas) -----------------------------------------------------------------
def gaussian_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = FD_EPS) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)); eps*I added to both covariances if the root is not finite."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Frechet distance: shapes differ (means {mu1.shape} vs {mu2.shape}, covariances "
                         f"{sigma1.shape} vs {sigma2.shape})")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "singular matrix" chatter; the finiteness test decides
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(pred: np.ndarray, gt: np.ndarray) -> float:
    """FD between Gaussian fits of the predicted and the true frames (prediction first, as the reference)."""
    return frechet_distance(*gaussian_fit(pred), *gaussian_fit(gt))


def paired_fid(pred: np.ndarray, gt: np.ndarray, partner: np.ndarray) -> float:
    """FD between the joint fits of ``[partner, truth]`` and ``[partner, prediction]`` (truth first)."""
    return frechet_distance(*gaussian_fit(np.concatenate([partner, gt], axis=-1)),
                            *gaussian_fit(np.concatenate([partner, pred], axis=-1)))


def mse(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean((pred - gt) ** 2))


def sid(pred: np.ndarray, gt: np.ndarray, k: int) -> float:
    """Entropy (bits) of the truth's histogram over k KMeans clusters fitted on the prediction."""
    from sklearn.cluster import KMeans
    if len(pred) < k:
        raise ValueError(f"SID needs at least k={k} predicted frames, got {len(pred)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ConvergenceWarning on degenerate (constant) predictions
        labels = KMeans(n_clusters=k, random_state=0, n_init="auto").fit(pred).predict(gt)
    hist = np.bincount(labels, minlength=k) / len(labels)
    return float(-np.sum(hist * np.log2(hist + 1e-6)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of all values (flattened); NaN when either side is constant (as in the reference)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.corrcoef(a.reshape(-1), b.reshape(-1))[0, 1])


def rpcc(pred: np.ndarray, gt: np.ndarray, partner: np.ndarray) -> float:
    """|r(truth, partner) - r(prediction, partner)|."""
    return abs(pearson(gt, partner) - pearson(pred, partner))


def sts(pred: np.ndarray, gt: np.ndarray, timestep: float = STS_TIMESTEP) -> float:
    """The reference's ``sts``: sqrt(sum over frames and dims of (d pred - d gt)^2 / timestep)."""
    d = np.diff(pred, axis=0) - np.diff(gt, axis=0)
    return float(np.sqrt(np.sum(d ** 2 / timestep)))


def variance(x: np.ndarray) -> float:
    """Mean over dims of the variance over time (the reference's ``calculate_variance``)."""
    return float(np.mean(np.var(x, axis=0)))


def diversity(x: np.ndarray, pairs: int = DIVERSITY_PAIRS, seed: int = 0) -> float:
    """Mean distance between ``pairs`` random frame pairs (the reference's ``calculate_diversity``).

    Sampled as the reference does (two ``choice(n, pairs, replace=False)`` draws of the legacy generator), but
    from ``RandomState(seed)`` so it repeats. The reference asserts ``n > pairs``; here shorter inputs use
    ``max(1, n // 2)`` pairs."""
    n = len(x)
    if n <= pairs:
        pairs = max(1, n // 2)
    rng = np.random.RandomState(seed)
    i = rng.choice(n, pairs, replace=False)
    j = rng.choice(n, pairs, replace=False)
    return float(np.linalg.norm(x[i] - x[j], axis=1).mean())


def smoothness(x: np.ndarray) -> tuple[float, float]:
    """(mean absolute velocity, mean absolute acceleration) per frame, over time and dims: token models tend
    to add high-frequency wiggle (both up), regressors to over-smooth (both down) — the DualTalk metrics see
    neither. Compare with the ground truth's own values."""
    x = np.asarray(x, np.float64)
    vel = float(np.abs(np.diff(x, axis=0)).mean()) if len(x) > 1 else 0.0
    acc = float(np.abs(np.diff(x, n=2, axis=0)).mean()) if len(x) > 2 else 0.0
    return vel, acc


LISTEN_EFFECT_MIN_FRAMES = 15       # frames of each state a sequence needs for its listener effect


def listener_effect(x: np.ndarray, states: np.ndarray, min_frames: int = LISTEN_EFFECT_MIN_FRAMES) -> float:
    """How a person's face differs while the partner speaks (own state LISTEN) from while they speak (SPEAK):
    the RMS over dims of ``mean(x[listen]) - mean(x[speak])`` on one sequence (a per-person offset cancels).
    NaN when either state has fewer than ``min_frames`` frames. Compare with the ground truth's value."""
    x = np.asarray(x, np.float64)
    st = np.asarray(states)[:len(x)]
    x = x[:len(st)]
    lis, spk = st == LISTEN, st == SPEAK
    if lis.sum() < min_frames or spk.sum() < min_frames:
        return float("nan")
    return float(np.sqrt(np.mean((x[lis].mean(0) - x[spk].mean(0)) ** 2)))


def group_metrics(pred, gt, partner, g: str, with_sid: bool = True, sid_k: int | None = None,
                  with_sts: bool = True, with_div: bool = True, seed: int = 0) -> dict[str, float]:
    """Every metric of one group on one (already truncated) sequence. With ``with_sts`` (a real, contiguous
    sequence) also the temporal ones: ``sts``, smoothness (``vel_*``, ``acc_*``) and, with ``with_sid``, the
    ground truth's own SID (``sid_gt``: KMeans fitted on the truth itself), the reference for ``sid``."""
    k = sid_k or SID_CLUSTERS.get(g, 10)
    out = {f"fid_{g}": fid(pred, gt), f"p_fid_{g}": paired_fid(pred, gt, partner), f"mse_{g}": mse(pred, gt),
           f"rpcc_{g}": rpcc(pred, gt, partner)}
    if with_sid:
        out[f"sid_{g}"] = sid(pred, gt, k)
    if with_sts:
        out[f"sts_{g}"] = sts(pred, gt)
        out[f"vel_pred_{g}"], out[f"acc_pred_{g}"] = smoothness(pred)
        out[f"vel_gt_{g}"], out[f"acc_gt_{g}"] = smoothness(gt)
        if with_sid:
            out[f"sid_gt_{g}"] = sid(gt, gt, k)
    out[f"var_pred_{g}"] = variance(pred)
    out[f"var_gt_{g}"] = variance(gt)
    if with_div:
        out[f"div_pred_{g}"] = diversity(pred, seed=seed)
        out[f"div_gt_{g}"] = diversity(gt, seed=seed)
    return out


# --- input handling ---------------------------------------------------------------------------------------
_NAMES = ("prediction", "ground truth", "partner")


def _as_float(a, i: int, name: str) -> np.ndarray:
    try:
        a = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"sequence {i}: {name} is not an array ({e})") from None
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    elif a.dtype.kind != "f":
        raise ValueError(f"sequence {i}: {name} has dtype {a.dtype}, expected floats")
    if a.ndim != 2:
        raise ValueError(f"sequence {i}: {name} has shape {a.shape}, expected (T, D)")
    if not np.isfinite(a).all():
        t, d = np.argwhere(~np.isfinite(a))[0]
        kind = "NaN" if np.isnan(a[t, d]) else "Inf"
        raise ValueError(f"sequence {i}: {name} holds NaN/Inf ({int((~np.isfinite(a)).sum())} values; first: "
                         f"{kind} at frame {t}, dim {d})")
    return a


def _normalize_groups(groups: Mapping[str, Group] | None, dim: int) -> dict[str, slice | np.ndarray]:
    if groups is None:
        return default_groups(dim)
    out = {}
    for g, sel in groups.items():
        if isinstance(sel, slice):
            idx = range(dim)[sel]
            if len(idx) == 0 or (sel.stop is not None and sel.stop > dim):
                raise ValueError(f"group {g!r}: {sel} selects nothing or goes beyond the {dim} dims")
        else:
            sel = np.asarray(sel, dtype=np.int64).reshape(-1)
            if sel.size == 0 or sel.min() < 0 or sel.max() >= dim:
                raise ValueError(f"group {g!r}: indices {sel.tolist()} empty or outside 0..{dim - 1}")
        out[g] = sel
    if not out:
        raise ValueError("groups is empty")
    return out


def _width(sel, dim: int) -> int:
    return len(range(dim)[sel]) if isinstance(sel, slice) else int(sel.size)


def _sel(x: np.ndarray, sel) -> np.ndarray:
    return x[:, sel]


def check_sequences(preds, gts, partners, states=None, min_frames: int = 2):
    """Validate and truncate: a list of ``(pred, gt, partner, states_or_None)`` per sequence.

    prediction, truth and partner are truncated to the shortest of the three (the DualTalk protocol); the states
    are cut to that length too, and may be shorter (their frames are then the only ones with a state)."""
    for name, x in (("preds", preds), ("gts", gts), ("partners", partners)):
        if isinstance(x, np.ndarray) and x.ndim == 2:
            raise ValueError(f"{name} must be a list of (T, D) arrays (one per sequence), got one {x.shape} array")
    if not (len(preds) == len(gts) == len(partners)):
        raise ValueError(f"preds, gts and partners must have one array per sequence: got {len(preds)}, {len(gts)}, "
                         f"{len(partners)}")
    if len(preds) == 0:
        raise ValueError("no sequence to evaluate")
    if states is not None and len(states) != len(preds):
        raise ValueError(f"states must have one array per sequence: got {len(states)} for {len(preds)} sequences")
    out, dim0 = [], None
    for i, arrays in enumerate(zip(preds, gts, partners)):
        arrs = [_as_float(a, i, name) for a, name in zip(arrays, _NAMES)]
        dims = [a.shape[1] for a in arrs]
        if len(set(dims)) != 1:
            raise ValueError(f"sequence {i}: dims differ (prediction {arrs[0].shape}, ground truth {arrs[1].shape}, "
                             f"partner {arrs[2].shape})")
        if dim0 is None:
            dim0 = dims[0]
        elif dims[0] != dim0:
            raise ValueError(f"sequence {i}: {dims[0]} dims, but sequence 0 has {dim0}")
        T = min(len(a) for a in arrs)
        if T < min_frames:
            raise ValueError(f"sequence {i}: only {T} frames after truncation to the shortest of prediction "
                             f"({len(arrs[0])}), ground truth ({len(arrs[1])}) and partner ({len(arrs[2])}); "
                             f"need at least {min_frames}")
        s = None
        if states is not None:
            s = np.asarray(states[i])
            if s.ndim != 1:
                raise ValueError(f"sequence {i}: states has shape {s.shape}, expected (T,)")
            if s.dtype.kind == "f":
                if not np.all(np.isfinite(s)) or np.any(s != np.round(s)):
                    raise ValueError(f"sequence {i}: states must be integers 0..3")
            elif s.dtype.kind not in "biu":
                raise ValueError(f"sequence {i}: states has dtype {s.dtype}, expected integers 0..3")
            s = s[:T].astype(np.int64)
            bad = ~np.isin(s, list(STATE_NAMES))
            if bad.any():
                raise ValueError(f"sequence {i}: state {s[bad][0]} at frame {int(np.argmax(bad))} is not one of "
                                 f"{sorted(STATE_NAMES)} ({', '.join(STATE_NAMES.values())})")
        out.append((arrs[0][:T], arrs[1][:T], arrs[2][:T], s))
    return out


def _sid_k(g: str, sid_clusters: Mapping[str, int] | None) -> int:
    return (sid_clusters or {}).get(g) or SID_CLUSTERS.get(g, 10)


def _check_sid_length(seqs, groups, sid_clusters, what="sequence"):
    k = max(_sid_k(g, sid_clusters) for g in groups)
    for i, (p, *_rest) in enumerate(seqs):
        if len(p) < k:
            label = f"sequence {i}" if what == "sequence" else what
            raise ValueError(f"{label}: {len(p)} frames after truncation, but SID needs at least k={k} "
                             f"(the number of clusters); pass with_sid=False")


# --- the suites -------------------------------------------------------------------------------------------
def _per_sequence(seqs, groups, with_sid, sid_clusters, seed):
    per = []
    for i, (p, t, q, st) in enumerate(seqs):
        d = {}
        for g, sel in groups.items():
            try:
                d.update(group_metrics(_sel(p, sel), _sel(t, sel), _sel(q, sel), g, with_sid,
                                       _sid_k(g, sid_clusters), seed=seed))
            except ValueError as e:             # e.g. the reference's "imaginary component" failure
                raise ValueError(f"sequence {i}, group {g!r} ({len(p)} frames): {e}") from e
            if st is not None:                  # own states: how listening differs from speaking
                d[f"listen_effect_{g}"] = listener_effect(_sel(p, sel), st)
                d[f"listen_effect_gt_{g}"] = listener_effect(_sel(t, sel), st)
        per.append(d)
    return per


def _dataset(seqs, groups, with_sid, sid_clusters, seed):
    cat = [np.concatenate([s[j] for s in seqs]) for j in range(3)]
    if with_sid:
        _check_sid_length([cat], groups, sid_clusters, what="the concatenated sequences")
    out = {}
    for g, sel in groups.items():
        m = group_metrics(_sel(cat[0], sel), _sel(cat[1], sel), _sel(cat[2], sel), g, with_sid,
                          _sid_k(g, sid_clusters), with_sts=False, seed=seed)
        out.update({f"ds_{k}": v for k, v in m.items()})
    return out


def state_min_frames(width: int) -> int:
    """Default minimum of pooled frames for a ``@state`` key: the P-FD covariance (2 x width dims) must be
    non-singular (2 * width + 1 frames), and never fewer than 30 frames (one second)."""
    return max(2 * width + 1, 30)


def _by_state(seqs, groups, min_frames):
    dim = seqs[0][0].shape[1]
    have = [s for s in seqs if s[3] is not None]
    st = np.concatenate([s[3] for s in have])
    cat = [np.concatenate([s[j][:len(s[3])] for s in have]) for j in range(3)]
    out = {}
    for code, name in STATE_NAMES.items():
        mask = st == code
        n = int(mask.sum())
        out[f"frames@{name}"] = float(n)
        for g, sel in groups.items():
            need = state_min_frames(_width(sel, dim)) if min_frames is None else max(int(min_frames), 2)
            if n < need:
                continue
            m = group_metrics(_sel(cat[0][mask], sel), _sel(cat[1][mask], sel), _sel(cat[2][mask], sel), g,
                              with_sid=False, with_sts=False, with_div=False)
            out.update({f"{k}@{name}": v for k, v in m.items()})
    return out


@_limited_threads
def per_sequence_metrics(preds, gts, partners, groups=None, with_sid: bool = True,
                         sid_clusters: Mapping[str, int] | None = None, seed: int = 0) -> list[dict[str, float]]:
    """The per-sequence values of every DualTalk metric (same keys in every dict), e.g. for :func:`bootstrap_ci`
    over dialogs. Their plain mean is :func:`evaluate_sequences`' value."""
    seqs = check_sequences(preds, gts, partners)
    groups = _normalize_groups(groups, seqs[0][0].shape[1])
    if with_sid:
        _check_sid_length(seqs, groups, sid_clusters)
    return _per_sequence(seqs, groups, with_sid, sid_clusters, seed)


@_limited_threads
def evaluate_dataset(preds, gts, partners, groups=None, with_sid: bool = True,
                     sid_clusters: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, float]:
    """Dataset-level variants: every statistic once over the concatenation of all (truncated) sequences.

    Keys ``ds_fid_g``, ``ds_p_fid_g``, ``ds_mse_g``, ``ds_sid_g``, ``ds_rpcc_g``, ``ds_var_pred_g``,
    ``ds_var_gt_g``, ``ds_div_pred_g``, ``ds_div_gt_g`` (no ``sts``: sequence joins are not motion)."""
    seqs = check_sequences(preds, gts, partners)
    groups = _normalize_groups(groups, seqs[0][0].shape[1])
    return _dataset(seqs, groups, with_sid, sid_clusters, seed)


@_limited_threads
def evaluate_by_state(preds, gts, partners, states, groups=None,
                      min_frames: int | None = None) -> dict[str, float]:
    """Per-state breakdowns: for each state (of the generated person: idle, listen, speak, crosstalk), the
    frames in that state pooled over all sequences, and ``fid``, ``p_fid``, ``mse``, ``rpcc``, ``var_pred``,
    ``var_gt`` of each group on them, as ``<metric>_<g>@<state>``; only where at least ``min_frames`` frames exist
    (default :func:`state_min_frames` of the group width), otherwise the key is absent. ``frames@<state>`` is
    always given. No SID, STS or diversity per state (pooled, non-contiguous frames)."""
    if states is None:
        raise ValueError("evaluate_by_state needs states (one (T,) int array per sequence)")
    seqs = check_sequences(preds, gts, partners, states)
    groups = _normalize_groups(groups, seqs[0][0].shape[1])
    return _by_state(seqs, groups, min_frames)


@_limited_threads
def evaluate_sequences(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], partners: Sequence[np.ndarray],
                       groups: Mapping[str, Group] | None = None, states: Sequence[np.ndarray] | None = None,
                       dataset_level: bool = True, min_state_frames: int | None = None, with_sid: bool = True,
                       return_per_sequence: bool = False, sid_clusters: Mapping[str, int] | None = None,
                       seed: int = 0):
    """The DualTalk metrics, mean over sequences (``fid_g``, ``p_fid_g``, ``mse_g``, ``sid_g``, ``rpcc_g``, plus
    ``sts_g``, ``var_pred_g``, ``var_gt_g``, ``div_pred_g``, ``div_gt_g``), with the ``ds_*`` keys of
    :func:`evaluate_dataset` (``dataset_level``) and, given ``states``, the ``*@<state>`` keys of
    :func:`evaluate_by_state`. ``return_per_sequence=True`` returns ``(summary, per_sequence)`` with the list of
    per-sequence dicts (the values whose mean is the summary), for :func:`bootstrap_ci`."""
    seqs = check_sequences(preds, gts, partners, states)
    groups = _normalize_groups(groups, seqs[0][0].shape[1])
    if with_sid:
        _check_sid_length(seqs, groups, sid_clusters)
    per = _per_sequence(seqs, groups, with_sid, sid_clusters, seed)
    result = {k: _nan_skipping_mean([m[k] for m in per]) if k.startswith("listen_effect")
              else float(np.mean([m[k] for m in per])) for k in per[0]}
    if dataset_level:
        result.update(_dataset(seqs, groups, with_sid, sid_clusters, seed))
    if states is not None:
        result.update(_by_state(seqs, groups, min_state_frames))
    return (result, per) if return_per_sequence else result


def _nan_skipping_mean(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


# --- helpers for reports ----------------------------------------------------------------------------------
def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """(mean, lo, hi): the mean of ``values`` (one per unit, e.g. per dialog) and its percentile bootstrap
    (1 - alpha) CI from ``n_boot`` resamples of the units with replacement. NaN values propagate."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"bootstrap_ci: need 0 < alpha < 1 and n_boot >= 1 (got {alpha}, {n_boot})")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for s in range(0, n_boot, 256):                    # bounded memory for many units
        idx = rng.integers(0, len(v), size=(min(256, n_boot - s), len(v)))
        means[s:s + len(idx)] = v[idx].mean(1)
    return float(v.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def jaw_speech_correlation(jaw: np.ndarray, energy: np.ndarray, max_lag: int = 5, min_lag: int = 0,
                           return_lag: bool = False):
    """Best Pearson r between jaw opening and the person's own speech energy over lags ``min_lag..max_lag``
    frames; lag L pairs ``jaw[t + L]`` with ``energy[t]`` (L > 0: the jaw follows the speech). Both are cut to
    the shorter length. A constant jaw (or energy) at every lag gives 0.0 (it does not follow speech).
    ``return_lag=True`` returns ``(r, lag)`` (lag None when undefined)."""
    jaw, energy = np.asarray(jaw, np.float64), np.asarray(energy, np.float64)
    if jaw.ndim == 2 and jaw.shape[1] == 1:
        jaw = jaw[:, 0]
    if jaw.ndim != 1 or energy.ndim != 1:
        raise ValueError(f"jaw_speech_correlation: jaw {jaw.shape} and energy {energy.shape} must be (T,)")
    if min_lag > max_lag:
        raise ValueError(f"jaw_speech_correlation: min_lag {min_lag} > max_lag {max_lag}")
    n = min(len(jaw), len(energy))
    jaw, energy = jaw[:n], energy[:n]
    if not (np.isfinite(jaw).all() and np.isfinite(energy).all()):
        raise ValueError("jaw_speech_correlation: NaN/Inf in jaw or energy")
    best, best_lag = None, None
    for lag in range(min_lag, max_lag + 1):
        a, b = (jaw[lag:], energy[:n - lag]) if lag >= 0 else (jaw[:n + lag], energy[-lag:])
        if len(a) > 2 and a.std() > 0 and b.std() > 0:
            r = float(np.corrcoef(a, b)[0, 1])
            if best is None or r > best:
                best, best_lag = r, lag
    best = 0.0 if best is None else best
    return (best, best_lag) if return_lag else best
