"""The main job, short: `make demo DEMO=smoke` writes a report whose table has every method and metric
(the learned anchor baselines included)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.eval.scoring import TABLE_KEYS

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["model_dyad", "model_listener", "speaker_only", "baseline_mean", "baseline_mirror", "baseline_nn_audio",
           "baseline_random_other", "baseline_dualtalk_class", "baseline_dualtalk_class_causal",
           "baseline_dualtalk_class_dyad", "baseline_dualtalk_class_causal_dyad"]


@pytest.mark.slow
def test_smoke_demo_writes_full_report(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "scripts/demo.py", "--preset", "smoke", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (out / "REPORT.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| method |"))
    for key in TABLE_KEYS:
        assert f" {key} " in header, key
    for m in METHODS:
        assert f"| {m} |" in report, m
    assert "Does the model beat the baselines?" in report and "model_dyad vs baseline_mean" in report
    assert "model_listener vs speaker_only" in report
    # the learned anchor baselines: trained, exported, sampled, each judged against the mode that reads what it
    # reads (the partner's true motion: listener mode; both audio tracks only: dyad mode), not against the other
    for name in ("dualtalk_class", "dualtalk_class_causal", "dualtalk_class_dyad", "dualtalk_class_causal_dyad"):
        assert (out / name / "regressor.pt").is_file()
        mode, other = ("model_dyad", "model_listener") if name.endswith("_dyad") else ("model_listener", "model_dyad")
        assert f"- {mode} vs baseline_{name}: " in report and f"- {other} vs baseline_{name}: " not in report
    # the tokenizer's table, with its measured nMSE, and each stage-1 target judged
    recon = json.loads((out / "stage1_recon.json").read_text())
    assert f"exp {recon['nmse_exp']:>14.5f}" in report
    assert report.count("(met: target") + report.count("(MISSED: target") == 4
    assert (out / "plots" / "metrics.png").is_file() and (out / "clip.mp4").stat().st_size > 10000
    # the GPT and its ablation, and the four regressors, trained side by side (a log each; each named in the report)
    assert len(list((out / "logs").glob("stage2_gpt_*.log"))) == 2 and len(list((out / "logs").glob("baselines_*.log"))) == 4
    assert report.count("side by side with its group") == 6
