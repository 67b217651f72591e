"""Record (2026-12-04, fifth session; docs/BENCHMARKS.md "Fifth session"): streaming with the newest token's decode
captured (graphed_step.GraphedDecode) or not, alternating, in one process (the paper-size untrained GPT of a
``gpu_check.py --generation-only`` folder); 1 and 8 samples. On the H200 (call 3) the captured decode was made at
the window's first fill, inside the measured steps; it is now captured at the session's creation.

    python docs/record_gpu_2026-12-04/stream_decode_ab.py GC_FOLDER OUT.json"""
import sys, os, json
import numpy as np, torch
sys.path.insert(0, '.')
from common.data.cache import Cache
from stage2_gpt.generate import Generator, Sampling
from stage2_gpt import speed as B, graphed_step as GS
GC, OUTF = sys.argv[1], sys.argv[2]
DEV = os.environ.get('DEV', 'cuda'); SECS = float(os.environ.get('SECS', '20'))
gen = Generator.load(f'{GC}/stage2_untrained/gpt.pt', f'{GC}/stage1/tokenizer.pt', DEV, cuda_graph=True)
c = Cache(f'{GC}/cache')
audio = B.tile_audio(np.array(c.load(c.dialogs()[0]['id']).audio, np.float32), int(SECS * gen.fps))
Captured = GS.GraphedDecode

class Uncaptured(Captured):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.captured = None

out = {}
for rep in range(2):
    for name, cls in (("decode_captured", Captured), ("decode_uncaptured", Uncaptured)):
        for n in (1, 8):
            GS.GraphedDecode = cls
            st = B.bench_streaming(gen, audio, skip=5, num_samples=n)
            r = {k: st[k] for k in ("steps", "ms_per_step_median", "ms_per_step_p99", "ms_per_step_max", "ms_per_step_mean")}
            out[f"{name}_n{n}_{rep}"] = r
            print(name, n, rep, json.dumps(r), flush=True)
GS.GraphedDecode = Captured
json.dump(out, open(OUTF, 'w'), indent=1)
