"""A record, not a tool (paths of the run): one raw sample (sample 0 of the 8 kept per test dialog, run 6's GPTs) with
and without the expression low-pass, scored like the bench. Usage: filt_n1.py OUT.md A1,A2,..."""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
import quality as Q
from common.data.cache import Cache
from common.eval.predictions import prediction_path, write_prediction
from stage2_gpt.generate import LowPass

RUN, SMP, OUT = Path("/work/runs/quality5"), Path("/work/runs/mixsweep/samples"), Path("/work/runs/expfilt/n1")
out_md, alphas = Path(sys.argv[1]), [float(a) for a in sys.argv[2].split(",")]

def tau(c, fps):          # the LowPass time constant whose coefficient is c
    return -1.0 / (fps * np.log(1.0 - c))

md = []
for corpus in ("default", "hard"):
    B = RUN / corpus; cache = Cache(B / "cache"); lay, fps = cache.layout, cache.fps
    dialogs = {d["id"]: (d["participants"], np.asarray(cache.load(d["id"]).shape)) for d in cache.dialogs("test")}
    methods, recons = {}, []
    for s in (0, 1, 2):
        P = B / f"seed{s}" / "predictions"
        methods[s] = {m: P / m for m in ("dualtalk_class", "dualtalk_class_causal")}
        recons.append(json.loads((B / f"seed{s}" / "recon.json").read_text()))
        files = sorted((SMP / corpus / f"seed{s}").glob("*.npz"))
        for mode in ("dyad", "listener"):
            for a in [None] + alphas:
                name = f"{mode}_n1" + ("" if a is None else f"_a{a}")
                folder = OUT / corpus / f"seed{s}" / name
                methods[s][name] = folder
                if (folder / ".done").exists():
                    continue
                for f in files:
                    if not f.name.startswith(mode + "_"):
                        continue
                    g = f.name.split("_")[1][1:]
                    g = None if g == "None" else int(g)
                    z = np.load(f, allow_pickle=False)
                    for did in z.files:
                        pids, shape = dialogs[did]
                        y = z[did][0]
                        if a is not None:
                            y = LowPass(tau(a, fps), fps, lay.exp)(y)
                        for p in ([0, 1] if g is None else [1 - g]):
                            write_prediction(prediction_path(folder, did, pids[p]), y[p], lay, shape[p])
                (folder / ".done").touch()
    res = Q.score(B / "cache", methods)
    Q.MODEL_MODES = tuple(f"{m}_n1" + ("" if a is None else f"_a{a}") for m in ("dyad", "listener") for a in [None] + alphas)
    lines, _ = Q.corpus_report(corpus, res, recons, 1000)
    md += lines
out_md.write_text("\n".join(md) + "\n"); print("\n".join(md))
