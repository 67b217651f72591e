"""A record, not a tool (paths are those of the run). Draw 8 samples per test dialog with run 6's GPTs (dyad and listener modes), keep every sample (float32 npz),
so that sample mixes can be scored post hoc. Usage: draw.py CORPUS SEED"""
import sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "/work/main")
from common.data.cache import Cache
from stage2_gpt.generate import Generator, Sampling
torch.set_num_threads(1)
corpus, seed = sys.argv[1], int(sys.argv[2])
N, BATCH = 8, 4
B = Path("/work/runs/quality5") / corpus; S = B / f"seed{seed}"
out = Path("/work/runs/mixsweep/samples") / corpus / f"seed{seed}"; out.mkdir(parents=True, exist_ok=True)
cache = Cache(B / "cache")
gen = Generator.load(S / "stage2/gpt.pt", S / "stage1/tokenizer.pt", "cpu")
ids = [d["id"] for d in cache.dialogs("test")]
data = {d: cache.load(d) for d in ids}
t0 = time.time()
for mode, givens in (("dyad", [None]), ("listener", [1, 0])):
    for g in givens:
        for b in range(0, len(ids), BATCH):
            todo = ids[b:b + BATCH]
            fname = out / f"{mode}_g{g}_{b}.npz"
            if fname.exists():
                continue
            bufs = {i: [] for i in range(len(todo))}
            for ch in gen.iter_generate([np.asarray(data[d].audio) for d in todo], given=g,
                                        given_motions=None if g is None else [np.asarray(data[d].motion[g]) for d in todo],
                                        sampling=Sampling(seed=seed, slow_s=None), num_samples=N,
                                        identities=[np.asarray(data[d].shape) for d in todo]):
                bufs[ch.dialog].append(ch.motion)
            arrs = {todo[i]: np.concatenate(v, axis=2).astype(np.float32) for i, v in bufs.items()}
            tmp = fname.with_suffix(".tmp.npz"); np.savez(tmp, **arrs); tmp.rename(fname)
            print(corpus, seed, mode, g, b, f"{time.time() - t0:.0f}s", flush=True)
