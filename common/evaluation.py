"""Score directories of predictions (any method) against the cache's ground truth; compare methods with CIs.

Prediction layout: ``P/<dialog>/<participant>.npz`` (key ``motion`` (T, D), or FLAME keys ``expression_params``
(T, 1, >=50) and ``jaw_params`` (T, 1, >=1) [+ ``pose_params`` in 54-dim mode]) or ``P/<dialog>/<participant>.npy``
(T, D). Missing and malformed files are reported by name.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import metrics as M
from .cache import Cache

# the columns of the comparison table, in order
TABLE_KEYS = ["fid_exp", "p_fid_exp", "mse_exp", "sid_exp", "rpcc_exp", "fid_jaw", "p_fid_jaw", "mse_jaw",
              "rpcc_jaw", "p_fid_exp@listen", "mse_exp@listen", "mse_jaw@speak", "jaw_speech_r"]


# columns where higher is better (SID: diversity of the truth under the prediction's clusters, DualTalk's ↑)
HIGHER_IS_BETTER = ("sid_", "jaw_speech_r")


class PredictionError(ValueError):
    pass


def read_prediction(path: Path, motion_dim: int) -> np.ndarray:
    """(T, motion_dim) float64 from a prediction file, with errors naming the file."""
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                if "motion" in z.files:
                    x = z["motion"]
                elif "expression_params" in z.files and "jaw_params" in z.files:
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
                    x = np.concatenate(parts, 1)
                else:
                    raise PredictionError(f"{path}: no 'motion' key nor 'expression_params'+'jaw_params' "
                                          f"(keys: {sorted(z.files)})")
    except PredictionError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise PredictionError(f"{path}: unreadable prediction ({e})") from e
    if x.ndim != 2 or x.shape[1] != motion_dim:
        raise PredictionError(f"{path}: motion has shape {x.shape}, expected (T, {motion_dim})")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise PredictionError(f"{path}: motion holds non-numeric or NaN/Inf values")
    return x.astype(np.float64)


def find_prediction(pred_dir: Path, dialog: str, participant: str) -> Path | None:
    for ext in (".npz", ".npy"):
        p = pred_dir / dialog / f"{participant}{ext}"
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


def evaluate_method(cache: Cache, pred_dir: str | Path, split: str = "test", name: str | None = None,
                    n_boot: int = 1000, allow_missing: bool = False) -> MethodResult:
    pred_dir = Path(pred_dir)
    name = name or pred_dir.name
    preds, gts, partners, states, energies, dialog_of = [], [], [], [], [], []
    missing, errors = [], []
    for d in cache.dialogs(split):
        a = cache.load(d["id"])
        for i, pid in enumerate(d["participants"]):
            path = find_prediction(pred_dir, d["id"], pid)
            if path is None:
                missing.append(f"{d['id']}/{pid}")
                continue
            try:
                x = read_prediction(path, cache.motion_dim)
            except PredictionError as e:
                errors.append(str(e))
                continue
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
    return MethodResult(name, result, ci, missing, errors, len(preds))


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
