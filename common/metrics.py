"""One evaluation suite for every method: the DualTalk metrics, exact, plus dataset-level, per-state and CIs.

Per sequence (prediction, ground truth and the partner's ground truth, truncated to the shortest of the three),
for each dimension group g (``exp`` = 0..49, ``jaw`` = 50, ``pose`` = 51..53 in 54-dim mode), then the mean
over sequences — as DualTalk's ``metric/metric.py`` does:

- ``fid_g``   Frechet distance between Gaussian fits (mean, ``np.cov(rowvar=False)``) of prediction and truth;
- ``p_fid_g`` the same on ``[partner, truth]`` vs ``[partner, prediction]`` concatenated per frame;
- ``mse_g``   mean squared error;
- ``sid_g``   KMeans(k, random_state=0, n_init="auto") fitted on the *prediction*, the truth assigned to it,
              entropy in bits of the histogram (``+1e-6`` in the log); k = 40 for exp, 10 for jaw and pose;
- ``rpcc_g``  |pcc(truth, partner) - pcc(prediction, partner)|, one Pearson r over all flattened values;
- ``var_pred_g`` / ``var_gt_g``: mean per-dim variance over time (DualTalk's "variance").

``ds_*`` keys are the dataset-level variants (statistics over the concatenation of all sequences);
``<key>@<state>`` keys restrict to frames whose state (of the generated person) is speak/listen/idle/crosstalk,
computed over the concatenation of those frames across sequences (single short runs of a state are too few
frames for a covariance), only where at least ``min_state_frames`` frames exist (default: 2 x group width + 1,
so the P-FD covariance is not singular); SID is not computed per state. See docs/METRICS.md.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import linalg

from .states import STATE_NAMES

SID_CLUSTERS = {"exp": 40, "jaw": 10, "pose": 10}


def default_groups(dim: int) -> dict[str, slice]:
    if dim == 51:
        return {"exp": slice(0, 50), "jaw": slice(50, 51)}
    if dim == 54:
        return {"exp": slice(0, 50), "jaw": slice(50, 51), "pose": slice(51, 54)}
    raise ValueError(f"no default metric groups for {dim}-dim motion (51 or 54); pass groups=")


# --- the per-sequence statistics (DualTalk) --------------------------------------------------------------
def gaussian_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))  # disp=False in the reference: same values
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(pred: np.ndarray, gt: np.ndarray) -> float:
    return frechet_distance(*gaussian_fit(pred), *gaussian_fit(gt))


def paired_fid(pred: np.ndarray, gt: np.ndarray, partner: np.ndarray) -> float:
    return frechet_distance(*gaussian_fit(np.concatenate([partner, gt], -1)),
                            *gaussian_fit(np.concatenate([partner, pred], -1)))


def sid(pred: np.ndarray, gt: np.ndarray, k: int) -> float:
    """Entropy (bits) of the truth's histogram over k clusters fitted on the prediction."""
    from sklearn.cluster import KMeans
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ConvergenceWarning on degenerate (constant) predictions
        labels = KMeans(n_clusters=k, random_state=0, n_init="auto").fit(pred).predict(gt)
    hist = np.bincount(labels, minlength=k) / len(labels)
    return float(-np.sum(hist * np.log2(hist + 1e-6)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of all values; NaN when either side is constant (as in the reference)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(a.reshape(-1), b.reshape(-1))[0, 1])


def rpcc(pred: np.ndarray, gt: np.ndarray, partner: np.ndarray) -> float:
    return abs(pearson(gt, partner) - pearson(pred, partner))


def variance(x: np.ndarray) -> float:
    return float(np.mean(np.var(x, axis=0)))


def diversity(x: np.ndarray, pairs: int = 100, seed: int = 0) -> float:
    """Mean distance between random frame pairs (DualTalk's diversity, seeded here for repeatability)."""
    n = len(x)
    if n <= pairs:
        pairs = max(1, n // 2)
    rng = np.random.default_rng(seed)
    i = rng.choice(n, pairs, replace=False)
    j = rng.choice(n, pairs, replace=False)
    return float(np.linalg.norm(x[i] - x[j], axis=1).mean())


def group_metrics(pred, gt, partner, g: str, with_sid: bool = True) -> dict[str, float]:
    out = {f"fid_{g}": fid(pred, gt), f"p_fid_{g}": paired_fid(pred, gt, partner),
           f"mse_{g}": float(np.mean((pred - gt) ** 2)), f"rpcc_{g}": rpcc(pred, gt, partner),
           f"var_pred_{g}": variance(pred), f"var_gt_{g}": variance(gt)}
    if with_sid:
        out[f"sid_{g}"] = sid(pred, gt, SID_CLUSTERS.get(g, 10))
    return out


# --- input handling ---------------------------------------------------------------------------------------
def _check(preds, gts, partners, states):
    if not (len(preds) == len(gts) == len(partners)):
        raise ValueError(f"preds, gts and partners must have one array per sequence: got {len(preds)}, {len(gts)}, "
                         f"{len(partners)}")
    if len(preds) == 0:
        raise ValueError("no sequence to evaluate")
    if states is not None and len(states) != len(preds):
        raise ValueError(f"states must have one array per sequence: got {len(states)} for {len(preds)} sequences")
    out = []
    for i, arrays in enumerate(zip(preds, gts, partners)):
        arrs = []
        for name, a in zip(("prediction", "ground truth", "partner"), arrays):
            a = np.asarray(a, dtype=np.float64)
            if a.ndim != 2:
                raise ValueError(f"sequence {i}: {name} has shape {a.shape}, expected (T, D)")
            if not np.isfinite(a).all():
                raise ValueError(f"sequence {i}: {name} holds NaN/Inf")
            arrs.append(a)
        dims = {a.shape[1] for a in arrs}
        if len(dims) != 1:
            raise ValueError(f"sequence {i}: dims differ (prediction {arrs[0].shape}, ground truth {arrs[1].shape}, "
                             f"partner {arrs[2].shape})")
        T = min(len(a) for a in arrs)
        if states is not None:
            T = min(T, len(states[i]))
        if T < 3:
            raise ValueError(f"sequence {i}: only {T} frames after truncation to the shortest")
        s = None if states is None else np.asarray(states[i])[:T]
        out.append((arrs[0][:T], arrs[1][:T], arrs[2][:T], s))
    return out


def per_sequence_metrics(preds, gts, partners, groups=None, with_sid: bool = True) -> list[dict[str, float]]:
    """The DualTalk metrics of every sequence (for bootstrap CIs over sequences/dialogs)."""
    seqs = _check(preds, gts, partners, None)
    groups = groups or default_groups(seqs[0][0].shape[1])
    return [{k: v for g, sl in groups.items() for k, v in group_metrics(p[:, sl], t[:, sl], q[:, sl], g, with_sid).items()}
            for p, t, q, _ in seqs]


def evaluate_sequences(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], partners: Sequence[np.ndarray],
                       groups: dict[str, slice] | None = None, states: Sequence[np.ndarray] | None = None,
                       dataset_level: bool = True, min_state_frames: int | None = None,
                       with_sid: bool = True) -> dict[str, float]:
    """DualTalk metrics (mean over sequences), plus ``ds_*`` dataset-level and ``*@state`` breakdowns."""
    seqs = _check(preds, gts, partners, states)
    D = seqs[0][0].shape[1]
    groups = groups or default_groups(D)
    per = [{k: v for g, sl in groups.items() for k, v in group_metrics(p[:, sl], t[:, sl], q[:, sl], g, with_sid).items()}
           for p, t, q, _ in seqs]
    result = {k: float(np.mean([m[k] for m in per])) for k in per[0]}
    cat = [np.concatenate([s[i] for s in seqs]) for i in range(3)]
    if dataset_level:
        for g, sl in groups.items():
            for k, v in group_metrics(cat[0][:, sl], cat[1][:, sl], cat[2][:, sl], g, with_sid).items():
                result[f"ds_{k}"] = v
            result[f"ds_div_pred_{g}"] = diversity(cat[0][:, sl])
            result[f"ds_div_gt_{g}"] = diversity(cat[1][:, sl])
    if states is not None:
        st = np.concatenate([s[3] for s in seqs])
        for code, name in STATE_NAMES.items():
            mask = st == code
            for g, sl in groups.items():
                width = sl.stop - sl.start
                need = min_state_frames or max(2 * width + 1, 30)   # P-FD fits a 2*width-dim covariance
                if mask.sum() < need:
                    continue
                m = group_metrics(cat[0][mask][:, sl], cat[1][mask][:, sl], cat[2][mask][:, sl], g, with_sid=False)
                for k, v in m.items():
                    result[f"{k}@{name}"] = v
            result[f"frames@{name}"] = float(mask.sum())
    return result


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """(mean, lo, hi): percentile bootstrap CI of the mean over units (dialogs)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    return float(v.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def jaw_speech_correlation(jaw: np.ndarray, energy: np.ndarray, max_lag: int = 5) -> float:
    """Best Pearson r of jaw opening with own speech energy over lags 0..max_lag (jaw following speech)."""
    jaw, energy = np.asarray(jaw, np.float64).reshape(-1), np.asarray(energy, np.float64).reshape(-1)
    n = min(len(jaw), len(energy))
    best = 0.0                                        # a constant jaw does not follow speech
    for lag in range(0, max_lag + 1):
        a, b = jaw[lag:n], energy[:n - lag]
        if len(a) > 2 and a.std() > 0 and b.std() > 0:
            best = max(best, float(np.corrcoef(a, b)[0, 1]))
    return best
