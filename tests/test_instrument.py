"""The instrument itself: tests placed where a wrong role (self vs partner, val vs test, truth vs prediction)
would otherwise go unseen (issue 18, item 4). Each test lists the one-line mutants it was seen to kill: the
mutation applied by hand, the test run and seen to fail, the mutation reverted.

- ``test_listener_mode_sees_the_given_partner_never_the_generated_persons_truth``: listener mode
  (``generate_dialog`` -> ``Generator.generate`` -> ``Generator.step``) reads the given participant's motion and
  nothing of the generated person's own true motion (such a leak would flatter every listener-mode number).
  Mutants killed: ``gt_motion[g]`` -> ``gt_motion[1 - g]`` in ``generate_dialog``; ``res.motion[p]`` ->
  ``res.motion[1 - p]`` in its ``write_prediction``; ``partner = [1 - p ...]`` -> ``partner = list(act)`` in
  ``step``; ``full[:, given]`` -> ``full[:, 1 - given]`` in ``_given_codes``.
- ``test_speaker_only_never_sees_the_partner_offline_or_streaming``: the speaker-only ablation's output for a
  person is bit-identical whatever the partner's audio and codes, offline, streaming and in listener mode.
  Mutants killed: in ``Generator.step`` the self / partner order of ``audio`` or of ``prev`` swapped, or
  ``[:P]`` -> ``[-P:]`` on either; ``GPTConfig.inputs`` always 2; streaming's step fed
  ``audio_buf[:, :d].flip(0)``. (``DyadGPT.perspectives``' ``[:, :inputs]`` -> ``[:, -inputs:]``, used in
  training only, survives here and is killed by ``test_stage2.py::test_speaker_only_ignores_partner``.)
- ``test_per_state_columns_use_the_persons_own_states``: the ``@listen`` / ``@speak`` columns of
  ``evaluate_method`` on a prediction shifted only on the person's own listening frames, the expected values
  computed apart. Mutants killed: ``a.states[i]`` -> ``a.states[1 - i]`` in ``scoring.evaluate_method``; truth
  and partner swapped in ``metrics._by_state``'s pooling.
- ``test_scoring_pairs_each_sequence_with_its_partner_and_own_audio``: sequence-level ``p_fid``, ``rpcc`` and
  ``jaw_speech_r`` use the true partner and the person's own audio. Mutants killed: partner ``a.motion[1 - i]``
  -> ``a.motion[i]`` and energy ``a.audio[i]`` -> ``a.audio[1 - i]`` in ``evaluate_method``.
- ``test_cis_equal_a_bootstrap_over_dialogs_computed_apart``: every bracket equals a percentile bootstrap of the
  per-dialog means computed here (1000 resamples with replacement, ``default_rng(0)``). Mutants killed: bootstrap
  over sequences instead of dialogs; seed 1; resamples drawn transposed; without replacement (permutations);
  ``quantile(alpha)`` instead of ``alpha / 2``; dialog sums instead of means. (``rng.choice(n, size)`` for
  ``rng.integers(0, n, size)`` draws the very same numbers: an equivalent mutant, not killable.)
- ``test_stage1_reconstruction_figures_equal_numpy``: ``stage1_vq.evaluate.evaluate_cache``'s nMSE, Pearson r,
  usage and perplexity equal a plain numpy calculation. Mutants killed: nMSE over the prediction's variance;
  quantizer 0's usage reported for every quantizer; quantizer 0's codes counted for every quantizer; r over
  ``var_g`` instead of ``sqrt(var_g var_p)``.
- ``test_val_and_test_are_not_interchangeable``: under asymmetric ratios val and test get the sizes asked for,
  and preprocessing writes exactly ``assign_splits``' assignment. Mutants killed: the val / test labels swapped
  in ``assign_splits``; ``n_val`` from the test ratio; preprocessing passing the ratios as (train, test, val).

About 35 s on 2 cores (a 20-step tokenizer, a 30-step dyadic GPT and a 10-step speaker-only GPT trained here).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from common.data.cache import Cache
from common.eval import metrics as M
from conftest import tokenized_copy
from test_stage2 import _cfg, _one_thread  # noqa: F401  (the module's one-thread autouse fixture, reused)

T = 120                                 # frames generated per call (60 token steps)
SHIFT = 0.5                             # the per-state test's shift on the person's own listening frames
paired_fid = M._limited_threads(M.paired_fid)   # one BLAS thread, as the scorer runs it


# --- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenized(cache_dir, tmp_path_factory):
    return tokenized_copy(cache_dir, tmp_path_factory.mktemp("instrument_tok"), steps=20)


@pytest.fixture(scope="module")
def gens(tokenized, tmp_path_factory):
    """A briefly trained dyadic GPT and speaker-only GPT, as Generators."""
    from stage2_gpt.generate import Generator
    from stage2_gpt.train import train
    out = {}
    for name, steps, extra in (("dyad", 30, ()), ("speaker_only", 10, ("model.speaker_only=true",))):
        res = train(_cfg(tokenized, tmp_path_factory.mktemp(f"instrument_{name}"), f"train.max_steps={steps}",
                         f"train.save_every={steps}", *extra))
        out[name] = Generator.load(res["artifact"], tokenized["tokenizer"])
    assert out["dyad"].model.partner_gate.weight.abs().max() > 0     # trained: the partner is an input
    return out


@pytest.fixture(scope="module")
def dialog(tokenized):
    """The test dialog's first T frames, and another dialog's (replacement motion / audio, in distribution)."""
    c = Cache(tokenized["cache"])
    d, o = c.dialogs("test")[0], c.dialogs("val")[0]
    a, b = c.load(d["id"]), c.load(o["id"])
    return {"id": d["id"], "participants": d["participants"], "audio": np.array(a.audio[:, :T]),
            "motion": np.array(a.motion[:, :T]), "other_audio": np.array(b.audio[:, :T]),
            "other_motion": np.array(b.motion[:, :T])}


def _sampling():
    from stage2_gpt.generate import Sampling
    return Sampling(seed=7)


# --- listener mode --------------------------------------------------------------------------------------------
def test_listener_mode_sees_the_given_partner_never_the_generated_persons_truth(gens, dialog, tmp_path):
    from stage2_gpt.generate import generate_dialog
    gen, parts, gt = gens["dyad"], dialog["participants"], dialog["motion"]

    def run(name, motion, given=None):
        generate_dialog(gen, dialog["id"], parts, dialog["audio"], tmp_path / name, mode="listener", given=given,
                        gt_motion=motion, sampling=_sampling(), plot=False)
        files = sorted((tmp_path / name / dialog["id"]).glob("*.npz"))
        return {f.stem: {k: np.load(f)[k] for k in ("motion", "codes")} for f in files}

    base = run("base", gt)                   # both roles in turn: each participant generated, the other given
    assert sorted(base) == sorted(parts)
    for p in (0, 1):
        motion = gt.copy()
        motion[p] = dialog["other_motion"][p]                 # p's own true motion replaced
        r = run(f"own{p}", motion)
        for k in ("motion", "codes"):                          # p generated: p's truth is never read
            np.testing.assert_array_equal(r[parts[p]][k], base[parts[p]][k], err_msg=f"{parts[p]} {k}")
        # the partner generated with p given: p's motion is read (the test could see a leak)
        assert not np.array_equal(r[parts[1 - p]]["codes"], base[parts[1 - p]]["codes"])
    named = run("named", gt, given=parts[1])                  # one role, named: the same file
    assert sorted(named) == [parts[0]]
    np.testing.assert_array_equal(named[parts[0]]["motion"], base[parts[0]]["motion"])
    direct = gen.generate(dialog["audio"], given=1, given_motion=gt[1], sampling=_sampling())
    np.testing.assert_array_equal(base[parts[0]]["motion"], direct.motion[0])
    np.testing.assert_array_equal(base[parts[0]]["codes"], direct.codes[0])
    # Generator.generate: the given participant's motion, and only it, moves the generated one
    other = gen.generate(dialog["audio"], given=1, given_motion=dialog["other_motion"][1], sampling=_sampling())
    assert not np.array_equal(other.codes[0], direct.codes[0])


# --- speaker-only ------------------------------------------------------------------------------------------------
def _stream(gen, audio, chunks=(3, 1, 8, 5, 2)):
    sess, outs, i, j = gen.stream(_sampling()), [], 0, 0
    while i < audio.shape[1]:
        n = chunks[j % len(chunks)]
        outs.append(sess.push(audio[:, i:i + n]))
        i, j = i + n, j + 1
    outs.append(sess.flush())
    return np.concatenate(outs, 1)


def test_speaker_only_never_sees_the_partner_offline_or_streaming(gens, dialog):
    so, dyad, audio = gens["speaker_only"], gens["dyad"], dialog["audio"]
    assert so.cfg.speaker_only
    base = so.generate(audio, sampling=_sampling())
    base_stream = _stream(so, audio)
    for p in (0, 1):
        changed = audio.copy()
        changed[1 - p] = dialog["other_audio"][1 - p]             # the partner's audio (and so their codes)
        r = so.generate(changed, sampling=_sampling())
        np.testing.assert_array_equal(r.codes[p], base.codes[p], err_msg=f"speaker-only, participant {p}")
        np.testing.assert_array_equal(r.motion[p], base.motion[p])
        assert not np.array_equal(r.codes[1 - p], base.codes[1 - p])       # the partner's own codes did change
        s = _stream(so, changed)
        np.testing.assert_array_equal(s[p], base_stream[p], err_msg=f"speaker-only streaming, participant {p}")
        # the dyadic model does see the same change: the perturbation is strong enough to reveal a leak
        d0, d1 = dyad.generate(audio, sampling=_sampling()), dyad.generate(changed, sampling=_sampling())
        assert not np.array_equal(d0.codes[p], d1.codes[p])
    np.testing.assert_allclose(base_stream, base.motion, atol=1e-5)      # streaming is the same generator
    # listener mode: the given partner's codes are not seen either
    a = so.generate(audio, given=1, given_motion=dialog["motion"][1], sampling=_sampling())
    b = so.generate(audio, given=1, given_motion=dialog["other_motion"][1], sampling=_sampling())
    assert not np.array_equal(a.codes[1], b.codes[1])
    np.testing.assert_array_equal(a.codes[0], b.codes[0])
    np.testing.assert_array_equal(a.motion[0], b.motion[0])


# --- scoring: per state, partner, audio, CIs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored(cache_dir, tmp_path_factory):
    """A prediction folder for the train split (6 dialogs, 12 sequences): the truth shifted by SHIFT on every
    dim, only on the frames where that person (not the partner) listens; scored by evaluate_method."""
    from common.eval.scoring import evaluate_method
    cache = Cache(cache_dir)
    out = tmp_path_factory.mktemp("instrument_pred")
    seqs = []
    for d in cache.dialogs("train"):
        a = cache.load(d["id"])
        for i, pid in enumerate(d["participants"]):
            gt = np.array(a.motion[i], np.float64)
            own = np.array(a.states[i])
            pred = gt.copy()
            pred[own == 1] += SHIFT
            (out / d["id"]).mkdir(parents=True, exist_ok=True)
            np.save(out / d["id"] / f"{pid}.npy", pred)
            seqs.append({"dialog": d["id"], "pred": pred, "gt": gt, "partner": np.array(a.motion[1 - i], np.float64),
                         "own": own, "other": np.array(a.states[1 - i]),
                         "energy": np.array(a.audio[i], np.float64).mean(1)})
    return {"cache": cache, "seqs": seqs, "result": evaluate_method(cache, out, split="train")}


def test_per_state_columns_use_the_persons_own_states(scored):
    r, seqs = scored["result"].metrics, scored["seqs"]
    own = np.concatenate([s["own"] for s in seqs])
    other = np.concatenate([s["other"] for s in seqs])
    listen, speak = own == 1, own == 2
    # precondition: the partner's states differ from the person's (a swap would be seen)
    assert (other[listen] != 1).mean() > 0.5 and listen.sum() >= 101 and speak.sum() >= 101
    for state, code in (("idle", 0), ("listen", 1), ("speak", 2), ("crosstalk", 3)):
        assert r[f"frames@{state}"] == (own == code).sum()
    assert r["mse_exp@listen"] == pytest.approx(SHIFT ** 2, rel=1e-9)
    assert r["mse_jaw@listen"] == pytest.approx(SHIFT ** 2, rel=1e-9)
    assert r["fid_exp@listen"] == pytest.approx(50 * SHIFT ** 2, rel=1e-6)     # a mean shift over 50 dims
    assert r["mse_exp@speak"] == 0 and r["mse_jaw@speak"] == 0
    assert abs(r["fid_exp@speak"]) < 1e-6 and abs(r["p_fid_exp@speak"]) < 1e-6
    # the paired columns: the person's own listening frames, pooled, with the partner's motion on them
    cat = {k: np.concatenate([s[k] for s in seqs]) for k in ("pred", "gt", "partner")}
    exp = slice(0, 50)
    want = paired_fid(cat["pred"][listen, exp], cat["gt"][listen, exp], cat["partner"][listen, exp])
    assert r["p_fid_exp@listen"] == pytest.approx(want, rel=1e-9)
    g, q, p = (cat[k][listen, exp].ravel() for k in ("gt", "partner", "pred"))
    want = abs(np.corrcoef(g, q)[0, 1] - np.corrcoef(p, q)[0, 1])
    assert r["rpcc_exp@listen"] == pytest.approx(want, rel=1e-9)


def test_scoring_pairs_each_sequence_with_its_partner_and_own_audio(scored):
    r, seqs = scored["result"].metrics, scored["seqs"]
    exp = slice(0, 50)
    want = np.mean([paired_fid(s["pred"][:, exp], s["gt"][:, exp], s["partner"][:, exp]) for s in seqs])
    assert r["p_fid_exp"] == pytest.approx(want, rel=1e-9)
    rp = [abs(np.corrcoef(s["gt"][:, exp].ravel(), s["partner"][:, exp].ravel())[0, 1]
              - np.corrcoef(s["pred"][:, exp].ravel(), s["partner"][:, exp].ravel())[0, 1]) for s in seqs]
    assert r["rpcc_exp"] == pytest.approx(np.mean(rp), rel=1e-9)
    # jaw-speech r: the jaw against the person's own audio energy (lags 0..5: jaw follows speech)
    jr = []
    for s in seqs:
        jaw, e = s["gt"][:, 50], s["energy"]
        jr.append(max(np.corrcoef(jaw[lag:], e[:len(e) - lag])[0, 1] for lag in range(6)))
    assert r["jaw_speech_r_gt"] == pytest.approx(np.mean(jr), rel=1e-9)
    assert np.mean(jr) > 0.2                          # the own voice moves the jaw (a partner's would not)


def _bootstrap(values, n_boot=1000, seed=0, alpha=0.05):
    v = np.asarray(values, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))   # with replacement
    means = v[idx].mean(1)
    return [v.mean(), np.quantile(means, alpha / 2), np.quantile(means, 1 - alpha / 2)]


def test_cis_equal_a_bootstrap_over_dialogs_computed_apart(scored):
    res, seqs = scored["result"], scored["seqs"]
    per_seq = {
        "mse_exp": [np.mean((s["pred"][:, :50] - s["gt"][:, :50]) ** 2) for s in seqs],
        "mse_jaw": [np.mean((s["pred"][:, 50] - s["gt"][:, 50]) ** 2) for s in seqs],
        "sts_exp": [np.sqrt(np.sum((np.diff(s["pred"][:, :50], axis=0) - np.diff(s["gt"][:, :50], axis=0)) ** 2)
                            / 0.1) for s in seqs],
    }
    dialogs = sorted({s["dialog"] for s in seqs})
    assert len(dialogs) == 6 and len(seqs) == 12
    for k, vals in per_seq.items():
        by_dialog = [np.mean([v for v, s in zip(vals, seqs) if s["dialog"] == d]) for d in dialogs]
        want = _bootstrap(by_dialog)
        assert res.ci[k] == pytest.approx(want, rel=1e-9), k
        assert want[1] < want[0] < want[2]                                 # a real interval
        # precondition: over sequences the interval differs (a mutant bootstrapping sequences would be seen)
        assert _bootstrap(vals)[1:] != pytest.approx(want[1:], rel=1e-3)
    assert set(res.ci) >= {"fid_exp", "p_fid_exp", "rpcc_jaw", "jaw_speech_r"}


# --- stage 1: the reconstruction table ------------------------------------------------------------------------------
def test_stage1_reconstruction_figures_equal_numpy(tokenized):
    from stage1_vq import load_tokenizer
    from stage1_vq.evaluate import evaluate_cache
    tok, cache = load_tokenizer(tokenized["tokenizer"]), Cache(tokenized["cache"])
    m = evaluate_cache(tok, cache, "train")
    G, P, C = [], [], []
    with torch.no_grad():
        for d in cache.dialogs("train"):
            motion = np.array(cache.load(d["id"]).motion, np.float32)
            ref = torch.from_numpy(motion).mean(1)          # each participant's own mean: the person reference
            codes = tok.encode(torch.from_numpy(motion), ref)
            rec = tok.decode(codes, ref).numpy()
            G.append(motion[:, :rec.shape[1]].reshape(-1, motion.shape[-1]))
            P.append(rec.reshape(-1, rec.shape[-1]))
            C.append(codes.numpy().reshape(-1, codes.shape[-1]))
    G, P, C = (np.concatenate(x).astype(np.float64) for x in (G, P, C))
    var_g, var_p = G.var(0), P.var(0)
    nmse = ((G - P) ** 2).mean(0) / var_g
    corr = np.array([np.corrcoef(G[:, j], P[:, j])[0, 1] for j in range(G.shape[1])])
    assert m["frames"] == len(G)
    np.testing.assert_allclose(m["nmse_per_dim"], nmse, rtol=1e-7)
    assert m["nmse_all"] == pytest.approx(nmse.mean(), rel=1e-7)
    for g, (a, b) in (("exp", (0, 50)), ("jaw", (50, 51))):
        assert m[f"nmse_{g}"] == pytest.approx(nmse[a:b].mean(), rel=1e-7)
        assert m[f"corr_{g}"] == pytest.approx(corr[a:b].mean(), rel=1e-6)
    K = tok.codebook_size
    usage = [len(np.unique(C[:, q])) / K for q in range(C.shape[1])]
    ppl = []
    for q in range(C.shape[1]):
        h = np.bincount(C[:, q].astype(int), minlength=K) / len(C)
        h = h[h > 0]
        ppl.append(np.exp(-(h * np.log(h)).sum()))
    assert m["usage"] == pytest.approx(usage, rel=1e-12)
    assert m["perplexity"] == pytest.approx(ppl, rel=1e-9)
    # preconditions: the mutants' figures would differ (recon variance is not the truth's; quantizers differ)
    assert np.abs(var_p / var_g - 1).mean() > 0.05
    assert len(set(usage)) > 1 and len(set(np.round(ppl, 6))) > 1


# --- splits -------------------------------------------------------------------------------------------------
def test_val_and_test_are_not_interchangeable(data_cfg, cache_dir, tmp_path):
    from common.data.preprocess import preprocess
    from common.data.splits import assign_splits
    ids = [f"dlg{i:03d}" for i in range(40)]
    a = assign_splits(ids, (0.6, 0.1, 0.3), seed=0)
    b = assign_splits(ids, (0.6, 0.3, 0.1), seed=0)
    count = lambda s, name: sum(v == name for v in s.values())                    # noqa: E731
    assert [count(a, n) for n in ("train", "val", "test")] == [24, 4, 12]
    assert [count(b, n) for n in ("train", "val", "test")] == [24, 12, 4]
    assert {d for d, v in a.items() if v == "train"} == {d for d, v in b.items() if v == "train"}
    # the shared cache holds exactly assign_splits' assignment for its configured ratios and seed
    cache = Cache(cache_dir)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    want = assign_splits([d["id"] for d in manifest["dialogs"]], data_cfg.split_ratios, data_cfg.split_seed)
    assert {d["id"]: d["split"] for d in cache.dialogs()} == want
    # preprocessing with asymmetric ratios: 4 train, 1 val, 3 test of the 8 dialogs
    cfg = dataclasses.replace(data_cfg, split_ratios=(0.5, 0.125, 0.375))
    out = tmp_path / "cache"
    preprocess(cfg, out, workers=1, progress=False)
    c = Cache(out)
    want = assign_splits([d["id"] for d in c.dialogs()], cfg.split_ratios, cfg.split_seed)
    assert [len(c.dialogs(s)) for s in ("train", "val", "test")] == [4, 1, 3]
    for s in ("val", "test"):
        assert sorted(d["id"] for d in c.dialogs(s)) == sorted(d for d in want if want[d] == s)
