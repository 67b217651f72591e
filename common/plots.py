"""Plots users would rather look at than read: metric bars with CIs across methods, and dialog timelines."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .states import STATE_NAMES

STATE_COLORS = {0: "#ffffff", 1: "#cfe8ff", 2: "#ffd9b3", 3: "#e6ccff"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def metric_bars(results, keys, path: str | Path) -> Path:
    """One bar chart per metric, a bar per method with its 95% CI (``results``: evaluation.MethodResult)."""
    plt = _plt()
    keys = [k for k in keys if any(k in r.metrics for r in results)]
    cols = min(4, len(keys))
    rows = int(np.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows + 0.6), squeeze=False)
    names = [r.name for r in results]
    for ax, k in zip(axes.flat, keys):
        vals = [r.metrics.get(k, np.nan) for r in results]
        err = [[max(0.0, v - r.ci[k][1]) if k in r.ci else 0 for v, r in zip(vals, results)],
               [max(0.0, r.ci[k][2] - v) if k in r.ci else 0 for v, r in zip(vals, results)]]
        ax.bar(range(len(names)), vals, yerr=err, color=[f"C{i}" for i in range(len(names))], capsize=3)
        ax.set_title(k, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _state_bands(ax, states, fps):
    n, start = len(states), 0
    for i in range(1, n + 1):
        if i == n or states[i] != states[start]:
            if states[start] in (1, 2, 3):
                ax.axvspan(start / fps, i / fps, color=STATE_COLORS[int(states[start])], lw=0)
            start = i


def timeline(path: str | Path, title: str, fps: float, participants: list[str], states: np.ndarray,
             energy: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray], jaw_dim: int = 50,
             exp_dims=(0, 5), max_seconds: float = 40.0) -> Path:
    """Per participant: audio energy of both sides, jaw and some expression dims, truth vs each method,
    over state bands. ``states`` (2, T), ``energy`` (2, T), ``truth`` (2, T, D), predictions name -> (2, T, D)."""
    plt = _plt()
    from matplotlib.patches import Patch
    n = min(states.shape[1], int(max_seconds * fps))
    t = np.arange(n) / fps
    rows = [("audio energy", None)] + [("jaw", jaw_dim)] + [(f"exp {d}", d) for d in exp_dims]
    fig, axes = plt.subplots(2 * len(rows), 1, figsize=(14, 1.3 * 2 * len(rows) + 0.8), sharex=True, squeeze=False)
    for p in range(2):
        for r, (label, dim) in enumerate(rows):
            ax = axes[p * len(rows) + r, 0]
            _state_bands(ax, np.asarray(states[p])[:n], fps)
            if dim is None:
                ax.plot(t, energy[p][:n], color="tab:blue", lw=0.8, label="own mic")
                ax.plot(t, energy[1 - p][:n], color="tab:gray", lw=0.6, label="partner mic")
            else:
                ax.plot(t, truth[p][:n, dim], color="k", lw=1.0, label="true")
                for i, (name, pred) in enumerate(predictions.items()):
                    ax.plot(t, pred[p][:n, dim], lw=0.8, color=f"C{(i + 3) % 10}", label=name)
            ax.set_ylabel(f"{participants[p]}\n{label}", fontsize=7)
            ax.tick_params(labelsize=7)
    handles = [Patch(color=STATE_COLORS[s], label=STATE_NAMES[s]) for s in (1, 2, 3)]
    h1 = axes[0, 0].get_legend_handles_labels()[0] + axes[1, 0].get_legend_handles_labels()[0]
    axes[0, 0].legend(handles=handles + h1, fontsize=6, ncol=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
