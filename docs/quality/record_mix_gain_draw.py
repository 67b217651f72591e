"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). Draw dyad mode's samples with run 15's GPTs
(the shipped tiny config: /work/runs/tn3/CORPUS/seedS/tns0.2p0) exactly as scripts/sample.py does (its dyad defaults,
seed S, 8 samples, the fixed-shape step) and keep every sample (float32 npz), plus 8 more samples drawn with seed
S + 1000, so that sample mixes (a gain on the mix's deviation, 16 samples) can be scored post hoc. Also checks that the
library's mix of the kept samples is sample.py's output (run 15's files). Usage: draw.py test|heldout CORPUS SEED"""
import sys, time
from pathlib import Path
import numpy as np, torch
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from common.data.cache import Cache                                             # noqa: E402
from common.eval.predictions import prediction_path, read_prediction            # noqa: E402
from stage2_gpt.generate import Generator, Sampling, mode_defaults              # noqa: E402
torch.set_num_threads(1)
where, corpus, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
R = Path("/work/runs/quality10") / corpus
G = Path("/work/runs/tn3") / corpus / f"seed{seed}" / "tns0.2p0"
cache = Cache(R / "cache" if where == "test" else Path("/work/runs/heldout") / corpus / "cache")
shipped = G / "model_dyad" if where == "test" else Path("/work/runs/tn3_ho") / corpus / f"seed{seed}" / "s0.2p0_dyad"
out = Path("/work/runs/mixgain/samples") / where / corpus / f"seed{seed}"; out.mkdir(parents=True, exist_ok=True)
gen = Generator.load(G / "stage2/gpt.pt", R / f"seed{seed}" / "stage1/tokenizer.pt", "cpu", cuda_graph=True)
t0, worst = time.time(), 0.0
for d in cache.dialogs("test"):
    did = d["id"]
    fname = out / f"{did}.npz"
    if fname.exists():
        continue
    a = cache.load(did)
    kept = {}
    for tag, s in (("a", seed), ("b", seed + 1000)):
        sampling = Sampling(seed=s, **mode_defaults("dyad"))
        motion, mixed = [], []
        for ch in gen.iter_generate([a.audio], sampling=sampling, num_samples=8, identities=[np.asarray(a.shape)]):
            motion.append(ch.motion); mixed.append(ch.output)
        kept[tag] = np.concatenate(motion, axis=2).astype(np.float32)
        if tag == "a":                       # the library's mix == the file sample.py wrote for run 15
            mix = np.concatenate(mixed, axis=1)
            for p in (0, 1):
                ref = read_prediction(prediction_path(shipped, did, d["participants"][p]), cache.layout)
                worst = max(worst, float(np.abs(ref - mix[p]).max()))
    tmp = fname.with_suffix(".tmp.npz"); np.savez(tmp, **kept); tmp.rename(fname)
    print(where, corpus, seed, did, f"{time.time() - t0:.0f}s", f"max |mix - sample.py file| {worst:.2e}", flush=True)
