"""The quality bench: its statistics (CIs over seeds and dialogs, paired verdicts that say "not better") against
independent calculations, and scripts/quality.py end to end on a tiny setting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from common.eval import compare as C

ROOT = Path(__file__).resolve().parents[1]


def _results(table: np.ndarray, key: str = "mse_exp") -> list:
    """Per-seed MethodResult stand-ins holding ``table`` (seeds, dialogs) as per-dialog values."""
    return [SimpleNamespace(per_dialog={f"d{j}": {key: float(v)} for j, v in enumerate(row)}, metrics={})
            for row in table]


def test_seeds_dialogs_ci_equals_a_bootstrap_computed_apart():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(3, 16)) + np.arange(3)[:, None]           # seeds differ: their spread widens the CI
    mean, lo, hi = C.seeds_dialogs_ci(t, n_boot=4000, seed=7)
    assert mean == pytest.approx(t.mean())
    # the same two-level resampling written out plainly
    r = np.random.default_rng(7)
    si, di = r.integers(0, 3, size=(4000, 3)), r.integers(0, 16, size=(4000, 16))
    means = [t[np.ix_(si[b], di[b])].mean() for b in range(4000)]
    assert lo == pytest.approx(np.quantile(means, 0.025)) and hi == pytest.approx(np.quantile(means, 0.975))
    # seed noise is in the CI: wider than a dialogs-only bootstrap of the seed means
    dialog_only = np.quantile([t.mean(0)[r.integers(0, 16, 16)].mean() for _ in range(2000)], [0.025, 0.975])
    assert hi - lo > 2 * (dialog_only[1] - dialog_only[0])


def test_ci_skips_missing_cells_and_a_constant_table_has_no_width():
    t = np.full((2, 5), 0.5)
    t[1, 2] = np.nan
    assert C.seeds_dialogs_ci(t) == (0.5, 0.5, 0.5)
    assert np.isnan(C.seeds_dialogs_ci(np.full((2, 3), np.nan))[0])


def test_verdicts_say_not_better_unless_the_paired_ci_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 2.0, size=(3, 16))
    noise = rng.normal(scale=0.2, size=(3, 16))
    res = {"model": _results(base * 0.8), "same": _results(base + noise * 0.01), "other": _results(base)}
    clear = C.verdict("model", "other", res, keys=("mse_exp",))
    assert clear.startswith("- model vs other: better on mse_exp -20%") and "not better" not in clear
    res["model"] = _results(base + noise)                           # no real difference: noise only
    tied = C.verdict("model", "other", res, keys=("mse_exp",))
    assert "better on nothing; **not better** on mse_exp" in tied
    res["model"] = _results(base * 1.3)                             # worse
    assert "**not better** on mse_exp +30%" in C.verdict("model", "other", res, keys=("mse_exp",))


def test_higher_is_better_metrics_are_judged_upwards():
    base = np.random.default_rng(1).uniform(1.0, 2.0, size=(2, 10))
    res = {"model": _results(base * 1.5, "sid_exp"), "other": _results(base, "sid_exp")}
    assert "better on sid_exp +50%" in C.verdict("model", "other", res, keys=("sid_exp",))
    assert "**not better** on sid_exp" in C.verdict("other", "model", res, keys=("sid_exp",))


def test_paired_difference_needs_the_same_seeds_and_dialogs():
    with pytest.raises(ValueError, match="differ in shape"):
        C.paired_difference(np.zeros((3, 4)), np.zeros((2, 4)))


@pytest.mark.slow
def test_quality_bench_end_to_end_tiny(tmp_path):
    """One corpus (the hard preset: TTS speech, unseen persons), one seed, tiny configs: every method trains,
    samples and is scored; the report has a table row per method, the verdict lines and the JSON."""
    out = tmp_path / "q"
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled")
    cmd = [sys.executable, str(ROOT / "scripts" / "quality.py"), "--out", str(out), "--corpora", "hard",
           "--seeds", "0", "--train-dialogs", "5", "--test-dialogs", "2", "--min-seconds", "6", "--max-seconds", "9",
           "--set", "stage1:train.max_steps=20", "--set", "stage1:val_windows=8", "--set", "stage1:train.val_every=10",
           "--set", "stage1:train.batch_size=8", "--set", "stage2:train.max_steps=20", "--set", "stage2:window=32",
           "--set", "stage2:model.attn_window=12", "--set", "stage2:train.batch_size=4",
           "--set", "stage2:train.val_every=10", "--set", "stage2:val_windows=8", "--set", "regressor:train.max_steps=20",
           "--set", "regressor:train.val_every=10", "--set", "regressor:train.batch_size=4", "--n-boot", "100"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    md = (out / "QUALITY.md").read_text()
    report = json.loads((out / "quality.json").read_text())
    methods = set(report["corpora"]["hard"]["summary"])
    expected = {"model_dyad", "model_listener", "speaker_only", "mean", "random_other", "mirror", "nn_audio",
                "truth_recentered"}
    if (ROOT / "baselines" / "train.py").is_file():
        expected |= {"dualtalk_class", "dualtalk_class_causal", "dualtalk_class_dyad", "dualtalk_class_causal_dyad"}
    assert methods == expected
    for m in expected:
        assert f"| {m} |" in md
    verdicts = report["corpora"]["hard"]["verdicts"]
    # both model modes vs every other method, not the bound; listener mode not vs the audio-only regressors
    audio_only = len(expected & {"dualtalk_class_dyad", "dualtalk_class_causal_dyad"})
    assert len(verdicts) == 2 * (len(expected) - 3) - audio_only
    assert all(v.startswith("- model_") and "truth_recentered" not in v for v in verdicts)
    assert not [v for v in verdicts if v.startswith("- model_listener vs ") and "_dyad:" in v]
    assert sum(v.startswith("- model_dyad vs dualtalk_class") for v in verdicts) == (4 if audio_only else 0)
    assert ("read both audio tracks only" in md) == bool(audio_only)
    # the bound: the truth's own motion around the train mean; its FD of exp is the mean baseline's less the truth's
    # spread, its jaw is the truth's
    summ = report["corpora"]["hard"]["summary"]
    assert summ["truth_recentered"]["fid_exp"][0] < summ["mean"]["fid_exp"][0]
    assert summ["truth_recentered"]["mse_jaw"][0] == 0 and summ["truth_recentered"]["mse_exp"][0] > 0
    assert "is a bound, not a method" in md
    s = report["corpora"]["hard"]["summary"]["model_dyad"]
    assert {"fid_exp", "p_fid_exp", "mse_exp", "jaw_speech_r", "jaw_speech_r_gt", "vel_pred_exp", "vel_gt_exp",
            "sid_gt_exp"} <= set(s)
    # the enrollment protocol (default 30 s clips): every method again, each person's expression moved by their
    # clip's mean less the train mean (jaw untouched), the bound `truth_enrolled` in place of `truth_recentered`
    assert "## Corpus `hard`, enrollment protocol" in md and "`truth_enrolled` is a bound, not a method" in md
    enrolled = report["corpora"]["hard"]["enrolled"]
    assert set(enrolled["summary"]) == expected - {"truth_recentered"} | {"truth_enrolled"}
    assert len(enrolled["verdicts"]) == len(verdicts) and not [v for v in enrolled["verdicts"] if "truth_" in v]
    es = enrolled["summary"]
    assert es["mean"]["fid_exp"][0] < summ["mean"]["fid_exp"][0]          # the clip tells the person's offset
    assert es["truth_enrolled"]["mse_jaw"][0] == 0 and es["truth_enrolled"]["fid_exp"][0] < es["mean"]["fid_exp"][0]
    from common.config import from_dict
    from common.data.cache import Cache
    from common.data.config import DataConfig
    from common.data.corpus import read_flame
    from common.eval.predictions import find_prediction, read_prediction
    cache = Cache(out / "hard" / "cache")
    d = cache.dialogs("test")[0]
    pid = d["participants"][1]
    clip, _ = read_flame(out / "hard" / "enrollment_30s" / f"{pid}.npz", from_dict(DataConfig, cache.manifest["data_config"]),
                         "enrollment", pid)
    assert clip.shape[0] == 900
    before, after = (read_prediction(find_prediction(out / "hard" / "seed0" / sub / "model_dyad", d["id"], pid, side=1),
                                     cache.layout) for sub in ("predictions", "enrolled"))
    shift = clip.mean(0) - np.asarray(cache.stats["motion_mean"])
    np.testing.assert_allclose(after[:, :50] - before[:, :50], np.broadcast_to(shift[:50], before[:, :50].shape), atol=1e-5)
    np.testing.assert_array_equal(after[:, 50:], before[:, 50:])
    # mirror copies the partner's motion: moved from the partner's clip mean to the person's own
    partner = d["participants"][0]
    pclip, _ = read_flame(out / "hard" / "enrollment_30s" / f"{partner}.npz", from_dict(DataConfig, cache.manifest["data_config"]),
                          "enrollment", partner)
    before, after = (read_prediction(find_prediction(out / "hard" / "seed0" / sub / "mirror", d["id"], pid, side=1),
                                     cache.layout) for sub in ("predictions", "enrolled"))
    np.testing.assert_allclose(after[:, :50] - before[:, :50],
                               np.broadcast_to(clip.mean(0)[:50] - pclip.mean(0)[:50], before[:, :50].shape), atol=1e-5)
    # a rerun skips every finished job and rewrites the same figures; another clip length gives the enrollment
    # protocol's figures of that length (its rows are written again, never reused)
    r2 = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0 and "already done" in r2.stdout
    again = json.loads((out / "quality.json").read_text())["corpora"]["hard"]
    assert again["summary"] == report["corpora"]["hard"]["summary"]
    assert again["enrolled"]["summary"] == enrolled["summary"]
    r3 = subprocess.run(cmd + ["--enroll-s", "10"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r3.returncode == 0, r3.stdout[-3000:] + r3.stderr[-3000:]
    short = json.loads((out / "quality.json").read_text())["corpora"]["hard"]
    assert short["summary"] == report["corpora"]["hard"]["summary"]
    assert short["enrolled"]["summary"]["mean"]["fid_exp"] != enrolled["summary"]["mean"]["fid_exp"]
    assert "10-second enrollment clip" in (out / "QUALITY.md").read_text()
