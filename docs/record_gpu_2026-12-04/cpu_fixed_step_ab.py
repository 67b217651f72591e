"""Record (2026-12-04, fifth session; docs/BENCHMARKS.md "Fifth session", "On this CPU"): offline generation on the CPU
with the plain step and the fixed-shape step (cuda_graph=True runs it uncaptured on a CPU), 1 / 8 / 64 samples and 8
dialogs x 8 samples, the
quality bench's default-size GPT (run 6 seed 0 under /work/runs/quality5; point R at any GPT + tokenizer + cache)."""
import sys, time, json, numpy as np, torch
sys.path.insert(0, '.')
torch.set_num_threads(1)
from common.data.cache import Cache
from stage2_gpt.generate import Generator, Sampling
from stage2_gpt import speed as B
R='/work/runs/quality5/default'
out={}
c = Cache(f'{R}/cache')
audio = np.array(c.load(c.dialogs()[0]['id']).audio, np.float32)
a = B.tile_audio(audio, 900)
for N in (1, 8, 64):
    res = {}
    for graph in (False, True, False, True):
        gen = Generator.load(f'{R}/seed0/stage2/gpt.pt', f'{R}/seed0/stage1/tokenizer.pt', 'cpu', cuda_graph=graph)
        gen.generate(a[:, :16], num_samples=N)
        t=time.perf_counter(); g=gen.generate(a, num_samples=N); el=time.perf_counter()-t
        res.setdefault('ring' if graph else 'plain', []).append(round(1e3*el/450, 2))
        res['codes_ring' if graph else 'codes_plain'] = g.codes
    same = (res.pop('codes_ring') == res.pop('codes_plain')).all(axis=(0, 2))
    res['equal_steps'] = [int(same.sum()), int(same.size)]
    out[N] = res
    print(N, res, flush=True)
# 8 dialogs x 8 samples at once (generate_many, as sample.py --batch 8), 15 s each
dialogs = [B.tile_audio(np.roll(audio, 37 * i, axis=1), 450) for i in range(8)]
for graph in (False, True, False, True):
    gen = Generator.load(f'{R}/seed0/stage2/gpt.pt', f'{R}/seed0/stage1/tokenizer.pt', 'cpu', cuda_graph=graph)
    gen.generate_many([d[:, :16] for d in dialogs], num_samples=8)
    t = time.perf_counter(); gen.generate_many(dialogs, num_samples=8); el = time.perf_counter() - t
    print('ring' if graph else 'plain', '8 dialogs x 8 samples', round(1e3 * el / 225, 2), 'ms/step', flush=True)
