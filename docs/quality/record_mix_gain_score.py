"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). Dyad mode's sample mix post hoc on the
samples kept by record_mix_gain_draw.py (run 15's GPTs, drawn exactly as scripts/sample.py does): a gain on the mix's
deviation from the samples' mean (`g<G>`), the mix over 16 samples (`n16`, `n16g<G>`: the 8 shipped ones plus 8 drawn
with seed + 1000; sample 0 is the shipped sample 0), the plain mean (`mean`), each then low-passed like sample.py's
output. `base` is the library's mix of the 8 shipped samples (== run 15's files: the draw checks it). Scored like the
bench, paired against `base` and the DualTalk-class regressors.
Usage: record_mix_gain_score.py OUT.md test|heldout CORPORA VARIANT..."""
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

B, HO, RUN = Path("/work/runs/quality10"), Path("/work/runs/heldout"), Path("/work/runs/mixgain")
out_md, where, corpora, variants = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
DYAD = mode_defaults("dyad")


def combine(kept, v, fps, exp):
    """kept: {'a': (8, 2, T, D) the shipped samples, 'b': 8 more} -> (2, T, D) variant v's output."""
    x = kept["a"] if not v.startswith("n16") else np.concatenate([kept["a"], kept["b"]])
    if v == "base":
        return SampleMix(Sampling(**DYAD), fps, exp)(x)
    if v == "mean":
        return SampleMix(Sampling(**{**DYAD, "slow_s": None}), fps, exp)(x)
    gain = float(v.partition("g")[2] or 1.0)
    y = SampleMix(Sampling(**{**DYAD, "smooth_s": None}), fps, exp)(x)
    m = x.mean(0)
    y = m + gain * (y - m)
    return LowPass(DYAD["smooth_s"], fps, exp)(y)


md = []
for corpus in corpora:
    cdir = B / corpus / "cache" if where == "test" else HO / corpus / "cache"
    cache = Cache(cdir)
    methods = {}
    for s in (0, 1, 2):
        P = (B if where == "test" else HO) / corpus / f"seed{s}" / "predictions"
        m = {"dualtalk_class_causal": P / "dualtalk_class_causal"}
        if where == "test":
            m["dualtalk_class"] = P / "dualtalk_class"
        for v in variants:
            folder = RUN / "mixes" / where / corpus / f"seed{s}" / v
            m[f"dyad_{v}"] = folder
            if (folder / ".done").exists():
                continue
            for f in sorted((RUN / "samples" / where / corpus / f"seed{s}").glob("*.npz")):
                did = f.stem
                z = np.load(f, allow_pickle=False)
                entry, a = cache.dialog(did), cache.load(did)
                y = combine({k: z[k].astype(np.float64) for k in z.files}, v, cache.fps, cache.layout.exp)
                for p in (0, 1):
                    write_prediction(prediction_path(folder, did, entry["participants"][p]), y[p].astype(np.float32),
                                     cache.layout, np.asarray(a.shape)[p])
            (folder / ".done").touch()
        methods[s] = m
    res = Q.score(cdir, methods)
    Q.MODEL_MODES = tuple(f"dyad_{v}" for v in variants)
    lines, _ = Q.corpus_report(corpus, res, [], 1000)
    md += lines + ["Paired verdicts:", ""]
    md += [C.verdict(f"dyad_{v}", "dyad_base", res, n_boot=1000) for v in variants if v != "base"]
    md += [C.verdict(f"dyad_{v}", "dualtalk_class_causal", res, n_boot=1000) for v in variants]
    md.append("")
out_md.write_text("\n".join(md) + "\n")
print("\n".join(md))
