"""Comparing methods over several training seeds: means with CIs over seeds and dialogs, paired verdicts.

Each method is scored once per seed (:func:`common.eval.scoring.evaluate_method`, which keeps the mean of every
metric per dialog in ``MethodResult.per_dialog``). For a method and a metric the values form a (seeds x
dialogs) table; its mean is the figure, and a two-level bootstrap (seeds resampled, then dialogs) gives the CI,
so both the training noise and the test sample are in it. Two methods are compared on the same seeds' indices
and the same dialogs (paired): the CI of the difference says whether one is better; where it includes 0 the
verdict is **not better**.
"""
from __future__ import annotations

import numpy as np

# lower is better unless listed here
HIGHER_IS_BETTER = ("sid_", "jaw_speech_r")
# verdict metrics (DualTalk's headline columns) and the references reported as a ratio to the ground truth's
VERDICT_KEYS = ("fid_exp", "p_fid_exp", "mse_exp", "fid_jaw", "p_fid_jaw", "mse_jaw")
GT_REFERENCES = {"jaw_speech_r": "jaw_speech_r_gt", "sid_exp": "sid_gt_exp", "sid_jaw": "sid_gt_jaw",
                 "vel_pred_exp": "vel_gt_exp", "acc_pred_exp": "acc_gt_exp", "vel_pred_jaw": "vel_gt_jaw",
                 "acc_pred_jaw": "acc_gt_jaw", "listen_effect_exp": "listen_effect_gt_exp"}


def table_of(results, key: str, dialogs: list[str]) -> np.ndarray:
    """(seeds, dialogs) values of ``key`` from one method's per-seed MethodResults (NaN where missing)."""
    return np.array([[r.per_dialog.get(d, {}).get(key, np.nan) for d in dialogs] for r in results], np.float64)


def _resample(n_boot: int, shape: tuple[int, int], rng: np.random.Generator):
    S, D = shape
    return rng.integers(0, S, size=(n_boot, S)), rng.integers(0, D, size=(n_boot, D))


def seeds_dialogs_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05):
    """(mean, lo, hi) of a (seeds, dialogs) table: the mean over its finite cells and a two-level percentile
    bootstrap CI (seeds with replacement, then dialogs with replacement). NaN cells are skipped."""
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"seeds_dialogs_ci needs a (seeds, dialogs) table, got shape {v.shape}")
    finite = np.isfinite(v)
    if not finite.any():
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    si, di = _resample(n_boot, v.shape, rng)
    filled, w = np.where(finite, v, 0.0), finite.astype(np.float64)
    picks = (si[:, :, None], di[:, None, :])                          # (n_boot, S, D) resampled cells
    sums, counts = filled[picks].sum((1, 2)), w[picks].sum((1, 2))
    means = sums / np.maximum(counts, 1)
    means = means[counts > 0]
    return (float(v[finite].mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05):
    """(mean, lo, hi) of ``a - b`` for two (seeds, dialogs) tables of the same seeds and dialogs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: tables differ in shape ({a.shape} vs {b.shape})")
    return seeds_dialogs_ci(a - b, n_boot=n_boot, seed=seed, alpha=alpha)


def higher_is_better(key: str) -> bool:
    return key.startswith(HIGHER_IS_BETTER)


def summarize(results_by_method: dict[str, list], keys, n_boot: int = 2000) -> dict[str, dict[str, list[float]]]:
    """``{method: {key: [mean, lo, hi]}}`` over seeds and dialogs for every key present."""
    out = {}
    for method, results in results_by_method.items():
        dialogs = sorted(results[0].per_dialog)
        out[method] = {}
        for k in keys:
            t = table_of(results, k, dialogs)
            if np.isfinite(t).any():
                out[method][k] = list(seeds_dialogs_ci(t, n_boot=n_boot))
    return out


def verdict(model: str, other: str, results_by_method: dict[str, list], keys=VERDICT_KEYS,
            n_boot: int = 2000) -> str:
    """One plain line: where ``model`` is better than ``other`` (the CI of the paired difference on the
    right side of 0), and **not better** everywhere else, with the figures."""
    dialogs = sorted(results_by_method[model][0].per_dialog)
    wins, losses = [], []
    for k in keys:
        a, b = table_of(results_by_method[model], k, dialogs), table_of(results_by_method[other], k, dialogs)
        if not (np.isfinite(a).any() and np.isfinite(b).any()):
            continue
        d, lo, hi = paired_difference(a, b, n_boot=n_boot)
        better = lo > 0 if higher_is_better(k) else hi < 0
        rel = d / abs(np.nanmean(b)) if np.nanmean(b) else float("nan")
        (wins if better else losses).append(f"{k} {rel:+.0%} [{lo:.3g}, {hi:.3g}]")
    line = f"- {model} vs {other}: "
    line += f"better on {', '.join(wins)}" if wins else "better on nothing"
    if losses:
        line += f"; **not better** on {', '.join(losses)}"
    return line
