"""Score directories of predictions (any method) against the cache's ground truth; compare methods with CIs.

Prediction layout: ``P/<dialog>/<participant>.npz`` (key ``motion`` (T, D), or FLAME keys ``expression_params``
(T, 1, >=50) and ``jaw_params`` (T, 1, >=1) [+ ``pose_params`` in 54-dim mode], or DualTalk's ``exp`` (T, 50) and
``pose`` (T, 6)) or ``P/<dialog>/<participant>.npy`` (T, D); DualTalk's flat ``P/<dialog>_speaker{1,2}.npy`` too.
Baselines' layouts (DualTalk (T, 56), DIM (T, 54), ...; ``common.eval.external``) and frame rates (25 or 30 fps) are
read with ``layout`` / ``pred_fps`` and mapped onto the ground truth's frames (docs/BASELINES.md).
Missing and malformed files are reported by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.data.cache import Cache
from common.eval import metrics as M
from common.eval.predictions import FRAME_TOLERANCE_S, PredictionError, find_prediction, read_prediction
from common.eval.tables import markdown_table

# the columns of the comparison table, in order
TABLE_KEYS = ["fid_exp", "p_fid_exp", "mse_exp", "sid_exp", "rpcc_exp", "fid_jaw", "p_fid_jaw", "mse_jaw",
              "rpcc_jaw", "p_fid_exp@listen", "mse_exp@listen", "mse_jaw@speak", "jaw_speech_r"]


# columns where higher is better (SID: diversity of the truth under the prediction's clusters, DualTalk's ↑)
HIGHER_IS_BETTER = ("sid_", "jaw_speech_r")


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
    per_dialog: dict[str, dict[str, float]] = field(default_factory=dict)   # dialog -> mean of its sequences

    def describe_reading(self) -> str:
        return ", ".join(f"{n} as {k}" for k, n in sorted(self.read_as.items()))


def evaluate_method(cache: Cache, pred_dir: str | Path, split: str = "test", name: str | None = None,
                    n_boot: int = 1000, allow_missing: bool = False, layout: str = "ours", pred_fps=None,
                    frame_tolerance_s: float = FRAME_TOLERANCE_S) -> MethodResult:
    """Score one method's prediction folder. ``layout`` (the files' layout), ``pred_fps``,
    ``frame_tolerance_s``: see :func:`common.eval.predictions.read_prediction` (defaults: this system's layout at
    the cache's rate, lengths unchecked)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise PredictionError(f"method {name or pred_dir.name}: prediction folder {pred_dir} does not exist")
    target = cache.layout
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
                x, info = read_prediction(path, target, layout=layout, pred_fps=pred_fps,
                                          target_frames=int(a.motion.shape[1]), target_fps=cache.fps,
                                          frame_tolerance_s=frame_tolerance_s, return_info=True)
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
    result, per = M.evaluate_sequences(preds, gts, partners, states=states, return_per_sequence=True)
    jaw = target.jaw[0]
    for s, p, g, e in zip(per, preds, gts, energies):
        s["jaw_speech_r"] = M.jaw_speech_correlation(p[:len(e), jaw], e)
        s["jaw_speech_r_gt"] = M.jaw_speech_correlation(g[:len(e), jaw], e)
    result["jaw_speech_r"] = float(np.mean([s["jaw_speech_r"] for s in per]))
    result["jaw_speech_r_gt"] = float(np.mean([s["jaw_speech_r_gt"] for s in per]))
    # per dialog: the mean of its sequences (NaN-skipping: a listener effect needs both states); CIs over dialogs
    dialogs = sorted(set(dialog_of))
    per_dialog = {d: {k: _finite_mean([s[k] for s, dd in zip(per, dialog_of) if dd == d]) for k in per[0]}
                  for d in dialogs}
    for d in dialogs:                   # per-state figures of each dialog (its frames of each state, pooled)
        idx = [i for i, dd in enumerate(dialog_of) if dd == d]
        by_state = M.evaluate_by_state([preds[i] for i in idx], [gts[i] for i in idx], [partners[i] for i in idx],
                                       [states[i] for i in idx])
        per_dialog[d].update({k: v for k, v in by_state.items() if not k.startswith("frames@")})
    ci = {}
    for k in per[0]:
        values = [v[k] for v in per_dialog.values() if np.isfinite(v[k])]
        if values:
            ci[k] = list(M.bootstrap_ci(values, n_boot=n_boot))
    layouts = {k.split("@")[0] for k in read_as}
    rates = {float(k.split("@")[1][:-3]) for k in read_as}
    return MethodResult(name, result, ci, missing, errors, len(preds),
                        layout=layouts.pop() if len(layouts) == 1 else "mixed",
                        pred_fps=rates.pop() if len(rates) == 1 else None, read_as=read_as, per_dialog=per_dialog)


def _finite_mean(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def comparison_table(results: list[MethodResult], keys: list[str] = TABLE_KEYS) -> str:
    """Methods x metrics (with bootstrap CIs; the best value of each column in bold) as Markdown."""
    keys = [k for k in keys if any(k in r.metrics for r in results)]
    best = {}
    for k in keys:
        vals = [r.metrics[k] for r in results if k in r.metrics]
        vals = [v for v in vals if np.isfinite(v)]
        best[k] = (max(vals) if k.startswith(HIGHER_IS_BETTER) else min(vals)) if vals else None
    rows = []
    for r in results:
        row = {"method": r.name}
        for k in keys:
            if k not in r.metrics:
                row[k] = "—"
                continue
            v = r.metrics[k]
            s = f"{v:.4g}"
            if k in r.ci:
                s += f" [{r.ci[k][1]:.3g}, {r.ci[k][2]:.3g}]"
            row[k] = f"**{s}**" if v == best[k] and len(results) > 1 else s
        rows.append(row)
    lines = [markdown_table(rows, ["method"] + keys, fmt=str)]
    gt = [r.metrics.get("jaw_speech_r_gt") for r in results if "jaw_speech_r_gt" in r.metrics]
    if gt:
        lines.append("")
        lines.append(f"Ground truth jaw-speech correlation: {gt[0]:.3g}. Lower is better for every column but "
                     "sid and jaw_speech_r (higher is better; best in bold). `@listen` / `@speak`: frames where the generated person "
                     "listens / speaks. Brackets: bootstrap 95% CI over dialogs.")
    return "\n".join(lines)
