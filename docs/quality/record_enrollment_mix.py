"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). The enrollment protocol
(scripts/quality.py ``--enroll-s``: every method given a 30-s clip of each test person from another conversation)
applied to dyad mode's sample-mix variants of record_mix_gain_score.py (run 15's GPTs = runs 16-19's rows; their
samples kept by record_mix_gain_draw.py): `base` (the shipped mix), `mean` (the plain mean of the 8 samples),
`g<G>` (a gain on the mix's deviation from that mean). Each variant is enrolled exactly as the bench enrolls a method
(``quality.write_enrolled``) and scored with the enrolled causal DualTalk-class regressors (`test`: run 19's, both
protocols; `heldout`: new dialogs of new persons, run 13's causal regressor in DualTalk's protocol).
Usage: record_enrollment_mix.py OUT.md test|heldout CORPORA VARIANT..."""
import sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import quality as Q                                                               # noqa: E402
from common.data.cache import Cache                                               # noqa: E402
from common.eval import compare as C                                              # noqa: E402
from common.eval.predictions import prediction_path, write_prediction            # noqa: E402
from stage2_gpt.generate import LowPass, Sampling, SampleMix, mode_defaults       # noqa: E402

BENCH, HO, MIX, WORK = (Path("/work/runs/quality19"), Path("/work/runs/heldout"), Path("/work/runs/mixgain"),
                        Path("/work/runs/enroll_mix"))
out_md, where, corpora, variants = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
DYAD = mode_defaults("dyad")


def combine(x, v, fps, exp):
    """x (8, 2, T, D) the shipped samples -> (2, T, D) variant v's output (sample.py's low-pass last)."""
    if v == "base":
        return SampleMix(Sampling(**DYAD), fps, exp)(x)
    if v == "mean":
        return SampleMix(Sampling(**{**DYAD, "slow_s": None}), fps, exp)(x)
    gain = float(v.partition("g")[2])
    y = SampleMix(Sampling(**{**DYAD, "smooth_s": None}), fps, exp)(x)
    m = x.mean(0)
    return LowPass(DYAD["smooth_s"], fps, exp)(m + gain * (y - m))


md = []
for corpus in corpora:
    root = BENCH / corpus if where == "test" else HO / corpus
    cdir = root / "cache"
    cache = Cache(cdir)
    means = Q.enrollment_means(corpus, cdir, WORK / where / corpus / "enrollment_30s", 30.0)
    # what the methods are centred on: the bench cache's train mean (the held-out cache's own holds one dialog)
    center = np.asarray(Cache(BENCH / corpus / "cache").stats["motion_mean"], np.float64)
    methods = {}
    for s in (0, 1, 2):
        if where == "test":
            m = {r: root / f"seed{s}" / "enrolled" / r for r in ("dualtalk_class_causal", "dualtalk_class_causal_dyad")}
        else:
            m = {"dualtalk_class_causal": Q.write_enrolled(cdir, root / f"seed{s}" / "predictions" / "dualtalk_class_causal",
                                                           WORK / where / corpus / f"seed{s}" / "dualtalk_class_causal", means, center=center)}
        for v in variants:
            raw = WORK / where / corpus / f"seed{s}" / "raw" / v
            if not (raw / ".done").exists():
                for f in sorted((MIX / "samples" / where / corpus / f"seed{s}").glob("*.npz")):
                    z = np.load(f, allow_pickle=False)
                    entry, a = cache.dialog(f.stem), cache.load(f.stem)
                    y = combine(z["a"].astype(np.float64), v, cache.fps, cache.layout.exp)
                    for p in (0, 1):
                        write_prediction(prediction_path(raw, f.stem, entry["participants"][p]), y[p].astype(np.float32),
                                         cache.layout, np.asarray(a.shape)[p])
                (raw / ".done").touch()
            m[f"dyad_{v}"] = Q.write_enrolled(cdir, raw, WORK / where / corpus / f"seed{s}" / "enrolled" / v, means, center=center)
        methods[s] = m
    res = Q.score(cdir, methods)
    Q.MODEL_MODES = tuple(f"dyad_{v}" for v in variants)
    lines, _ = Q.corpus_report(corpus, res, [], 1000, 30.0)
    md += lines + ["Paired verdicts:", ""]
    md += [C.verdict(f"dyad_{v}", "dyad_base", res, n_boot=1000) for v in variants if v != "base"]
    md += [C.verdict(f"dyad_{v}", r, res, n_boot=1000) for v in variants for r in methods[0] if not r.startswith("dyad_")]
    md.append("")
out_md.write_text("\n".join(md) + "\n")
print("\n".join(md))
