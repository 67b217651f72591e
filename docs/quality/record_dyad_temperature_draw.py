"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). Draw N samples per test dialog (dyad mode, anchored as sample.py does) with one of the bench's GPTs; keep them.
Usage: draw8.py BENCH CORPUS SEED TEMP [MODE] (MODE dyad | listener: both roles in turn, keyed DIALOG@g)"""
import sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common.data.cache import Cache
from stage2_gpt.generate import Generator, Sampling
torch.set_num_threads(1)
bench, corpus, seed, temp = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 else "dyad"
fine = None
N, BATCH = 8, 4
S = bench / corpus / f"seed{seed}"
tag = f"t{temp}" + ("" if mode == "dyad" else "_listener")
import os
HO = os.environ.get("HELDOUT")
out = Path("/work/runs/draws_heldout" if HO else "/work/runs/draws") / corpus / f"seed{seed}" / f"{tag}.npz"
out.parent.mkdir(parents=True, exist_ok=True)
if out.exists():
    sys.exit(0)
cache = Cache(Path(HO) / corpus / "cache" if HO else bench / corpus / "cache")
gen = Generator.load(S / "stage2/gpt.pt", S / "stage1/tokenizer.pt", "cpu")
ids = [d["id"] for d in cache.dialogs("test")]
data = {d: cache.load(d) for d in ids}
t0 = time.time()
arrs = {}
for g in ([None] if mode == "dyad" else [1, 0]):
  for b in range(0, len(ids), BATCH):
    todo = ids[b:b + BATCH]
    bufs = {i: [] for i in range(len(todo))}
    for ch in gen.iter_generate([np.asarray(data[d].audio) for d in todo], given=g,
                                given_motions=None if g is None else [np.asarray(data[d].motion[g]) for d in todo],
                                sampling=Sampling(seed=seed, temperature=temp, fine_temperature=fine, slow_s=None),
                                num_samples=N, identities=[np.asarray(data[d].shape) for d in todo]):
        bufs[ch.dialog].append(ch.motion)
    arrs.update({(todo[i] if g is None else f"{todo[i]}@{g}"): np.concatenate(v, axis=2).astype(np.float32)
                 for i, v in bufs.items()})
tmp = out.with_suffix(".tmp.npz"); np.savez(tmp, **arrs); tmp.rename(out)
print(corpus, seed, tag, f"{time.time() - t0:.0f}s", flush=True)
