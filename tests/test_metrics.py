"""The metric suite: hand-checkable cases, and equality with a literal second reading of DualTalk's scorer."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from common.eval import metrics as M
MAIN = ("fid", "p_fid", "mse", "sid", "rpcc")


@pytest.fixture(autouse=True)
def one_thread():
    """The suite's entry points run single-threaded (M.NUM_THREADS); the direct calls and the reference here
    too, or OpenBLAS' pool can make each 100 x 100 sqrtm take 0.5 s on a busy machine."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        yield


def rand_seqs(n=3, T=200, D=51, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(T + 7 * i, D)) for i in range(n)]


# --- hand-checkable values --------------------------------------------------------------------------------
def test_identical_inputs_score_zero():
    gts = rand_seqs()
    partners = rand_seqs(seed=1)
    r = M.evaluate_sequences([g.copy() for g in gts], gts, partners)
    for g in ("exp", "jaw"):
        assert abs(r[f"fid_{g}"]) < 1e-6 and abs(r[f"p_fid_{g}"]) < 1e-6
        assert abs(r[f"ds_fid_{g}"]) < 1e-6 and abs(r[f"ds_p_fid_{g}"]) < 1e-6
        assert r[f"mse_{g}"] == 0 and r[f"rpcc_{g}"] < 1e-12 and r[f"sts_{g}"] == 0
        assert r[f"var_pred_{g}"] == r[f"var_gt_{g}"] and r[f"div_pred_{g}"] == r[f"div_gt_{g}"]
    assert r["var_gt_exp"] == pytest.approx(1.0, rel=0.05)                  # unit-variance noise
    assert r["div_gt_exp"] == pytest.approx(10.0, rel=0.05)                 # E|x - y| ~ sqrt(2 * 50)
    assert not any("pose" in k for k in r)


def test_shifted_mean_gives_squared_shift():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(500, 51))
    s = rng.normal(size=51)
    r = M.evaluate_sequences([gt + s], [gt], [rng.normal(size=(500, 51))])
    assert r["fid_exp"] == pytest.approx(float(s[:50] @ s[:50]), rel=1e-6)
    assert r["fid_jaw"] == pytest.approx(float(s[50] ** 2), rel=1e-6)
    assert r["p_fid_exp"] == pytest.approx(float(s[:50] @ s[:50]), rel=1e-6)   # the partner half is identical
    assert r["mse_jaw"] == pytest.approx(float(s[50] ** 2), rel=1e-9)
    assert r["rpcc_exp"] == pytest.approx(0.0, abs=0.02)          # a constant shift barely changes r
    # a scaled copy 2x: FD = |mu|^2 + tr(4C + C - 2 sqrt(4 C^2)) = |mu|^2 + tr(C)
    r2 = M.evaluate_sequences([2 * gt], [gt], [gt])
    cov = np.cov(gt[:, :50], rowvar=False)
    mu = gt[:, :50].mean(0)
    want = float(mu @ mu + np.trace(4 * cov) + np.trace(cov) - 2 * np.trace(linalg.sqrtm(4 * cov @ cov).real))
    assert r2["fid_exp"] == pytest.approx(want, rel=1e-6)
    assert r2["fid_exp"] == pytest.approx(mu @ mu + np.trace(cov), rel=1e-6)


def test_two_cluster_toy_is_one_bit():
    rng = np.random.default_rng(0)
    pred = np.concatenate([rng.normal(0, 0.01, (50, 3)), rng.normal(10, 0.01, (50, 3))])
    gt = np.concatenate([rng.normal(0, 0.01, (30, 3)), rng.normal(10, 0.01, (30, 3))])
    assert M.sid(pred, gt, 2) == pytest.approx(1.0, abs=1e-5)
    assert M.sid(pred, gt[:30], 2) == pytest.approx(0.0, abs=1e-5)      # all truth in one cluster
    # through the suite: a custom 3-dim group with k = 2
    r = M.evaluate_sequences([pred[:60]], [gt], [gt], groups={"toy": slice(0, 3)}, sid_clusters={"toy": 2},
                             dataset_level=False)
    assert r["sid_toy"] == pytest.approx(1.0, abs=1e-5)


def test_sid_is_fitted_on_the_prediction():
    """The reference fits KMeans on the prediction and histograms the truth. A collapsed prediction (one blob)
    vs a diverse truth: the truth spreads over the prediction's (tiny, adjacent) clusters -> high entropy; the
    other order (clusters on the truth) would put the whole prediction in one cluster -> 0 bits."""
    rng = np.random.default_rng(4)
    pred = rng.normal(0, 0.01, (200, 2))
    gt = rng.normal(0, 5, (200, 2))
    assert M.sid(pred, gt, 10) > 2.0 and M.sid(gt, pred, 10) < 0.5
    pad = lambda x: np.pad(x, ((0, 0), (0, 49)))                     # exp group = dims 0..49 (2 used)
    r = M.evaluate_sequences([pad(pred)], [pad(gt)], [pad(gt)], dataset_level=False)
    assert r["sid_exp"] == M.sid(pad(pred)[:, :50], pad(gt)[:, :50], 40)
    assert r["sid_exp"] != M.sid(pad(gt)[:, :50], pad(pred)[:, :50], 40)


def test_rpcc_by_hand():
    rng = np.random.default_rng(5)
    partner = rng.normal(size=(300, 51))
    gt = 0.8 * partner + 0.6 * rng.normal(size=(300, 51))                 # r(gt, partner) ~ 0.8
    pred = rng.normal(size=(300, 51))                                       # r(pred, partner) ~ 0
    r = M.evaluate_sequences([pred], [gt], [partner], dataset_level=False, with_sid=False)
    want = abs(np.corrcoef(gt[:, :50].ravel(), partner[:, :50].ravel())[0, 1]
               - np.corrcoef(pred[:, :50].ravel(), partner[:, :50].ravel())[0, 1])
    assert r["rpcc_exp"] == pytest.approx(want, rel=1e-12) and r["rpcc_exp"] == pytest.approx(0.8, abs=0.05)
    const = M.evaluate_sequences([np.ones((300, 51))], [gt], [partner], dataset_level=False, with_sid=False)
    assert np.isnan(const["rpcc_exp"])                                      # undefined, as in the reference


def test_lengths_truncate_and_54_dims_add_pose():
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=(120, 54)), rng.normal(size=(100, 54)), rng.normal(size=(110, 54))
    r = M.evaluate_sequences([a], [b], [c])
    assert {f"{m}_{g}" for m in MAIN for g in ("exp", "jaw", "pose")} <= set(r)
    assert r["mse_exp"] == pytest.approx(np.mean((a[:100, :50] - b[:100, :50]) ** 2), rel=1e-12)
    assert r["mse_pose"] == pytest.approx(np.mean((a[:100, 51:] - b[:100, 51:]) ** 2), rel=1e-12)
    assert r["fid_jaw"] == pytest.approx(M.fid(a[:100, 50:51], b[:100, 50:51]), rel=1e-12)
    assert r["rpcc_pose"] == pytest.approx(M.rpcc(a[:100, 51:], b[:100, 51:], c[:100, 51:]), rel=1e-12)
    r51 = M.evaluate_sequences([a[:, :51]], [b[:, :51]], [c[:, :51]])
    assert set(r51) == {k for k in r if "pose" not in k}
    assert r51["mse_jaw"] == r["mse_jaw"] and r51["sid_exp"] == r["sid_exp"]


def test_per_sequence_mean_and_return_per_sequence():
    g, p, q = rand_seqs(4), rand_seqs(4, seed=5), rand_seqs(4, seed=6)
    summary, per = M.evaluate_sequences(p, g, q, return_per_sequence=True)
    assert len(per) == 4 and all(set(d) == set(per[0]) for d in per)
    for k in per[0]:
        assert summary[k] == pytest.approx(np.mean([d[k] for d in per]), rel=1e-12)
    assert per[2]["mse_exp"] == pytest.approx(np.mean((p[2][:, :50] - g[2][:, :50]) ** 2), rel=1e-12)
    assert M.per_sequence_metrics(p, g, q) == per
    # dataset level: one statistic over the concatenation
    ds = M.evaluate_dataset(p, g, q)
    cp, cg = np.concatenate(p), np.concatenate(g)
    assert ds["ds_mse_exp"] == pytest.approx(np.mean((cp[:, :50] - cg[:, :50]) ** 2), rel=1e-12)
    assert ds["ds_fid_jaw"] == pytest.approx(M.fid(cp[:, 50:], cg[:, 50:]), rel=1e-12)
    assert {k for k in summary if k.startswith("ds_")} == set(ds)
    assert all(summary[k] == ds[k] for k in ds)
    assert "ds_sts_exp" not in ds and {"ds_div_pred_exp", "ds_var_gt_jaw", "ds_sid_exp"} <= set(ds)


def test_per_state_breakdown():
    rng = np.random.default_rng(2)
    T = 400
    gt, partner = rng.normal(size=(T, 51)), rng.normal(size=(T, 51))
    pred = gt.copy()
    states = np.full(T, 2)
    states[:150] = 1                                  # listening frames: prediction wrong there only
    states[150:170] = 0                               # 20 idle frames: too few for any @idle key
    pred[:150] += 1.0
    r = M.evaluate_sequences([pred], [gt], [partner], states=[states])
    assert r["mse_exp@speak"] == 0 and r["mse_exp@listen"] == pytest.approx(1.0)
    assert r["fid_exp@listen"] == pytest.approx(50.0, rel=1e-6)      # the shift, squared, over 50 dims
    assert r["fid_exp@speak"] == pytest.approx(0, abs=1e-6)
    assert r["frames@listen"] == 150 and r["frames@idle"] == 20 and r["frames@crosstalk"] == 0
    assert not any(k.endswith(("@idle", "@crosstalk")) and not k.startswith("frames@") for k in r)
    assert not any(k.startswith(("sid_", "sts_", "div_")) and "@" in k for k in r)
    # the jaw needs only 30 frames, the exp group 101: with 60 listen frames only jaw keys appear
    st2 = np.full(T, 2)
    st2[:60] = 1
    r2 = M.evaluate_by_state([pred], [gt], [partner], [st2])
    assert "mse_jaw@listen" in r2 and "mse_exp@listen" not in r2 and "p_fid_exp@listen" not in r2
    r3 = M.evaluate_by_state([pred], [gt], [partner], [st2], min_frames=50)
    assert "mse_exp@listen" in r3 and r3["mse_exp@listen"] == pytest.approx(1.0)
    # states never change the main (DualTalk) metrics, even when shorter than the motion
    base = M.evaluate_sequences([pred], [gt], [partner], with_sid=False)
    short = M.evaluate_sequences([pred], [gt], [partner], states=[states[:300]], with_sid=False)
    assert all(short[k] == base[k] for k in base)
    assert short["frames@speak"] == 300 - 170


def test_per_state_pools_sequences():
    rng = np.random.default_rng(8)
    preds, gts, parts, sts = [], [], [], []
    for i in range(3):                                 # 40 listen frames each: too few alone, 120 pooled
        gt = rng.normal(size=(200, 51))
        s = np.full(200, 2)
        s[:40] = 1
        preds.append(gt + (s == 1)[:, None] * 2.0)
        gts.append(gt)
        parts.append(rng.normal(size=(200, 51)))
        sts.append(s)
    r = M.evaluate_by_state(preds, gts, parts, sts)
    assert r["frames@listen"] == 120 and r["mse_exp@listen"] == pytest.approx(4.0)
    assert r["fid_exp@listen"] == pytest.approx(200.0, rel=1e-6)


def test_bad_inputs_are_named():
    g = rand_seqs(2)
    with pytest.raises(ValueError, match="sequence 1: prediction has shape"):
        M.evaluate_sequences([g[0], g[1][:, :, None]], g, g)
    bad = g[1].copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"sequence 1: prediction holds NaN.*frame 3, dim 4"):
        M.evaluate_sequences([g[0], bad], g, g)
    with pytest.raises(ValueError, match="sequence 0: partner holds NaN"):
        M.evaluate_sequences([g[0]], [g[0]], [np.full_like(g[0], np.inf)])
    with pytest.raises(ValueError, match="sequence 0: dims differ"):
        M.evaluate_sequences([g[0][:, :40]], g[:1], g[:1])
    with pytest.raises(ValueError, match="sequence 1: 54 dims, but sequence 0 has 51"):
        M.evaluate_sequences([g[0], np.zeros((50, 54))], [g[0], np.zeros((50, 54))], [g[0], np.zeros((50, 54))])
    with pytest.raises(ValueError, match="one array per sequence"):
        M.evaluate_sequences(g, g[:1], g)
    with pytest.raises(ValueError, match="no default metric groups for 40"):
        M.evaluate_sequences([g[0][:, :40]], [g[0][:, :40]], [g[0][:, :40]])
    with pytest.raises(ValueError, match="sequence 1: 20 frames .* SID needs at least k=40"):
        M.evaluate_sequences([g[0], g[1][:20]], g, g)
    assert "mse_exp" in M.evaluate_sequences([g[0], g[1][:20]], g, g, with_sid=False)
    with pytest.raises(ValueError, match="sequence 1: only 1 frames"):
        M.evaluate_sequences([g[0], g[1][:1]], g, g, with_sid=False)
    with pytest.raises(ValueError, match="sequence 0: state 7 at frame 5"):
        st = np.zeros(200, int)
        st[5] = 7
        M.evaluate_sequences(g[:1], g[:1], g[:1], states=[st], with_sid=False)
    with pytest.raises(ValueError, match="sequence 0: states has shape"):
        M.evaluate_sequences(g[:1], g[:1], g[:1], states=[np.zeros((200, 2), int)], with_sid=False)
    with pytest.raises(ValueError, match="list of"):
        M.evaluate_sequences(g[0], g[0], g[0])
    with pytest.raises(ValueError, match="group 'x'"):
        M.evaluate_sequences(g, g, g, groups={"x": slice(50, 60)})


def test_bootstrap_ci():
    mean, lo, hi = M.bootstrap_ci([1.0, 2.0, 3.0, 4.0], n_boot=2000)
    assert mean == 2.5 and 1.0 <= lo < 2.5 < hi <= 4.0
    assert M.bootstrap_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert M.bootstrap_ci([1.0, 2.0, 3.0, 4.0], n_boot=2000) == (mean, lo, hi)         # seeded
    v = np.random.default_rng(0).normal(5.0, 1.0, 400)
    m, lo, hi = M.bootstrap_ci(v, n_boot=1000)
    half = 1.96 * v.std() / np.sqrt(len(v))                                       # normal-theory half width
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15) and lo < m < hi
    with pytest.raises(ValueError):
        M.bootstrap_ci([])


def test_jaw_speech_correlation_finds_lag():
    rng = np.random.default_rng(0)
    e = np.convolve(rng.normal(size=600), np.ones(5) / 5, "same")
    jaw = np.concatenate([np.zeros(2), e[:-2]])       # jaw follows speech 2 frames late
    r, lag = M.jaw_speech_correlation(jaw, e, max_lag=4, return_lag=True)
    assert r > 0.99 and lag == 2
    assert M.jaw_speech_correlation(rng.normal(size=600), e) < 0.3
    early = np.concatenate([e[3:], np.zeros(3)])      # jaw leads by 3 frames: found only with negative lags
    assert M.jaw_speech_correlation(early, e, max_lag=5) < 0.5
    r, lag = M.jaw_speech_correlation(early, e, max_lag=5, min_lag=-5, return_lag=True)
    assert r > 0.99 and lag == -3
    assert M.jaw_speech_correlation(np.zeros(600), e) == 0.0


# --- a literal second reading of DualTalk's metric/metric.py (Ruthless338/DualTalk), loops and all ---------
def _ref_activation_statistics(x):
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def _ref_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))          # reference: sqrtm(..., disp=False)[0]; same matrix
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _ref_sid(first, second, k):          # declared calcuate_sid(gt, pred, k) but called as (pre, gt, k)
    from sklearn.cluster import KMeans
    kmeans = KMeans(n_clusters=k, random_state=0, n_init="auto").fit(first)
    labels = kmeans.predict(second)
    hist = [0] * k
    for i in range(len(labels)):
        hist[labels[i]] += 1
    hist = np.array(hist)
    hist = hist / np.sum(hist)
    ent = 0
    for i in range(k):
        ent += hist[i] * np.log2(hist[i] + 1e-6)
    return -ent


def _ref_sts(x, y, timestep=0.1):
    ans = 0
    total, dim = x.shape
    for d in range(dim):
        for i in range(1, total):
            ans += ((x[i][d] - x[i - 1][d]) - (y[i][d] - y[i - 1][d])) ** 2 / timestep
    return np.sqrt(ans)


def _ref_diversity(act, times, seed):
    np.random.seed(seed)                 # the reference draws from the unseeded global generator
    first = np.random.choice(act.shape[0], times, replace=False)
    second = np.random.choice(act.shape[0], times, replace=False)
    return linalg.norm(act[first] - act[second], axis=1).mean()


def _ref_scorer(files, groups):
    """``files``: list of (pre, gt, other) arrays; ``groups``: (name, slice, k). Returns the reference's dict of
    means over files (min_len truncation, then every statistic per file, then np.mean of each list)."""
    lists = {}
    for pre, gt, other in files:
        n = min(pre.shape[0], gt.shape[0], other.shape[0])
        for g, sl, k in groups:
            p, t, o = pre[:n, sl], gt[:n, sl], other[:n, sl]
            vals = {
                "fid": _ref_frechet_distance(*_ref_activation_statistics(p), *_ref_activation_statistics(t)),
                "p_fid": _ref_frechet_distance(*_ref_activation_statistics(np.concatenate([o, t], axis=-1)),
                                               *_ref_activation_statistics(np.concatenate([o, p], axis=-1))),
                "mse": np.mean((p - t) ** 2),
                "sid": _ref_sid(p, t, k),
                "sts": _ref_sts(p, t),
                "div_pred": _ref_diversity(p, 100, 0),
                "div_gt": _ref_diversity(t, 100, 0),
                "var_pred": np.mean(np.var(p, axis=0)),
                "var_gt": np.mean(np.var(t, axis=0)),
                "rpcc": abs(np.corrcoef(t.reshape(-1, ), o.reshape(-1, ))[0, 1]
                            - np.corrcoef(p.reshape(-1, ), o.reshape(-1, ))[0, 1]),
            }
            for m, v in vals.items():
                lists.setdefault(f"{m}_{g}", []).append(v)
    return {k: np.mean(v) for k, v in lists.items()}


def _dyadic_files(rng, D, n=3, dtype=np.float64):
    preds, gts, partners = [], [], []
    for i in range(n):
        T = 150 + 20 * i
        gt = np.cumsum(rng.normal(size=(T, D)), 0) * 0.1
        partner = gt * 0.3 + rng.normal(size=(T, D))
        preds.append((np.concatenate([gt, gt[:5]]) + rng.normal(0, 0.5, size=(T + 5, D))).astype(dtype))
        gts.append(gt.astype(dtype))
        partners.append(partner[: T - 3 * i].astype(dtype))          # shorter: truncates the others
    return preds, gts, partners


def _compare(ours, ref):
    assert set(ref) <= set(ours)
    for k, want in ref.items():
        assert ours[k] == pytest.approx(float(want), rel=1e-6, abs=1e-12), k


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_dualtalk_reference_51(dtype):
    preds, gts, partners = _dyadic_files(np.random.default_rng(7), 51, dtype=dtype)
    ours = M.evaluate_sequences(preds, gts, partners, dataset_level=False)
    ref = _ref_scorer(list(zip(preds, gts, partners)), [("exp", slice(0, 50), 40), ("jaw", slice(50, 51), 10)])
    _compare(ours, ref)


def test_matches_dualtalk_reference_on_its_56_dim_layout():
    """DualTalk's own files: prediction (T, 56) = exp 50 + jaw 3 + pose 3; truth npz ``exp`` (T, 50) and
    ``pose`` (T, 6) with jaw = pose[:, 3:], head pose = pose[:, :3]."""
    rng = np.random.default_rng(11)
    preds, gts, partners = _dyadic_files(rng, 56, n=2, dtype=np.float32)

    def as_npz(x56):                                  # back to DualTalk's ground-truth file layout
        return {"exp": x56[:, :50], "pose": np.concatenate([x56[:, 53:56], x56[:, 50:53]], 1)}

    lists = {}
    for pre, gt, other in zip(preds, gts, partners):  # the reference's own slicing of its files
        gtf, otf = as_npz(gt), as_npz(other)
        g56 = np.concatenate([gtf["exp"], gtf["pose"][:, 3:], gtf["pose"][:, :3]], 1)
        o56 = np.concatenate([otf["exp"], otf["pose"][:, 3:], otf["pose"][:, :3]], 1)
        r = _ref_scorer([(pre, g56, o56)], [("exp", slice(0, 50), 40), ("jaw", slice(50, 53), 10),
                                              ("pose", slice(53, 56), 10)])
        for k, v in r.items():
            lists.setdefault(k, []).append(v)
    ref = {k: np.mean(v) for k, v in lists.items()}
    ours = M.evaluate_sequences(preds, gts, partners, dataset_level=False)   # default groups for 56 dims
    _compare(ours, ref)
    assert len([k for k in ref]) == 30                # the reference's 30 printed keys


def _outcome(f):
    try:
        return float(f())
    except ValueError as e:                           # the reference raises on a large imaginary part
        return "raises (imaginary part)" if "imaginary component" in str(e).lower() else "raises: " + str(e)


def test_matches_reference_with_rank_deficient_covariances():
    """Fewer frames than dims (T < 50 for FD, T < 100 for P-FD): singular covariances, the regime of the eps
    fallback and of the imaginary-part check; we agree with the reference, or raise where it raises."""
    values, raised = 0, 0
    for seed, T in ((12, 45), (0, 45), (1, 60), (2, 80)):
        rng = np.random.default_rng(seed)
        p, t, o = (rng.normal(size=(T, 51))[:, :50] for _ in range(3))
        ours = (_outcome(lambda: M.fid(p, t)), _outcome(lambda: M.paired_fid(p, t, o)))
        ref = (_outcome(lambda: _ref_frechet_distance_checked(*_ref_activation_statistics(p),
                                                              *_ref_activation_statistics(t))),
               _outcome(lambda: _ref_frechet_distance_checked(
                   *_ref_activation_statistics(np.concatenate([o, t], -1)),
                   *_ref_activation_statistics(np.concatenate([o, p], -1)))))
        for a, b in zip(ours, ref):
            if isinstance(b, str):
                assert a == b
                raised += 1
            else:
                assert a == pytest.approx(b, rel=1e-6)
                values += 1
    assert values >= 6 and raised >= 1                # seed 12: FD's sqrtm has an imaginary part > 1e-3


def _ref_frechet_distance_checked(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """The reference's FD with its imaginary-component check (``ValueError('Imaginary component ...')``)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component {}".format(np.max(np.abs(covmean.imag))))
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def test_frechet_eps_fallback(monkeypatch):
    calls = []
    real = linalg.sqrtm

    def flaky(a):                                     # the first root "fails" as on a singular product
        calls.append(a.copy())
        return np.full_like(a, np.inf) if len(calls) == 1 else real(a)

    monkeypatch.setattr(M.linalg, "sqrtm", flaky)
    s1, s2 = np.diag([1.0, 0.0]), np.diag([4.0, 0.0])
    d = M.frechet_distance(np.zeros(2), s1, np.ones(2), s2)
    assert len(calls) == 2 and np.allclose(calls[1], (s1 + 1e-6 * np.eye(2)) @ (s2 + 1e-6 * np.eye(2)))
    want = 2 + 5 - 2 * (np.sqrt((1 + 1e-6) * (4 + 1e-6)) + 1e-6)
    assert d == pytest.approx(want, rel=1e-9)


def test_failure_inside_a_sequence_is_named():
    rng = np.random.default_rng(12)                   # FD of exp fails as in the reference (see above)
    p, t, o = (rng.normal(size=(45, 51)) for _ in range(3))
    g = rand_seqs(1)
    with pytest.raises(ValueError, match=r"sequence 1, group 'exp' \(45 frames\): .*imaginary component"):
        M.evaluate_sequences([g[0], p], [g[0], t], [g[0], o], with_sid=False)
