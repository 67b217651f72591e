"""Plots users would rather look at than read: metric bars with CIs across methods, and dialog timelines."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.layout import STATE_NAMES, motion_layout

DEFAULT_LAYOUT = motion_layout()

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


def timeline(path: str | Path, title: str, fps: float, participants: list[str], states, energy, truth,
             predictions: dict, jaw_dim: int = DEFAULT_LAYOUT.jaw[0], exp_dims=(0, 5), max_seconds: float = 40.0, show=None,
             dpi: int = 80) -> Path:
    """Per participant: audio energy of both sides, jaw and some expression dims, truth vs each method,
    over state bands. ``states`` (2, T), ``energy`` (2, T), ``truth`` (2, T, D), predictions name -> (2, T, D).

    ``states``, ``energy`` and ``truth`` may be None (not known: no bands, no energy row, no true curve), as may
    one participant's row of them or of a prediction (e.g. a method that generated one side only); ``show``
    lists the participants (0, 1) to draw, both by default. Used by scripts/evaluate.py (methods compared on
    one dialog) and stage2_gpt/generate.py (generated vs true trajectories of every sampled dialog)."""
    plt = _plt()
    from matplotlib.patches import Patch

    def row(x, p):
        return None if x is None else x[p]
    show = [0, 1] if show is None else list(show)
    lengths = [len(r) for x in (states, energy, truth, *predictions.values()) for p in show
               if (r := row(x, p)) is not None]
    n = min(min(lengths, default=0), int(max_seconds * fps))
    t = np.arange(n) / fps
    rows = ([("audio energy", None)] if energy is not None else []) + [("jaw", jaw_dim)]
    rows += [(f"exp {d}", d) for d in exp_dims]
    fig, axes = plt.subplots(len(show) * len(rows), 1, figsize=(14, 1.3 * len(show) * len(rows) + 0.8),
                             sharex=True, squeeze=False)
    for i, p in enumerate(show):
        for r, (label, dim) in enumerate(rows):
            ax = axes[i * len(rows) + r, 0]
            if row(states, p) is not None:
                _state_bands(ax, np.asarray(states[p])[:n], fps)
            if dim is None:
                ax.plot(t, np.asarray(energy[p])[:n], color="tab:blue", lw=0.8, label="own mic")
                if row(energy, 1 - p) is not None:
                    ax.plot(t, np.asarray(energy[1 - p])[:n], color="tab:gray", lw=0.6, label="partner mic")
            else:
                if row(truth, p) is not None:
                    ax.plot(t, np.asarray(truth[p])[:n, dim], color="k", lw=1.0, label="true")
                for j, (name, pred) in enumerate(predictions.items()):
                    if row(pred, p) is not None:
                        ax.plot(t, np.asarray(pred[p])[:n, dim], lw=0.8, color=f"C{(j + 3) % 10}", label=name)
            ax.set_ylabel(f"{participants[p]}\n{label}", fontsize=7)
            ax.tick_params(labelsize=7)
    handles = [Patch(color=STATE_COLORS[s], label=STATE_NAMES[s]) for s in (1, 2, 3)] if states is not None else []
    seen = set()
    for ax in axes[:min(2, len(axes)), 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in seen:
                seen.add(lab)
                handles.append(h)
    axes[0, 0].legend(handles=handles, fontsize=6, ncol=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
