"""The metric suite: hand-checkable cases, and equality with a literal second reading of DualTalk's scorer."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from common import metrics as M


def rand_seqs(n=3, T=200, D=51, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(T + 7 * i, D)) for i in range(n)]


def test_identical_inputs_score_zero():
    gts = rand_seqs()
    partners = rand_seqs(seed=1)
    r = M.evaluate_sequences([g.copy() for g in gts], gts, partners)
    for g in ("exp", "jaw"):
        assert abs(r[f"fid_{g}"]) < 1e-6 and abs(r[f"p_fid_{g}"]) < 1e-6
        assert r[f"mse_{g}"] == 0 and r[f"rpcc_{g}"] < 1e-12
    assert "pose" not in " ".join(r)


def test_shifted_mean_gives_squared_shift():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(500, 51))
    s = rng.normal(size=51)
    r = M.evaluate_sequences([gt + s], [gt], [rng.normal(size=(500, 51))])
    assert r["fid_exp"] == pytest.approx(float(s[:50] @ s[:50]), rel=1e-6)
    assert r["fid_jaw"] == pytest.approx(float(s[50] ** 2), rel=1e-6)
    assert r["mse_jaw"] == pytest.approx(float(s[50] ** 2), rel=1e-9)


def test_two_cluster_toy_is_one_bit():
    rng = np.random.default_rng(0)
    pred = np.concatenate([rng.normal(0, 0.01, (50, 3)), rng.normal(10, 0.01, (50, 3))])
    gt = np.concatenate([rng.normal(0, 0.01, (30, 3)), rng.normal(10, 0.01, (30, 3))])
    assert M.sid(pred, gt, 2) == pytest.approx(1.0, abs=1e-5)
    assert M.sid(pred, gt[:30], 2) == pytest.approx(0.0, abs=1e-5)      # all truth in one cluster


def test_lengths_truncate_and_54_dims_add_pose():
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=(120, 54)), rng.normal(size=(100, 54)), rng.normal(size=(110, 54))
    r = M.evaluate_sequences([a], [b], [c])
    assert {"fid_pose", "p_fid_pose", "mse_pose", "sid_pose", "rpcc_pose"} <= set(r)
    assert r["mse_exp"] == pytest.approx(np.mean((a[:100, :50] - b[:100, :50]) ** 2))


def test_bad_inputs_are_named():
    g = rand_seqs(2)
    with pytest.raises(ValueError, match="sequence 1: prediction has shape"):
        M.evaluate_sequences([g[0], g[1][:, :, None]], g, g)
    bad = g[1].copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="sequence 1: prediction holds NaN"):
        M.evaluate_sequences([g[0], bad], g, g)
    with pytest.raises(ValueError, match="dims differ"):
        M.evaluate_sequences([g[0][:, :40]], g[:1], g[:1])
    with pytest.raises(ValueError, match="one array per sequence"):
        M.evaluate_sequences(g, g[:1], g)


def test_per_state_breakdown():
    rng = np.random.default_rng(2)
    T = 400
    gt, partner = rng.normal(size=(T, 51)), rng.normal(size=(T, 51))
    pred = gt.copy()
    states = np.full(T, 2)
    states[:150] = 1                                  # listening frames: prediction wrong there only
    pred[:150] += 1.0
    r = M.evaluate_sequences([pred], [gt], [partner], states=[states])
    assert r["mse_exp@speak"] == 0 and r["mse_exp@listen"] == pytest.approx(1.0)
    assert r["frames@listen"] == 150 and "mse_exp@idle" not in r
    assert r["fid_exp@speak"] == pytest.approx(0, abs=1e-6)


def test_dataset_level_and_bootstrap():
    g, p = rand_seqs(4), rand_seqs(4, seed=5)
    r = M.evaluate_sequences(p, g, rand_seqs(4, seed=6))
    assert {"ds_fid_exp", "ds_mse_jaw", "ds_div_pred_exp", "var_pred_exp"} <= set(r)
    mean, lo, hi = M.bootstrap_ci([1.0, 2.0, 3.0, 4.0], n_boot=2000)
    assert mean == 2.5 and 1.0 <= lo < 2.5 < hi <= 4.0
    assert M.bootstrap_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_jaw_speech_correlation_finds_lag():
    rng = np.random.default_rng(0)
    e = np.convolve(rng.normal(size=600), np.ones(5) / 5, "same")
    jaw = np.concatenate([np.zeros(2), e[:-2]])       # jaw follows speech 2 frames late
    assert M.jaw_speech_correlation(jaw, e, max_lag=4) > 0.99
    assert M.jaw_speech_correlation(rng.normal(size=600), e) < 0.3


# --- a literal second reading of DualTalk's metric/metric.py (loops and all), to compare against ----------
def _ref_fd(mu1, s1, mu2, s2, eps=1e-6):
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def _ref_stats(x):
    return np.mean(x, axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _ref_sid(first, second, k):          # reference signature calcuate_sid(gt, pred, k), called as (pred, gt, k)
    from sklearn.cluster import KMeans
    km = KMeans(n_clusters=k, random_state=0, n_init="auto").fit(first)
    lab = km.predict(second)
    hist = [0] * k
    for i in range(len(lab)):
        hist[lab[i]] += 1
    hist = np.array(hist) / np.sum(hist)
    ent = 0
    for i in range(k):
        ent += hist[i] * np.log2(hist[i] + 1e-6)
    return -ent


def _reference(pre, gt, other):
    out = {}
    for g, sl, k in (("exp", slice(0, 50), 40), ("jaw", slice(50, 51), 10)):
        p, t, o = pre[:, sl], gt[:, sl], other[:, sl]
        out[f"fid_{g}"] = _ref_fd(*_ref_stats(p), *_ref_stats(t))
        out[f"p_fid_{g}"] = _ref_fd(*_ref_stats(np.concatenate([o, t], -1)), *_ref_stats(np.concatenate([o, p], -1)))
        out[f"mse_{g}"] = np.mean((p - t) ** 2)
        out[f"sid_{g}"] = _ref_sid(p, t, k)
        out[f"rpcc_{g}"] = abs(np.corrcoef(t.reshape(-1), o.reshape(-1))[0, 1] - np.corrcoef(p.reshape(-1), o.reshape(-1))[0, 1])
    return out


def test_matches_dualtalk_reference():
    rng = np.random.default_rng(7)
    preds, gts, partners = [], [], []
    for i in range(3):
        T = 150 + 20 * i
        gt = np.cumsum(rng.normal(size=(T, 51)), 0) * 0.1
        partner = gt * 0.3 + rng.normal(size=(T, 51))
        preds.append(np.concatenate([gt, gt[:5]]) + rng.normal(0, 0.5, size=(T + 5, 51)))   # longer: truncated
        gts.append(gt)
        partners.append(partner)
    ours = M.evaluate_sequences(preds, gts, partners, dataset_level=False)
    refs = [_reference(p[:len(g)], g, q) for p, g, q in zip(preds, gts, partners)]
    for k, v in refs[0].items():
        want = np.mean([r[k] for r in refs])
        assert ours[k] == pytest.approx(want, rel=1e-6, abs=1e-12), k
